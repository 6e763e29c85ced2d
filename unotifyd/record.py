"""Records: the classes ``@dataclass`` would make, at a tenth of its start-up cost.

Why not :mod:`dataclasses`: ``unotifyd launch`` imports some fifty such
classes before the program it starts can make its first trapped call, and
on CPython 3.11 ``@dataclass(frozen=True, slots=True)`` costs ~0.8 ms per
class (it compiles six functions from source: ``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``), and importing
:mod:`dataclasses` pulls in :mod:`inspect` (with ``ast``, ``dis`` and
``tokenize``) for ~8 ms more. Together that was a third of a launch
(benchmarks/README.md, "Where a standalone launch goes").

A record compiles only its ``__init__``, so that making an instance costs
what it costs for a dataclass (the serving path makes some per call); the
other methods are closures that read the fields through one
:func:`operator.attrgetter`. What a record gives is what the dataclasses we
had used: the options ``frozen``, ``slots`` and ``eq`` with dataclass's
defaults, :func:`field` with ``default``, ``default_factory``, ``init`` and
``compare``, ``__post_init__``, :func:`replace`, ``__match_args__``, and
copy/pickle of frozen slotted records. A method the class body defines is
kept, as ``@dataclass`` keeps it. No inheritance between records (none of
ours inherits), no ``order``, ``kw_only`` or ``InitVar``, no recursion guard
in ``repr``: the decorator refuses a class it would get wrong (a record
base, an ``InitVar``, a ``dataclasses.field()``, a mutable default, its own
``__slots__``) instead of guessing.

mypy sees records as dataclasses (PEP 681, ``dataclass_transform``): it
checks constructors, frozen assignment and field order as before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform, get_origin, overload

T = TypeVar("T")

_MISSING: Any = object()
_set = object.__setattr__


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record (as dataclasses.FrozenInstanceError)."""


class Field:
    """What :func:`field` says about one field."""

    __slots__ = ("compare", "default", "factory", "init")

    def __init__(
        self, default: Any, factory: Callable[[], Any] | Any, init: bool, compare: bool
    ) -> None:
        self.default = default
        self.factory = factory
        self.init = init
        self.compare = compare


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | Any = _MISSING,
    init: bool = True,
    compare: bool = True,
) -> Any:
    """A field's default, factory, whether ``__init__`` takes it and whether
    equality and hash look at it (as :func:`dataclasses.field`)."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("field: give default or default_factory, not both")
    return Field(default, default_factory, init, compare)


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):  # PEP 563: the annotation as written
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _refused(name: str, annotation: object, value: object) -> str | None:
    """Why field ``name`` is one a record would get wrong, or None."""
    if name.startswith("_record_"):
        return "its name is the generated __init__'s"
    if str(annotation).startswith(("InitVar", "dataclasses.InitVar")):
        return "InitVar is dataclasses'"
    if type(value).__module__ == "dataclasses":
        return "dataclasses.field() is not records.field()"
    if value is not _MISSING and not isinstance(value, Field) and type(value).__hash__ is None:
        # As dataclasses: a list, dict or set would be shared by every instance.
        return f"mutable default {type(value).__name__}: use field(default_factory=...)"
    return None


def _init_source(
    fields: list[tuple[str, Field]], post_init: bool
) -> tuple[str, dict[str, Any]]:
    """The source of ``__init__`` and the names it refers to (all ``_record_*``:
    no field may have such a name)."""
    names: dict[str, Any] = {"_record_set": _set, "_record_missing": _MISSING}
    params: list[str] = []
    body: list[str] = []
    seen_default = False
    for name, spec in fields:
        if spec.factory is not _MISSING:
            names[f"_record_factory_{name}"] = spec.factory
            value = f"_record_factory_{name}()"
            if spec.init:
                params.append(f"{name}=_record_missing")
                value = f"{value} if {name} is _record_missing else {name}"
                seen_default = True
        elif spec.default is not _MISSING:
            names[f"_record_default_{name}"] = spec.default
            value = name if spec.init else f"_record_default_{name}"
            if spec.init:
                params.append(f"{name}=_record_default_{name}")
                seen_default = True
        elif not spec.init:
            continue  # set by __post_init__, as a dataclass leaves it
        else:
            if seen_default:
                raise TypeError(f"non-default field {name!r} follows a field with a default")
            params.append(name)
            value = name
        body.append(f"    _record_set(_record_self, {name!r}, {value})")
    if post_init:
        body.append("    _record_self.__post_init__()")
    signature = ", ".join(["_record_self", *params])
    source = f"def __init__({signature}):\n" + "\n".join(body or ["    pass"])
    return source, names


def _build(cls: type[T], frozen: bool, slots: bool, eq: bool) -> type[T]:
    own = cls.__dict__
    if any(hasattr(base, "__record_fields__") for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: a record does not inherit from a record")
    if slots and "__slots__" in own:
        raise TypeError(f"{cls.__name__}: slots=True makes __slots__ itself")
    fields: list[tuple[str, Field]] = []
    for name, annotation in own.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = own.get(name, _MISSING)
        why = _refused(name, annotation, value)
        if why is not None:
            raise TypeError(f"{cls.__name__}.{name}: {why}")
        spec = value if isinstance(value, Field) else Field(value, _MISSING, True, True)
        fields.append((name, spec))

    source, names = _init_source(fields, "__post_init__" in own)
    exec(source, names)  # our own text, made of the class's field names

    compared = tuple(name for name, spec in fields if spec.compare)
    key: Callable[[Any], Any] = operator.attrgetter(*compared) if compared else _no_key
    shown = tuple(name for name, _ in fields)
    methods: dict[str, Any] = {"__init__": names["__init__"], "__repr__": _make_repr(shown)}
    if eq:
        methods["__eq__"] = _make_eq(key)
        # As dataclasses: hashable by its fields when frozen, unhashable when
        # mutable (equal records must have equal hashes). A class that
        # defines __eq__ gets __hash__ = None from Python itself, which
        # dataclasses do not take as a __hash__ of the class's own.
        explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
        if not explicit_hash:
            methods["__hash__"] = _make_hash(key) if frozen else None
    if frozen:
        methods["__setattr__"], methods["__delattr__"] = _frozen_methods(frozenset(shown))
        if slots:
            # copy and pickle set slots with setattr, which a frozen record refuses.
            methods["__getstate__"] = _slots_getstate
            methods["__setstate__"] = _slots_setstate

    if slots:
        dropped = {"__dict__", "__weakref__", *shown}
        body = {name: value for name, value in own.items() if name not in dropped}
        body["__slots__"] = shown
        body["__qualname__"] = cls.__qualname__
        cls = type(cls.__name__, cls.__bases__, body)
    else:
        for name, spec in fields:
            # Class attributes would shadow nothing, but a Field left there
            # would be read as the value of a field __post_init__ did not set.
            if isinstance(own.get(name), Field):
                if spec.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, spec.default)
    for name, method in methods.items():
        if name not in own or name == "__hash__":
            if callable(method) and method not in (_slots_getstate, _slots_setstate):
                method.__qualname__ = f"{cls.__qualname__}.{name}"
                method.__module__ = cls.__module__
            setattr(cls, name, method)
    setattr(cls, "__record_fields__", tuple((name, spec.init) for name, spec in fields))  # noqa: B010
    setattr(cls, "__match_args__", tuple(name for name, spec in fields if spec.init))  # noqa: B010
    return cls


def _no_key(_record: object) -> tuple[()]:
    return ()


def _make_repr(shown: tuple[str, ...]) -> Callable[[Any], str]:
    def __repr__(self: Any) -> str:  # no guard against a record that holds itself
        inner = ", ".join(f"{name}={getattr(self, name, '<unset>')!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"

    return __repr__


def _make_eq(key: Callable[[Any], Any]) -> Callable[[Any, object], bool]:
    def __eq__(self: Any, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(key(self) == key(other))

    return __eq__


def _make_hash(key: Callable[[Any], Any]) -> Callable[[Any], int]:
    def __hash__(self: Any) -> int:
        return hash(key(self))

    return __hash__


def _frozen_methods(
    fields: frozenset[str],
) -> tuple[Callable[[Any, str, object], None], Callable[[Any, str], None]]:
    """``__setattr__`` and ``__delattr__`` of a frozen record: as dataclasses,
    refused for its fields, and for any name on the record class itself (a
    plain subclass may set names of its own)."""

    def __setattr__(self: Any, name: str, value: object) -> None:
        if name in fields or "__record_fields__" in type(self).__dict__:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        _set(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if name in fields or "__record_fields__" in type(self).__dict__:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    return __setattr__, __delattr__


def _slots_getstate(self: Any) -> dict[str, Any]:
    return {name: getattr(self, name) for name in type(self).__slots__ if hasattr(self, name)}


def _slots_setstate(self: Any, state: dict[str, Any]) -> None:
    for name, value in state.items():
        _set(self, name, value)


@overload
def record(cls: type[T], /) -> type[T]: ...
@overload
def record(
    *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field,))
def record(
    cls: type[T] | None = None, /, *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> type[T] | Callable[[type[T]], type[T]]:
    """``@record`` or ``@record(frozen=..., slots=..., eq=...)``: as ``@dataclass``."""

    def wrap(cls: type[T]) -> type[T]:
        return _build(cls, frozen, slots, eq)

    return wrap if cls is None else wrap(cls)


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of record ``obj`` with ``changes`` (as :func:`dataclasses.replace`)."""
    fields: tuple[tuple[str, bool], ...] | None = getattr(type(obj), "__record_fields__", None)
    if fields is None:
        raise TypeError("replace() should be called on record instances")
    arguments: dict[str, Any] = {}
    for name, init in fields:
        if not init:
            if name in changes:
                raise ValueError(f"field {name!r} is set by __post_init__, not by replace()")
            continue
        arguments[name] = changes.pop(name) if name in changes else getattr(obj, name)
    if changes:
        raise TypeError(f"{type(obj).__name__} has no field {', '.join(map(repr, changes))}")
    return type(obj)(**arguments)
