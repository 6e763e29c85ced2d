"""Linux ABI numbers for x86_64: seccomp(2), its notification ioctls and structs.

Debian 12's headers predate some of these (``SECCOMP_IOCTL_NOTIF_SET_FLAGS``),
so they are spelled out here rather than read from a header at build time.
"""

from __future__ import annotations

import struct

# Final is only read by the type checker; `import typing` would cost the
# ``launch --daemon`` path (which imports this module) ~2.4 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# --- syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl) ---------------
SYS_OPEN: Final = 2
SYS_SECCOMP: Final = 317
SYS_CREAT: Final = 85
SYS_OPENAT: Final = 257
SYS_OPENAT2: Final = 437
SYS_SETFSUID: Final = 122
SYS_SETFSGID: Final = 123
SYS_SETGROUPS: Final = 116

SYS_KCMP: Final = 312
SYS_PIDFD_GETFD: Final = 438
SYS_GETDENTS64: Final = 217
SYS_FSTATFS: Final = 138
SYS_LANDLOCK_CREATE_RULESET: Final = 444
SYS_LANDLOCK_ADD_RULE: Final = 445
SYS_LANDLOCK_RESTRICT_SELF: Final = 446

# Every call unotifyd traps (see unotifyd/calls/registry.py) or makes raw, by
# number (syscall_64.tbl); tests/unit/test_registry.py checks them against
# libseccomp's table and the kernel.
SYSCALL_NUMBERS: Final = {
    "open": SYS_OPEN, "openat": SYS_OPENAT, "openat2": SYS_OPENAT2, "creat": SYS_CREAT,
    "stat": 4, "lstat": 6, "access": 21, "execve": 59, "truncate": 76, "getdents": 78,
    "chdir": 80, "fchdir": 81, "rename": 82, "mkdir": 83, "rmdir": 84, "link": 86, "unlink": 87,
    "symlink": 88, "readlink": 89, "chmod": 90, "chown": 92, "lchown": 94, "utime": 132,
    "mknod": 133, "setxattr": 188, "lsetxattr": 189, "getxattr": 191, "lgetxattr": 192,
    "listxattr": 194, "llistxattr": 195, "removexattr": 197, "lremovexattr": 198,
    "getdents64": SYS_GETDENTS64, "utimes": 235, "mkdirat": 258, "mknodat": 259,
    "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263, "renameat": 264,
    "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269,
    "utimensat": 280, "renameat2": 316, "execveat": 322, "statx": 332, "faccessat2": 439,
    "fchmodat2": 452, "statfs": 137, "inotify_add_watch": 254, "name_to_handle_at": 303,
    # Newer than libseccomp 2.5.4 knows (Linux 6.13 and 6.17): checked
    # against a 6.18 kernel instead, see tests/unit/test_paths.py.
    "setxattrat": 463, "getxattrat": 464, "listxattrat": 465, "removexattrat": 466,
    "file_getattr": 468, "file_setattr": 469,
    "fchmod": 91, "fchown": 93, "fsetxattr": 190, "fremovexattr": 199, "connect": 42,
    "ioctl": 16, "bind": 49, "chroot": 161, "pivot_root": 155, "setns": 308, "unshare": 272,
    "sendto": 44, "sendmsg": 46, "sendmmsg": 307, "getsockopt": 55, "tgkill": 234,
    "landlock_create_ruleset": SYS_LANDLOCK_CREATE_RULESET,
    "landlock_add_rule": SYS_LANDLOCK_ADD_RULE,
    "landlock_restrict_self": SYS_LANDLOCK_RESTRICT_SELF,
}  # fmt: skip

# The ioctls that change a file's attributes through an fd (include/uapi/linux/fs.h):
# _IOW('f', 2, long), its 32-bit twin _IOW('f', 2, int), _IOW('X', 32, struct fsxattr).
# The kernel reads the command as an unsigned int (ksys_ioctl), so a filter
# compares only the low 32 bits of the argument.
FS_IOC_SETFLAGS: Final = 0x40086602
FS_IOC32_SETFLAGS: Final = 0x40046602
FS_IOC_FSSETXATTR: Final = 0x401C5820
FSXATTR_SIZE: Final = 28  # struct fsxattr: five __u32 and 8 bytes of padding

# *at flags (include/uapi/linux/fcntl.h)
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_EACCESS: Final = 0x200
AT_REMOVEDIR: Final = 0x200
AT_SYMLINK_FOLLOW: Final = 0x400
AT_EMPTY_PATH: Final = 0x1000
KCMP_VM: Final = 1

AUDIT_ARCH_X86_64: Final = 0xC000003E

# --- socket options Python's socket module lacks -------------------------------
#: SO_PASSRIGHTS (Linux 6.16, include/uapi/asm-generic/socket.h): off, a unix
#: socket refuses SCM_RIGHTS (the sender's sendmsg fails with EPERM).
SO_PASSRIGHTS: Final = 83

# --- seccomp(2) operations and flags (include/uapi/linux/seccomp.h) ----------
SECCOMP_SET_MODE_FILTER: Final = 1
SECCOMP_GET_ACTION_AVAIL: Final = 2
SECCOMP_GET_NOTIF_SIZES: Final = 3

SECCOMP_FILTER_FLAG_TSYNC: Final = 1 << 0
SECCOMP_FILTER_FLAG_NEW_LISTENER: Final = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH: Final = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: Final = 1 << 5

SECCOMP_RET_USER_NOTIF: Final = 0x7FC00000

#: The kernel's own "interrupted, restart if the handler allows" (include/linux/errno.h):
#: never seen by programs, the signal code turns it into a restart or EINTR.
ERESTARTSYS: Final = 512

SECCOMP_USER_NOTIF_FLAG_CONTINUE: Final = 1 << 0
SECCOMP_ADDFD_FLAG_SETFD: Final = 1 << 0
SECCOMP_ADDFD_FLAG_SEND: Final = 1 << 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: Final = 1 << 0

# --- ioctls on the listener --------------------------------------------------
NOTIF_RECV: Final = 0xC0502100
NOTIF_SEND: Final = 0xC0182101
NOTIF_ID_VALID: Final = 0x40082102
NOTIF_ADDFD: Final = 0x40182103
# Takes its flag *by value*, not through a pointer (kernel/seccomp.c,
# seccomp_notify_set_flags).
NOTIF_SET_FLAGS: Final = 0x40082104

# struct seccomp_notif { u64 id; u32 pid; u32 flags;
#   struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; } }
NOTIF_STRUCT: Final = struct.Struct("<QIIiIQ6Q")
# struct seccomp_notif_resp { u64 id; s64 val; s32 error; u32 flags; }
RESP_STRUCT: Final = struct.Struct("<QqiI")
# struct seccomp_notif_addfd { u64 id; u32 flags; u32 srcfd; u32 newfd; u32 newfd_flags; }
ADDFD_STRUCT: Final = struct.Struct("<QIIII")
# struct seccomp_notif_sizes { u16 seccomp_notif; u16 seccomp_notif_resp; u16 seccomp_data; }
SIZES_STRUCT: Final = struct.Struct("<HHH")
# struct open_how { u64 flags; u64 mode; u64 resolve; } (openat2(2))
OPEN_HOW_STRUCT: Final = struct.Struct("<QQQ")

# openat2(2) resolve flags
RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10
RESOLVE_CACHED: Final = 0x20

# pidfd_open(2) flag for a thread (not process) pidfd, 6.9+: it is O_EXCL.
PIDFD_THREAD: Final = 0o200
# ioctl(pidfd, PIDFD_GET_INFO, struct pidfd_info *), 6.13+ (include/uapi/linux/pidfd.h):
# _IOWR(0xFF, 11, struct pidfd_info) with the first, 64-byte version of the struct.
PIDFD_GET_INFO: Final = 0xC040FF0B
PIDFD_INFO_CREDS: Final = 1 << 1
# struct pidfd_info { u64 mask; u64 cgroupid; u32 pid, tgid, ppid, ruid, rgid,
#   euid, egid, suid, sgid, fsuid, fsgid; u32 spare0[1]; }
PIDFD_INFO_STRUCT: Final = struct.Struct("<QQ12I")

AT_FDCWD: Final = -100
PATH_MAX: Final = 4096
PAGE_SIZE: Final = 4096
