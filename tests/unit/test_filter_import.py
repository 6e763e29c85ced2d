"""pyseccomp is imported without the processes its own import would start."""

from __future__ import annotations

import subprocess
import sys

# A child interpreter in which starting a process fails: pyseccomp's own
# import (ctypes.util.find_library) runs `ldconfig -p` for libc and libseccomp.
_CHILD = """
import ctypes.util, subprocess, sys
def refused(*args, **kwargs):
    raise AssertionError("a process was started: " + repr(args[:1]))
subprocess.Popen = refused
usual = ctypes.util.find_library
if sys.argv[1] == "plain":
    import pyseccomp
else:
    import threading
    from unotifyd.kernel.filter import _import_pyseccomp, compile_filter
    # From threads at once, as the daemon's compiles may be (an audit saw
    # the replacement stay in place).
    threads = [threading.Thread(target=lambda: [_import_pyseccomp() for _ in range(200)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ctypes.util.find_library is usual, "find_library left replaced"
    assert len(compile_filter(["openat"], [])) > 0
print("ok")
"""


def _child(how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, how], capture_output=True, text=True, timeout=60, check=False
    )


def test_pyseccomp_is_imported_without_starting_a_process() -> None:
    # The control: its plain import does start one.
    plain = _child("plain")
    assert plain.returncode != 0 and "a process was started" in plain.stderr, plain
    ours = _child("ours")
    assert (ours.returncode, ours.stdout) == (0, "ok\n"), ours.stderr


# Where libseccomp is not installed: a soname that does not load, and a
# find_library that finds nothing (what it answers where ldconfig -p and gcc
# know no such library).
_MISSING = """
import ctypes.util
from unotifyd.kernel import filter
filter._SONAMES["seccomp"] = "libseccomp.so.99"
usual = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "seccomp" else usual(name)
try:
    filter._import_pyseccomp()
except OSError as e:
    print(e)
"""


def test_a_missing_libseccomp_is_said_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MISSING], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout == (
        "cannot load libseccomp (Unable to find libseccomp): install libseccomp 2 "
        "(Debian: apt-get install libseccomp2)\n"
    )
