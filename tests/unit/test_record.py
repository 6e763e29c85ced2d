"""Records (unotifyd/record.py) behave as the dataclasses they replace.

The oracle is :mod:`dataclasses` itself: each class below is declared twice,
once with ``@dataclass`` and once with ``@record``, from the same body, and
every case runs on both and must give the same result.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import pickle
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from unotifyd import record as records


def _twice(options: dict[str, Any], body: Callable[[Any], type]) -> tuple[Any, Any]:
    """The class ``body(field)`` makes, as a dataclass and as a record."""
    theirs: Any = dataclasses.dataclass(**options)(body(dataclasses.field))
    ours: Any = records.record(**options)(body(records.field))
    return theirs, ours


def _frozen_point(field: Any) -> type:
    class Point:
        """A point."""

        KIND: ClassVar[str] = "point"
        x: int
        y: int = 0
        tags: list[str] = field(default_factory=list)
        note: str = field(default="", compare=False)

        def norm(self) -> int:
            return abs(self.x) + abs(self.y)

    return Point


def _mutable_counter(field: Any) -> type:
    class Counter:
        name: str
        doubled: int = field(init=False, default=-1)
        count: int = 0

        def __post_init__(self) -> None:
            self.doubled = self.count * 2

    return Counter


def _identity(field: Any) -> type:
    class Handle:
        fd: int

        def __repr__(self) -> str:
            return f"<fd {self.fd}>"

    return Handle


def _own_equality(field: Any) -> type:
    class Version:  # noqa: PLW1641 - the decorator gives the hash: the case tested
        major: int
        minor: int = 0

        def __eq__(self, other: object) -> bool:
            return type(other) is type(self) and self.major == other.major

    return Version


CLASSES = {
    "frozen-slots": ({"frozen": True, "slots": True}, _frozen_point),
    "frozen": ({"frozen": True}, _frozen_point),
    "mutable": ({}, _mutable_counter),
    "mutable-slots": ({"slots": True}, _mutable_counter),
    "no-eq": ({"eq": False, "slots": True}, _identity),
    "own-eq": ({"frozen": True, "slots": True}, _own_equality),
    "own-eq-mutable": ({}, _own_equality),
}


def _outcome(action: Callable[[], object]) -> object:
    """What ``action`` gives, or the type of what it raises."""
    try:
        return action()
    except Exception as e:  # the exception's type is the result compared
        frozen = (records.FrozenInstanceError, dataclasses.FrozenInstanceError)
        return "frozen" if isinstance(e, frozen) else type(e)


def _cases(cls: Any, name: str) -> dict[str, Callable[[], object]]:
    if name.startswith("frozen"):
        a, b, c = cls(1, 2), cls(1, 2, note="other"), cls(x=3, tags=["t"])
        return {
            "repr": lambda: repr(a),
            **({"a subclass sets its own names": lambda: _subclass_sets(cls)}
               if name == "frozen" else {}),
            "equal, one field not compared": lambda: a == b,
            "not equal": lambda: a == c,
            "not equal to a tuple": lambda: a == (1, 2, [], ""),
            "hash": lambda: hash(a) == hash(b),
            "default factory is fresh": lambda: cls(0).tags is not cls(0).tags,
            "assign": lambda: setattr(a, "x", 5),
            # CPython 3.11's frozen slotted dataclass raises TypeError here
            # (its generated __setattr__ calls super() with the class that
            # slots=True replaced); a record raises FrozenInstanceError.
            **({"assign a new name": lambda: setattr(a, "z", 5)} if name == "frozen" else {}),
            "delete": lambda: delattr(a, "x"),
            "class variable": lambda: (cls.KIND, a.KIND),
            "method": c.norm,
            "too many arguments": lambda: cls(1, 2, [], "", 5),
            "missing argument": cls,
            "unknown keyword": lambda: cls(1, z=2),
            "replace": lambda: repr(_replace(cls, c, y=9)),
            "replace unknown": lambda: _replace(cls, c, z=9),
            "copy": lambda: copy.copy(c) == c,
            "deepcopy": lambda: copy.deepcopy(c) == c,
            "match args": lambda: cls.__match_args__,
            "has __dict__": lambda: hasattr(a, "__dict__"),
            "slots": lambda: getattr(cls, "__slots__", None),
        }
    if name.startswith("mutable"):
        m = cls("m", count=4)
        return {
            "post init": lambda: (m.doubled, m.count),
            "repr": lambda: repr(m),
            "init=False is not a parameter": lambda: cls("m", 1, 2),
            "assign": lambda: _assign(m, "count", 7),
            "unhashable": lambda: hash(m),
            "equal": lambda: cls("m", count=4) == cls("m", count=4),
            "replace keeps post init": lambda: _replace(cls, m, count=1).doubled,
            "replace init=False": lambda: _replace(cls, m, doubled=1),
            "has __dict__": lambda: hasattr(m, "__dict__"),
        }
    if name.startswith("own-eq"):
        v = cls(1, 2)
        return {
            "its own equality kept": lambda: (v == cls(1, 5), v == cls(2, 2)),
            "hash": lambda: hash(v) == hash(cls(1, 2)),
            "repr": lambda: repr(v),
        }
    h = cls(3)
    return {
        "own repr kept": lambda: repr(h),
        "identity equality": lambda: (h == cls(3), operator.eq(h, h)),
        "hashable by identity": lambda: hash(h) == object.__hash__(h),
    }


def _subclass_sets(cls: type) -> object:
    class Sub(cls):  # type: ignore[misc]
        pass

    sub = Sub(1)
    sub.extra = 5
    return sub.extra


def _assign(obj: object, name: str, value: object) -> object:
    setattr(obj, name, value)
    return getattr(obj, name)


def _replace(cls: type, obj: Any, **changes: Any) -> Any:
    if dataclasses.is_dataclass(cls):
        return dataclasses.replace(obj, **changes)
    return records.replace(obj, **changes)


def _case_ids() -> list[tuple[str, str]]:
    out = []
    for name, (options, body) in CLASSES.items():
        theirs, _ = _twice(options, body)
        out += [(name, case) for case in _cases(theirs, name)]
    return out


@pytest.mark.parametrize(("name", "case"), _case_ids(), ids=str)
def test_a_record_does_what_the_dataclass_does(name: str, case: str) -> None:
    options, body = CLASSES[name]
    theirs, ours = _twice(options, body)
    expected = _outcome(_cases(theirs, name)[case])
    got = _outcome(_cases(ours, name)[case])
    assert got == expected


@records.record(frozen=True, slots=True)
class Pickled:
    """At module level, where pickle finds it by name."""

    path: str
    flags: int = 0


def test_a_frozen_slotted_record_pickles_and_copies() -> None:
    value = Pickled("/etc", 2)
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.copy(value) == value and copy.deepcopy(value) == value


def test_the_oracle_sees_the_differences() -> None:
    # The control: a record that left out equality, or hashed a mutable
    # instance, would differ from the dataclass on these cases.
    theirs, _ = _twice(*CLASSES["frozen-slots"])
    wrong: Any = records.record(frozen=True, slots=True, eq=False)(_frozen_point(records.field))
    assert _outcome(_cases(theirs, "frozen-slots")["equal, one field not compared"]) is True
    assert _outcome(_cases(wrong, "frozen-slots")["equal, one field not compared"]) is False


def test_a_record_refuses_what_it_would_get_wrong() -> None:
    with pytest.raises(TypeError, match="non-default field 'b' follows"):

        @records.record
        class Misordered:
            a: int = 0
            b: int  # type: ignore[misc]  # mypy sees it too

    @records.record
    class Base:
        a: int

    with pytest.raises(TypeError, match="does not inherit from a record"):

        @records.record
        class Derived(Base):
            b: int

    with pytest.raises(ValueError, match="not both"):
        records.field(default=1, default_factory=list)

    def refused(body: dict[str, Any], why: str, **options: Any) -> None:
        namespace = {"__annotations__": {name: "int" for name in body if name != "__slots__"}}
        namespace.update({k: v for k, v in body.items() if v is not None})
        with pytest.raises(TypeError, match=why):
            records.record(**options)(type("Refused", (), namespace))

    refused({"xs": []}, "mutable default list: use field")
    refused({"xs": {}}, "mutable default dict")
    refused({"x": dataclasses.field(default=1)}, "dataclasses.field")
    refused({"_record_self": None}, "the generated __init__'s")
    refused({"x": None, "__slots__": ("x",)}, "makes __slots__ itself", slots=True)
    with pytest.raises(TypeError, match="InitVar"):

        @records.record
        class Init:
            x: dataclasses.InitVar[int]


def test_a_field_named_like_the_init_s_own_names_is_a_field() -> None:
    @records.record(frozen=True)
    class Odd:
        set: int
        missing: int = 0

    assert (Odd(1, 2).set, Odd(set=3).missing) == (1, 0)


def test_an_unset_slot_stays_unset_through_a_copy() -> None:
    @records.record(frozen=True, slots=True)
    class Late:
        x: int
        y: int = records.field(init=False)

    copied = copy.deepcopy(Late(1))
    assert copied.x == 1 and not hasattr(copied, "y")


def test_replace_wants_a_record() -> None:
    with pytest.raises(TypeError, match="record instances"):
        records.replace(object())
