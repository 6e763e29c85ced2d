"""The program's resource limits hold for the calls the supervisor makes for it (issue 16).

``truncate(2)`` that grows a file past the caller's ``RLIMIT_FSIZE`` fails with
EFBIG and sends it SIGXFSZ (inode_newsize_ok() in fs/attr.c). The supervisor has
limits of its own: it must apply the program's. Each case runs natively first
(the control), then where the supervisor performs the call: under --enforce,
and through a tree redirect in virtualize mode; as root and as nobody.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import (
    AS_NOBODY,
    SYSTEM_PYTHON,
    describe,
    env,
    public_dir,
    py,
    run_launch,
    run_native,
)

pytestmark = pytest.mark.kernel

TRUNCATE = """
import os, resource, signal, sys
signal.signal(signal.SIGXFSZ, lambda *a: print("SIGXFSZ"))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
for size in (2 << 20, 512 << 10, 3 << 20):
    try:
        os.truncate(sys.argv[1], size)
        print("truncate", size, "OK")
    except OSError as e:
        print("truncate", size, e.strerror)
    # Past the limit but not growing the file: no limit applies.
    if size == 512 << 10:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, resource.RLIM_INFINITY))
print("size", os.stat(sys.argv[1]).st_size)
"""

EXPECTED = (
    "SIGXFSZ\ntruncate 2097152 File too large\ntruncate 524288 OK\n"
    "SIGXFSZ\ntruncate 3145728 File too large\nsize 524288\n"
)


@pytest.fixture
def top() -> Iterator[Path]:
    with public_dir("unotifyd-limits-") as d:
        yield d


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_truncate_past_the_programs_file_size_limit(top: Path, who: str) -> None:
    prefix = (*AS_NOBODY, "--") if who == "nobody" else ()
    python = SYSTEM_PYTHON if who == "nobody" else sys.executable
    for name in ("native", "enforce", "tree"):
        (top / name).mkdir(mode=0o777)
        (top / name).chmod(0o777)
        (top / name / "f").touch()
        (top / name / "f").chmod(0o666)
    argv = [*prefix, *py(TRUNCATE)]
    argv[len(prefix)] = python
    native = run_native([*argv, str(top / "native" / "f")])
    assert native.stdout == EXPECTED, describe(native)
    enforced = run_launch(
        "--enforce", "--deny", "/nonexistent", argv=[*argv, str(top / "enforce" / "f")]
    )
    assert enforced.stdout == EXPECTED, describe(enforced)
    tree = run_launch(
        "--redirect", f"{top}/view/**={top}/tree/**", argv=[*argv, str(top / "view" / "f")]
    )
    assert tree.stdout == EXPECTED, describe(tree)


#: Root without capabilities (none to raise RLIMIT_NOFILE back with, either).
WITHOUT_CAPS = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")

#: A program's lines that fill its fd table up to an RLIMIT_NOFILE of 32.
FILL_TABLE = """
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("filled", errno.errorcode[e.errno])
"""

#: Fill the fd table up to RLIMIT_NOFILE, then open for making and for
#: truncating. The stats before and after give the pass-through lane the calls
#: (it takes a listener back once Python has answered a few).
FULL_TABLE = """
import errno, os, resource, sys, time
where = sys.argv[1]
def lane():
    for _ in range(3000):
        os.stat("/")
lane()
fifo = os.path.join(where, "fifo")
writer = os.fork()
if writer == 0:  # waits for a reader
    os.write(os.open(fifo, os.O_WRONLY), b"hi")
    os._exit(0)
""" + FILL_TABLE + """
lane()
for name, flags in (("new", os.O_CREAT), ("kept", os.O_TRUNC), ("kept", os.O_CREAT | os.O_TRUNC)):
    try:
        os.open(os.path.join(where, name), os.O_WRONLY | flags, 0o644)
        print(name, "opened")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
try:
    os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # would release the writer
    print("fifo opened")
except OSError as e:
    print("fifo", errno.errorcode[e.errno])
time.sleep(0.2)
print("writer waits", os.waitpid(writer, os.WNOHANG) == (0, 0))
for fd in held:
    os.close(fd)
reader = os.open(fifo, os.O_RDONLY)
os.waitpid(writer, 0)
os.close(reader)
"""


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
@pytest.mark.parametrize("lane", ["lane", "python"])
def test_a_full_fd_table_fails_an_open_before_it_acts(
    top: Path, who: str, lane: str
) -> None:
    """At RLIMIT_NOFILE an open fails with EMFILE before it looks at its path
    (do_sys_openat2() takes the fd first): nothing is made, nothing
    truncated, no FIFO's writer released. The supervisor makes the open
    first and gives the fd after, so it asks first whether the program has
    a number left (its /proc/TID/limits and fd directory), in Python and in
    the pass-through lane (which makes opens with O_CREAT for a root
    program). Before, the file was made or truncated, the writer released,
    and the program told EMFILE."""
    prefix = {"root": (), "root-nocaps": (*WITHOUT_CAPS, "--"), "nobody": (*AS_NOBODY, "--")}[who]
    launch_env = env({"UNOTIFYD_PASSTHROUGH": "0"} if lane == "python" else None)
    answers: dict[str, subprocess.CompletedProcess[str]] = {}
    for name in ("native", "enforce", "tree", "opens"):
        (top / name).mkdir(mode=0o777)
        (top / name).chmod(0o777)
        (top / name / "kept").write_text("data\n")
        (top / name / "kept").chmod(0o666)
        os.mkfifo(top / name / "fifo", 0o666)
        (top / name / "fifo").chmod(0o666)
        argv = [*prefix, SYSTEM_PYTHON, "-c", FULL_TABLE]
        if name == "native":
            answers[name] = run_native([*argv, str(top / name)])
        elif name == "enforce":
            answers[name] = run_launch(
                "--enforce", "--deny", "/nonexistent", argv=[*argv, str(top / name)],
                env=launch_env,
            )  # fmt: skip
        else:
            # The target of a tree redirect: opened by the supervisor in
            # virtualize mode, in the full view and in the opens-only one.
            view = ("--view", "opens") if name == "opens" else ()
            answers[name] = run_launch(
                *view, "--redirect", f"{top}/view-{name}/**={top}/{name}/**",
                argv=[*argv, str(top / f"view-{name}")], env=launch_env,
            )  # fmt: skip
    want = "filled EMFILE\nnew EMFILE\nkept EMFILE\nkept EMFILE\nfifo EMFILE\nwriter waits True\n"
    assert answers["native"].stdout == want, describe(answers["native"])
    for name in ("enforce", "tree", "opens"):
        assert (answers[name].returncode, answers[name].stdout) == (0, want), describe(
            answers[name]
        )
    for name in answers:  # nothing made, nothing truncated
        assert not (top / name / "new").exists(), name
        assert (top / name / "kept").read_text() == "data\n", name


#: Opens that fail by their lookup or by a rule, tried before the table is
#: full and at it; an empty name fails in getname(), O_TMPFILE without write
#: access and O_CREAT with O_DIRECTORY in build_open_flags() (EINVAL, before
#: the lookup's ENOTDIR too), all before the fd; O_DIRECT where the file
#: cannot do it fails after it (EINVAL in do_dentry_open()).
FAILING_OPENS = """
import errno, os, resource, sys
where = sys.argv[1]
def lane():
    for _ in range(3000):
        os.stat("/")
def tries(when):
    for name, flags in (("missing", os.O_RDONLY), ("nodir/x", os.O_RDONLY),
                        ("secret", os.O_RDONLY), ("ro/f", os.O_WRONLY),
                        ("ro/new", os.O_WRONLY | os.O_CREAT), ("red", os.O_RDONLY),
                        ("", os.O_RDONLY), (".", os.O_TMPFILE | os.O_RDONLY),
                        ("reg/x", os.O_CREAT | os.O_DIRECTORY | os.O_RDWR),
                        ("/proc/version", os.O_RDONLY | os.O_DIRECT)):
        try:
            os.close(os.open(os.path.join(where, name) if name else "", flags, 0o644))
            print(when, name or "''", "opened")
        except OSError as e:
            print(when, name or "''", errno.errorcode[e.errno])
lane()
tries("room")
""" + FILL_TABLE + """
lane()
tries("full")
"""


@pytest.mark.parametrize("who", ["root", "root-nocaps", "nobody"])
@pytest.mark.parametrize("lane", ["lane", "python"])
def test_a_full_fd_table_fails_an_open_with_emfile_before_its_lookup(
    top: Path, who: str, lane: str
) -> None:
    """Natively an open at RLIMIT_NOFILE fails with EMFILE whatever its path
    would have said (do_sys_openat2() takes the fd before the lookup): a
    missing file, a missing directory, and so, under unotifyd, a denied
    file, a write in a read-only tree and a redirect to a missing target;
    only an empty name's ENOENT (getname()) and bad flags' EINVAL come
    first. With room, the
    same opens answer their own errnos (the control: the rules are in
    play). Under --enforce the supervisor answers a missing file itself (in
    the lane too), in every mode it answers the rules' errnos."""
    prefix = {"root": (), "root-nocaps": (*WITHOUT_CAPS, "--"), "nobody": (*AS_NOBODY, "--")}[who]
    launch_env = env({"UNOTIFYD_PASSTHROUGH": "0"} if lane == "python" else None)
    argv = [*prefix, SYSTEM_PYTHON, "-c", FAILING_OPENS]
    answers: dict[str, subprocess.CompletedProcess[str]] = {}
    for name in ("native", "virtualize", "enforce", "opens"):
        where = top / name
        (where / "ro").mkdir(mode=0o777, parents=True)
        for d in (where, where / "ro"):
            d.chmod(0o777)
        for f in (where / "secret", where / "ro" / "f", where / "reg"):
            f.write_text("x")
            f.chmod(0o666)
        rules = ("--deny", f"{where}/secret", "--readonly", f"{where}/ro/**",
                 "--redirect", f"{where}/red={where}/gone")  # fmt: skip
        if name == "native":
            answers[name] = run_native([*argv, str(where)])
        else:
            mode = {"virtualize": (), "enforce": ("--enforce",), "opens": ("--view", "opens")}
            answers[name] = run_launch(
                *mode[name], *rules, argv=[*argv, str(where)], env=launch_env
            )
    full = "".join(
        f"full {n} EMFILE\n" for n in ("missing", "nodir/x", "secret", "ro/f", "ro/new", "red")
    ) + "full '' ENOENT\nfull . EINVAL\nfull reg/x EINVAL\nfull /proc/version EMFILE\n"
    native = (
        "room missing ENOENT\nroom nodir/x ENOENT\nroom secret opened\nroom ro/f opened\n"
        "room ro/new opened\nroom red ENOENT\nroom '' ENOENT\nroom . EINVAL\n"
        "room reg/x EINVAL\nroom /proc/version EINVAL\nfilled EMFILE\n"
    )
    assert answers["native"].stdout == native + full, describe(answers["native"])
    ruled = (
        "room missing ENOENT\nroom nodir/x ENOENT\nroom secret EACCES\nroom ro/f EROFS\n"
        "room ro/new EROFS\nroom red ENOENT\nroom '' ENOENT\nroom . EINVAL\n"
        "room reg/x EINVAL\nroom /proc/version EINVAL\nfilled EMFILE\n"
    )
    for name in ("virtualize", "enforce", "opens"):
        proc = answers[name]
        assert (proc.returncode, proc.stdout) == (0, ruled + full), describe(proc)
