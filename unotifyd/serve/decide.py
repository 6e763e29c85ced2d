"""Deciding a trapped call: decode it, resolve its paths as the program, ask the policy.

Everything a decision rests on is read here, once: the call's arguments
and paths from the program's memory, its root, cwd and credentials from
``/proc``, and the policy with its rule paths resolved in the program's
root. Paths are resolved as the program resolves them (its credentials,
its root), so a rule is matched on the file the kernel would reach.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from functools import partial
from typing import Protocol

from ..calls.decode import (
    Memory,
    OpenCall,
    PathArg,
    PathCall,
    decode_path_call,
    int_arg,
    last_component,
    names_a_directory,
    not_a_name_errno,
    omits_both_times,
)
from ..calls.registry import MOVES_A_CWD, Syscall
from ..calls.sends import looks_up_addresses
from ..kernel import abi, binfmt
from ..kernel.creds import (
    CredentialReader,
    Credentials,
    acting_as,
    as_ourselves,
    supervisor_privileged,
)
from ..kernel.dirents import take_fd
from ..kernel.errors import BadArgument, ProgramGone
from ..kernel.opener import Start, may_create
from ..kernel.passthrough import unpin_namespaces, unpin_root
from ..kernel.program import (
    MemoryReader,
    PathResolver,
    ThroughMissing,
    below_a_magic_link,
    is_magic_link,
    proc_self_text,
)
from ..policy import (
    Continue,
    Decision,
    Deny,
    EmulateOpen,
    Fail,
    Listing,
    OpenRequest,
    Policy,
    Private,
    Redirect,
    Return,
    Rewrite,
    decide_open,
)
from ..policy.decision import open_how
from ..policy.paths import (
    EXEC_NOT_ALLOWED,
    TOO_DEEP,
    MapPath,
    OnFd,
    PathDecision,
    PathRequest,
    PerformPath,
    RefuseChange,
    Target,
    decide_on_fd,
    decide_path,
    link_out_of_read_only,
    moves_a_rule,
)
from ..policy.paths import combine as combine_paths
from ..policy.rules import hides
from ..record import replace
from .guard import beyond_reach, search_guarded, supervisors_own
from .listing import decide_listing
from .opens import open_root, our_name
from .pathwork import realpath, what_is
from .rewrite import decide_rewrite
from .served import AnyDecision, InFlight, Served
from .trace import Tracer

#: The calls that may name the socket file they send to.
_SENDS = frozenset({"sendto", "sendmsg", "sendmmsg"})

#: The roles of a path whose last component is a directory entry the call makes,
#: removes or renames (its own, never a link's target).
_ENTRY_ROLES = frozenset({"create", "remove", "replace"})

_MOVES_A_CWD = frozenset(MOVES_A_CWD)


_BEYOND_REACH = (
    "a process outside the sandbox: in its Landlock domain the program would fail the "
    "kernel's ptrace check"
)


def _guarded_by(name: str, where: str | None) -> str | None:
    """What of the resolved ``where`` the kernel's ptrace check guards for call ``name``.

    The check is made on following a magic link of another process
    (proc_pid_get_link(), proc_ns_get_link(): the resolver asks ``reach``
    of each link it follows), on reading one (proc_pid_readlink(),
    proc_ns_readlink()) and on searching a guarded directory
    (proc_fdinfo_permission(): see :func:`~unotifyd.serve.guard.search_guarded`);
    never on the last component itself, which is only looked up:
    ``lstat("/proc/1/exe")``, ``lstat("/proc/1/fd/0")`` and
    ``stat("/proc/1/fd")`` work for anyone, in a Landlock domain too
    (measured on 6.18). So the directory ``where`` lies in, where its search
    is guarded, or the link the call reads; else None.
    """
    if where is None or (name == "readlinkat" and is_magic_link(where)):
        return where
    parent = where.rsplit("/", 1)[0] or "/"
    return parent if search_guarded(parent) else None


def _open_decision(policy: Policy, call: OpenCall, resolved: str) -> Decision:
    """What ``policy`` says of ``call``, whose path resolved to ``resolved``."""
    flags = call.flags
    if names_a_directory(call.path):
        # "name/" can only be a directory (path_resolution(7)). The kernel
        # refuses to create one with open: EISDIR (open_last_lookups() in
        # fs/namei.c); otherwise whatever is opened in its stead, a
        # redirect's target too, must be a directory.
        if flags & os.O_CREAT:
            return Fail(errno.EISDIR, "O_CREAT on a name that must be a directory")
        flags |= os.O_DIRECTORY
    d = decide_open(policy, OpenRequest(call.syscall, resolved, flags, call.mode))
    if isinstance(d, EmulateOpen) and flags & ~call.flags & os.O_DIRECTORY:
        last_dot = last_component(call.path)[0] == "dot"
        return replace(d, directory_added=True, last_dot=last_dot)
    return d


class _Reach:
    """Whether ``/proc`` names are within the reach of thread ``tid`` in enforcing mode
    (see :func:`~unotifyd.serve.guard.beyond_reach`); called as the resolver's
    ``reach`` (magic links, never opened) and on the resolved name."""

    __slots__ = ("capabilities", "tid")

    def __init__(self, tid: int, capabilities: int) -> None:
        self.tid = tid
        self.capabilities = capabilities

    def __call__(self, name: str | None, opening: bool = False) -> bool:
        return not beyond_reach(name, self.tid, opening=opening, capabilities=self.capabilities)


def _reach(s: Served, p: InFlight, creds: Credentials) -> _Reach | None:
    # Only a program in a Landlock domain has the kernel refuse it processes
    # outside; enforcing mode always makes one (policy/backstop.py), but not
    # in a container (the runtime starts it), whose /proc numbers its own pid
    # namespace anyway.
    if s.policy.mode != "enforce" or p.own_root:
        return None
    return _Reach(p.notif.pid, creds.cap_eff)


def _in_a_virtual_tree(
    policy: Policy,
    e: ThroughMissing,
    creds: Credentials | None,
    scope: str | None = None,
    beneath: bool = False,
) -> str:
    """The lexical name of a path with ``..`` after a missing name, where the
    rules' trees make every name a ``..`` leaves a directory in the
    program's view; else raise ``e`` (ENOENT, as the kernel fails it: see
    ThroughMissing).

    The path is then taken as text in that tree, once each directory a
    ``..`` leaves is one the program may search: the kernel's lookup of
    ``..`` checks that right on the directory it leaves (may_lookup() in
    fs/namei.c), so ``closed/../x`` is EACCES where ``closed`` is closed
    to the program, in a tree redirect's target as on any disk. Raises
    OSError (EACCES) then.

    ``scope``: the name of the directory an openat2 with RESOLVE_BENEATH
    (``beneath``) or RESOLVE_IN_ROOT confines the lookup to. The text walk
    keeps to it as the kernel's does (follow_dotdot() in fs/namei.c): a
    ``..`` there is EXDEV under RESOLVE_BENEATH, and stays there under
    RESOLVE_IN_ROOT. Without it, ``tree/../../x`` walked out of the dirfd
    to any file (helper-43's audit).
    """
    current = e.missing
    for c in e.rest:
        if c in ("", "."):
            continue
        if c != "..":
            current = current.rstrip("/") + "/" + c
        elif scope is not None and not _strictly_below(current, scope):
            # At the dirfd (or, which cannot be, outside it): the root.
            if beneath:
                raise OSError(errno.EXDEV, "RESOLVE_BENEATH: '..' of the dirfd", current)
        elif _directory_in_view(policy, current, creds):
            current = current.rsplit("/", 1)[0] or "/"
        else:
            raise e
    return current if scope is not None else e.lexical


def _strictly_below(name: str, top: str) -> bool:
    """Whether ``name`` lies below the directory ``top`` ("/" included), not at it."""
    top = top.rstrip("/")
    return name.rstrip("/") != top and name.startswith(top + "/")


def _directory_in_view(policy: Policy, name: str, creds: Credentials | None) -> bool:
    """Whether ``name``, missing on disk, is a directory in the program's view.

    It is where a tree redirect's target or a private tree's scratch holds
    a directory at that place (looked at as the program for a target, which
    it could look at itself; a scratch directory is the program's own), and
    above such a tree's root, which the program names to reach it. A
    target's directory the program may not search raises PermissionError.
    """
    for rule in policy.rules:
        if isinstance(rule, Redirect) and rule.source.tree and rule.target.tree:
            root = rule.source.path
        elif isinstance(rule, Private) and rule.pattern.tree:
            root = rule.pattern.path
        else:
            continue
        if root != name and root.startswith(name.rstrip("/") + "/"):
            return True
    match = policy.match(name)
    if match is None:
        return False
    shown = match.rule
    try:
        if isinstance(shown, Redirect) and shown.source.tree and shown.target.tree:
            there = shown.target.join(match.suffix)
            with acting_as(creds):
                if not stat.S_ISDIR(os.stat(there).st_mode):
                    return False
                os.stat(os.path.join(there, "."))  # searching it: EACCES where closed
                return True
        if isinstance(shown, Private) and shown.pattern.tree and shown.backing is not None:
            return stat.S_ISDIR(os.stat(shown.backing + match.suffix).st_mode)
    except PermissionError:
        raise
    except OSError:
        pass
    return False


class Resolver(Protocol):
    """Resolves a program's paths as it would (:class:`~unotifyd.kernel.program.PathResolver`)."""

    def root_id(self, tid: int, /) -> tuple[int, int] | None: ...

    def resolve(
        self,
        tid: int,
        dirfd: int,
        path: bytes,
        /,
        *,
        follow: bool,
        resolve_flags: int = 0,
        own_root: bool | None = None,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
    ) -> str: ...


class CredentialSource(Protocol):
    """Reads a trapped thread's credentials (:class:`~unotifyd.kernel.creds.CredentialReader`)."""

    def read(self, tid: int, /, *, need_umask: bool = True) -> Credentials: ...


def _interpreter_of(path: str) -> list[tuple[binfmt.Kind, bytes]]:
    """The interpreters the file ``path`` names (binfmt.interpreters), read as
    ourselves; none for a file that is not regular. Raises OSError where it
    cannot be read."""
    with as_ourselves():
        look = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            return _interpreter_of_opened(look)
        finally:
            os.close(look)


def _interpreter_of_fd(tid: int, fd: int) -> list[tuple[binfmt.Kind, bytes]]:
    """:func:`_interpreter_of` the file behind the program's ``fd`` (an ``fexecve``)."""
    with as_ourselves():  # pidfd_getfd checks our real uid (creds.as_ourselves)
        try:
            look = take_fd(tid, fd)
        except BadArgument:
            return []  # no such fd: the kernel says EBADF
        try:
            return _interpreter_of_opened(look)
        finally:
            os.close(look)


def _interpreter_of_opened(look: int) -> list[tuple[binfmt.Kind, bytes]]:
    """binfmt.interpreters of our fd ``look`` (perhaps ``O_PATH``), reopened for
    reading; the caller runs this as ourselves and closes ``look``."""
    if not stat.S_ISREG(os.fstat(look).st_mode):
        return []
    # O_NONBLOCK: a mandatory lease must not stall the serving thread.
    fd = os.open(f"/proc/self/fd/{look}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return binfmt.interpreters(fd)
    finally:
        os.close(fd)


#: Errors of a look at a file that say there is no file to run there: the
#: exec fails as well, by itself (every other error fails it closed, EACCES).
_NOTHING_TO_RUN = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})

def may_refuse_what_runs(policy: Policy) -> bool:
    """Whether any rule could refuse an interpreter or loader (see
    Decider._runs_what_the_rules_refuse): else an exec needs no look at its file."""
    return (
        policy.mode == "enforce"
        or policy.has_exec_rules
        or any(isinstance(r, Deny) for r in policy.rules)
    )


def _is_o_path(tid: int, fd: int) -> bool:
    """Whether the program's ``fd`` is an ``O_PATH`` file (its ``flags:`` in
    ``/proc/TID/fdinfo/N``, proc(5)); False if that cannot be told."""
    try:
        with as_ourselves(), open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return bool(int(line.split()[1], 8) & os.O_PATH)
    except (OSError, ValueError, IndexError):
        pass
    return False


class Decider:
    """Decides calls; keeps what is worth keeping between them (the open ``/proc`` fds).

    What it reads from programs comes through ``mem``, ``resolver`` and
    ``creds``: the kernel's by default, fakes in tests (tests/unit/test_dispatch.py).
    """

    def __init__(
        self,
        tracer: Tracer,
        *,
        mem: Memory | None = None,
        resolver: Resolver | None = None,
        creds: CredentialSource | None = None,
    ) -> None:
        self.tracer = tracer
        self._reader: MemoryReader | None = None  # ours to close
        if mem is None:
            mem = self._reader = MemoryReader()
        self.mem: Memory = mem
        self.resolver: Resolver = resolver or PathResolver()
        self.creds: CredentialSource = creds or CredentialReader()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.forget_threads()

    def forget_threads(self) -> None:
        """Close what is kept of programs' threads (the kernel's reader keeps pidfds)."""
        close_creds = getattr(self.creds, "close", None)
        if close_creds is not None:
            close_creds()

    def decide(self, s: Served, p: InFlight) -> AnyDecision:
        """Decode the call of ``p`` (its :attr:`~InFlight.syscall` known) and decide it."""
        entry = p.syscall
        assert entry is not None
        # Which threads may not have moved their cwd yet (see Served.unsettled).
        if s.unsettled:
            s.unsettled.discard(p.notif.pid)
        if entry.name in _MOVES_A_CWD:
            s.moved_cwd(p.notif.pid)
        if s.refuse_all is not None:
            return Fail(errno.EACCES, s.refuse_all)
        operation = entry.operation
        try:
            if operation.kind == "root":
                # Let through; roots (and namespaces: setns) are looked up for
                # every call from now on, by the lane too (before the call is
                # let through: the thread moves only once it is).
                s.root_pinned = False
                s.namespaces_pinned = False
                if s.lane_config is not None:
                    unpin_root(s.lane_config)
                    unpin_namespaces(s.lane_config)
                return Continue("a call that may change the program's root")
            if operation.kind == "namespace":
                s.namespaces_pinned = False
                if s.lane_config is not None:
                    unpin_namespaces(s.lane_config)
                return Continue("a call that may move a thread to another namespace")
            if operation.kind == "cwd":
                return Continue("the cwd moves to a directory the program holds")
            if operation.kind == "open":
                return self._decide_open(s, p, entry)
            if operation.kind == "listing":
                return self._decide_listing(s, p, entry)
            return self._decide_path_call(s, p, entry)
        except BadArgument as e:
            return Fail(e.errno, str(e))

    def _creating_a_directory_name(
        self, s: Served, p: InFlight, call: OpenCall, policy: Policy, creds: Credentials
    ) -> Fail | None:
        """The kernel's answer to ``O_CREAT`` on a name that can only be a
        directory; None for any other name.

        open_last_lookups() and do_open() (fs/namei.c): a name followed by
        ``/`` is EISDIR once its parent is found, without a look at the
        name itself; ``.``, ``..`` and ``/`` are looked up as any path, then
        ``O_EXCL`` says EEXIST, and anything else EISDIR. What the lookup
        meets first (ENOENT, ENOTDIR, EACCES) answers before either.
        """
        kind, slash = last_component(call.path)
        if kind == "name" and not slash:
            return None
        path = call.path
        if kind == "name":
            parent = call.path.rstrip(b"/").rpartition(b"/")[0]
            path = parent or (b"/" if call.path.startswith(b"/") else b".")
        try:
            where = self._resolve(
                p, call.dirfd, path, policy, follow=True, resolve_flags=call.resolve, creds=creds
            )
        except OSError as e:
            return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
        denied = decide_open(policy, OpenRequest(call.syscall, where, os.O_RDONLY, 0))
        if isinstance(denied, Fail):
            return denied  # A deny answers first, telling nothing of what is there.
        if kind == "name":
            return Fail(errno.EISDIR, "O_CREAT on a name followed by '/'")
        try:
            start = self._start(s, p, call.dirfd, call.path)
            self._must_be_directory(p, where, creds, start)  # "missing/." is ENOENT
        except OSError as e:
            return Fail(e.errno or errno.ENOENT, "no directory there")
        if call.flags & os.O_EXCL:
            return Fail(errno.EEXIST, "O_CREAT | O_EXCL on '.', '..' or '/'")
        return Fail(errno.EISDIR, "O_CREAT on '.', '..' or '/'")

    def _below_a_nameless_link(self, p: InFlight, path: str) -> Fail | None:
        """The kernel's answer for a name inside a file without a name, or None.

        The resolver names what lies in a removed directory (a removed cwd
        or dirfd) through its magic link, ``/proc/PID/cwd/x``; and a file
        without a name can be nothing but a removed directory or no
        directory at all. A removed directory holds no names, and none can
        be made in it (IS_DEADDIR: ENOENT, fs/namei.c); anything else is no
        directory (ENOTDIR). So the answer is known without an act, and
        none is made: what the link leads to is the program's to change
        (``fchdir``, ``dup2``) before an act of ours could follow it.
        """
        link = below_a_magic_link(path)
        if link is None:
            return None
        try:
            directory = self._leads_to_a_directory(p, link)
        except OSError as e:
            return Fail(e.errno or errno.ENOENT, "nothing behind the link")
        if directory:
            return Fail(errno.ENOENT, "in a removed directory")
        return Fail(errno.ENOTDIR, "not a directory")

    @staticmethod
    def _leads_to_a_directory(p: InFlight, link: str) -> bool:
        """Whether the program's magic ``link`` leads to a directory. Its own
        ``/proc``, looked into as ourselves (see as_ourselves). Raises OSError."""
        root_tid = p.notif.pid if p.own_root else None
        with as_ourselves():
            return stat.S_ISDIR(os.stat(our_name(link, root_tid)).st_mode)

    def _must_exist(
        self, p: InFlight, path: str, creds: Credentials, start: Start | None = None
    ) -> str:
        """What ``path`` is ("file" or "dir"), looked at as the program looks
        (from ``start`` where the root is refused it, see what_is); raises
        OSError (ENOENT...) if nothing is there."""
        root_fd = open_root(p.notif.pid if p.own_root else None)
        try:
            with acting_as(creds):
                found = what_is(path, root_fd, start)
        finally:
            if root_fd is not None:
                os.close(root_fd)
        if found in ("missing", "no-parent"):
            raise OSError(errno.ENOENT, "no such file or directory")
        return found

    def _decide_open(self, s: Served, p: InFlight, entry: Syscall) -> Decision:
        n = p.notif
        decode = entry.operation.open_decoder
        assert decode is not None
        try:
            call = p.call = decode(self.mem, n, entry.name, entry.args_of(n.args))
            root = self._root_id(s, p)
            p.own_root = root is not None
            if s.policy.mode != "enforce" and self._looks_as_the_program(p):
                quick = self._quick_open(s, p, call, root)
                if quick is not None:
                    return quick
            how = open_how(call.syscall, call.flags, call.mode)
            if isinstance(how, str):
                # build_open_flags() (fs/open.c) refuses them before the
                # path is looked at and the fd taken: EINVAL, whatever the
                # lookup or a full fd table would say.
                return Fail(errno.EINVAL, f"{call.syscall}: {how}")
            creds = p.creds = self.program_creds(p, need_umask=may_create(call.flags))
            reach = _reach(s, p, creds)
            policy = p.policy = self._policy_in(s, root, n.pid)
            if call.flags & os.O_CREAT and names_a_directory(call.path):
                odd = self._creating_a_directory_name(s, p, call, policy, creds)
                if odd is not None:
                    return odd
            resolved = p.resolved = self._look_up_open(
                p, call, policy, creds=creds, reach=reach
            )  # fmt: skip
            below = self._below_a_nameless_link(p, resolved)
            if below is not None:
                return below
            if policy.has_private:
                seen = self._through_private(policy, resolved, p, call.follows_last_link)
                if seen != resolved:
                    # Where a link in a private tree leads: ours to open, never
                    # the kernel's (CONTINUE would look on the real disk).
                    resolved = p.resolved = seen
                    policy = policy.enforcing()
            if p.through_view:
                # The same for a name reached through such a tree's "..".
                policy = policy.enforcing()
            if supervisors_own(resolved) and not p.own_root:
                return Fail(errno.EACCES, "the supervisor's own /proc entries")
            # An open that does not follow its last link and is no O_PATH
            # fails on a link (ELOOP, may_open()) or on O_EXCL (EEXIST)
            # before anything of the process is asked: proc_pid_get_link()'s
            # ptrace check only guards following it.
            itself = not call.follows_last_link and not call.flags & os.O_PATH
            guarded = not (itself and is_magic_link(resolved))
            if reach is not None and guarded and not reach(resolved, True):
                return Fail(errno.EACCES, _BEYOND_REACH)
        except BadArgument as e:
            return Fail(e.errno, str(e))
        except OSError as e:
            # The path cannot be resolved (ENOTDIR, ELOOP, EBADF...): the
            # kernel would fail the call the same way.
            return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
        return _open_decision(policy, call, resolved)

    def _look_up_open(
        self,
        p: InFlight,
        call: OpenCall,
        policy: Policy,
        *,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
    ) -> str:
        """Resolve an open's path as the program would (with ``creds``; ours if None)."""
        return self._resolve(
            p, call.dirfd, call.path, policy, follow=call.follows_last_link,
            resolve_flags=call.resolve, creds=creds, reach=reach,
        )  # fmt: skip

    def _resolve(
        self,
        p: InFlight,
        dirfd: int,
        path: bytes,
        policy: Policy,
        *,
        follow: bool,
        resolve_flags: int = 0,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
    ) -> str:
        """``path`` resolved as the program would (with ``creds``; ours if
        None), in its view: a ``..`` after a missing name is looked at in
        the rules' trees (see _in_a_virtual_tree). Raises OSError."""
        try:
            resolved = self.resolver.resolve(
                p.notif.pid, dirfd, path, follow=follow, resolve_flags=resolve_flags,
                own_root=p.own_root, creds=creds, reach=reach,
            )  # fmt: skip
        except ThroughMissing as e:
            if not resolve_flags & (abi.RESOLVE_BENEATH | abi.RESOLVE_IN_ROOT):
                where = _in_a_virtual_tree(policy, e, creds)
            else:
                scope = self._scope(p, dirfd)
                if scope is None:
                    raise  # no name to keep to: ENOENT, fail closed
                beneath = bool(resolve_flags & abi.RESOLVE_BENEATH)
                where = _in_a_virtual_tree(policy, e, creds, scope, beneath)
            p.through_view = True
            return where
        except OSError as e:
            if e.errno == errno.ENOTDIR and policy.has_hidden:
                self._hidden_on_the_way(p, dirfd, path, policy, creds)
            raise
        if policy.has_hidden and b".." in path:
            # "hidden/..": the name is taken back, not what it leads to.
            self._hidden_on_the_way(p, dirfd, path, policy, creds)
        return resolved

    def _hidden_on_the_way(
        self, p: InFlight, dirfd: int, path: bytes, policy: Policy, creds: Credentials | None
    ) -> None:
        """Raise ENOENT where ``path`` goes through a name a deny with ENOENT
        hides (``hidden/``, ``hidden/x``, ``hidden/..``).

        Natively nothing is there, so a lookup through the name finds
        nothing (ENOENT); ours found what the rule hides, and failed as for
        a file (ENOTDIR) or took ``..`` back out of it, which would tell the
        program it exists. Each prefix that a ``/`` follows is looked up as
        the program's walk would, until one fails or one is hidden.
        """
        for i in range(1, len(path)):
            if path[i] != ord("/") or path[i - 1] == ord("/"):
                continue
            try:
                where = self.resolver.resolve(
                    p.notif.pid, dirfd, path[:i], follow=True, own_root=p.own_root, creds=creds
                )
            except OSError:
                return  # The walk fails before: as it does.
            match = policy.match(where)
            if match is not None and hides(match.rule):
                raise OSError(errno.ENOENT, "no such file or directory (hidden)")

    def _quick_open(
        self, s: Served, p: InFlight, call: OpenCall, root: tuple[int, int] | None
    ) -> Continue | None:
        """CONTINUE for an open no rule governs, decided on a lookup of ours.

        Virtualizing mode only, where CONTINUE lets the kernel make the call
        as the program, and only where our lookup is the program's
        (:meth:`_looks_as_the_program`). What takes a rule, a private tree,
        or a path we cannot resolve goes the full way (None). Spares the
        rest of the full way, which an unprivileged supervisor can skip
        without reading the program's credentials at all.
        """
        policy = self._policy_in(s, root, p.notif.pid)
        try:
            resolved = self._look_up_open(p, call, policy)
        except OSError:
            return None
        if policy.has_private or (supervisors_own(resolved) and not p.own_root):
            return None
        d = _open_decision(policy, call, resolved)
        if not isinstance(d, Continue):
            return None
        p.policy, p.resolved = policy, resolved
        return d

    def _through_private(self, policy: Policy, path: str, p: InFlight, follow: bool) -> str:
        """``path`` with the symlinks in private trees followed as a tmpfs there would.

        A private tree lives in a scratch directory of ours, where the
        program may make symlinks; the kernel would read their text in the
        program's own view (absolute: from its root; relative: from the
        link's directory as the program names it) and go on from there,
        into other rules or out to the real disk. So does this, up to the
        kernel's 40 links (ELOOP). Raises OSError as the resolver does.
        Paths without such a link come back as they are (the same object).
        """
        for _ in range(40):
            match = policy.match(path)
            rule = match.rule if match is not None else None
            if not isinstance(rule, Private) or rule.backing is None or match is None:
                return path
            parts = [c for c in match.suffix.split("/") if c]
            mine = rule.backing  # a scratch directory of ours: no link on the way
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                here = f"{mine}/{name}"
                try:
                    info = os.lstat(here)
                except OSError:
                    return path  # missing, or no directory: the call itself will say
                if not stat.S_ISLNK(info.st_mode) or (last and not follow):
                    mine = here
                    continue
                text = os.readlink(here)
                at = rule.pattern.path.rstrip("/") + mine[len(rule.backing) :]
                start = text if text.startswith("/") else f"{at or '/'}/{text}"
                rest = "/".join(parts[i + 1 :])
                path = self._resolve(
                    p,
                    abi.AT_FDCWD,
                    os.fsencode(f"{start}/{rest}" if rest else start),
                    policy,
                    follow=follow,
                    creds=p.creds,
                )
                break
            else:
                return path
        raise OSError(errno.ELOOP, "too many levels of symbolic links")

    def _looks_as_the_program(self, p: InFlight) -> bool:
        """Whether a lookup of ours succeeds or fails exactly where the program's would.

        Credentials only ever make a lookup fail (EACCES, or ENOENT in a
        /proc the program may not see), never lead it elsewhere; the
        question is whether ours could succeed where the program's fails.
        Not if they are the same credentials. Nor if we hold no capability:
        the programs of an unprivileged supervisor are its own user's, and
        without capabilities (NO_NEW_PRIVS) they cannot become stronger than
        it. (A daemon's client of our uid from another login may have other
        groups: then its answer is the same, only sooner or later; nothing is
        ever done with ours for it, see CredentialReader.read.) A privileged
        supervisor must read the program's credentials to
        know: answering CONTINUE after a lookup as root, but the full way
        after one the program could not make, would let the program time
        what lies in directories it may not search (an audit found it).
        """
        if not supervisor_privileged():
            return True
        return self.program_creds(p, need_umask=False).same_as_supervisor()

    def program_creds(self, p: InFlight, *, need_umask: bool) -> Credentials:
        """The program's credentials (with its umask if ``need_umask``), read once per call."""
        creds = p.creds
        if creds is None or (need_umask and creds.umask < 0):
            creds = p.creds = self.creds.read(p.notif.pid, need_umask=need_umask)
        return creds

    def _root_id(self, s: Served, p: InFlight) -> tuple[int, int] | None:
        """The root directory of the calling thread (:meth:`Resolver.root_id`), kept
        while pinned.

        Looked up once per listener while ``s.root_pinned`` holds (see
        Served): a stat of ``/proc/TID/root`` per call otherwise. Kept only
        if the call is still pending after the look: else the thread may
        have died and its tid gone to a process with another root, whose
        root would then stand for every program of the listener.
        """
        tid = p.notif.pid
        if not s.root_pinned:
            return self.resolver.root_id(tid)
        root = s.root
        if root == "unknown":
            root = self.resolver.root_id(tid)
            if not s.listener.id_valid(p.notif.id):
                raise ProgramGone("notification no longer valid")
            s.root = root
        return root

    def _program_policy(self, s: Served, p: InFlight) -> Policy:
        root = self._root_id(s, p)
        p.own_root = root is not None
        policy = p.policy = self._policy_in(s, root, p.notif.pid)
        return policy

    def _scope(self, p: InFlight, dirfd: int) -> str | None:
        """The name of the directory a scoped openat2 keeps to: ``dirfd``, or
        the cwd for AT_FDCWD (openat2(2)); None if it has none we can tell."""
        where = self._resolved_dir(p, dirfd)
        return where if where is not None and where.startswith("/") else None

    def _resolved_dir(self, p: InFlight, dirfd: int) -> str | None:
        """What ``dirfd`` (or the cwd) names, resolved in the program's view; None."""
        try:
            return self.resolver.resolve(p.notif.pid, dirfd, b".", follow=True, own_root=p.own_root)
        except OSError:
            return None

    def _fd_path(self, p: InFlight, fd: int) -> str | None:
        """The program's name for the file its ``fd`` refers to, or None if it has none."""
        where = self._resolved_dir(p, fd)
        if where is not None:
            return where
        try:
            text = os.readlink(f"/proc/{p.notif.pid}/fd/{fd}")
        except FileNotFoundError:
            return None  # Not open: the call fails with EBADF by itself.
        except ProcessLookupError:
            raise ProgramGone("thread is gone") from None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                return TOO_DEEP  # A file below PATH_MAX's reach (a directory has a name).
            raise
        # Sockets, pipes, anonymous inodes, deleted files: no path rule applies.
        if not text.startswith("/") or text.endswith(" (deleted)"):
            return None
        return text

    def _decide_path_call(
        self, s: Served, p: InFlight, entry: Syscall
    ) -> Continue | Fail | Return | Rewrite | PerformPath:
        """Decide a path call other than an open (see :mod:`unotifyd.policy.paths`)."""
        n = p.notif
        operation = entry.operation
        policy = self._program_policy(s, p)
        looks_up = True
        if entry.op in _SENDS:
            # The kernel finds the socket before it reads anything of the call
            # (sockfd_lookup_light() in __sys_sendto()/___sys_sendmsg(),
            # net/socket.c): EBADF and ENOTSOCK answer before any EFAULT.
            found = self._sends_through(p, int_arg(entry.args_of(n.args)[0]))
            if not isinstance(found, bool):
                return Fail(found, "not an open socket")
            looks_up = found
            if not looks_up and policy.mode != "enforce":
                # No lookup of the path will be made, so neither the rules
                # nor our lookup have a say: the kernel refuses or ignores
                # the address, in its own order (a stream socket's
                # EOPNOTSUPP before a bad buffer's EFAULT).
                return Continue("a socket that never looks its address up")
        inputs = entry.inputs or operation.inputs
        if entry.name == "utimensat" and omits_both_times(self.mem, n.pid, entry.args_of(n.args)):
            # Before anything is read or looked up, as the kernel answers it:
            # no rule has a say on a call that changes nothing (a read-only
            # mount's too: 0, not EROFS).
            return Return(0, "utimensat: both times UTIME_OMIT, nothing to do")
        call = decode_path_call(
            self.mem,
            n,
            entry.name,
            entry.op,
            entry.args_of(n.args),
            specs=entry.paths or operation.paths,
            inputs=inputs,
        )
        p.call = call
        name = call.op
        if name in _SENDS and not looks_up and not call.paths[0].itself:
            # Enforcing mode (see above): made on our copy, which the
            # decision holds to (sends.py), from what we read.
            return PerformPath((OnFd(int_arg(call.args[0])),), recheck=True)
        if (
            policy.mode != "enforce"
            and operation.kind == "path"
            and not policy.has_private
            and self._looks_as_the_program(p)
        ):
            quick = self._quick_path_call(p, call, policy)
            if quick is not None:
                return quick
        creds = p.creds = self.program_creds(p, need_umask=operation.uses_umask)
        enforce = policy.mode == "enforce"
        reach = _reach(s, p, creds)
        decisions: list[PathDecision] = []
        resolved: list[str | None] = []
        # rename(2) refuses ".", ".." or "/" as either name before it looks
        # either up (do_renameat2(): EBUSY).
        odd_rename = name == "renameat2" and any(
            last_component(a.path)[0] != "name" for a in call.paths
        )
        for arg in call.paths:
            where: str | None
            via_private = False
            names_entry = arg.role in _ENTRY_ROLES and not arg.itself
            kind, slash = last_component(arg.path) if names_entry else ("name", False)
            on_fd = arg.itself and arg.dirfd != abi.AT_FDCWD
            if arg.itself:
                # The call is about a file the program has open (or its cwd):
                # no name is looked up (see decide_on_fd).
                if arg.dirfd == abi.AT_FDCWD:
                    where = self.resolver.resolve(
                        n.pid, abi.AT_FDCWD, b".", follow=True, own_root=p.own_root
                    )
                else:
                    where = self._fd_path(p, arg.dirfd)
            else:
                try:
                    # "x/." and "x/..": x is no last component, so a link
                    # there is followed whatever the call (a dangling one: ENOENT).
                    where = self._look_up(
                        p, arg, slash, policy, creds=creds, reach=reach, follow=kind != "name"
                    )
                    if policy.has_private:
                        seen = self._through_private(policy, where, p, arg.follow)
                        if seen != where:
                            where, via_private = seen, True
                except OSError as e:
                    # The kernel fails the call the same way (ENOTDIR, ELOOP, EBADF...).
                    return Fail(e.errno or errno.EINVAL, f"cannot resolve path: {e.strerror}")
            if supervisors_own(where, opening=False) and not p.own_root:
                return Fail(errno.EACCES, "the supervisor's own /proc entries")
            if reach is not None and not reach(_guarded_by(name, where), False):
                return Fail(errno.EACCES, _BEYOND_REACH)
            below = None if on_fd or where is None else self._below_a_nameless_link(p, where)
            if below is not None and not odd_rename:
                return below
            resolved.append(where)
            # "dir/.", "a/..", "/": the kernel looks the directory up, then
            # refuses (do_rmdir()...); made on the resolved directory, the
            # call would remove or move it. A deny of that directory answers
            # first, telling nothing of it.
            if (
                kind != "name"
                and where is not None
                and not isinstance(decide_path(policy, PathRequest(name, "read", where)), Fail)
            ):
                try:
                    if name == "linkat" and resolved[0] is not None and len(resolved) == 2:
                        # link(2) looks its existing name up first.
                        old = self._start(s, p, call.paths[0].dirfd, call.paths[0].path)
                        self._must_exist(p, resolved[0], creds, old)
                    start = self._start(s, p, arg.dirfd, arg.path)
                    self._must_be_directory(p, where, creds, start)
                except OSError as e:
                    return Fail(e.errno or errno.ENOENT, "no directory there")
                new_name = arg is not call.paths[0]
                return Fail(not_a_name_errno(call.op, call.args, kind, new_name), "not a name")
            if on_fd:
                decisions.append(decide_on_fd(policy, arg.role, where))
            elif where is None:
                decisions.append(Continue("no path"))
            else:
                # Where a link in a private tree leads: see _decide.
                deciding = policy.enforcing() if via_private or p.through_view else policy
                decisions.append(decide_path(deciding, PathRequest(name, arg.role, where)))
        p.resolved = next((r for r in resolved if r is not None), None)
        one = combine_paths(decisions)
        if operation.kind == "rewrite":
            first = decisions[0]
            if isinstance(first, Fail) and first.reason == EXEC_NOT_ALLOWED and p.resolved:
                try:
                    # As the program: whether it is there is not ours to tell.
                    with acting_as(creds):
                        os.stat(our_name(p.resolved, n.pid if p.own_root else None))
                except OSError as e:
                    return Fail(e.errno or errno.ENOENT, f"{first.reason} (and it is not there)")
            if via_private and isinstance(first, MapPath) and first.in_program_root:
                # The kernel must be given where the link leads, not the
                # program's path, which names nothing on the real disk.
                first = MapPath(first.path, reason="a link in a private tree")
            if call.op == "execveat" and not isinstance(first, Fail):
                arg = call.paths[0]
                ran = first.path if isinstance(first, MapPath) else p.resolved
                ours = isinstance(first, MapPath) and not first.in_program_root
                on_fd = arg.itself and arg.dirfd != abi.AT_FDCWD
                if ran is not None or on_fd:
                    refused = self._runs_what_the_rules_refuse(
                        p, policy, None if on_fd else ran, creds, ours=ours and not on_fd,
                        fd=arg.dirfd if on_fd else None,
                    )  # fmt: skip
                    if refused is not None:
                        return refused
            # The guard refuses an exec made while another thread shares the
            # program's memory: a Go program, or any threaded one that
            # vforks, could not run anything. That is the price of an exec
            # allow-list under enforce, which the policy asked for; a deny
            # without one keeps a program from running a denied binary
            # without racing (README, "The limits of enforcing mode").
            return decide_rewrite(call, first, enforce and policy.has_exec_rules, p.resolved)
        if isinstance(one, Fail):
            return one
        if isinstance(one, RefuseChange):
            return PerformPath((), refuse=one, resolved=tuple(resolved))
        # What the rules say about each path answers first; then what the
        # call as a whole would do to the rules' paths.
        if name == "linkat":
            out = link_out_of_read_only(policy, resolved[0], resolved[1])
            if out is not None:
                return out
        if name == "renameat2":
            moved = moves_a_rule(policy, resolved[0]) or moves_a_rule(policy, resolved[1])
            if moved is not None:
                return moved
        if isinstance(one, Continue) and (
            # Enforcing mode never has the kernel read a path again
            # (CONTINUE): a call on an fd is made on our copy of the fd,
            # unless it has no path at all (utimensat(fd, NULL),
            # newfstatat(fd, NULL, AT_EMPTY_PATH)...). Not one about the
            # cwd (a NULL path with AT_FDCWD): another thread may change
            # that before the kernel looks; it is made on the cwd resolved.
            not enforce
            or all(a.itself and a.addr == 0 and a.dirfd != abi.AT_FDCWD for a in call.paths)
        ):
            return one
        targets: list[Target] = []
        for arg, d, where in zip(call.paths, decisions, resolved, strict=True):
            own = isinstance(d, Continue) or (isinstance(d, MapPath) and d.in_program_root)
            if arg.itself and own and arg.dirfd != abi.AT_FDCWD:
                if arg.addr == 0:
                    # utimensat(fd, NULL): no path at all, nothing to re-read.
                    return Continue("no path")
                targets.append(OnFd(arg.dirfd))
            elif isinstance(d, MapPath):
                text = proc_self_text(n.pid, d.path, own_root=p.own_root)
                own_link = d.in_program_root and d.link_text is None and text is not None
                targets.append(replace(d, link_text=text) if own_link else d)
            else:
                # One path of a two-path call that no rule covers: the
                # program's own, as resolved.
                assert where is not None
                text = proc_self_text(n.pid, where, own_root=p.own_root)
                plain = not where.startswith("/proc/")
                targets.append(
                    MapPath(where, "", in_program_root=True, no_symlinks=plain, link_text=text)
                )
        return PerformPath(tuple(targets), recheck=enforce)

    def _look_up(
        self,
        p: InFlight,
        arg: PathArg,
        slash: bool,
        policy: Policy,
        *,
        creds: Credentials | None = None,
        reach: Callable[[str], bool] | None = None,
        follow: bool = False,
    ) -> str:
        """Resolve the path ``arg`` as the program would (with ``creds``; ours if None).

        A call that makes, removes or renames a directory entry acts on the
        entry itself, never on where a link there leads, trailing "/" or not
        (the kernel then checks the entry: see _place in pathwork.py): with
        ``slash``, the trailing "/" is left out of the lookup. ``follow``
        follows a last link even where the call would not.
        """
        path = (arg.path.rstrip(b"/") or arg.path) if slash else arg.path
        return self._resolve(
            p, arg.dirfd, path, policy, follow=arg.follow or follow, creds=creds, reach=reach
        )

    def _quick_path_call(self, p: InFlight, call: PathCall, policy: Policy) -> Continue | None:
        """CONTINUE for a path call no rule governs, decided on lookups of ours
        (virtualizing mode only; see :meth:`_quick_open`).

        Anything beyond a plain name (``.``, ``..``, ``/`` as the entry a call
        makes or removes), a path we cannot resolve ourselves or one a rule
        takes goes the full way (None).
        """
        resolved: list[str | None] = []
        decisions: list[PathDecision] = []
        for arg in call.paths:
            where: str | None
            if arg.itself:
                if arg.dirfd == abi.AT_FDCWD:
                    return None
                where = self._fd_path(p, arg.dirfd)
                d: PathDecision = decide_on_fd(policy, arg.role, where)
            else:
                names_entry = arg.role in _ENTRY_ROLES
                kind, slash = last_component(arg.path) if names_entry else ("name", False)
                if kind != "name":
                    return None
                try:
                    where = self._look_up(p, arg, slash, policy)
                except OSError:
                    return None
                if supervisors_own(where, opening=False) and not p.own_root:
                    return None
                d = decide_path(policy, PathRequest(call.op, arg.role, where))
            if not isinstance(d, Continue):
                return None
            resolved.append(where)
            decisions.append(d)
        if call.op == "linkat" and link_out_of_read_only(policy, resolved[0], resolved[1]):
            return None
        if call.op == "renameat2" and (
            moves_a_rule(policy, resolved[0]) or moves_a_rule(policy, resolved[1])
        ):
            return None
        one = combine_paths(decisions)
        if not isinstance(one, Continue):
            return None
        p.resolved = next((r for r in resolved if r is not None), None)
        return one

    @staticmethod
    def _sends_through(p: InFlight, fd: int) -> bool | int:
        """Whether the program's ``fd`` is a socket that looks up the path a send
        names (sends.looks_up_addresses), on our copy of it; or the errno the
        kernel fails the send with before anything else, EBADF or ENOTSOCK
        (sockfd_lookup_light() in net/socket.c). True where we cannot tell:
        the rules decide."""
        try:
            # What it is first: a copy of anything else would be ours to
            # close, and the last close of a file can wait (a FUSE flush).
            with as_ourselves():
                what = os.readlink(f"/proc/{p.notif.pid}/fd/{fd}")
        except FileNotFoundError:
            return errno.EBADF
        except ProcessLookupError:
            raise ProgramGone("thread is gone") from None
        except OSError:
            return True
        if not what.startswith("socket:"):
            # An O_PATH file is no file to fdget(): EBADF before ENOTSOCK.
            return errno.EBADF if _is_o_path(p.notif.pid, fd) else errno.ENOTSOCK
        try:
            with as_ourselves():  # pidfd_getfd checks our real uid (creds.as_ourselves)
                ours = take_fd(p.notif.pid, fd)
        except BadArgument:
            return errno.EBADF
        except OSError:
            return True
        try:
            return looks_up_addresses(ours)
        finally:
            os.close(ours)

    def _runs_what_the_rules_refuse(
        self,
        p: InFlight,
        policy: Policy,
        path: str | None,
        creds: Credentials,
        *,
        ours: bool,
        fd: int | None = None,
    ) -> Fail | None:
        """The failure for an exec of ``path`` (or of the program's ``fd``) that would
        run a file the rules refuse; or None.

        The kernel opens more than the file named: a ``#!`` script's
        interpreter (binfmt_script) and a dynamic binary's loader
        (``PT_INTERP``, binfmt_elf), by their names, with no call of the
        program's to trap (see :mod:`unotifyd.kernel.binfmt`). exec_binprm()
        (fs/exec.c) lets five such rewrites happen and then maps the last
        binary's loader, so up to six files are read. Each name is looked up
        as the program's exec would look it up and decided as an exec of its
        own: a denied one fails the exec with the deny's errno, an
        interpreter no exec rule allows with EACCES (a loader is exempt:
        every dynamic binary needs one, and the Landlock ruleset grants the
        system's), and under ``--enforce`` so does one a rule shows as
        another file, since the kernel would run the real one. Under
        ``--enforce`` a redirect's target itself is decided again first, by
        where it really leads (a symlink planted in a target tree), as opens
        are (opens.perform_open). A file run through its fd (``fexecve``) is
        the program's own, but what it names is not: it is read too.

        The files are read as ourselves: the kernel reads a file it runs
        whether or not the program may (an execute-only binary), and a file
        we cannot read fails the exec closed (EACCES). A file can change
        between this look and the exec (a script the program may write, a
        symlink swapped): README's "The limits of enforcing mode" says so.
        """
        if not may_refuse_what_runs(policy):
            return None
        root_tid = p.notif.pid if p.own_root else None
        if policy.mode == "enforce" and ours and path is not None:
            with acting_as(creds):
                real = realpath(path)
            if real is None:
                return Fail(errno.ELOOP, "exec: a redirect's target is a symlink loop")
            # As for opens, a target is not redirected again: only what would
            # deny it counts (and exec rules grant the targets of what they allow).
            d = decide_path(policy, PathRequest("execveat", "exec", real))
            if isinstance(d, Fail) and d.reason != EXEC_NOT_ALLOWED:
                return Fail(d.errno, f"exec: the redirect's target {real}: {d.reason}")
        for _ in range(6):
            try:
                if fd is not None:
                    found = _interpreter_of_fd(p.notif.pid, fd)
                    fd = None
                else:
                    assert path is not None
                    # A redirect's target is a path of ours; interpreters are the program's.
                    found = _interpreter_of(path if ours else our_name(path, root_tid))
            except OSError as e:
                if e.errno in _NOTHING_TO_RUN:
                    return None  # the kernel fails the exec itself, with that errno
                return Fail(errno.EACCES, f"exec: cannot read what the exec runs: {e.strerror}")
            ours = False
            path = None
            for kind, name in found:
                try:
                    where = self.resolver.resolve(
                        p.notif.pid, abi.AT_FDCWD, name, follow=True, own_root=p.own_root,
                        creds=creds,
                    )  # fmt: skip
                except OSError:
                    continue  # the kernel fails the exec itself (ENOENT...)
                refused = self._interpreter_refused(policy, kind, where)
                if refused is not None:
                    return refused
                if kind == "script":
                    path = where
            if path is None:
                return None  # A loader is a static binary: it names nothing further.
        return None

    @staticmethod
    def _interpreter_refused(policy: Policy, kind: binfmt.Kind, path: str) -> Fail | None:
        """How the rules fail an exec whose interpreter or loader is ``path`` (see above)."""
        d = decide_path(policy, PathRequest("execveat", "exec", path))
        what = "the interpreter of a script" if kind == "script" else "the loader"
        if isinstance(d, Fail):
            if kind == "loader" and d.reason == EXEC_NOT_ALLOWED:
                return None
            return Fail(d.errno, f"exec: {what}, {path}: {d.reason}")
        if policy.mode == "enforce" and isinstance(d, MapPath) and not d.in_program_root:
            return Fail(errno.EACCES, f"exec: {what}, {path}: the rules show another file")
        return None

    def _must_be_directory(
        self, p: InFlight, path: str, creds: Credentials, start: Start | None = None
    ) -> None:
        """Raise OSError (ENOENT, ENOTDIR...) unless ``path`` is a directory, looked at as
        the program looks (see _must_exist)."""
        if is_magic_link(path):
            # A removed cwd or dirfd (see the resolver): the directory the link leads to.
            if not self._leads_to_a_directory(p, path):
                raise OSError(errno.ENOTDIR, "not a directory")
            return
        if self._must_exist(p, path, creds, start) != "dir":
            raise OSError(errno.ENOTDIR, "not a directory")

    @staticmethod
    def _start(s: Served, p: InFlight, dirfd: int, path: bytes) -> Start | None:
        """Where the program's relative ``path`` began (see Start); None for an absolute one."""
        return Start.of(p.notif.pid, dirfd, path, partial(s.listener.id_valid, p.notif.id))

    def _decide_listing(self, s: Served, p: InFlight, entry: Syscall) -> Continue | Fail | Listing:
        """A directory listing: answered by us only where the directory holds hidden names."""
        n = p.notif
        policy = self._program_policy(s, p)
        fd = int_arg(n.args[0])
        where = p.resolved = self._fd_path(p, fd) if fd >= 0 else None
        return decide_listing(policy, entry.name, where)

    def _policy_in(self, s: Served, root: tuple[int, int] | None, tid: int) -> Policy:
        """``s.policy`` with its rule paths resolved in the root of ``tid``.

        Programs' paths are matched after resolving their symlinks, so rule
        paths must be resolved too, and in the same root: ``/etc/resolv.conf``
        may be a link on the host and a file in a container. Done once per
        root and kept. A rule path that cannot be resolved stays as written.
        """
        policy = s.policies.get(root)
        if policy is None:

            def in_root(path: str) -> str:
                try:
                    return self.resolver.resolve(
                        tid, abi.AT_FDCWD, os.fsencode(path), follow=True, own_root=True
                    )
                except OSError:
                    return path

            try:
                policy = s.policy.canonicalized(os.path.realpath if root is None else in_root)
            except ValueError as e:  # Two rules that name one file there.
                self.tracer.note(f"{s.name or 'program'}: rules kept as written: {e}")
                policy = s.policy
            s.policies[root] = policy
        return policy
