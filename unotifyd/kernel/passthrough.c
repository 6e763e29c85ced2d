/*
 * The pass-through lane: a compiled loop that answers, without Python, the
 * trapped calls no rule can concern, and hands every other one to Python.
 *
 * Most of what a program makes under the full view is a stat or an open of
 * a file far from every rule (git status: 3 000 lstat()s of its work tree).
 * Python answers each in ~60-80 us; this loop in about twice what a C
 * supervisor that looks at nothing takes (benchmarks/README.md), on a thread
 * of its own that holds no GIL (ctypes releases it for the whole pt_run).
 *
 * It answers CONTINUE only where Python's quick path would (serve/decide.py,
 * Decider._quick_open and _quick_path_call), and only on facts it checks
 * itself for each call; any doubt forwards the notification, untouched, to
 * Python over a SOCK_SEQPACKET socket (one struct seccomp_notif per
 * message), which decides and answers it as if it had received it:
 *
 *  - virtualizing mode: CONTINUE lets the kernel make the call as the
 *    program, and decides nothing that enforcing mode would have to hold
 *    to. In enforcing mode (cfg->emulate) it never answers CONTINUE: it
 *    makes the calls Python would make for such a path itself, on the file
 *    its lookup pinned, and answers with their result (see emulate); there
 *    it also wants the thread in our mount namespace, and Python gives it
 *    the shapes it makes and no other (kernel/passthrough.py, EMULATED);
 *  - x86_64 and one of the call shapes of enum shape: opens, reads, and
 *    the calls that make, remove or rename a name (mkdir, rmdir, unlink,
 *    rename: their last name is taken as it is, link or not, and must not
 *    be "."; a rename must not carry a rule path along, see above_watched);
 *    no AT_EMPTY_PATH (but see emulate), no O_TMPFILE, no flag we do not know;
 *  - the thread's root is ours (a stat of its /proc/TID/root: per call, so
 *    that a chroot or setns answered meanwhile is seen at the next call;
 *    once per thread while Python says roots are pinned, see as_ourselves);
 *  - its credentials act as ours (same ids, same effective capabilities,
 *    same user namespace), or we hold no capability at all: then a lookup of
 *    ours succeeds exactly where the program's would (Decider
 *    ._looks_as_the_program: otherwise the program could time what lies in
 *    directories it may not search);
 *  - its path is read in full (no EFAULT, shorter than PATH_MAX), is not
 *    empty, has no ".." component, and no trailing "/" if it names an entry;
 *  - the kernel resolves it for us (openat2 with RESOLVE_NO_MAGICLINKS from
 *    the program's cwd or dirfd, as PathResolver._fast does), or its names
 *    are missing from some name on, with nothing at all at the first, not
 *    even a dangling link (then the name is the deepest directory's plus
 *    the missing names, as the resolver appends missing names);
 *  - the name it resolves to is absolute, outside /proc, not "(deleted)",
 *    and neither is nor lies below any path a rule names ("watched": as
 *    written, and as Python resolved them at the program's first call);
 *    in enforcing mode, that name looked up again from our root is the
 *    very file (named_so: not one of a detached mount, not renamed since;
 *    an absolute path looked up so in the first place, and named by the
 *    kernel as spelled, needs no second look: see open_lexical).
 *
 * One call on a watched name is made here too, in virtualizing mode: an
 * open that only reads of the source of an exact redirect (see redirect).
 * And one call is never let through, in either mode: an execve, answered
 * ENOENT where its name has nothing there (see exec_missing), and else
 * forwarded.
 *
 * The fds opened for a call are closed before the next call is looked at,
 * but for the cache of struct thread (64 /proc/TID directories and as many
 * pidfds, of threads that may have exited since, until replaced or the
 * lane ends; an idle lane ends after idle_ms, see pt_run). The thread
 * blocks every signal, so none is delivered to it (a process-wide
 * signal goes to another thread) and no handler runs between RECV and SEND.
 * Errors of ours (ENOMEM, EMFILE...) only ever forward a call.
 *
 * At the end, pt_restore: the other piece of serving that must not wait for
 * Python's GIL (putting back a vfork parent's bytes after a redirected exec).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/kcmp.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <linux/magic.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define PT_VERSION 13
#define PT_MAX_NR 512
#define PT_PATH_MAX 4096
#define PT_PAGE 4096
/* Calls after which a lane that let through fewer than an eighth gives up. */
#define PT_WINDOW 1024
#define AUDIT_ARCH_X86_64_ 0xC000003Eu
#define PIDFD_THREAD_ O_EXCL
/* include/uapi/linux/pidfd.h, 6.13+: absent from older headers. */
#define PIDFD_GET_INFO_ 0xC040FF0Bu
#define PIDFD_INFO_CREDS_ (1ull << 1)

struct pidfd_info_ {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
};

/* The call shapes: where the dirfd, path and flags are (kernel/passthrough.py). */
enum shape {
    SH_NONE, SH_OPEN, SH_OPENAT, SH_STAT, SH_LSTAT, SH_NEWFSTATAT, SH_STATX,
    SH_ACCESS, SH_FACCESSAT, SH_FACCESSAT2, SH_READLINK, SH_READLINKAT,
    SH_GETXATTR, SH_LGETXATTR, SH_LISTXATTR, SH_LLISTXATTR,
    SH_MKDIR, SH_MKDIRAT, SH_RMDIR, SH_UNLINK, SH_UNLINKAT, SH_RENAME, SH_RENAMEAT, SH_RENAMEAT2,
    SH_EXECVE,
};

/* Shared with Python (kernel/passthrough.py, Config): keep in step. */
struct pt_config {
    uint32_t version;
    uint32_t check_creds; /* compare each thread's credentials with ours */
    int32_t idle_ms;      /* end ("I") after this long without a call; -1: never */
    uint32_t emulate;     /* enforcing mode: make the calls here, never CONTINUE */
    uint32_t threads;     /* 1, or 2: a second thread serves beside the first */
    /* Python's Served.root_pinned: no process of the listener can change its
     * root unseen (the filter refuses or traps chroot, pivot_root, setns),
     * and none did; Python clears it, while the lane runs, on seeing one. */
    uint32_t root_pinned;
    /* Python's Served.namespaces_pinned: no thread of the listener can move
     * to another user or mount namespace unseen (the filter refuses or traps
     * setns and unshare), and none did; Python clears it, while the lane
     * runs, on seeing one. */
    uint32_t ns_pinned;
    /* Run a thread on our CPU while it takes an injected fd (see inject):
     * only for a listener with WAIT_KILLABLE_RECV (Served.killable_wait). */
    uint32_t colocate;
    /* Whether the filter traps every call that moves a thread's cwd
     * (moves_cwd): then each thread's cwd is kept open between its calls
     * (see struct cwds). */
    uint32_t cwd_kept;
    /* Virtualizing mode, no rule that could refuse what an exec runs (see
     * exec_missing): an execve of a file no rule watches is let through. */
    uint32_t exec_runs;
    /* Threads that made such a call Python let through, which may not have
     * taken effect yet (0: none), as struct cwds keeps them. */
    int32_t unsettled[8];
    uint64_t root_dev, root_ino;
    uint32_t ids[8]; /* our r, e, s, fs uid; r, e, s, fs gid */
    uint64_t cap_eff, cap_prm;
    char userns[64]; /* our /proc/self/ns/user text */
    char mntns[64];  /* our /proc/self/ns/mnt text (compared when emulating) */
    const char *watched; /* the rules' paths, each NUL-ended, then one more NUL */
    /* Virtualizing mode: the exact redirects the lane makes itself (see
     * redirect), each source then its target, NUL-ended, then one more NUL;
     * NULL for none. */
    const char *redirects;
    uint8_t shape[PT_MAX_NR];
    uint8_t moves_cwd[PT_MAX_NR]; /* the calls that may move a cwd (see struct cwds) */
    /* Written by the lane's threads alone (atomically); Python reads them
     * while it runs too (aligned 64-bit words: a read sees one whole, if late). */
    uint64_t continued[PT_MAX_NR];
    uint64_t forwarded, gone;
    uint64_t second; /* of the calls answered, those the follower answered */
    uint64_t redirected; /* of the calls answered, the opens redirected */
    uint64_t missing;    /* of the calls answered, the execs of no file (exec_missing) */
};

/*
 * A thread's /proc directory and pidfd, kept between its calls: opening
 * them costs as much as the checks made through them. Both refer to the
 * thread itself, not to its number (the /proc inode holds its struct pid,
 * and so does a pidfd): once it is gone, lookups through the one fail
 * (ENOENT, ESRCH) and the other answers ESRCH, never for another thread
 * that got the number since (but for one: a thread of the group that
 * calls execve takes the leader's struct pid, and so its entry, see
 * de_thread() in fs/exec.c). Such a call is forwarded, and the entry
 * dropped where a check through it fails (the credentials'; while roots
 * are pinned and we hold no capability, none may look: its calls by a
 * relative name then go to Python until the entry is replaced, and by an
 * absolute one are judged in our root, as Python judges them while pinned).
 * Direct-mapped by tid; a collision replaces the older entry.
 */
#define PT_THREADS 64
struct thread {
    pid_t tid; /* 0: empty */
    int proc, pidfd;
    int root_ok; /* its root was ours at a call made while roots were pinned */
    int ns_ok;   /* its namespaces were ours at a call made while they were pinned */
    int cwd;     /* an O_PATH fd of its cwd, as of cwd_gen (see struct cwds); -1 */
    uint64_t cwd_gen;
    int mem; /* its /proc/TID/mem, as of mem_gen (see write_out); -1 */
    uint64_t mem_gen;
};

/*
 * A thread's cwd, kept open between its calls: opening /proc/TID/cwd costs
 * ~2.7 us (a procfs lookup, the ptrace check of proc_fd_access_allowed(),
 * a file), an eighth of a call the lane lets through, and git status makes
 * thousands of calls by relative names. Kept only where the answer of the
 * kept fd is the one /proc/TID/cwd would give now:
 *
 *  - cfg->cwd_kept: our filter traps every call by which a cwd moves:
 *    chdir, fchdir, setns and unshare of a mount namespace (which set the
 *    caller's cwd in the new namespace, copy_mnt_ns() and
 *    mntns_install()), pivot_root (chroot_fs_refs() moves every task whose
 *    cwd was the old root), execve and execveat (a thread that calls it
 *    takes the leader's tid, de_thread(), and with it the leader's entry
 *    here). A cwd moves only through its own fs_struct, shared by the
 *    threads made with CLONE_FS, all of them under our filter; a
 *    pivot_root made outside it is not seen (README, threat model: the
 *    same holds of roots);
 *  - cfg->check_creds: each call checks its thread's pidfd first
 *    (as_ourselves), so an entry is never one of a thread gone whose tid
 *    was reused;
 *  - gen: bumped at the receipt of each such call, before it is forwarded
 *    and let through: an fd kept before is looked up afresh;
 *  - unsettled: the threads whose such call was received, until a later
 *    call of theirs is. The call moves the cwd only once Python's CONTINUE
 *    has woken the thread, some time after the bump; a look made between
 *    the two would keep the old cwd under the new gen, for every thread
 *    that shares it. A thread makes one call at a time, so its next call
 *    comes after the move; one interrupted by a signal instead
 *    (seccomp_unotify(2)) is made again, and received again; one that is
 *    gone moves nothing any more (a child whose exec failed, then exited),
 *    and is let go at the next sweep (/proc/TID is no more). While any is
 *    unsettled, nothing is kept (more than fit: not for the rest of the
 *    run).
 *
 * The tid goes in before the gen is bumped (both under lock), and a look
 * reads the gen before the count: a look that sees the new gen sees the
 * thread counted. A 64-bit gen never comes round again.
 *
 * A thread's /proc/TID/mem, which enforcing mode writes results through
 * (write_out), is kept the same way: opening it costs as much (a procfs
 * lookup, the ptrace check of mm_access()), and the file is bound to the
 * thread's mm of then, which only execve and execveat replace (for the
 * thread group that makes it, exec_mmap(); threads or a vfork child
 * sharing the mm by CLONE_VM keep theirs), among the calls above. Unlike
 * a cwd, it is kept only once ID_VALID says that the call it was opened
 * for still waits (see write_out): between de_thread() and exec_mmap()
 * the leader's tid names a thread that is settled by the sweep (its own
 * /proc/TID is gone) and still has the old mm.
 *
 * A kept fd holds the cwd's mount busy (umount: EBUSY) and a removed
 * directory alive, as the program's own cwd does, but no longer than that
 * (audit helper-44): a lane thread closes every fd it keeps once the gen
 * has changed, at its next call (the call that moved a cwd, or the exec of
 * umount, is one); those of threads that are gone, every PT_SWEEP calls
 * (their pidfds are readable); the follower, all of them before it sleeps;
 * each lane, all of them when it ends (idle for a second, at most).
 */
#define PT_UNSETTLED 8
#define PT_UNSETTLED_OVER 0x10000 /* added to count, for good, once more did not fit */
#define PT_SWEEP 256
struct cwds {
    pthread_mutex_t lock;
    uint64_t gen; /* atomic */
    int count;    /* how many tids are unsettled, + PT_UNSETTLED_OVER (atomic) */
    pid_t tids[PT_UNSETTLED];
};

struct lane {
    struct pt_config *cfg;
    struct cwds *cwds; /* the lane's threads' (see struct shared) */
    int listener, forward, fddir;
    int follower; /* the lane's second thread (see struct shared) */
    struct thread threads[PT_THREADS];
    uint64_t swept_gen; /* the gen of the kept cwds: any other, and they are closed */
    unsigned calls;     /* since the last sweep for threads gone (see struct cwds) */
    /* What named_so found the file of named_fd to be (type, inode, mount,
     * and what named_asks more): emulate's, for the fd it pinned; -1 at the
     * start of each call. */
    int named_fd;
    unsigned named_asks;
    struct statx named;
    /* Enforcing mode: this thread's fs_struct is its own (unshare
     * CLONE_FS), its umask then umask_now (see take_umask); -1 before. */
    int umask_now;
    /* The last path passes_target looked at resolved to l->name, which a
     * rule watches: a redirect's source, maybe (see redirect). */
    int watched_name;
    char path[PT_PATH_MAX + 1];
    char name[PT_PATH_MAX + 2];
};

static void forget(struct thread *t)
{
    if (t->tid == 0)
        return;
    close(t->proc);
    if (t->pidfd >= 0)
        close(t->pidfd);
    if (t->cwd >= 0)
        close(t->cwd);
    if (t->mem >= 0)
        close(t->mem);
    t->tid = 0;
}

static struct thread *thread_of(struct lane *l, pid_t tid)
{
    if (tid <= 0)
        return NULL; /* a caller outside our pid namespace: seccomp says 0 */
    struct thread *t = &l->threads[(unsigned)tid % PT_THREADS];
    if (t->tid == tid)
        return t;
    forget(t);
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/%d", tid);
    int fd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    int pidfd = -1;
    if (l->cfg->check_creds) {
        pidfd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD_);
        if (pidfd < 0) {
            close(fd);
            return NULL;
        }
    }
    *t = (struct thread){.tid = tid, .proc = fd, .pidfd = pidfd, .cwd = -1, .mem = -1};
    return t;
}

static int sys_openat2(int dirfd, const char *path, uint64_t flags)
{
    struct open_how how = {.flags = flags, .resolve = RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* Answer a call with r. ENOENT: its thread died meanwhile, and the call
 * needs no answer any more. */
static void send_answer(int listener, struct seccomp_notif_resp *r)
{
    while (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, r) < 0 && errno == EINTR)
        ;
}

/* The path at addr in thread tid, as getname() reads it; 0, or -1 to forward. */
static int read_path(struct lane *l, pid_t tid, uint64_t addr)
{
    size_t total = 0, want = PT_PAGE - addr % PT_PAGE;
    if (addr == 0)
        return -1;
    if (want > 256)
        want = 256; /* most paths are short; a page at a time after that */
    while (total < PT_PATH_MAX) {
        if (want > PT_PATH_MAX - total)
            want = PT_PATH_MAX - total;
        struct iovec local = {l->path + total, want};
        struct iovec remote = {(void *)(uintptr_t)(addr + total), want};
        ssize_t n = process_vm_readv(tid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        char *nul = memchr(l->path + total, 0, (size_t)n);
        if (nul != NULL)
            return 0;
        if ((size_t)n < want)
            return -1; /* an unreadable byte before the NUL: EFAULT, Python's to say */
        total += (size_t)n;
        want = PT_PAGE - (addr + total) % PT_PAGE;
    }
    return -1; /* ENAMETOOLONG: Python's to say */
}

/* Whether the path is one this lane may look up: not empty, no ".."
 * component, and no trailing "/" on the name of an entry (which makes it a
 * directory's: "x/." and mkdir("x/") are Python's). Elsewhere the kernel
 * reads a trailing "/" in its own lookup as it does in the program's
 * (follow a last link, want a directory: path_resolution(7)), so it only
 * must not meet the missing-name case (see resolve). */
static int plain_path(const char *p, int entry)
{
    size_t len = strlen(p);
    if (len == 0 || (entry && p[len - 1] == '/'))
        return 0;
    for (const char *c = p; (c = strstr(c, "..")) != NULL; c += 2) {
        if ((c == p || c[-1] == '/') && (c[2] == '/' || c[2] == 0))
            return 0;
    }
    return 1;
}

/* What our fd names (readlink of /proc/self/fd/N) into l->name; 0, or -1. */
static int fd_name(struct lane *l, int fd, size_t *len)
{
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    ssize_t n = readlinkat(l->fddir, num, l->name, PT_PATH_MAX);
    if (n <= 0 || n >= PT_PATH_MAX || l->name[0] != '/')
        return -1;
    l->name[n] = 0;
    *len = (size_t)n;
    static const char deleted[] = " (deleted)";
    if ((size_t)n >= sizeof deleted - 1 && !strcmp(l->name + n - (sizeof deleted - 1), deleted))
        return -1; /* A removed file: its name is its magic link (see _fast). */
    return 0;
}

/*
 * Enforcing mode: whether the first len bytes of l->name, looked up again
 * from our root following no link, name the very file fd is. What a name
 * says is what the rules are asked about; but the kernel names a file of
 * a mount detached or of another namespace (which a program can be handed)
 * from that mount's own root (prepend_path() in fs/d_path.c), so that a
 * denied file there would pass as another; and a file renamed after our
 * lookup has a name it did not have then. Python acts on the name itself
 * (perform_path, RESOLVE_NO_SYMLINKS), so such files are its to answer.
 */
static int named_so(struct lane *l, int fd, size_t len)
{
    char keep = l->name[len];
    l->name[len] = 0;
    struct open_how how = {.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS};
    int again = (int)syscall(SYS_openat2, AT_FDCWD, l->name, &how, sizeof how);
    l->name[len] = keep;
    if (again < 0)
        return 0;
    struct statx *a = &l->named, b;
    unsigned want = STATX_INO | STATX_MNT_ID;
    int same = syscall(SYS_statx, fd, "", AT_EMPTY_PATH, want | STATX_TYPE | l->named_asks, a) == 0 &&
               syscall(SYS_statx, again, "", AT_EMPTY_PATH, want, &b) == 0 &&
               (a->stx_mask & b.stx_mask & want) == want && a->stx_ino == b.stx_ino &&
               a->stx_dev_major == b.stx_dev_major && a->stx_dev_minor == b.stx_dev_minor &&
               a->stx_mnt_id == b.stx_mnt_id;
    close(again);
    l->named_fd = same ? fd : -1;
    return same;
}

/* What fd names, into l->name (its length in *len), and with check
 * (enforcing mode) only where that name is the very file (named_so); 0, or -1. */
static int name_fd(struct lane *l, int fd, size_t *len, int check)
{
    return fd_name(l, fd, len) == 0 && (!check || named_so(l, fd, *len)) ? 0 : -1;
}

/* An O_PATH fd of the directory that holds the last name of path, from
 * basefd (slash: the last '/' of path, or NULL); -1. */
static int open_parent(int basefd, char *path, char *slash)
{
    if (slash == NULL)
        return sys_openat2(basefd, ".", O_PATH | O_CLOEXEC | O_DIRECTORY);
    if (slash == path)
        return sys_openat2(basefd, "/", O_PATH | O_CLOEXEC | O_DIRECTORY);
    *slash = 0;
    int fd = sys_openat2(basefd, path, O_PATH | O_CLOEXEC | O_DIRECTORY);
    *slash = '/';
    return fd;
}

/* Put the names of rest (a last name, or missing ones: see resolve),
 * without empty and "." names, after the directory's name, the first len
 * bytes of l->name; 0, or -1 if the whole would not fit. */
static int join_names(struct lane *l, size_t len, const char *rest)
{
    while (*rest) {
        size_t n = strcspn(rest, "/");
        if (n > 0 && !(n == 1 && rest[0] == '.')) {
            size_t need = n + (len > 1 ? 1 : 0);
            if (len + need >= PT_PATH_MAX)
                return -1;
            if (len > 1)
                l->name[len++] = '/';
            memcpy(l->name + len, rest, n);
            len += n;
            l->name[len] = 0;
        }
        rest += n;
        if (*rest == '/')
            rest++;
    }
    return 0;
}

/* Whether name (len bytes, absolute, as the kernel names a file: no empty
 * nor "." names) is path as spelled, without its empty and "." names. */
static int spelled(const char *name, size_t len, const char *path)
{
    size_t at = 1; /* past the first '/' */
    while (*path) {
        size_t k = strcspn(path, "/");
        if (k > 0 && !(k == 1 && path[0] == '.')) {
            if (at > 1 && (at >= len || name[at++] != '/'))
                return 0;
            if (at + k > len || memcmp(name + at, path, k))
                return 0;
            at += k;
        }
        path += k;
        if (*path == '/')
            path++;
    }
    return at == len;
}

/*
 * Enforcing mode: the first n bytes of l->path, an absolute path, looked up
 * from our root following no link (a last one taken as itself, as flags
 * say), where the kernel names what they name as they are spelled: an
 * O_PATH fd of it, its name in l->name (its length in *len); else -1, with
 * errno ELOOP where a link is on the way (to be looked up the long way),
 * another where the call is to be forwarded.
 *
 * Such a name needs no named_so (~3 us: a lookup, two statx): looking it
 * up again from our root following no link is what this lookup did, on
 * mounts of our own tree (our root is the program's, as_ourselves), and
 * the file has that name still; another name gets named_so, as a file
 * looked up the long way does. The name is still the kernel's (readlink),
 * not the spelling: on a directory that ignores case (ext4 or tmpfs with
 * casefold, vfat) "/ci/SECRET" is the file the kernel calls "/ci/secret",
 * which is what the rules are asked about (audit helper-27; helper-35).
 */
static int open_lexical(struct lane *l, size_t n, int flags, size_t *len)
{
    char keep = l->path[n];
    l->path[n] = 0;
    struct open_how how = {.flags = (uint64_t)flags, .resolve = RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, n ? l->path : "/", &how, sizeof how);
    int err = errno;
    if (fd >= 0 && (fd_name(l, fd, len) < 0 ||
                    (!spelled(l->name, *len, l->path) && !named_so(l, fd, *len)))) {
        close(fd);
        fd = -1, err = EXDEV; /* no name to judge it by: forwarded */
    }
    l->path[n] = keep;
    errno = err;
    return fd;
}

/* At most this many directories are looked for before a missing name
 * (see resolve): probes miss one or two. */
#define PT_MISSING_LOOKS 8

/* The '/' that ends the directory above the last name of path before cut
 * (a '/' of path), past empty and "." names, which are that directory
 * itself; path itself ('/' first) or NULL (a relative path's first name). */
static char *name_before(char *path, char *cut)
{
    for (;;) {
        *cut = 0;
        char *before = strrchr(path, '/');
        *cut = '/';
        if (before == NULL || before == path)
            return before;
        size_t n = (size_t)(cut - before - 1);
        if (n > 1 || (n == 1 && before[1] != '.'))
            return before;
        cut = before;
    }
}

/*
 * Resolve l->path from basefd as the kernel would, into l->name; 0, or -1.
 * With pinned (enforcing mode), what it resolved to stays open there, an
 * O_PATH fd the call is then made on (-1: nothing is there, see below).
 */
static int resolve(struct lane *l, int basefd, int follow, int *pinned)
{
    size_t len;
    int flags = O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
    int fd;
    if (pinned != NULL && l->path[0] == '/' &&
        (fd = open_lexical(l, strlen(l->path), flags, &len)) >= 0) {
        *pinned = fd;
        return 0;
    }
    if (pinned == NULL || l->path[0] != '/' || errno == ELOOP) {
        fd = sys_openat2(basefd, l->path, flags);
        if (fd >= 0) {
            int r = name_fd(l, fd, &len, pinned != NULL);
            if (r == 0 && pinned != NULL)
                *pinned = fd;
            else
                close(fd);
            return r;
        }
    }
    if (errno != ENOENT || l->path[strlen(l->path) - 1] == '/')
        return -1; /* "x/": no last name to take as missing */
    char *cut = strrchr(l->path, '/');
    if (!strcmp(cut ? cut + 1 : l->path, "."))
        return -1;
    /* Names are missing from some name on: the deepest directory of the
     * path that is there, then the rest, each of which must be missing.
     * Only the first can be looked at, and nothing may be there at all (a
     * dangling link would be followed to where a rule may be); the others
     * are below it. The name is that directory's plus the rest, empty and
     * "." names left out, as PathResolver appends missing names (plain_path
     * let no ".." through). A program probing for what is not there (a
     * locale's directories, PATH, an interpreter's search path) often
     * misses a directory, not just a file. */
    int parent, looks = 0;
    while ((parent = open_parent(basefd, l->path, cut)) < 0) {
        /* Each look costs a lookup of the whole prefix: a path of many
         * missing names goes to Python rather than cost us n^2. */
        if (errno != ENOENT || cut == NULL || cut == l->path || ++looks == PT_MISSING_LOOKS)
            return -1;
        cut = name_before(l->path, cut);
    }
    /* Its first name: name_before leaves the cut past empty and "." names
     * (were one first, first would be 0, and the call forwarded). */
    const char *rest = cut ? cut + 1 : l->path;
    size_t first = strcspn(rest, "/");
    struct stat st;
    int r = -1;
    if (first > 0 && first <= NAME_MAX) {
        char name[NAME_MAX + 1];
        memcpy(name, rest, first);
        name[first] = 0;
        if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT &&
            name_fd(l, parent, &len, pinned != NULL) == 0 &&
            join_names(l, len, rest) == 0) {
            r = 0;
            if (pinned != NULL)
                *pinned = -1;
        }
    }
    if (l->named_fd == parent)
        l->named_fd = -1; /* named_so's look was of the parent, closed now */
    close(parent);
    return r;
}

/* A counter of cfg, which both threads of a lane add to (and Python reads). */
#define COUNT(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)

/* Whether name is under /proc, or is or lies below a path a rule names. */
static int watched(const struct pt_config *cfg, const char *name)
{
    if (!strncmp(name, "/proc", 5) && (name[5] == 0 || name[5] == '/'))
        return 1;
    for (const char *w = cfg->watched; *w; w += strlen(w) + 1) {
        size_t n = strlen(w);
        if (!strncmp(name, w, n) && (name[n] == 0 || name[n] == '/'))
            return 1;
    }
    return 0;
}

/* Whether a rule path lies below name: renaming name would move the rule's
 * files out from under it (moves_a_rule() in Python: EXDEV). */
static int above_watched(const struct pt_config *cfg, const char *name)
{
    size_t n = strlen(name);
    for (const char *w = cfg->watched; *w; w += strlen(w) + 1) {
        if (!strncmp(w, name, n) && (w[n] == '/' || n == 1))
            return 1;
    }
    return 0;
}

/* Whether thread t is in our mount namespace. */
static int in_our_mounts(const struct thread *t, const struct pt_config *cfg)
{
    char ns[64];
    ssize_t n = readlinkat(t->proc, "ns/mnt", ns, sizeof ns - 1);
    if (n <= 0)
        return 0;
    ns[n] = 0;
    return !strcmp(ns, cfg->mntns);
}

/* Whether thread t acts as we do, and has our root. */
static int as_ourselves(struct lane *l, struct thread *t)
{
    const struct pt_config *cfg = l->cfg;
    /* A root that cannot change unseen is looked at once per thread, the
     * root_pinned flag read before the look (Python clears it before it
     * lets a chroot through, so a look made after is made afresh). */
    int pinned = __atomic_load_n(&cfg->root_pinned, __ATOMIC_ACQUIRE);
    struct stat st;
    if (!(pinned && t->root_ok)) {
        if (fstatat(t->proc, "root", &st, 0) < 0 || st.st_dev != cfg->root_dev ||
            st.st_ino != cfg->root_ino)
            return 0;
        t->root_ok = pinned;
    }
    if (!cfg->check_creds)
        return 1;
    struct pidfd_info_ info = {.mask = PIDFD_INFO_CREDS_};
    if (ioctl(t->pidfd, PIDFD_GET_INFO_, &info) < 0)
        return 0;
    uint32_t ids[8] = {info.ruid, info.euid, info.suid, info.fsuid,
                       info.rgid, info.egid, info.sgid, info.fsgid};
    if (memcmp(ids, cfg->ids, sizeof ids))
        return 0;
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, t->tid};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return 0;
    /* Enforcing mode, the permitted set too: access(2), made here, checks a
     * root caller's real ids with its permitted capabilities
     * (access_override_creds() in fs/open.c). */
    if ((data[0].effective | (uint64_t)data[1].effective << 32) != cfg->cap_eff ||
        (cfg->emulate && (data[0].permitted | (uint64_t)data[1].permitted << 32) != cfg->cap_prm))
        return 0;
    /* Looked at once per thread while they cannot change unseen, the flag
     * read before the look, as root_pinned is: a thread moves itself only,
     * by a call Python sees and unpins them for before it is made, and a
     * thread made in a new namespace is looked at afresh (an entry whose
     * thread is gone fails the credentials' look just above, its pidfd
     * answers ESRCH; for the one that takes over an entry by execve,
     * Python pins nothing where it could: registry.namespaces_seen). */
    int ns_pinned = __atomic_load_n(&cfg->ns_pinned, __ATOMIC_ACQUIRE);
    if (ns_pinned && t->ns_ok)
        return 1;
    char ns[64];
    ssize_t n = readlinkat(t->proc, "ns/user", ns, sizeof ns - 1);
    if (n <= 0)
        return 0;
    ns[n] = 0;
    if (strcmp(ns, cfg->userns))
        return 0;
    if (!cfg->emulate) {
        t->ns_ok = ns_pinned;
        return 1;
    }
    /* Made here, a call resolves its absolute paths in our mount namespace:
     * the program's must be the same one (its mounts, not ours, are what it
     * may see; the same root inode says nothing of the mounts below it). */
    if (!in_our_mounts(t, cfg))
        return 0;
    t->ns_ok = ns_pinned;
    return 1;
}

/* One path of a call: where it is, where it starts, how its last name is taken. */
struct target {
    int dirfd;
    uint64_t addr;
    int follow; /* the last link is followed */
    int on_fd;  /* AT_EMPTY_PATH (enforcing mode): an empty path is the dirfd's file */
    int entry;  /* the call makes, removes or renames the last name itself */
    int moves;  /* it renames it: a rule path below it would move along */
};

/* Whether fds opened through a thread's /proc directory may be kept
 * between its calls (see struct cwds). */
static int keeps(const struct lane *l)
{
    return l->cfg->cwd_kept && l->cfg->check_creds;
}

/* What a look for a kept fd saw: the gen, and whether no thread was
 * unsettled then, read in that order (see struct cwds). */
struct look {
    uint64_t gen;
    int settled;
};

/* kept, a thread's fd kept as of kept_gen, if that is the gen now; else -1,
 * with what keep() needs for a new one opened after this look. */
static int kept_now(const struct lane *l, int kept, uint64_t kept_gen, struct look *look)
{
    look->gen = __atomic_load_n(&l->cwds->gen, __ATOMIC_ACQUIRE);
    if (kept >= 0 && kept_gen == look->gen)
        return kept;
    look->settled = __atomic_load_n(&l->cwds->count, __ATOMIC_ACQUIRE) == 0;
    return -1;
}

/* Keep fd, opened after look, in *kept (the one there closed) where it may
 * stay open: no thread was unsettled and the gen has not moved since the
 * lane thread last dropped what it kept. */
static void keep(const struct lane *l, const struct look *look, int fd, int *kept,
                 uint64_t *kept_gen)
{
    if (fd < 0 || !look->settled || look->gen != l->swept_gen)
        return;
    if (*kept >= 0)
        close(*kept);
    *kept = fd, *kept_gen = look->gen;
}

/* Where thread th looks a relative path of t up from: our O_PATH fd of its
 * cwd or of its dirfd (through its /proc directory, which names it alone); -1. */
static int base_of(struct lane *l, struct thread *th, const struct target *t)
{
    char base[32];
    if (t->dirfd == AT_FDCWD && keeps(l)) {
        struct look look;
        int fd = kept_now(l, th->cwd, th->cwd_gen, &look);
        if (fd < 0) {
            fd = openat(th->proc, "cwd", O_PATH | O_CLOEXEC);
            keep(l, &look, fd, &th->cwd, &th->cwd_gen);
        }
        return fd;
    }
    if (t->dirfd == AT_FDCWD)
        snprintf(base, sizeof base, "cwd");
    else if (t->dirfd >= 0)
        snprintf(base, sizeof base, "fd/%d", t->dirfd);
    else
        return -1;
    return openat(th->proc, base, O_PATH | O_CLOEXEC);
}

/* Close every fd this lane thread keeps, cwds and mems (see struct cwds). */
static void drop_kept(struct lane *l)
{
    for (int i = 0; i < PT_THREADS; i++) {
        struct thread *t = &l->threads[i];
        if (t->tid != 0 && t->cwd >= 0)
            close(t->cwd), t->cwd = -1;
        if (t->tid != 0 && t->mem >= 0)
            close(t->mem), t->mem = -1;
    }
}

/* Let go of the unsettled threads that are gone (see struct cwds). A zombie
 * still has its /proc/TID, and a number taken again by another thread keeps
 * it unsettled until that thread makes a call: at worst nothing is kept
 * meanwhile. */
static void prune_unsettled(struct cwds *c)
{
    if (__atomic_load_n(&c->count, __ATOMIC_ACQUIRE) == 0)
        return;
    pthread_mutex_lock(&c->lock);
    int count = c->count;
    for (int i = 0; i < PT_UNSETTLED; i++) {
        char proc[32];
        if (c->tids[i] == 0)
            continue;
        snprintf(proc, sizeof proc, "/proc/%d", c->tids[i]);
        if (access(proc, F_OK) < 0 && errno == ENOENT)
            c->tids[i] = 0, count--;
    }
    __atomic_store_n(&c->count, count, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&c->lock);
}

/* Before each call: no kept fd outlives its gen, nor, for long, its thread. */
static void keep_cwds_fresh(struct lane *l)
{
    uint64_t gen = __atomic_load_n(&l->cwds->gen, __ATOMIC_ACQUIRE);
    if (gen != l->swept_gen) {
        drop_kept(l);
        l->swept_gen = gen;
        return;
    }
    if (++l->calls < PT_SWEEP)
        return;
    l->calls = 0;
    prune_unsettled(l->cwds);
    struct pollfd p[PT_THREADS];
    int at[PT_THREADS], n = 0;
    for (int i = 0; i < PT_THREADS; i++) {
        const struct thread *t = &l->threads[i];
        if (t->tid != 0 && (t->cwd >= 0 || t->mem >= 0) && t->pidfd >= 0)
            p[n] = (struct pollfd){.fd = l->threads[i].pidfd, .events = POLLIN}, at[n++] = i;
    }
    if (n == 0 || poll(p, (nfds_t)n, 0) <= 0)
        return;
    for (int k = 0; k < n; k++) {
        if (p[k].revents & (POLLIN | POLLHUP))
            forget(&l->threads[at[k]]); /* it exited: a pidfd is readable then */
    }
}

/* Done with basefd, an fd of base_of's: closed unless it is th's kept cwd. */
static void drop_base(const struct thread *th, int basefd)
{
    if (basefd >= 0 && basefd != th->cwd)
        close(basefd);
}

/* Whether the path of t resolves, in thread th's view, where no rule is;
 * with pinned, what it resolves to is left open there (see resolve). */
static int passes_target(struct lane *l, struct thread *th, const struct target *t,
                         int *pinned)
{
    l->watched_name = 0;
    if (read_path(l, th->tid, t->addr) < 0)
        return 0;
    int on_fd = t->on_fd && l->path[0] == 0 && pinned != NULL;
    if (!on_fd && !plain_path(l->path, t->entry))
        return 0;
    if (t->entry) {
        /* "x/.": no name to make or remove (the kernel refuses it, as
         * last_component() and not_a_name_errno() in Python say). */
        const char *slash = strrchr(l->path, '/');
        if (!strcmp(slash ? slash + 1 : l->path, "."))
            return 0;
    }
    int basefd = AT_FDCWD;
    if ((on_fd || l->path[0] != '/') && (basefd = base_of(l, th, t)) < 0)
        return 0;
    if (on_fd) {
        /* No name is looked up: the call is about the file the program
         * holds, whatever its name (decide_on_fd() in policy/paths.py:
         * a read of it is always the program's to make). Our own open of
         * its /proc/TID/fd/N is that file. */
        *pinned = basefd;
        return 1;
    }
    int fd = -1;
    int found = resolve(l, basefd, t->follow, pinned ? &fd : NULL) == 0;
    l->watched_name = found && watched(l->cfg, l->name);
    int ok = found && !l->watched_name && !(t->moves && above_watched(l->cfg, l->name));
    drop_base(th, basefd);
    if (pinned != NULL) {
        if (ok)
            *pinned = fd;
        else if (fd >= 0)
            close(fd);
    }
    return ok;
}

/* What becomes of a call: handed to Python, let through, or answered here
 * (r holds the answer), or needing no answer (its thread is gone). */
enum verdict { PT_FORWARD, PT_CONTINUE, PT_ANSWER, PT_SENT, PT_GONE };

/* Give an fd of ours to the program as its open's result (defined below). */
static enum verdict inject(struct lane *l, const struct seccomp_notif *n, int fd,
                           uint64_t flags, int made);

/*
 * Enforcing mode, a call that makes, removes or renames the last name of t
 * (t->entry): pin the directory that name is in (its links followed, as the
 * kernel's own lookup of a parent follows them), an O_PATH fd left in
 * *pinned, and copy the last name, a plain one, to last (NAME_MAX + 1
 * bytes). 1 if the name there is one no rule watches (nor one below which
 * a rule lies, for a rename: see above_watched); 0 to forward. As
 * perform_path() in serve/pathwork.py makes these calls (_open_parent):
 * on the directory checked, never on a path the kernel would read again.
 */
static int pin_parent(struct lane *l, struct thread *th, const struct target *t,
                      int *pinned, char *last)
{
    if (read_path(l, th->tid, t->addr) < 0 || !plain_path(l->path, 1))
        return 0;
    char *slash = strrchr(l->path, '/');
    const char *name = slash ? slash + 1 : l->path;
    /* "x/.": no name to make or remove; "/": none at all (plain_path). */
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX || !strcmp(name, "."))
        return 0;
    memcpy(last, name, n + 1);
    size_t len;
    int dir = O_PATH | O_CLOEXEC | O_DIRECTORY;
    int fd = l->path[0] == '/' ? open_lexical(l, (size_t)(slash - l->path), dir, &len) : -1;
    if (fd < 0 && (l->path[0] != '/' || errno == ELOOP)) {
        int basefd = AT_FDCWD;
        if (l->path[0] != '/' && (basefd = base_of(l, th, t)) < 0)
            return 0;
        fd = open_parent(basefd, l->path, slash);
        drop_base(th, basefd);
        if (fd >= 0 && name_fd(l, fd, &len, 1) < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0 || join_names(l, len, last) < 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    if (watched(l->cfg, l->name) || (t->moves && above_watched(l->cfg, l->name))) {
        close(fd);
        return 0;
    }
    *pinned = fd;
    return 1;
}

/* What follows the line start key (spaces and tabs skipped) in the file
 * name of thread th's /proc directory, read into buf (size bytes); NULL. */
static const char *proc_field(const struct thread *th, const char *name, const char *key,
                              char *buf, size_t size)
{
    int fd = openat(th->proc, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t got = read(fd, buf, size - 1);
    close(fd);
    if (got <= 0)
        return NULL;
    buf[got] = 0;
    const char *at = strstr(buf, key);
    if (at == NULL)
        return NULL;
    at += strlen(key);
    while (*at == ' ' || *at == '\t')
        at++;
    return at;
}

/* The umask of thread th (its fs_struct's: proc(5), "Umask:"), or -1. */
static int umask_of(const struct thread *th)
{
    char buf[4096];
    const char *at = proc_field(th, "status", "\nUmask:", buf, sizeof buf);
    if (at == NULL)
        return -1;
    char *end;
    long mask = strtol(at, &end, 8);
    return end == at || mask < 0 || mask > 0777 ? -1 : (int)mask;
}

/*
 * Take thread th's umask, for a file or directory made here as it would
 * make it: 0, or -1 to forward. The kernel applies the umask itself, or
 * the directory's default ACL instead (mode_strip_umask(),
 * posix_acl_create()), from the fs_struct of the thread making the call:
 * so this thread gets one of its own once (unshare(2), CLONE_FS: our cwd,
 * root and umask, copied; the lane uses neither cwd nor root) and takes
 * the program's umask. Python has no such thread and applies the umask
 * itself where no default ACL is (ops.mkdirat, opener.umask_applies); here
 * the kernel decides between the two, at the call. The umask is read per
 * call: any thread of the program may change it (the threads of a process
 * share one), untrapped.
 */
static int take_umask(struct lane *l, const struct thread *th)
{
    int mask = umask_of(th);
    if (mask < 0)
        return -1;
    if (l->umask_now < 0) {
        if (unshare(CLONE_FS) < 0)
            return -1;
        l->umask_now = (int)umask(0);
    }
    if (mask != l->umask_now)
        umask((mode_t)mask), l->umask_now = mask;
    return 0;
}

/* The flags of an open with O_CREAT made here (enforcing mode): none that
 * asks more of the open than the kernel's open of a regular file gives by
 * itself (not O_DIRECTORY, O_TMPFILE, O_PATH, O_DIRECT, O_SYNC...). */
#define PT_MAKE_FLAGS (O_ACCMODE | O_CREAT | O_EXCL | O_CLOEXEC | O_TRUNC | O_APPEND | \
                       O_NONBLOCK | O_NOCTTY | O_NOFOLLOW | 0100000)

/*
 * Whether thread th has no fd number left below its RLIMIT_NOFILE: 1, 0, or
 * -1 if that cannot be told. As fd_table_full() in kernel/program.py, and
 * for the same reason: natively an open takes its fd before it looks its
 * path up (do_sys_openat2() in fs/open.c), so a full table fails it before
 * it makes or truncates anything, where ours is made first and given after
 * (ADDFD's alloc_fd(), in the thread's own context, with its own limit).
 * The limit is asked with prlimit(), which needs no capability of a caller
 * whose real ids are the thread's real, effective and saved ones (the
 * lane serves threads whose ids are ours: check_prlimit_permission() in
 * kernel/sys.c); else read from /proc/TID/limits, which anyone may read, at
 * some 30 times the cost (audit helper-51: a missing file's open 13.8 ->
 * 22.9 us under --enforce).
 */
static int table_full(const struct thread *th)
{
    char buf[8192];
    struct rlimit rl;
    unsigned long long soft;
    if (prlimit(th->tid, RLIMIT_NOFILE, NULL, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY)
            return 0;
        soft = rl.rlim_cur;
    } else {
        const char *line = proc_field(th, "limits", "\nMax open files ", buf, sizeof buf);
        if (line == NULL)
            return -1;
        if (!strncmp(line, "unlimited", 9))
            return 0;
        char *end;
        soft = strtoull(line, &end, 10);
        if (end == line)
            return -1;
    }
    /* The size of /proc/TID/fd is the number of fds open (Linux 6.2,
     * proc_fd_getattr() in fs/proc/fd.c; 0 before): listed only where that
     * many might fill every number below the limit. */
    struct stat st;
    if (fstatat(th->proc, "fd", &st, 0) == 0 && st.st_size > 0 &&
        (unsigned long long)st.st_size < soft)
        return 0;
    int dir = openat(th->proc, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    unsigned long long below = 0;
    long n = 0;
    while (below < soft && (n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: d_ino, d_off, d_reclen, d_type, d_name */
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            if (name[0] != '.' && strtoull(name, NULL, 10) < soft)
                below++;
            off += reclen;
        }
    }
    close(dir);
    if (below < soft && n < 0)
        return -1;
    return below >= soft;
}

/* Whether a file of this mode and device number is one of the character
 * devices whose open neither waits nor acts (null, zero, full, random,
 * urandom): QUIET_DEVICES in serve/opens.py, which says why. Such a file
 * is opened here as a regular file is. */
static int quiet_device(mode_t mode, unsigned major, unsigned minor)
{
    return S_ISCHR(mode) && major == 1 &&
           (minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9);
}

/* Whether st is of a regular file or a quiet device: what make_file opens. */
static int regular_or_quiet(const struct stat *st)
{
    return S_ISREG(st->st_mode) ||
           quiet_device(st->st_mode, major(st->st_rdev), minor(st->st_rdev));
}

/* Whether the directory fd is on autofs, or that cannot be told: its open
 * may wait for a mount (emulate, open_entry). */
static int on_autofs(int fd)
{
    struct statfs fs;
    return fstatfs(fd, &fs) < 0 || fs.f_type == AUTOFS_SUPER_MAGIC;
}

/* Open name in dirfd with the program's flags (and mode, where it makes a
 * file) as make_file and open_entry open it: following no link
 * (RESOLVE_NO_SYMLINKS), with O_NONBLOCK (a lease, see open_for; cleared
 * again by inject), O_CLOEXEC and O_NOCTTY (see open_for); the fd, or -1. */
static int open_no_links(int dirfd, const char *name, uint64_t flags, mode_t mode)
{
    struct open_how how = {.flags = flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, .mode = mode,
                           .resolve = RESOLVE_NO_SYMLINKS};
    return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof how);
}

/*
 * The open n with O_CREAT of name in dirfd (flags, mode), as thread th
 * would make it, its fd given to the program (inject); with the thread's
 * umask (take_umask) for a file it makes. Where nothing is there, the file
 * is made with O_EXCL (a new regular file: no link followed, nothing else
 * opened); without the program's O_EXCL, a regular file or a quiet device
 * (quiet_device: "> /dev/null") there is opened with the program's flags,
 * O_CREAT kept (the kernel's checks of an O_CREAT open of a file that
 * exists, fs.protected_regular's in sticky directories,
 * may_create_in_sticky() in fs/namei.c, are made), following no link
 * (RESOLVE_NO_SYMLINKS, which unlike O_NOFOLLOW leaves no trace in
 * F_GETFL), with O_NONBLOCK (a lease another holds: EWOULDBLOCK, before any
 * O_TRUNC; cleared again by inject), and looked at again once opened, as
 * open_for opens. Anything else goes to Python: a link there (O_CREAT
 * follows a dangling one to make its target), a FIFO or another device
 * (whose open acts), a directory, or a race that changed what was there.
 * An errno the kernel answers is the program's, but for those of our own
 * fd table (EMFILE, ENFILE), and ELOOP, ENXIO, EWOULDBLOCK and ENOENT,
 * which may be ours.
 */
static enum verdict make_file(struct lane *l, const struct thread *th,
                              const struct seccomp_notif *n, int dirfd, const char *name,
                              uint64_t flags, mode_t mode, struct seccomp_notif_resp *r)
{
    int fd, made = 1;
    struct stat st;
    int full = table_full(th);
    if (full < 0)
        return PT_FORWARD;
    if (full) {
        r->error = -EMFILE; /* before anything is made or truncated: see table_full */
        return PT_ANSWER;
    }
    if (!(flags & O_EXCL)) {
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (!regular_or_quiet(&st))
                return PT_FORWARD;
            made = 0;
        } else if (errno != ENOENT) {
            return PT_FORWARD; /* EACCES...: Python says which errno comes first */
        }
    }
    if (take_umask(l, th) < 0)
        return PT_FORWARD;
    if (made) {
        fd = openat(dirfd, name, (int)flags | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0 && errno == EEXIST && !(flags & O_EXCL))
            return PT_FORWARD; /* made meanwhile: not ours to say */
    } else {
        /* A file removed meanwhile is made again here as the program's
         * own open would have made it: this one's fd is then given all the
         * same (not made: a failure to give it leaves Python to open the
         * file that is there). */
        fd = open_no_links(dirfd, name, flags, mode);
    }
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ELOOP ||
            errno == ENXIO || errno == EWOULDBLOCK || errno == ENOENT)
            return PT_FORWARD;
        r->error = -errno;
        return PT_ANSWER;
    }
    if (!made && (fstat(fd, &st) < 0 || !regular_or_quiet(&st))) {
        close(fd);
        return PT_FORWARD;
    }
    return inject(l, n, fd, flags, made);
}

/*
 * Enforcing mode: the open n with O_NOFOLLOW, and without O_CREAT, of name
 * in dirfd: a read (emulable), its fd given to the program (inject). The
 * file keeps O_NOFOLLOW (F_GETFL shows it), which an open again through
 * our /proc/self/fd/N, as open_for opens, cannot carry: the kernel would
 * refuse to follow that magic link (ELOOP). So the name is opened in its
 * directory, pinned and checked (pin_parent), following no link
 * (RESOLVE_NO_SYMLINKS: a link there is ELOOP, and that answer, like every
 * errno, Python's to give), with O_NONBLOCK (a lease, see open_for; cleared
 * again by inject). Only a regular file or a directory, none an automount
 * point or on autofs (see emulate), looked at before the open, whose open
 * neither waits nor acts (fts(3), find, cp -r and rm -r open each directory
 * and file so), and the very file opened after it: anything else, and a
 * race that changed what was there, goes to Python.
 */
static enum verdict open_entry(struct lane *l, const struct seccomp_notif *n, int dirfd,
                               const char *name, uint64_t flags)
{
    struct statx before, after;
    unsigned want = STATX_TYPE | STATX_INO;
    if (syscall(SYS_statx, dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, want,
                &before) < 0 ||
        (before.stx_mask & want) != want ||
        !(S_ISREG(before.stx_mode) || S_ISDIR(before.stx_mode)) ||
        (before.stx_attributes & STATX_ATTR_AUTOMOUNT))
        return PT_FORWARD;
    int fd = open_no_links(dirfd, name, flags, 0);
    if (fd < 0)
        return PT_FORWARD;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, want, &after) < 0 ||
        (after.stx_mask & want) != want || after.stx_ino != before.stx_ino ||
        after.stx_dev_major != before.stx_dev_major ||
        after.stx_dev_minor != before.stx_dev_minor ||
        (after.stx_mode & S_IFMT) != (before.stx_mode & S_IFMT) ||
        (S_ISDIR(after.stx_mode) && on_autofs(fd))) {
        close(fd);
        return PT_FORWARD;
    }
    return inject(l, n, fd, flags, 0);
}

/*
 * Enforcing mode: make the call n (shape sh) that makes, removes or
 * renames names, on the directories pinned (see pin_parent), and put its
 * answer in r. Made as ourselves, which is as the program (as_ourselves):
 * whatever the kernel answers is the program's answer, errno and all (but
 * for a new file's open, which makes an fd of ours: see make_file).
 */
static enum verdict emulate_entry(struct lane *l, struct thread *th,
                                  const struct seccomp_notif *n, int sh, struct target *t,
                                  int paths, uint64_t flags, struct seccomp_notif_resp *r)
{
    const __u64 *a = n->data.args;
    int dir[2] = {-1, -1};
    char last[2][NAME_MAX + 1];
    enum verdict v = PT_FORWARD;
    for (int i = 0; i < paths; i++)
        if (!pin_parent(l, th, &t[i], &dir[i], last[i]))
            goto out;
    /* The paths were read by the thread's number (process_vm_readv): that
     * they were its own, and not another's that got the number after it
     * died, holds only if its call still waits (seccomp_unotify(2), NOTES:
     * a waiting thread keeps its number). Checked before anything is made,
     * removed or renamed, which no later answer could undo; not before a
     * read (open_entry), which acts on nothing and whose fd ADDFD gives
     * only to the call, if it still waits (as open_for's). */
    __u64 id = n->id;
    int reads = (sh == SH_OPEN || sh == SH_OPENAT) && !(flags & O_CREAT);
    if (!reads && ioctl(l->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0) {
        v = errno == ENOENT ? PT_GONE : PT_FORWARD;
        goto out;
    }
    int err;
    switch (sh) {
    case SH_OPEN:
    case SH_OPENAT:
        v = flags & O_CREAT ? make_file(l, th, n, dir[0], last[0], flags,
                                        (mode_t)(sh == SH_OPEN ? a[2] : a[3]) & 07777, r)
                            : open_entry(l, n, dir[0], last[0], flags);
        goto out;
    case SH_MKDIR:
    case SH_MKDIRAT:
        if (take_umask(l, th) < 0)
            goto out;
        err = mkdirat(dir[0], last[0], (mode_t)(sh == SH_MKDIR ? a[1] : a[2])) < 0 ? -errno : 0;
        break;
    case SH_RMDIR:
        err = unlinkat(dir[0], last[0], AT_REMOVEDIR) < 0 ? -errno : 0;
        break;
    case SH_UNLINK:
    case SH_UNLINKAT:
        err = unlinkat(dir[0], last[0], sh == SH_UNLINK ? 0 : (int)(uint32_t)a[2]) < 0 ? -errno : 0;
        break;
    case SH_RENAME:
    case SH_RENAMEAT:
    case SH_RENAMEAT2:
        err = syscall(SYS_renameat2, dir[0], last[0], dir[1], last[1],
                      sh == SH_RENAMEAT2 ? (unsigned)a[4] : 0u) < 0 ? -errno : 0;
        break;
    default:
        goto out;
    }
    r->error = err;
    v = PT_ANSWER;
out:
    for (int i = 0; i < paths; i++)
        if (dir[i] >= 0)
            close(dir[i]);
    return v;
}

/* The flags of an open made here (enforcing mode) without O_CREAT: a read
 * (or a quiet device's write, see emulate), none that creates, truncates
 * or changes how the file is written; the others go to
 * Python. open(2) ignores flags it does not know; we do not. Not O_NOFOLLOW:
 * the file keeps it (F_GETFL shows it), and an open again through
 * /proc/self/fd/N cannot carry it (such a read is opened by its name in its
 * directory instead: open_entry). 0100000 is the kernel's O_LARGEFILE
 * (glibc's is 0 on x86_64; musl passes it). */
#define PT_OPEN_FLAGS (O_NONBLOCK | O_CLOEXEC | O_DIRECTORY | 0100000 | O_NOCTTY | O_NOATIME)

/*
 * Enforcing mode: open for n the file pinned (an O_PATH fd of ours,
 * resolved and checked), as its flags say, and give it the fd (answered
 * with SECCOMP_ADDFD_FLAG_SEND, its number the call's result, at once).
 * As perform_open() in serve/opens.py: a regular file, a directory or a
 * quiet device only (another device's open acts, a FIFO's waits for its
 * other end), opened O_NONBLOCK so that a lease (fcntl(2), F_SETLEASE)
 * another holds makes it fail (EWOULDBLOCK) rather than wait up to
 * lease-break-time with every other call of the listener behind it:
 * Python then makes it in a thread
 * of its own; O_NONBLOCK is then cleared again unless asked for (F_GETFL
 * shows it). Opened again through our /proc/self/fd/N, the file keeps the
 * inode that was checked, and the open makes its permission checks anew
 * (do_open(), may_open() in fs/namei.c), with our credentials, which are
 * the program's (see as_ourselves). Any failure goes to Python, which says
 * the errno (ours, EMFILE, are not the program's to see).
 */

static enum verdict open_for(struct lane *l, const struct seccomp_notif *n, int pinned,
                             uint64_t flags)
{
    /* O_NOCTTY on every open of ours, as open_as() in kernel/opener.py
     * says why: a terminal swapped in after our look never becomes the
     * controlling terminal of a supervisor that leads a session. */
    char num[16];
    snprintf(num, sizeof num, "%d", pinned);
    int fd = openat(l->fddir, num, (int)flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return PT_FORWARD;
    return inject(l, n, fd, flags, 0);
}

/* A thread's affinity, and ours, while both run only on our CPU (see inject). */
struct pin {
    pid_t tid;
    int cpu;
    cpu_set_t old;
    int ours_narrowed; /* ours was narrowed too, and is ours_old */
    cpu_set_t ours_old;
};

/*
 * Narrow thread tid's affinity to the CPU we run on; 0 if not done: where
 * it may not run there or may run on one CPU only anyway, or where it may
 * not be changed. As pin_to_our_cpu() in kernel/sched.py, which says why:
 * the fd's ADDFD round trip then wakes the thread and us on one CPU
 * (~70 us of cross-CPU wake-ups otherwise, on virtual CPUs). Ours is
 * narrowed too, for the same reason: the thread that installs the fd
 * wakes us with a plain complete() (seccomp_handle_addfd() in
 * kernel/seccomp.c), and the scheduler puts a woken task on an idle CPU
 * rather than on a busy one (select_idle_sibling() in kernel/sched/fair.c):
 * ours is busy with the thread, so we were woken on the other, idle one.
 * Measured (compileall -f of 237 files under --enforce): the ADDFD ioctl
 * took 33-45 us with the thread's mask narrowed alone, 3.9 us with ours
 * too, for two more sched_setaffinity() calls (~1.4 us).
 */
static int pin_here(pid_t tid, struct pin *p)
{
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(tid, sizeof p->old, &p->old) < 0 ||
        !CPU_ISSET(cpu, &p->old) || CPU_COUNT(&p->old) == 1)
        return 0;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(tid, sizeof one, &one) < 0)
        return 0;
    p->tid = tid, p->cpu = cpu;
    /* Ours only where it is more than that CPU (a failure costs speed alone). */
    p->ours_narrowed = sched_getaffinity(0, sizeof p->ours_old, &p->ours_old) == 0 &&
                       CPU_ISSET(cpu, &p->ours_old) && CPU_COUNT(&p->ours_old) > 1 &&
                       sched_setaffinity(0, sizeof one, &one) == 0;
    return 1;
}

/* Give the thread its affinity back, if the one it has is still ours: the
 * program may have set one meanwhile (Pinned.release); and ours. */
static void unpin(const struct pin *p)
{
    cpu_set_t now;
    if (sched_getaffinity(p->tid, sizeof now, &now) == 0 && CPU_COUNT(&now) == 1 &&
        CPU_ISSET(p->cpu, &now) && sched_setaffinity(p->tid, sizeof p->old, &p->old) < 0) {
        /* gone meanwhile: nothing to give back */
    }
    if (p->ours_narrowed && sched_setaffinity(0, sizeof p->ours_old, &p->ours_old) < 0) {
        /* only where our cpuset changed meanwhile, which then set ours */
    }
}

/* Give fd, opened with O_NONBLOCK added to the program's flags, to the
 * program as the result of its open n (see open_for); fd is closed. made:
 * fd was opened with the program's flags and O_EXCL, and made the file
 * (see make_file): the call cannot be made again, so a failure to give it
 * (EMFILE: the program's table is full) is the call's answer, as Python's
 * _inject answers it. */
static enum verdict inject(struct lane *l, const struct seccomp_notif *n, int fd,
                           uint64_t flags, int made)
{
    /* Given the program's flags, F_SETFL changes only those it knows
     * (O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME, O_NONBLOCK: setfl() in
     * fs/fcntl.c) and ignores the others. Of those, only O_NOATIME can be
     * among the program's (PT_OPEN_FLAGS), and O_APPEND for make_file's
     * (PT_MAKE_FLAGS), which the open set already: the one change is
     * O_NONBLOCK cleared, in one call instead of a get and a set. */
    if (!made && !(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, (int)flags) < 0) {
        close(fd);
        return PT_FORWARD;
    }
    struct seccomp_notif_addfd add = {
        .id = n->id,
        .flags = SECCOMP_ADDFD_FLAG_SEND,
        .srcfd = (uint32_t)fd,
        .newfd_flags = (uint32_t)(flags & O_CLOEXEC),
    };
    /* Every signal is blocked in this thread: the wait for the program to
     * take the fd is not interrupted (see Listener.send_fd). */
    struct pin pin;
    int pinned = l->cfg->colocate && pin_here((pid_t)n->pid, &pin);
    if (pinned) {
        /* Install, give the thread its own affinity back while it still
         * waits for the answer (so it never runs with ours), then answer:
         * two steps, as _inject() in serve/handoff.py makes them. Python
         * sets colocate only for a listener with WAIT_KILLABLE_RECV
         * (Served.killable_wait), under which only a fatal signal ends the
         * program's wait in between, and the fd then goes with the process;
         * without it a signal would leave the fd installed and the call
         * interrupted. */
        add.flags = 0;
    }
    int got = ioctl(l->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
    int err = errno;
    if (pinned)
        unpin(&pin);
    close(fd);
    if (got < 0 && (err == ENOENT || err == ESRCH))
        return PT_GONE;
    if (got < 0 && !made)
        return PT_FORWARD;
    if (got < 0) {
        /* Still pending (both ways: ADDFD failed before it answered). */
        struct seccomp_notif_resp r = {.id = n->id, .error = -err};
        send_answer(l->listener, &r);
        return PT_SENT;
    }
    if (pinned) {
        struct seccomp_notif_resp r = {.id = n->id, .val = got};
        send_answer(l->listener, &r); /* the thread killed meanwhile took the fd along */
    }
    return PT_SENT;
}

/*
 * Write len bytes at addr in the memory of thread th, whose call n waits:
 * 0, -EFAULT where the program's own call would have failed to, -ESRCH
 * once it is gone, or -EAGAIN if we cannot (the call must then go to Python:
 * a call is never left without an answer while its thread waits). As write_memory() in kernel/program.py, and for the
 * same reasons: /proc/TID/mem is opened through th->proc, which names that
 * thread and no other, and ID_VALID asked after, so that the file is bound
 * to the memory of the thread whose call still waits (a tid is not reused
 * while its call waits for us, seccomp_unotify(2) NOTES). A file kept from
 * an earlier call of th's is bound to the same memory: th is the thread
 * it was opened for (as_ourselves found its pidfd alive at this call, and
 * a tid is not reused while its thread lives), and the gen has not moved,
 * so no execve of its thread group has been received since, which is the
 * only way to another mm (exec_mmap() in fs/exec.c; a vfork child's
 * file, opened on its parent's mm, is dropped by its exec). Like that
 * function's, the write goes through page protections (FOLL_FORCE), where
 * the kernel's copy_to_user() would fail with EFAULT.
 */
static int write_out(struct lane *l, struct thread *th, const struct seccomp_notif *n,
                     uint64_t addr, const void *data, size_t len)
{
    /* Kept where a cwd is (see struct cwds): a mem fd writes into the mm
     * its thread had when it was opened (proc_mem_open() in
     * fs/proc/base.c), which only an execve in its thread group replaces
     * (exec_mmap() in fs/exec.c), one of the calls that bump the gen. */
    struct look look = {0};
    int mem = keeps(l) ? kept_now(l, th->mem, th->mem_gen, &look) : -1;
    int opened = mem < 0;
    if (opened)
        mem = openat(th->proc, "mem", O_RDWR | O_CLOEXEC);
    __u64 id = n->id;
    if (mem < 0) {
        /* Gone, if its call is: else not ours to open (EMFILE, EACCES...),
         * or th is of a thread gone whose number the caller has now, and
         * the call goes to Python, which still owes it an answer. */
        return ioctl(l->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) < 0 ? -ESRCH : -EAGAIN;
    }
    int r = -ESRCH;
    if (ioctl(l->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0) {
        /* Kept only now that the call it was opened for still waits: th's
         * /proc directory named that very thread at the open, in the mm it
         * keeps until its group's next exec. Before the check it might
         * name another (audit helper-50): a leader's call received after
         * a thread of its group called execve, answered once that thread
         * had taken the leader's tid in de_thread() (its own /proc/TID
         * gone, the sweep let it count as settled) but not yet its new mm
         * in exec_mmap(): the fd, bound to the old mm, was kept for the
         * new image's calls. */
        if (opened && keeps(l))
            keep(l, &look, mem, &th->mem, &th->mem_gen);
        r = addr <= INT64_MAX && pwrite(mem, data, len, (off_t)addr) == (ssize_t)len ? 0 : -EFAULT;
    }
    if (mem != th->mem)
        close(mem);
    return r;
}

/* A kernel dev_t as struct stat holds it (new_encode_dev() in kdev_t.h). */
static unsigned long encoded_dev(uint32_t major, uint32_t minor)
{
    return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

/*
 * Into st, the struct stat that newfstatat(fd, "", AT_EMPTY_PATH) gives
 * for what x, a statx of that fd asking STATX_BASIC_STATS, says: both go
 * to vfs_getattr() (the statx's mask has STATX_MNT_ID more, which the VFS
 * answers itself and file systems ignore), with AT_STATX_SYNC_AS_STAT, and
 * cp_new_stat() in fs/stat.c copies each field so, its padding zeroed. A
 * stat the lane makes then costs one system call less: named_so asked it
 * already.
 */
static void stat_of(const struct statx *x, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_dev = encoded_dev(x->stx_dev_major, x->stx_dev_minor);
    st->st_ino = x->stx_ino;
    st->st_mode = x->stx_mode;
    st->st_nlink = x->stx_nlink;
    st->st_uid = x->stx_uid;
    st->st_gid = x->stx_gid;
    st->st_rdev = encoded_dev(x->stx_rdev_major, x->stx_rdev_minor);
    st->st_size = (off_t)x->stx_size;
    st->st_blksize = (blksize_t)x->stx_blksize;
    st->st_blocks = (blkcnt_t)x->stx_blocks;
    st->st_atim = (struct timespec){x->stx_atime.tv_sec, x->stx_atime.tv_nsec};
    st->st_mtim = (struct timespec){x->stx_mtime.tv_sec, x->stx_mtime.tv_nsec};
    st->st_ctim = (struct timespec){x->stx_ctime.tv_sec, x->stx_ctime.tv_nsec};
}

/*
 * Enforcing mode: make the call n (shape sh) on pinned, what its path
 * resolved to (-1: nothing is there), and put its answer in r.
 *
 * Python makes these calls on fds too (serve/pathwork.py, calls/ops.py),
 * so that the kernel never reads the program's path a second time, which
 * another of its threads may have changed since it was decided on. Made
 * on the file itself (AT_EMPTY_PATH), they give what the call would have
 * given on it: the same struct stat, struct statx or link text, to the
 * byte. One lookup differs from the kernel's own: an O_PATH lookup never
 * mounts an automount point at its last name (follow_automount() in
 * fs/namei.c wants LOOKUP_OPEN, _DIRECTORY, _AUTOMOUNT...), nor does the
 * stat family (vfs_fstatat() adds AT_NO_AUTOMOUNT), but an open and a
 * statx without AT_NO_AUTOMOUNT do: such a call that finds a directory that
 * is one (STATX_ATTR_AUTOMOUNT: a referral of NFS, CIFS, AFS; or a
 * directory of autofs, whose triggers are its directories) goes to Python,
 * which looks the name up as the call does.
 */
static enum verdict emulate(struct lane *l, struct thread *th,
                            const struct seccomp_notif *n, int sh, int pinned, uint64_t flags,
                            struct seccomp_notif_resp *r)
{
    const __u64 *a = n->data.args;
    if (pinned < 0) {
        /* An open takes its fd before it looks its path up: EMFILE first
         * (see table_full; open_errno() in serve/handoff.py). */
        int full = sh == SH_OPEN || sh == SH_OPENAT ? table_full(th) : 0;
        if (full < 0)
            return PT_FORWARD;
        r->error = full ? -EMFILE : -ENOENT;
        return PT_ANSWER;
    }
    /* The file's type and attributes, which the opens and readlink look
     * at: from named_so's statx of this very fd where it made one, else
     * asked (statx asks for its own, below). */
    struct statx stx = {0};
    if (sh == SH_STATX) {
        int sync = (int)(flags & AT_STATX_SYNC_TYPE);
        if (syscall(SYS_statx, pinned, "", AT_EMPTY_PATH | sync, (uint32_t)a[3], &stx) < 0)
            return PT_FORWARD;
    } else if (sh == SH_OPEN || sh == SH_OPENAT || sh == SH_READLINK || sh == SH_READLINKAT) {
        if (l->named_fd == pinned)
            stx = l->named;
        else if (syscall(SYS_statx, pinned, "", AT_EMPTY_PATH, STATX_TYPE, &stx) < 0)
            return PT_FORWARD;
    }
    int mounts = sh == SH_OPEN || sh == SH_OPENAT || (sh == SH_STATX && !(flags & AT_NO_AUTOMOUNT));
    if (mounts && S_ISDIR(stx.stx_mode) &&
        ((stx.stx_attributes & STATX_ATTR_AUTOMOUNT) || on_autofs(pinned)))
        return PT_FORWARD;
    struct stat st;
    const void *data = &st;
    uint64_t addr;
    size_t len = sizeof st;
    switch (sh) {
    case SH_OPEN:
    case SH_OPENAT:
        /* A quiet device for reading or writing ("2>/dev/null" opens it
         * O_RDWR in some shells, git for a child's stdin); a regular file
         * or a directory for reading only. */
        if (!quiet_device(stx.stx_mode, stx.stx_rdev_major, stx.stx_rdev_minor) &&
            ((flags & O_ACCMODE) != O_RDONLY ||
             (!S_ISREG(stx.stx_mode) && !S_ISDIR(stx.stx_mode))))
            return PT_FORWARD;
        return open_for(l, n, pinned, flags);
    case SH_STAT:
    case SH_LSTAT:
    case SH_NEWFSTATAT:
        /* The layout the kernel copies out (cp_new_stat(), x86_64: struct stat). */
        if (l->named_fd == pinned &&
            (l->named.stx_mask & STATX_BASIC_STATS) == STATX_BASIC_STATS)
            stat_of(&l->named, &st);
        else if (syscall(SYS_newfstatat, pinned, "", &st, AT_EMPTY_PATH) < 0)
            return PT_FORWARD;
        addr = sh == SH_NEWFSTATAT ? a[2] : a[1];
        break;
    case SH_STATX:
        data = &stx, len = sizeof stx, addr = a[4]; /* all of it: cp_statx() */
        break;
    case SH_READLINK:
    case SH_READLINKAT: {
        /* do_readlinkat() in fs/stat.c: EINVAL for anything but a link. */
        if (!S_ISLNK(stx.stx_mode)) {
            r->error = -EINVAL;
            return PT_ANSWER;
        }
        ssize_t got = readlinkat(pinned, "", l->name, PT_PATH_MAX);
        if (got < 0)
            return PT_FORWARD;
        uint64_t size = (uint32_t)(int)(sh == SH_READLINK ? a[2] : a[3]); /* an int */
        data = l->name, addr = sh == SH_READLINK ? a[1] : a[2];
        len = (uint64_t)got < size ? (size_t)got : (size_t)size; /* readlink(2): truncated */
        break;
    }
    case SH_ACCESS:
    case SH_FACCESSAT:
    case SH_FACCESSAT2: {
        /* On the file itself, with the program's mode and its AT_EACCESS:
         * the check is made with our real or effective ids and capabilities
         * as it asks, which are its own (as_ourselves: all eight ids, the
         * effective and permitted sets). A write check on a read-only mount
         * is EROFS there too (do_faccessat() in fs/open.c). */
        uint32_t mode = (uint32_t)(sh == SH_ACCESS ? a[1] : a[2]);
        int how = AT_EMPTY_PATH | (int)(flags & AT_EACCESS);
        r->error = syscall(SYS_faccessat2, pinned, "", mode, how) < 0 ? -errno : 0;
        return PT_ANSWER;
    }
    default:
        return PT_FORWARD;
    }
    int err = write_out(l, th, n, addr, data, len);
    if (err == -ESRCH)
        return PT_GONE;
    if (err == -EAGAIN)
        return PT_FORWARD;
    if (err < 0)
        r->error = err;
    else
        r->val = sh == SH_READLINK || sh == SH_READLINKAT ? (int64_t)len : 0;
    return PT_ANSWER;
}

/* Whether the call of n may be made here (enforcing mode) and how: its
 * flags and sizes are ones the kernel takes (an EINVAL it would answer
 * before any lookup is Python's to give), and it is a read. */
static int emulable(int sh, const __u64 *a, uint64_t flags)
{
    switch (sh) {
    case SH_OPEN:
    case SH_OPENAT:
        /* Without O_CREAT, a write only of a quiet device (see emulate). */
        if ((flags & O_ACCMODE) == O_ACCMODE)
            return 0;
        if (flags & O_CREAT)
            return !(flags & ~(uint64_t)PT_MAKE_FLAGS);
        /* O_NOFOLLOW: a read only (open_entry). */
        if (flags & O_NOFOLLOW)
            return (flags & O_ACCMODE) == O_RDONLY &&
                   !(flags & ~(uint64_t)(O_NOFOLLOW | PT_OPEN_FLAGS));
        return !(flags & ~(uint64_t)(O_ACCMODE | PT_OPEN_FLAGS));
    case SH_STAT:
    case SH_LSTAT:
    case SH_NEWFSTATAT:
        return 1;
    case SH_STATX:
        /* do_statx(): a reserved mask bit, or both sync types, is EINVAL. */
        return !((uint32_t)a[3] & STATX__RESERVED) &&
               (flags & AT_STATX_SYNC_TYPE) != AT_STATX_SYNC_TYPE;
    case SH_READLINK:
        return (int)a[2] > 0; /* do_readlinkat(): bufsiz <= 0 is EINVAL */
    case SH_READLINKAT:
        return (int)a[3] > 0;
    case SH_ACCESS:
        return !((uint32_t)a[1] & ~(uint32_t)S_IRWXO); /* do_faccessat(): else EINVAL */
    case SH_FACCESSAT:
    case SH_FACCESSAT2:
        return !((uint32_t)a[2] & ~(uint32_t)S_IRWXO);
    case SH_MKDIR:
    case SH_MKDIRAT:
    case SH_RMDIR:
    case SH_UNLINK:
    case SH_UNLINKAT: /* its flags are looked at in passes */
    case SH_RENAME:
    case SH_RENAMEAT:
    case SH_RENAMEAT2:
        return 1;
    case SH_EXECVE: /* only ever answered where nothing is (exec_missing) */
        return 1;
    default:
        return 0;
    }
}

/* Whether path names what can only be a directory: "x/" or "x/." (".."
 * never reaches here, see plain_path). */
static int names_dir(const char *path)
{
    size_t len = strlen(path);
    return len > 0 && (path[len - 1] == '/' ||
                       (path[len - 1] == '.' && (len == 1 || path[len - 2] == '/')));
}

/*
 * Virtualizing mode: an open that only reads, of a name that is the source
 * of an exact redirect (cfg->redirects: as Python resolved the rules in our
 * root), made here as Python makes it: the target opened by its name from
 * our root, its links followed, with the program's flags (decide_open()
 * in policy/decision.py: EmulateOpen of the target; perform_open() in
 * serve/opens.py), O_NONBLOCK added against a lease or a FIFO (see
 * open_for), and given to the program if it is a regular file or a
 * directory. Made as ourselves, which is as the program: Python gives the
 * table only where we hold every capability that overrides file
 * permissions (our groups never count), and as_ourselves found the
 * thread's ids, capabilities and user namespace to be ours. A name that
 * must be a directory ("x/": Python adds O_DIRECTORY), other flags, or any
 * failure go to Python, which says the errno (ours, EMFILE, are not the
 * program's to see).
 */
static enum verdict redirect(struct lane *l, const struct seccomp_notif *n, uint64_t flags)
{
    const char *to = NULL;
    if (!l->watched_name || l->cfg->redirects == NULL || !l->cfg->check_creds ||
        (flags & O_ACCMODE) != O_RDONLY ||
        (flags & ~(uint64_t)PT_OPEN_FLAGS) || names_dir(l->path))
        return PT_FORWARD;
    for (const char *from = l->cfg->redirects; *from && to == NULL;) {
        const char *target = from + strlen(from) + 1;
        if (!strcmp(from, l->name))
            to = target;
        from = target + strlen(target) + 1;
    }
    if (to == NULL)
        return PT_FORWARD;
    /* Looked at before it is opened, as Python looks (may_block() in
     * serve/opens.py): an open of a FIFO or a device acts (a FIFO's
     * writer is let go, a device does what its open does), so such a
     * target is Python's to open, once; and again once opened, in case
     * one was swapped in meanwhile. */
    struct stat st;
    if (stat(to, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return PT_FORWARD;
    int fd = open(to, (int)flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return PT_FORWARD;
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
        close(fd);
        return PT_FORWARD;
    }
    return inject(l, n, fd, flags, 0);
}

/*
 * Whether thread tid leads its thread group: pidfd_open(2) without
 * PIDFD_THREAD refuses one that does not (EINVAL). Only such a thread's
 * exec may be let through here: another's takes the leader's tid in
 * de_thread() (fs/exec.c), and with it the leader's entry and the cwd a
 * lane keeps for it. This lane notes the tid unsettled (note_cwd), but the
 * next lane starts from Python's list (Served.moved_cwd, which Python
 * notes for each exec it decides) and would keep the old leader's cwd
 * under the new image, were this one to end before the exec is over
 * (audit helper-53: a write let through in a read-only tree). The caller
 * waits for our answer, so it neither exits nor execs meanwhile.
 */
static int leads_group(pid_t tid)
{
    int fd = (int)syscall(SYS_pidfd_open, tid, 0);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/*
 * An execve whose name has nothing at all there (no file, no link), in
 * thread th's view, where no rule looks: answered ENOENT here, in either
 * mode. A shell or execvp(3) tries each directory of PATH in turn until
 * one holds the program, and each miss made a round trip through Python
 * (~100 us, against ~2 natively) only to be let through and fail.
 *
 * The kernel's answer is the same: do_execveat_common() opens the file
 * (alloc_bprm(), do_open_execat()) before it reads argv or envp or looks
 * at the file, so ENOENT wins over their EFAULT or E2BIG. One check comes
 * before that open: a process that set*uid() past RLIMIT_NPROC has its
 * next execve fail with EAGAIN (PF_NPROC_EXCEEDED), and here keeps that
 * for the exec that finds a file, which Python lets through (execvp(3)
 * still stops on that EAGAIN, at the file instead of the first miss).
 *
 * A name where something is, no rule watches, by a thread that leads its
 * group (leads_group), is let through where cfg->exec_runs says Python
 * would let it through as it is: virtualizing mode, and no rule that could
 * refuse what an exec runs besides the file named (a deny, an exec rule:
 * the interpreter of a "#!" script, the loader of a dynamic binary, which
 * the kernel opens by name with no call to trap;
 * Decider._runs_what_the_rules_refuse() reads them). Python then
 * decides on the name alone, as here, and answers CONTINUE, ~150 us a
 * round trip for each program a shell runs.
 *
 * Everything else goes to Python: a name where something is otherwise, a
 * dangling link (followed to where a rule may be), a lookup that fails
 * otherwise, a name a rule watches (a redirect's source need not exist),
 * a thread in another mount namespace, and, when the policy has exec
 * rules, every execve (its shape is then not given: serve/passthrough.py).
 * A name below a directory that is not there is missing too (see
 * resolve).
 */
static enum verdict exec_missing(struct lane *l, struct thread *th, const struct target *t,
                                 struct seccomp_notif_resp *r)
{
    /* Our lookup is the program's only in its mount namespace: in
     * virtualizing mode (as_ourselves compares namespaces only when we make
     * calls) a program may have mounts of its own (unshare -m, a daemon's
     * client under PrivateTmp=), where the name may well be there. */
    if (!in_our_mounts(th, l->cfg))
        return PT_FORWARD;
    int pinned = -1;
    if (!passes_target(l, th, t, &pinned))
        return PT_FORWARD;
    if (pinned >= 0) {
        close(pinned);
        return l->cfg->exec_runs && leads_group(th->tid) ? PT_CONTINUE : PT_FORWARD;
    }
    r->error = -ENOENT;
    return PT_ANSWER;
}

/* What may become of the call of n here (see enum verdict). */
static enum verdict passes(struct lane *l, const struct seccomp_notif *n,
                           struct seccomp_notif_resp *r)
{
    const __u64 *a = n->data.args;
    struct target t[2] = {{.dirfd = AT_FDCWD, .follow = 1}, {.dirfd = AT_FDCWD, .follow = 1}};
    int paths = 1;
    uint64_t flags = 0;
    if (n->data.arch != AUDIT_ARCH_X86_64_ || n->data.nr < 0 || n->data.nr >= PT_MAX_NR)
        return PT_FORWARD;
    int sh = l->cfg->shape[n->data.nr];
    switch (sh) {
    case SH_OPEN:
    case SH_OPENAT:
        if (sh == SH_OPEN) {
            t[0].addr = a[0], flags = a[1];
        } else {
            t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1], flags = a[2];
        }
        /* O_TMPFILE names a directory to make a file in: Python's to decide.
         * O_CREAT makes a missing name, whose name resolve() finds only
         * where nothing at all is there (a dangling link, which O_CREAT
         * follows to make its target, goes to Python); with O_EXCL it
         * follows no last link (open(2); OpenCall.follows_last_link). */
        if ((flags & __O_TMPFILE) == __O_TMPFILE) /* it holds O_DIRECTORY's bit too */
            return PT_FORWARD;
        t[0].follow =
            !(flags & O_NOFOLLOW) && (flags & (O_CREAT | O_EXCL)) != (O_CREAT | O_EXCL);
        /* Enforcing mode: an open that may make a file is made in the
         * directory of its name (make_file), which is then the name's entry;
         * so is one with O_NOFOLLOW (open_entry), which the file keeps. */
        t[0].entry = l->cfg->emulate && (flags & (O_CREAT | O_NOFOLLOW));
        break;
    case SH_STAT:
    case SH_ACCESS:
    case SH_GETXATTR:
    case SH_LISTXATTR:
        t[0].addr = a[0];
        break;
    case SH_LSTAT:
    case SH_READLINK:
    case SH_LGETXATTR:
    case SH_LLISTXATTR:
        t[0].addr = a[0], t[0].follow = 0;
        break;
    case SH_NEWFSTATAT:
    case SH_STATX:
    case SH_FACCESSAT2: {
        uint64_t known = AT_SYMLINK_NOFOLLOW |
                         (sh == SH_FACCESSAT2 ? AT_EACCESS : AT_NO_AUTOMOUNT) |
                         (sh == SH_STATX ? AT_STATX_SYNC_TYPE : 0);
        flags = (uint32_t)(sh == SH_STATX ? a[2] : a[3]);
        /* AT_EMPTY_PATH: what the lane may CONTINUE must be a path it
         * looked up; made here, the call can be made on the file itself. */
        if (l->cfg->emulate && sh != SH_FACCESSAT2)
            known |= AT_EMPTY_PATH;
        if (flags & ~known)
            return PT_FORWARD; /* AT_EMPTY_PATH, or what the kernel refuses (EINVAL) */
        t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1];
        /* Not the cwd's: Python decides on its name (rules apply to a cwd). */
        t[0].on_fd = (flags & AT_EMPTY_PATH) != 0 && t[0].dirfd >= 0;
        t[0].follow = !(flags & AT_SYMLINK_NOFOLLOW);
        break;
    }
    case SH_FACCESSAT:
        t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1];
        break;
    case SH_READLINKAT:
        t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1], t[0].follow = 0;
        break;
    /* The calls that make, remove or rename a name act on the entry, never
     * on where a link there leads. */
    case SH_MKDIR:
    case SH_RMDIR:
    case SH_UNLINK:
        t[0].addr = a[0], t[0].follow = 0, t[0].entry = 1;
        break;
    case SH_MKDIRAT:
        t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1], t[0].follow = 0, t[0].entry = 1;
        break;
    case SH_UNLINKAT:
        if ((uint32_t)a[2] & ~(uint32_t)AT_REMOVEDIR)
            return PT_FORWARD; /* the kernel refuses other flags (EINVAL) */
        t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1], t[0].follow = 0, t[0].entry = 1;
        break;
    case SH_RENAME:
    case SH_RENAMEAT:
    case SH_RENAMEAT2:
        if (sh == SH_RENAME) {
            t[0].addr = a[0], t[1].addr = a[1];
        } else {
            t[0].dirfd = (int)(uint32_t)a[0], t[0].addr = a[1];
            t[1].dirfd = (int)(uint32_t)a[2], t[1].addr = a[3];
            if (sh == SH_RENAMEAT2 && (uint32_t)a[4] & ~(uint32_t)(RENAME_NOREPLACE |
                                                                 RENAME_EXCHANGE |
                                                                 RENAME_WHITEOUT))
                return PT_FORWARD;
        }
        paths = 2;
        for (int i = 0; i < 2; i++)
            t[i].follow = 0, t[i].entry = 1, t[i].moves = 1;
        break;
    case SH_EXECVE:
        t[0].addr = a[0]; /* followed to the end, as do_open_execat() does */
        break;
    default:
        return PT_FORWARD;
    }
    int emulating = l->cfg->emulate;
    if (emulating && !emulable(sh, a, flags))
        return PT_FORWARD;
    pid_t tid = (pid_t)n->pid;
    struct thread *th = thread_of(l, tid);
    if (th == NULL)
        return PT_FORWARD;
    if (!as_ourselves(l, th)) {
        forget(th); /* gone, or changed: looked at afresh next time */
        return PT_FORWARD;
    }
    if (sh == SH_EXECVE)
        return exec_missing(l, th, &t[0], r);
    if (!emulating) {
        for (int i = 0; i < paths; i++)
            if (!passes_target(l, th, &t[i], NULL))
                return sh == SH_OPEN || sh == SH_OPENAT ? redirect(l, n, flags) : PT_FORWARD;
        return PT_CONTINUE;
    }
    l->named_fd = -1;
    /* A stat made here is answered from named_so's statx (see stat_of). */
    l->named_asks = sh == SH_STAT || sh == SH_LSTAT || sh == SH_NEWFSTATAT ? STATX_BASIC_STATS : 0;
    if (t[0].entry)
        return emulate_entry(l, th, n, sh, t, paths, flags, r);
    int pinned;
    if (!passes_target(l, th, &t[0], &pinned))
        return PT_FORWARD;
    enum verdict v = emulate(l, th, n, sh, pinned, flags, r);
    if (pinned >= 0)
        close(pinned);
    return v;
}

static int tell(int forward, char what)
{
    return send(forward, &what, 1, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

/* Hand n to Python; 0, or -errno after failing it closed. */
static int forward_one(struct lane *l, const struct seccomp_notif *n)
{
    COUNT(l->cfg->forwarded);
    if (send(l->forward, n, sizeof *n, MSG_NOSIGNAL) == sizeof *n)
        return 0;
    /* Nobody to decide it: fail it closed (EPERM, as a handler that
     * crashes), never leave it waiting or let it through. */
    int err = -errno;
    struct seccomp_notif_resp r = {.id = n->id, .error = -EPERM};
    send_answer(l->listener, &r);
    return err;
}

/*
 * What the two threads of one lane share (cfg->threads 2). The leader is
 * pt_run's caller: it polls the listener, and RECVs. RECV blocks, and
 * nothing but a signal would end one that lost its notification to another
 * reader (seccomp_notify_recv(): a semaphore, kernel/seccomp.c), so the
 * poll and the RECV are made under a lock, by one thread at a time, after
 * poll said a notification waits: no thread ever blocks in RECV, and the
 * stop eventfd reaches the leader's poll. The follower sleeps (on wake)
 * until the leader, holding a notification, sees another one wait: then it
 * takes what waits while the leader answers, and goes back to sleep as soon
 * as nothing waits or the leader is at the listener. A program that makes
 * one call at a time so never wakes it (each hand-over between threads
 * costs a wake-up: ~9 us per call when both took turns at every call),
 * and many programs, or one with many threads, get both CPUs.
 *
 * The first reason to end is kept (end); the leader says it once the
 * follower is out (pt_run), so that a notification the follower still
 * holds is forwarded or answered before Python reads that the lane ended
 * and stops reading what it forwards.
 */
struct shared {
    pthread_mutex_t lock; /* held over a poll and its RECV */
    struct pt_config *cfg;
    int listener, stop;
    int wake;    /* eventfd: the follower's sleep ends (calls wait, or the lane ends) */
    int ended;   /* eventfd: the follower ended the lane (the leader's poll sees it) */
    int asleep;  /* the follower sleeps on wake (atomic) */
    /* Set once, by whichever thread first has a reason: with atomics, since
     * the follower must not wait for the lock, which the leader holds
     * through its poll. */
    int end;     /* 'S', 'H', 'I', 'F', 'E' (see pt_run); 0 while serving (atomic) */
    int result;  /* what pt_run returns: 0, or the first -errno */
    struct cwds cwds;
};

/*
 * At the receipt of each call, before anything is made of it: an earlier
 * call of tid's that may move a cwd has taken effect (or was withdrawn, and
 * comes again), and this one may move one (see struct cwds).
 */
static void note_cwd(struct cwds *c, const struct pt_config *cfg, pid_t tid, int nr)
{
    int moves = cfg->moves_cwd[nr];
    if (!moves && __atomic_load_n(&c->count, __ATOMIC_ACQUIRE) == 0)
        return;
    pthread_mutex_lock(&c->lock);
    int count = c->count;
    for (int i = 0; i < PT_UNSETTLED; i++) {
        if (tid > 0 && c->tids[i] == tid)
            c->tids[i] = 0, count--;
    }
    if (moves) {
        int i = 0;
        while (i < PT_UNSETTLED && c->tids[i] != 0)
            i++;
        if (tid > 0 && i < PT_UNSETTLED)
            c->tids[i] = tid, count++;
        else
            count |= PT_UNSETTLED_OVER; /* for good: never taken off */
    }
    __atomic_store_n(&c->count, count, __ATOMIC_RELEASE);
    if (moves)
        __atomic_add_fetch(&c->gen, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&c->lock);
}

/* End the lane, for the first reason given; any thread. */
static void end_lane(struct shared *s, char why, int result)
{
    int none = 0;
    if (__atomic_compare_exchange_n(&s->end, &none, why, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        __atomic_store_n(&s->result, result, __ATOMIC_RELEASE);
}

static int ending(struct shared *s)
{
    return __atomic_load_n(&s->end, __ATOMIC_ACQUIRE) != 0;
}

static void bump(int efd)
{
    uint64_t one = 1;
    if (efd >= 0 && write(efd, &one, sizeof one) < 0) {
        /* an eventfd's counter does not fill up with ones */
    }
}

/*
 * Answer n, received by thread l; 0, or 1 once the lane is to end (s->end
 * set). window and passed: this thread's count of calls (see PT_WINDOW).
 */
static int answer(struct shared *s, struct lane *l, const struct seccomp_notif *n,
                  unsigned *window, unsigned *passed)
{
    struct pt_config *cfg = s->cfg;
    if (cfg->cwd_kept && n->data.nr >= 0 && n->data.nr < PT_MAX_NR)
        note_cwd(&s->cwds, cfg, (pid_t)n->pid, n->data.nr);
    if (cfg->cwd_kept)
        keep_cwds_fresh(l);
    /* A lane that lets through almost nothing only adds a hop to every
     * call (a container's, whose root is not ours; a program of another
     * user): it hands the listener back to Python, which tries a lane
     * again ever later (lane_due in serve/passthrough.py). */
    if (++*window == PT_WINDOW) {
        if (*passed * 8 < *window) {
            int err = forward_one(l, n);
            end_lane(s, err ? 'E' : 'F', err);
            return 1;
        }
        *window = *passed = 0;
    }
    struct seccomp_notif_resp r = {.id = n->id};
    enum verdict v = passes(l, n, &r);
    if (v == PT_GONE) {
        COUNT(cfg->gone);
        return 0;
    }
    if (v != PT_FORWARD) {
        ++*passed;
        if (v == PT_CONTINUE)
            r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        if (v != PT_SENT)
            send_answer(s->listener, &r);
        COUNT(cfg->continued[n->data.nr]);
        /* In virtualizing mode an fd is sent for a redirect alone. Counted
         * after the call's shape, and read before it (serve/passthrough.py,
         * count), so that a read never finds more redirects than calls. */
        if (v == PT_SENT && !cfg->emulate)
            COUNT(cfg->redirected);
        /* Likewise: an execve answered is one of no file (one let through
         * is a "continue", see exec_missing). */
        if (cfg->shape[n->data.nr] == SH_EXECVE && v == PT_ANSWER)
            COUNT(cfg->missing);
        if (l->follower)
            COUNT(cfg->second);
        return 0;
    }
    int err = forward_one(l, n);
    if (err == 0)
        return 0;
    end_lane(s, 'E', err);
    return 1;
}

/* RECV into n, under s->lock, after poll said one waits: 1 if received,
 * 0 if not (the thread died between poll and RECV; EINTR, which blocked
 * signals make unlikely), -1 if the lane ends. */
static int receive(struct shared *s, struct seccomp_notif *n)
{
    memset(n, 0, sizeof *n); /* the kernel refuses a non-zeroed buffer (EINVAL) */
    if (ioctl(s->listener, SECCOMP_IOCTL_NOTIF_RECV, n) == 0)
        return 1;
    if (errno == ENOENT) {
        COUNT(s->cfg->gone);
        return 0;
    }
    if (errno == EINTR)
        return 0;
    end_lane(s, 'E', -errno);
    return -1;
}

/* Whether a notification waits on the listener now. */
static int waiting(int listener)
{
    struct pollfd p = {.fd = listener, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* At most this many calls between two looks of the leader's for a call
 * that waits while it holds one (see lead). */
#define PT_LOOK_MAX 16

/* The leader's turns at the listener, until the lane ends. */
static void lead(struct shared *s, struct lane *l, int two)
{
    struct pt_config *cfg = s->cfg;
    struct pollfd fds[3] = {{.fd = s->listener, .events = POLLIN},
                            {.fd = s->stop, .events = POLLIN},
                            {.fd = two ? s->ended : -1, .events = POLLIN}};
    unsigned window = 0, passed = 0;
    unsigned gap = 1, since = 0; /* calls between looks for another waiting */
    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (ending(s))
            break;
        int ready = poll(fds, 3, cfg->idle_ms);
        if (ready <= 0) {
            if (ready < 0 && errno == EINTR) {
                pthread_mutex_unlock(&s->lock);
                continue;
            }
            /* idle: the threads and their fds go until calls come again */
            end_lane(s, ready == 0 ? 'I' : 'E', ready == 0 ? 0 : -errno);
            break;
        }
        if ((fds[0].revents | fds[1].revents | fds[2].revents) & POLLNVAL) {
            end_lane(s, 'E', -EBADF); /* an fd closed under us: a bug of the caller's */
            break;
        }
        if (fds[1].revents)
            end_lane(s, 'S', 0);
        else if (!(fds[0].revents & POLLIN) && (fds[0].revents & (POLLHUP | POLLERR)))
            end_lane(s, 'H', 0);
        if (ending(s))
            break; /* also the follower's end (fds[2]) */
        if (!(fds[0].revents & POLLIN)) {
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        struct seccomp_notif n;
        int got = receive(s, &n);
        if (got < 0)
            break;
        pthread_mutex_unlock(&s->lock);
        /* Another call waits while we hold this one: the follower takes it.
         * Looked at once the lock is let go: a follower that failed to take
         * it a moment ago is asleep by now, and is woken. A look is a
         * poll(2), some 1 us of a call's 20: where looks find nothing (a
         * program that makes one call at a time), they are made ever more
         * seldom, down to one call in PT_LOOK_MAX, and at each call again
         * once one finds a call waiting; the follower then starts at most
         * PT_LOOK_MAX calls late. */
        if (got && two && __atomic_load_n(&s->asleep, __ATOMIC_ACQUIRE) && ++since >= gap) {
            since = 0;
            if (!waiting(s->listener)) {
                gap = gap < PT_LOOK_MAX ? gap * 2 : PT_LOOK_MAX;
            } else {
                gap = 1;
                if (__atomic_exchange_n(&s->asleep, 0, __ATOMIC_ACQ_REL))
                    bump(s->wake);
            }
        }
        if (got && answer(s, l, &n, &window, &passed))
            return;
    }
    pthread_mutex_unlock(&s->lock);
}

/* The follower's turns, while calls wait that the leader has not taken. */
static void follow_calls(struct shared *s, struct lane *l)
{
    unsigned window = 0, passed = 0;
    for (;;) {
        drop_kept(l); /* none kept while it sleeps (see struct cwds) */
        __atomic_store_n(&s->asleep, 1, __ATOMIC_RELEASE);
        uint64_t count;
        if (!ending(s) && read(s->wake, &count, sizeof count) < 0 &&
            errno != EINTR)
            return;
        for (;;) {
            if (pthread_mutex_trylock(&s->lock) != 0)
                break; /* the leader is at the listener: back to sleep */
            if (ending(s)) {
                pthread_mutex_unlock(&s->lock);
                return;
            }
            struct seccomp_notif n;
            int got = waiting(s->listener) ? receive(s, &n) : 0;
            pthread_mutex_unlock(&s->lock);
            if (got < 0) {
                bump(s->ended);
                return;
            }
            if (!got)
                break; /* nothing waits */
            if (answer(s, l, &n, &window, &passed)) {
                bump(s->ended);
                return;
            }
        }
    }
}

struct follower {
    struct shared *s;
    struct lane l;
};

static void *follow(void *arg)
{
    struct follower *f = arg;
    follow_calls(f->s, &f->l);
    return NULL;
}

static int lane_open(struct lane *l, struct shared *s, int forward)
{
    *l = (struct lane){.cfg = s->cfg, .cwds = &s->cwds, .listener = s->listener,
                       .forward = forward, .umask_now = -1};
    l->fddir = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    return l->fddir < 0 ? -errno : 0;
}

static void lane_close(struct lane *l)
{
    for (int i = 0; i < PT_THREADS; i++)
        forget(&l->threads[i]);
    close(l->fddir);
}

/*
 * Serve listener until stop is readable (returns 0 after sending "S"),
 * every process using the filter is gone (0 after "H"), it lets through
 * too little to be worth its hop (0 after "F"), or no call came for
 * idle_ms (0 after "I"); -errno on an error of ours, after "E" if the
 * socket still takes it. With cfg->threads 2, a second thread serves
 * beside the caller's (struct shared); one that cannot start leaves one.
 */
int pt_run(int listener, int forward, int stop, struct pt_config *cfg)
{
    if (cfg->version != PT_VERSION) {
        tell(forward, 'E');
        return -EINVAL;
    }
    sigset_t all;
    sigfillset(&all);
    /* This thread's alone (ended with it), and inherited by the follower:
     * no handler runs between a RECV and its answer, and none interrupts
     * the wait of an ADDFD (see Listener.send_fd). */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    struct shared s = {.cfg = cfg, .listener = listener, .stop = stop, .wake = -1, .ended = -1};
    struct lane *l = malloc(sizeof *l);
    int err = l == NULL ? -ENOMEM : lane_open(l, &s, forward);
    if (err < 0) {
        free(l);
        tell(forward, 'E');
        return err;
    }
    pthread_mutex_init(&s.lock, NULL);
    /* The threads Python let such a call through for, before this run
     * (struct cwds); a 0 is none. */
    pthread_mutex_init(&s.cwds.lock, NULL);
    for (int i = 0; i < PT_UNSETTLED; i++) {
        if ((s.cwds.tids[i] = cfg->unsettled[i]) != 0)
            s.cwds.count++;
    }
    /* The follower, if it may run: any failure to make it leaves one thread. */
    pthread_t other;
    int two = 0;
    struct follower *f = cfg->threads > 1 ? malloc(sizeof *f) : NULL;
    if (f != NULL) {
        s.wake = eventfd(0, EFD_CLOEXEC);
        s.ended = eventfd(0, EFD_CLOEXEC);
        f->s = &s;
        if (s.wake >= 0 && s.ended >= 0 && lane_open(&f->l, &s, forward) == 0) {
            f->l.follower = 1;
            two = pthread_create(&other, NULL, follow, f) == 0;
            if (!two)
                lane_close(&f->l);
        }
    }
    lead(&s, l, two);
    if (two) {
        bump(s.wake); /* it sees the end, whether asleep or at a call */
        pthread_join(other, NULL);
        lane_close(&f->l);
    }
    if (s.wake >= 0)
        close(s.wake);
    if (s.ended >= 0)
        close(s.ended);
    lane_close(l);
    free(l), free(f);
    pthread_mutex_destroy(&s.lock);
    pthread_mutex_destroy(&s.cwds.lock);
    int told = tell(forward, s.end ? (char)s.end : 'E');
    return s.result ? s.result : told;
}

/*
 * Putting a vfork parent's bytes back (serve/rewrite.py, _Restorer): an
 * exec redirected in a vfork child wrote the target's name over a string of
 * the parent, whose memory the child runs in (vfork(2)). The parent resumes
 * the moment the exec replaces the child's memory, and may at once reuse
 * those bytes (dash builds its next command's words and pointers there), so
 * the old bytes go back only while the new ones are still there. Made here,
 * not in Python: between its look and its write a Python thread can wait
 * milliseconds for the GIL, time enough for the parent to run a short
 * child, parse its next line over that very memory, and then have its
 * pointers overwritten with our path (a SIGSEGV of dash seen in CI). Here
 * the look and the write are two system calls apart, and the end of the
 * exec is seen at once in its first millisecond (yielding the CPU between
 * looks: ~1.4 ms of CPU per such exec), within 20 us up to 5 ms, within
 * 200 us after (as the Python loop looks). No memory operation across
 * processes compares and writes at once, so a thread preempted between the
 * two can still write over bytes reused meanwhile; only stopping the parent
 * (ptrace) would close that. Measured with a parent that reuses the bytes 0-200 us after its
 * vfork() returns while another of its threads keeps us busy: 8-15 writes
 * in 1 000 landed on reused bytes from Python, 0-4 from here.
 *
 * mem is the parent's /proc/PID/mem, opened while it was suspended (bound
 * to that address space). Waits at most timeout_ms for the exec (or less:
 * a kcmp error, the child gone or one we may not compare, ends the wait).
 * Returns 1 if restored; 0 if not: the parent's bytes had changed, it is
 * gone, or len is out of range. Sets this thread's timer slack: call it
 * from a thread of its own.
 */
int pt_restore(pid_t child, pid_t parent, int mem, uint64_t addr, const char *old,
               const char *new_, uint32_t len, int32_t timeout_ms)
{
    char now[PT_PATH_MAX];
    if (len == 0 || len > sizeof now)
        return 0;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* ns: the 20 us pauses; a thread of its own */
    struct timespec start, t;
    clock_gettime(CLOCK_MONOTONIC, &start);
    /* kcmp(2): 0 while both run in one address space; an error once either is gone. */
    while (syscall(SYS_kcmp, child, parent, KCMP_VM, 0, 0) == 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t ms = ((int64_t)(t.tv_sec - start.tv_sec) * 1000000000 +
                      (t.tv_nsec - start.tv_nsec)) / 1000000;
        if (ms >= timeout_ms)
            break; /* a child that failed its exec and runs on in our bytes */
        if (ms < 1) {
            sched_yield();
            continue;
        }
        struct timespec pause = {0, ms < 5 ? 20000 : 200000};
        nanosleep(&pause, NULL);
    }
    if (pread(mem, now, len, (off_t)addr) != (ssize_t)len || memcmp(now, new_, len) != 0)
        return 0;
    return pwrite(mem, old, len, (off_t)addr) == (ssize_t)len;
}
