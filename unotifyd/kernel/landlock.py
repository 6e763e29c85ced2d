"""Landlock (landlock(7)): the kernel-enforced backstop under the seccomp rules.

Some rules cannot be kept by a supervisor alone. An exec is never performed
for the program (there is no way to run a file *for* another process), so
the supervisor checks the path and lets the kernel run the call, and the
kernel reads the path again: a second thread, a ``MAP_SHARED`` page or a
symlink renamed meanwhile makes it run another file. Landlock is an LSM on
the task's credentials: it checks ``LANDLOCK_ACCESS_FS_EXECUTE`` on the file
the kernel actually opens for the exec (``hook_file_open`` with
``__FMODE_EXEC``, security/landlock/fs.c), by identity and with no race,
io_uring and ``execveat`` of any fd included.

The ruleset is built where the program is started, before its seccomp
filter is loaded (the daemon's client builds its own), and is made the
program's with one ``landlock_restrict_self`` in :meth:`PreparedFilter.install
<unotifyd.kernel.filter.PreparedFilter.install>`. Its fd is close-on-exec
(landlock_create_ruleset(2)), so the program never holds it.

Landlock can only allow: a ruleset handles some accesses and grants them
beneath chosen files. So it can back an exec allow-list, and nothing that
takes away from a tree (a deny rule, a read-only tree): those stay the
supervisor's alone (see README, threat model).
"""

from __future__ import annotations

import ctypes
import os
import stat

from . import abi
from .rawsys import libc_syscall, syscall

# ``launch --daemon`` imports this module: no typing at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# include/uapi/linux/landlock.h
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
ACCESS_FS_EXECUTE = 1 << 0
SCOPE_SIGNAL = 1 << 1
#: The first ABI version with ``scoped`` (Linux 6.12).
SCOPE_ABI = 6


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr. A kernel older than a field accepts the
    # whole struct as long as the fields it does not know are zero
    # (copy_struct_from_user), so the full size is always passed.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # struct landlock_path_beneath_attr is __attribute__((packed))
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def abi_version() -> int:
    """The running kernel's Landlock ABI version; 0 if it has none or it is disabled."""
    try:
        return syscall(abi.SYS_LANDLOCK_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    except OSError:
        return 0  # ENOSYS, or EOPNOTSUPP when Landlock is not among the LSMs


def _split(pattern: str) -> tuple[str, bool]:
    """``/t/**`` -> (``/t``, tree); ``/p`` -> (``/p``, exact)."""
    if pattern == "/**":
        return "/", True
    if pattern.endswith("/**"):
        return pattern[:-3], True
    return pattern, False


def _add_beneath(ruleset: int, path: str, access: int, *, file_only: bool) -> bool:
    """Grant ``access`` beneath ``path`` (the file itself if ``file_only``); False if
    there is nothing there to grant.

    A rule names a file, not a path: a path with nothing there yet grants
    nothing (never the directory above it, which would allow more than the
    rule: :func:`missing` says so at start). Only an absolute path counts.
    """
    if not path.startswith("/"):
        return False
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if file_only and not stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # an exact rule or a loader on a directory: not a tree
        attr = _PathBeneathAttr(access, fd)
        try:
            syscall(abi.SYS_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, bytes(attr), 0)
        except OSError as e:
            raise OSError(e.errno, f"landlock_add_rule {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    return True


def missing(exec_allowed: Sequence[str]) -> list[str]:
    """The patterns of ``exec_allowed`` that name nothing now (so no exec there)."""
    out = []
    for pattern in exec_allowed:
        path, tree = _split(pattern)
        try:
            st = os.stat(path)
        except OSError:
            out.append(pattern)
            continue
        if not tree and not stat.S_ISREG(st.st_mode):
            out.append(pattern)
    return out


def _elf_interpreter(path: str) -> str | None:
    """The loader an ELF executable names (``PT_INTERP``, elf(5)), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:5] != b"\x7fELF\x02" or head[5] != 1:  # 64-bit little-endian only
                return None
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                entry = table[i * phentsize : (i + 1) * phentsize]
                if int.from_bytes(entry[0:4], "little") == 3:  # PT_INTERP
                    offset = int.from_bytes(entry[8:16], "little")
                    size = int.from_bytes(entry[32:40], "little")
                    f.seek(offset)
                    # The kernel opens it as a C string: up to its first NUL
                    # (load_elf_binary() in fs/binfmt_elf.c).
                    return f.read(size).partition(b"\0")[0].decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return None


#: Where distributions put the dynamic loader (Debian's multiarch directories
#: are found below /lib and /usr/lib).
_LOADER_DIRS = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32")


def _entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except OSError:
        return []


def loaders(exact: Iterable[str]) -> list[str]:
    """The dynamic loaders an exec allow-list must let the kernel open.

    The kernel opens a binary's ``PT_INTERP`` as it opens the binary, with
    ``__FMODE_EXEC`` (fs/binfmt_elf.c), so Landlock asks for EXECUTE on the
    loader too; the seccomp check never sees it. These are the system's
    ``ld-*.so*`` files and the loaders named by the allow-list's exact paths.
    """
    dirs = list(_LOADER_DIRS)
    for top in ("/lib", "/usr/lib"):
        dirs += [e.path for e in _entries(top) if "-linux-" in e.name and e.is_dir()]
    found = {
        e.path for d in dirs for e in _entries(d) if e.name.startswith("ld") and ".so" in e.name
    }
    found.update(i for i in map(_elf_interpreter, exact) if i is not None and i.startswith("/"))
    return sorted(found)


def make_ruleset(exec_allowed: Sequence[str] | None, scope_signals: bool, version: int) -> int:
    """Build the ruleset; return its fd (close-on-exec, the caller's to close).

    ``exec_allowed``: the patterns (``/tree/**``, ``/file``) exec is allowed
    for (None: exec is not restricted); ``scope_signals``: the program may
    not signal a process outside its domain (ABI 6). ``version`` is :func:`abi_version`; asking
    for what it lacks is the caller's mistake (:func:`unavailable` says what
    to drop). Raises OSError.
    """
    attr = _RulesetAttr(
        ACCESS_FS_EXECUTE if exec_allowed is not None else 0,
        0,
        SCOPE_SIGNAL if scope_signals and version >= SCOPE_ABI else 0,
    )
    try:
        fd = syscall(abi.SYS_LANDLOCK_CREATE_RULESET, bytes(attr), ctypes.sizeof(attr), 0)
    except OSError as e:
        raise OSError(e.errno, f"landlock_create_ruleset: {e.strerror}") from None
    try:
        if exec_allowed is not None:
            exact = []
            for pattern in exec_allowed:
                path, tree = _split(pattern)
                _add_beneath(fd, path, ACCESS_FS_EXECUTE, file_only=not tree)
                if not tree:
                    exact.append(path)
            for loader in loaders(exact):
                _add_beneath(fd, loader, ACCESS_FS_EXECUTE, file_only=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ruleset_for(exec_allowed: Sequence[str] | None, scope_signals: bool) -> int:
    """The ruleset fd for what this kernel can keep of the wish (ours to close), or -1.

    What the kernel's Landlock cannot do is left out; :func:`unavailable`
    gives the lines that say so. Raises OSError.
    """
    version = abi_version()
    if version < 1:
        return -1
    scope = scope_signals and version >= SCOPE_ABI
    if exec_allowed is None and not scope:
        return -1
    return make_ruleset(exec_allowed, scope, version)


def restrict_self(ruleset: int) -> int:
    """``landlock_restrict_self``: 0, or ``-errno``, never an exception: it runs in the
    forked child, between NO_NEW_PRIVS and the filter (see PreparedFilter.install)."""
    nr = ctypes.c_long(abi.SYS_LANDLOCK_RESTRICT_SELF)
    if libc_syscall(nr, ctypes.c_long(ruleset), ctypes.c_long(0)) < 0:
        return -ctypes.get_errno()
    return 0


def unavailable(exec_restricted: bool, scope_signals: bool, version: int) -> list[str]:
    """One line per part of the backstop that ``version`` cannot give."""
    lines = []
    if exec_restricted and version < 1:
        lines.append(
            "Landlock is not available (Linux 5.13+ with lsm=landlock): the exec "
            "allow-list is kept by the supervisor alone, and a program that races "
            "its own exec can run a binary it forbids"
        )
    if scope_signals and version < SCOPE_ABI:
        lines.append(
            f"Landlock ABI {version} < {SCOPE_ABI} (Linux 6.12): the program can "
            "signal processes outside the sandbox, the supervisor included"
        )
    return lines
