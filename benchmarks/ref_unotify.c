/* ref_unotify: a seccomp user-notification supervisor cut to the bone, the
 * yardstick unotifyd is measured against.
 *
 *   ref_unotify [-w] [-s] [-l | -r] [-v] [-f FROM] [-t TO] -- PROGRAM [ARG...]
 *
 * Runs PROGRAM (searched in PATH) under a filter that sends the open family
 * (open, openat, openat2, creat) to this process, and answers each call:
 * a path that is exactly the string FROM (default /etc/passwd) is opened
 * here as TO (default /etc/hostname) and the file handed over; every other
 * path is let through with CONTINUE. Children of PROGRAM inherit the filter
 * and are served too, until the last of them is gone.
 *
 *   -w  set SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on the listener (Linux 6.6+)
 *   -s  trap the metadata calls too (the stat family, access, readlink)
 *   -l  before it lets a call through, look its path up as a supervisor
 *       that decides on what a name resolves to must at least: read it
 *       from the program, resolve it from the thread's cwd (openat2), read
 *       the name of what it found back (/proc/self/fd/N) and close it
 *   -r  the same with the least resolution there is: one fstatat of the
 *       path from the thread's cwd, the kind a supervisor deciding on what
 *       a file is (its device and inode), not on its name, would make
 *   -v  at the end, print "ref_unotify: notifications=N redirects=M" on
 *       stderr
 *
 * Exit status: PROGRAM's (128 + the signal if a signal killed it); 1 for an
 * error of our own. It is what a supervisor costs at least, not a sandbox:
 * FROM is compared as a string (no resolution, no dirfd), TO is opened with
 * our credentials, and CONTINUE lets the program's own arguments through.
 *
 * Every kernel fact below is from seccomp_unotify(2) unless said otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
/* Linux 6.6 (include/uapi/linux/seccomp.h); Debian 12's headers are older.
 * The ioctl takes its flags by value, not through a pointer. */
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "ref_unotify: add this architecture's AUDIT_ARCH_ value"
#endif

static const char *from = "/etc/passwd", *to = "/etc/hostname";
static size_t from_size; /* strlen(from) + 1: the NUL must match too */
static int listener = -1;
static pid_t child;
static int verbose;
static unsigned long notifications, redirects;

static void die(const char *what)
{
	fprintf(stderr, "ref_unotify: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: ref_unotify [-w] [-s] [-l | -r] [-v] [-f FROM] [-t TO] -- PROGRAM [ARG...]\n");
	exit(2);
}

/* ---------------------------------------------------------------- the filter */

static const unsigned int trapped[] = {
	SYS_openat, SYS_openat2,
#ifdef SYS_open
	SYS_open,
#endif
#ifdef SYS_creat
	SYS_creat,
#endif
};
#define N_TRAPPED (sizeof trapped / sizeof trapped[0])

/* With -s, the metadata calls too (what unotifyd's full view traps of a
 * git status): the floor of a supervisor that gets a notification for each
 * of them and lets it through. */
static const unsigned int metadata[] = {
	SYS_newfstatat, SYS_statx, SYS_faccessat, SYS_faccessat2, SYS_readlinkat,
#ifdef SYS_stat
	SYS_stat, SYS_lstat, SYS_access, SYS_readlink,
#endif
};
#define N_METADATA (sizeof metadata / sizeof metadata[0])
static int trap_metadata;

/* USER_NOTIF for the trapped calls, ALLOW for the rest; a call made through
 * another ABI (i386 on x86_64, x32) would number its calls differently and
 * slip past the list, so it kills the process instead (seccomp(2)). */
static void install_filter_and_send(int sock)
{
	unsigned int nrs[N_TRAPPED + N_METADATA];
	size_t n = 0;
	for (size_t i = 0; i < N_TRAPPED; i++)
		nrs[n++] = trapped[i];
	for (size_t i = 0; trap_metadata && i < N_METADATA; i++)
		nrs[n++] = metadata[i];
	struct sock_filter f[8 + N_TRAPPED + N_METADATA];
	unsigned short k = 0;

	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, arch));
	f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
					      offsetof(struct seccomp_data, nr));
	/* The layout after the checks: ALLOW at a, USER_NOTIF at a + 1, KILL at a + 2. */
	unsigned short a = (unsigned short)(k + n);
#ifdef __x86_64__
	a++;
	f[k] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000 /* x32 */,
					    (unsigned char)(a + 2 - k - 1), 0);
	k++;
#endif
	for (size_t i = 0; i < n; i++, k++)
		f[k] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nrs[i],
						    (unsigned char)(a + 1 - k - 1), 0);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	struct sock_fprog prog = { .len = k, .filter = f };

	/* Without CAP_SYS_ADMIN, a filter needs no_new_privs first (seccomp(2)). */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		die("prctl(PR_SET_NO_NEW_PRIVS)");
	/* With SECCOMP_FILTER_FLAG_NEW_LISTENER, seccomp(2) returns the
	 * listening fd of the new filter. */
	int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			      SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd < 0)
		die("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)");

	/* The supervisor gets (a duplicate of) the listener over a UNIX socket,
	 * as SCM_RIGHTS ancillary data. */
	char dummy = 0;
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof u);
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof u.buf,
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	if (sendmsg(sock, &msg, 0) != 1)
		die("sendmsg(listener)");
	close(fd); /* the program must not hold its own listener */
}

static int receive_listener(int sock)
{
	char dummy;
	struct iovec iov = { .iov_base = &dummy, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof u.buf,
	};
	ssize_t r;
	while ((r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = r == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
		return -1; /* the child failed before sending it, and said why */
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof fd);
	return fd;
}

/* ---------------------------------------------------------------- answers */

static void send_resp(struct seccomp_notif_resp *resp, size_t size, uint64_t id,
		      int64_t val, int32_t error, uint32_t flags)
{
	memset(resp, 0, size);
	resp->id = id;
	resp->val = val;
	resp->error = error;
	resp->flags = flags;
	/* ENOENT: the call was interrupted by a signal or the target is gone;
	 * there is nobody left to answer. */
	if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp) != 0 && errno != ENOENT)
		die("SECCOMP_IOCTL_NOTIF_SEND");
}

/* Read size bytes at addr in thread tid; the number of bytes read (a read
 * that runs into an unmapped page stops there), or -1. The bytes are only
 * the target's until SECCOMP_IOCTL_NOTIF_ID_VALID says so. */
static ssize_t read_target(pid_t tid, uint64_t addr, void *buf, size_t size)
{
	struct iovec local = { .iov_base = buf, .iov_len = size };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = size };
	return process_vm_readv(tid, &local, 1, &remote, 1, 0);
}

/* The path and open flags of a trapped call, by system call (open(2),
 * openat2(2)); 0 if this is not our path or could not be read. */
static int wants_redirect(const struct seccomp_notif *req, int *flags, mode_t *mode)
{
	const __u64 *arg = req->data.args;
	uint64_t path;
	switch (req->data.nr) {
	case SYS_openat:
		path = arg[1], *flags = (int)arg[2], *mode = (mode_t)arg[3];
		break;
	case SYS_openat2: {
		/* args[2] points to a struct open_how of args[3] bytes, flags first. */
		uint64_t how[2] = { 0, 0 };
		if (arg[3] < sizeof how ||
		    read_target((pid_t)req->pid, arg[2], how, sizeof how) != sizeof how)
			return 0;
		path = arg[1], *flags = (int)how[0], *mode = (mode_t)how[1];
		break;
	}
#ifdef SYS_open
	case SYS_open:
		path = arg[0], *flags = (int)arg[1], *mode = (mode_t)arg[2];
		break;
#endif
#ifdef SYS_creat
	case SYS_creat:
		path = arg[0], *flags = O_CREAT | O_WRONLY | O_TRUNC, *mode = (mode_t)arg[1];
		break;
#endif
	default:
		return 0;
	}
	char buf[4096];
	if (from_size > sizeof buf)
		return 0;
	ssize_t got = read_target((pid_t)req->pid, path, buf, from_size);
	return got == (ssize_t)from_size && memcmp(buf, from, from_size) == 0;
}

/* ---------------------------------------------------------------- -l */

static int look_up;
static unsigned long lookups;

/* The cwd of each thread seen, an O_PATH fd of /proc/TID/cwd opened at its
 * first call (a slot per tid % CWDS). Kept for ever: a yardstick may not
 * see a chdir, which a supervisor must (unotifyd keeps a cwd until a call
 * that may move it). */
#define CWDS 64
static struct { pid_t tid; int fd; } cwds[CWDS];

static int cwd_of(pid_t tid)
{
	int slot = (int)((unsigned)tid % CWDS);
	if (cwds[slot].tid == tid && cwds[slot].fd >= 0)
		return cwds[slot].fd;
	if (cwds[slot].tid != 0)
		close(cwds[slot].fd);
	char where[64];
	snprintf(where, sizeof where, "/proc/%d/cwd", tid);
	cwds[slot].tid = tid;
	cwds[slot].fd = open(where, O_PATH | O_CLOEXEC);
	return cwds[slot].fd;
}

/* Which argument of call nr holds its path and which its dirfd (-1: none,
 * the cwd), and whether its last link is followed; 0 if it has no path. */
static int path_args(const struct seccomp_notif *req, int *path, int *dirfd, int *follow)
{
	const __u64 *a = req->data.args;
	*dirfd = -1, *follow = 1;
	switch (req->data.nr) {
	case SYS_openat: case SYS_openat2:
		*path = 1, *dirfd = 0;
		*follow = req->data.nr == SYS_openat && !(a[2] & O_NOFOLLOW);
		return 1;
	case SYS_newfstatat: case SYS_statx:
		*path = 1, *dirfd = 0;
		*follow = !(a[req->data.nr == SYS_statx ? 2 : 3] & AT_SYMLINK_NOFOLLOW);
		return 1;
	case SYS_faccessat: case SYS_faccessat2:
		*path = 1, *dirfd = 0;
		return 1;
	case SYS_readlinkat:
		*path = 1, *dirfd = 0, *follow = 0;
		return 1;
#ifdef SYS_open
	case SYS_open: case SYS_creat: case SYS_stat: case SYS_access:
		*path = 0, *follow = req->data.nr != SYS_open || !(a[1] & O_NOFOLLOW);
		return 1;
	case SYS_lstat: case SYS_readlink:
		*path = 0, *follow = 0;
		return 1;
#endif
	default:
		return 0;
	}
}

/* What -l (or -r) does for one call: nothing is decided on what is found. */
static void look_path_up(const struct seccomp_notif *req)
{
	int pa, da, follow;
	if (!path_args(req, &pa, &da, &follow))
		return;
	pid_t tid = (pid_t)req->pid;
	char path[4096];
	/* Paths are short: one read of 256 bytes, a page more where no NUL
	 * came (as unotifyd's lane reads them). */
	ssize_t got = read_target(tid, req->data.args[pa], path, 256);
	if (got > 0 && !memchr(path, 0, (size_t)got))
		got = read_target(tid, req->data.args[pa], path, sizeof path);
	if (got <= 0 || !memchr(path, 0, (size_t)got) || path[0] == 0)
		return;
	int base = AT_FDCWD;
	if (path[0] != '/') {
		/* A dirfd of the program's would take pidfd_getfd(2): only the
		 * cwd's relative names are looked up. */
		if (da >= 0 && (int)req->data.args[da] != AT_FDCWD)
			return;
		base = cwd_of(tid);
		if (base < 0)
			return;
	}
	if (look_up == 'r') {
		struct stat st;
		if (fstatat(base, path, &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) == 0)
			__atomic_store_n(&lookups, lookups + 1, __ATOMIC_RELAXED);
		return;
	}
	struct { uint64_t flags, mode, resolve; } how = {
		O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW), 0, 0x02 /* RESOLVE_NO_MAGICLINKS */
	};
	int fd = (int)syscall(SYS_openat2, base, path, &how, sizeof how);
	if (fd < 0)
		return;
	char num[16], name[4096];
	snprintf(num, sizeof num, "%d", fd);
	static int fds = -1;
	if (fds < 0)
		fds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (readlinkat(fds, num, name, sizeof name) > 0)
		__atomic_store_n(&lookups, lookups + 1, __ATOMIC_RELAXED);
	close(fd);
}

static void handle(const struct seccomp_notif *req, struct seccomp_notif_resp *resp,
		   size_t resp_size)
{
	int flags = 0;
	mode_t mode = 0;
	if (!wants_redirect(req, &flags, &mode)) {
		if (look_up)
			look_path_up(req);
		/* CONTINUE: the kernel runs the call as the program made it (it
		 * reads the arguments again itself), so nothing we read is acted
		 * upon and no ID_VALID check is needed; SEND fails with ENOENT if
		 * the call is gone. CONTINUE needs val and error 0. */
		send_resp(resp, resp_size, req->id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
		return;
	}
	/* We act on the path we read: first make sure it was the target's. The
	 * thread may have died and its TID been reused, or the call been
	 * interrupted by a signal and the memory reused, after our read. */
	if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) != 0)
		return; /* ENOENT: no call to answer any more */
	__atomic_store_n(&redirects, redirects + 1, __ATOMIC_RELAXED);
	int fd = open(to, flags | O_CLOEXEC, mode);
	if (fd < 0) {
		send_resp(resp, resp_size, req->id, 0, -errno, 0);
		return;
	}
	/* ADDFD installs a duplicate of our fd in the target (lowest free
	 * number, newfd_flags may carry O_CLOEXEC); with SECCOMP_ADDFD_FLAG_SEND
	 * (5.14+) the same ioctl also answers the call, the new fd number as its
	 * return value, atomically: no fd leaks into a target whose call is
	 * restarted. */
	struct seccomp_notif_addfd addfd = {
		.id = req->id,
		.flags = SECCOMP_ADDFD_FLAG_SEND,
		.srcfd = (uint32_t)fd,
		.newfd = 0,
		.newfd_flags = (uint32_t)(flags & O_CLOEXEC),
	};
	if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0 && errno != ENOENT) {
		/* The target's call stays blocked until it is answered (EMFILE,
		 * EBADF: its fd table is full): answer with that error. */
		int err = errno;
		send_resp(resp, resp_size, req->id, 0, -err, 0);
	}
	close(fd);
}

/* ---------------------------------------------------------------- the end */

/* RECV blocks for ever once the targets are gone (BUGS), so the serving
 * thread cannot notice the end itself. This thread reaps PROGRAM, then
 * waits for the end-of-file of the listener: POLLHUP after the last thread
 * using the filter has terminated *and been reaped* (hence the waitpid
 * first). poll() with no events asked still reports POLLHUP, and the
 * wake-ups for new notifications (POLLIN) do not wake it. */
static void *reaper(void *unused)
{
	(void)unused;
	int status = 0;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	struct pollfd p = { .fd = listener, .events = 0 };
	for (;;) {
		int r = poll(&p, 1, -1);
		if (r > 0)
			break; /* POLLHUP (or POLLERR, POLLNVAL: as final) */
		if (r < 0 && errno != EINTR)
			die("poll(listener)");
	}
	if (verbose)
		fprintf(stderr, "ref_unotify: notifications=%lu redirects=%lu lookups=%lu\n",
			__atomic_load_n(&notifications, __ATOMIC_RELAXED),
			__atomic_load_n(&redirects, __ATOMIC_RELAXED),
			__atomic_load_n(&lookups, __ATOMIC_RELAXED));
	exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
}

int main(int argc, char *argv[])
{
	int sync_wakeup = 0, opt;
	while ((opt = getopt(argc, argv, "+wslrvf:t:")) != -1) {
		switch (opt) {
		case 'w': sync_wakeup = 1; break;
		case 's': trap_metadata = 1; break;
		case 'l': case 'r': look_up = opt; break;
		case 'v': verbose = 1; break;
		case 'f': from = optarg; break;
		case 't': to = optarg; break;
		default: usage();
		}
	}
	if (optind >= argc)
		usage();
	from_size = strlen(from) + 1;

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		die("socketpair");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(sv[0]);
		install_filter_and_send(sv[1]);
		close(sv[1]);
		execvp(argv[optind], &argv[optind]);
		fprintf(stderr, "ref_unotify: %s: %s\n", argv[optind], strerror(errno));
		_exit(127);
	}
	close(sv[1]);
	listener = receive_listener(sv[0]);
	close(sv[0]);
	if (listener < 0) {
		int status;
		waitpid(child, &status, 0);
		return 1;
	}
	if (sync_wakeup &&
	    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) != 0) {
		/* Not in seccomp_unotify(2) yet: Linux 6.6, kernel/seccomp.c
		 * (seccomp_notify_set_flags). The kernel then wakes the target on
		 * our CPU when we answer, and us on its CPU when it calls. */
		fprintf(stderr, "ref_unotify: -w: SECCOMP_IOCTL_NOTIF_SET_FLAGS: %s "
			"(SYNC_WAKE_UP needs Linux 6.6)\n", strerror(errno));
		kill(child, SIGKILL);
		return 1;
	}

	/* The structures may grow with the kernel: allocate the sizes it gives
	 * (SECCOMP_GET_NOTIF_SIZES, seccomp(2)). */
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0)
		die("seccomp(SECCOMP_GET_NOTIF_SIZES)");
	size_t req_size = sizes.seccomp_notif > sizeof(struct seccomp_notif)
		? sizes.seccomp_notif : sizeof(struct seccomp_notif);
	size_t resp_size = sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp)
		? sizes.seccomp_notif_resp : sizeof(struct seccomp_notif_resp);
	struct seccomp_notif *req = malloc(req_size);
	struct seccomp_notif_resp *resp = malloc(resp_size);
	if (!req || !resp)
		die("malloc");

	pthread_t t;
	int err = pthread_create(&t, NULL, reaper, NULL);
	if (err) {
		errno = err;
		die("pthread_create");
	}
	for (;;) {
		/* RECV wants a zeroed structure (EINVAL otherwise, 5.5+), and
		 * blocks until a notification is pending. */
		memset(req, 0, req_size);
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) {
			/* ENOENT/EINTR: the target died or a signal interrupted its
			 * call as the notification was made; nothing to answer. */
			if (errno == ENOENT || errno == EINTR)
				continue;
			die("SECCOMP_IOCTL_NOTIF_RECV");
		}
		__atomic_store_n(&notifications, notifications + 1, __ATOMIC_RELAXED);
		handle(req, resp, resp_size);
	}
}
