/*
 * surface: one attack through a call the seccomp filter never traps, printed
 * as one line "LABEL OUTCOME".
 *
 *     surface LABEL OP ARG...
 *
 * OUTCOME is "OK" followed by what the attack got (the bytes of a file:
 * "n=N fnv=HASH"), or "STEP=ERRNO" for the first step that failed, so that a
 * native run and a run under unotifyd tell how far the attack went.
 *
 * Ops (NS is "direct", "unshare" -- unshare(CLONE_NEWUSER|CLONE_NEWNS) first,
 * as an unprivileged program does to get capabilities -- or "clone" -- the
 * same through a raw clone(CLONE_NEWUSER|CLONE_NEWNS), the rest in the child):
 *   uring-read PATH            io_uring IORING_OP_OPENAT, then IORING_OP_READ: the bytes
 *   uring-unlink PATH          io_uring IORING_OP_UNLINKAT
 *   chroot NS DIR PATH         chroot(DIR), chdir("/"), read PATH (inside DIR)
 *   bind-mount NS DIR FILE TO  mount(DIR, TO, MS_BIND|MS_REC), read TO/FILE
 *   tree-clone NS DIR FILE     open_tree(DIR, OPEN_TREE_CLONE), read FILE at that fd
 *   move-mount NS DIR FILE TO  open_tree(DIR, OPEN_TREE_CLONE) + move_mount onto TO, read TO/FILE
 *   fsmount NS                 fsopen("tmpfs") + fsconfig(CMD_CREATE) + fsmount
 *   umount DIR                 umount2(DIR, 0)
 *   pivot-root DIR             chdir(DIR), pivot_root(".", ".")
 *   setns                      setns() into our own UTS namespace, through a pidfd
 *   handle PATH                name_to_handle_at: "OK TYPE:HEX" (run natively: a handle to forge)
 *   open-handle DIR TYPE:HEX   open_by_handle_at(DIR's fd, the handle), read: the bytes
 *   fanotify PATH              fanotify_init + fanotify_mark(PATH)
 *   acct PATH                  acct(PATH), fork a child that exits, acct(NULL)
 *   swapon PATH                swapon(PATH): EINVAL for a file that is no swap area
 *   ptrace PID                 PTRACE_ATTACH, wait, PTRACE_DETACH
 *   vm-read PID ADDR           process_vm_readv of 8 bytes at ADDR of PID
 *   vm-write PID ADDR          process_vm_writev of 8 bytes at ADDR of PID
 *   getfd PID                  pidfd_open + pidfd_getfd of its fd 0
 *   userfaultfd                userfaultfd(UFFD_USER_MODE_ONLY)
 *   uffd-dev                   open /dev/userfaultfd, ioctl(USERFAULTFD_IOC_NEW)
 *   prlimit PID                prlimit(PID)'s RLIMIT_NOFILE read, then set to what it was
 *   quotactl PATH              quotactl(Q_GETQUOTA, PATH): ENOTBLK for a name that exists
 *   bpf                        bpf(BPF_MAP_CREATE) of a one-entry array
 *   clone3                     clone3 of a child that exits
 *   tree-open PATH             open_tree(PATH, 0), then fstat the fd: "OK size=N"
 *   ordinary PATH              fork, a thread, unshare(CLONE_FILES|CLONE_FS), our own
 *                              RLIMIT_NOFILE read and set again (getrlimit, setrlimit), an
 *                              O_PATH open of PATH: what must keep working
 *   victim                     print "ADDR" of a buffer, then wait for a signal
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/quota.h>
#include <sys/resource.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

static const char *label;

static const char *ename(int e)
{
	const char *name = strerrorname_np(e);
	return name ? name : "E?";
}

/* The outcome line of a failed step; exits. */
static _Noreturn void failed(const char *step)
{
	printf("%s %s=%s\n", label, step, ename(errno));
	exit(0);
}

static _Noreturn void ok(const char *what)
{
	printf("%s OK%s%s\n", label, what ? " " : "", what ? what : "");
	exit(0);
}

/* Read all of fd and finish with "OK n=N fnv=HASH". */
static _Noreturn void read_all(int fd)
{
	static char buf[1 << 16];
	ssize_t n = 0, got;
	while (n < (ssize_t)sizeof buf && (got = read(fd, buf + n, sizeof buf - n)) > 0)
		n += got;
	if (n == 0 && got < 0)
		failed("read");
	uint64_t h = 0xcbf29ce484222325ULL;
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ULL;
	char out[64];
	snprintf(out, sizeof out, "n=%zd fnv=%016llx", n, (unsigned long long)h);
	ok(out);
}

static _Noreturn void read_at(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		failed("open");
	read_all(fd);
}

/* --- io_uring, with raw system calls (io_uring_setup(2), io_uring_enter(2)) --- */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static void ring_setup(struct ring *r)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	r->fd = syscall(__NR_io_uring_setup, 4, &p);
	if (r->fd < 0)
		failed("io_uring_setup");
	size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP)
		sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
	char *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		failed("mmap");
	char *cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			  IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			failed("mmap");
	}
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		failed("mmap");
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
}

/* Submit one operation and return its result (a negative errno on failure). */
static int ring_run(struct ring *r, const struct io_uring_sqe *sqe)
{
	unsigned tail = *r->sq_tail, index = tail & *r->sq_mask;
	r->sqes[index] = *sqe;
	r->sq_array[index] = index;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		failed("io_uring_enter");
	unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
	int res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

static _Noreturn void uring_read(const char *path)
{
	static char buf[1 << 16];
	struct ring r;
	ring_setup(&r);
	struct io_uring_sqe sqe;
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_OPENAT;
	sqe.fd = AT_FDCWD;
	sqe.addr = (uintptr_t)path;
	sqe.open_flags = O_RDONLY | O_CLOEXEC;
	int fd = ring_run(&r, &sqe);
	if (fd < 0) {
		errno = -fd;
		failed("IORING_OP_OPENAT");
	}
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_READ;
	sqe.fd = fd;
	sqe.addr = (uintptr_t)buf;
	sqe.len = sizeof buf;
	int n = ring_run(&r, &sqe);
	if (n < 0) {
		errno = -n;
		failed("IORING_OP_READ");
	}
	uint64_t h = 0xcbf29ce484222325ULL;
	for (int i = 0; i < n; i++)
		h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ULL;
	char out[64];
	snprintf(out, sizeof out, "n=%d fnv=%016llx", n, (unsigned long long)h);
	ok(out);
}

static _Noreturn void uring_unlink(const char *path)
{
	struct ring r;
	ring_setup(&r);
	struct io_uring_sqe sqe;
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_UNLINKAT;
	sqe.fd = AT_FDCWD;
	sqe.addr = (uintptr_t)path;
	int res = ring_run(&r, &sqe);
	if (res < 0) {
		errno = -res;
		failed("IORING_OP_UNLINKAT");
	}
	ok(NULL);
}

/* --- namespaces, roots and mounts ----------------------------------------------- */

static int open_tree_clone(const char *dir)
{
	int fd = syscall(SYS_open_tree, AT_FDCWD, dir,
			 OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (fd < 0)
		failed("open_tree");
	return fd;
}

static _Noreturn void ns_action(char **argv)
{
	const char *op = argv[0];
	if (!strcmp(op, "chroot")) {
		if (chroot(argv[1]) < 0)
			failed("chroot");
		if (chdir("/") < 0)
			failed("chdir");
		read_at(AT_FDCWD, argv[2]);
	}
	if (!strcmp(op, "bind-mount")) {
		if (mount(argv[1], argv[3], NULL, MS_BIND | MS_REC, NULL) < 0)
			failed("mount");
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", argv[3], argv[2]);
		read_at(AT_FDCWD, path);
	}
	if (!strcmp(op, "tree-clone")) {
		read_at(open_tree_clone(argv[1]), argv[2]);
	}
	if (!strcmp(op, "move-mount")) {
		int fd = open_tree_clone(argv[1]);
		if (syscall(SYS_move_mount, fd, "", AT_FDCWD, argv[3], MOVE_MOUNT_F_EMPTY_PATH) < 0)
			failed("move_mount");
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", argv[3], argv[2]);
		read_at(AT_FDCWD, path);
	}
	if (!strcmp(op, "fsmount")) {
		int fs = syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
		if (fs < 0)
			failed("fsopen");
		if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
			failed("fsconfig");
		if (syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0) < 0)
			failed("fsmount");
		ok(NULL);
	}
	fprintf(stderr, "surface: unknown namespace action %s\n", op);
	exit(2);
}

static _Noreturn void in_namespaces(const char *how, char **argv)
{
	int flags = CLONE_NEWUSER | CLONE_NEWNS;
	if (!strcmp(how, "direct"))
		ns_action(argv);
	if (!strcmp(how, "unshare")) {
		if (unshare(flags) < 0)
			failed("unshare");
		ns_action(argv);
	}
	if (strcmp(how, "clone")) {
		fprintf(stderr, "surface: NS must be direct, unshare or clone\n");
		exit(2);
	}
	fflush(stdout);
	/* Raw clone(2) on x86_64: flags, stack (0: the child runs on a copy of
	 * ours, as after fork), parent_tid, child_tid, tls. */
	long pid = syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
	if (pid < 0)
		failed("clone");
	if (pid == 0)
		ns_action(argv);
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		failed("child");
	exit(0);
}

/* --- the rest ---------------------------------------------------------------------- */

static _Noreturn void handle(const char *path)
{
	struct file_handle *fh = malloc(sizeof *fh + MAX_HANDLE_SZ);
	int mount_id;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, path, fh, &mount_id, 0) < 0)
		failed("name_to_handle_at");
	printf("%s OK %d:", label, fh->handle_type);
	for (unsigned i = 0; i < fh->handle_bytes; i++)
		printf("%02x", fh->f_handle[i]);
	putchar('\n');
	exit(0);
}

static _Noreturn void open_handle(const char *dir, const char *hex)
{
	struct file_handle *fh = malloc(sizeof *fh + MAX_HANDLE_SZ);
	char *rest;
	fh->handle_type = strtol(hex, &rest, 10);
	rest++;
	fh->handle_bytes = strlen(rest) / 2;
	for (unsigned i = 0; i < fh->handle_bytes; i++)
		sscanf(rest + 2 * i, "%2hhx", &fh->f_handle[i]);
	int mount_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mount_fd < 0)
		failed("open");
	int fd = open_by_handle_at(mount_fd, fh, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		failed("open_by_handle_at");
	read_all(fd);
}

static void *thread_main(void *arg)
{
	return arg;
}

static _Noreturn void ordinary(const char *path)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		failed("fork");
	if (pid == 0)
		_exit(0);
	if (waitpid(pid, NULL, 0) < 0)
		failed("waitpid");
	pthread_t thread;
	int err = pthread_create(&thread, NULL, thread_main, NULL);
	if (err) {
		errno = err;
		failed("pthread_create");
	}
	pthread_join(thread, NULL);
	if (unshare(CLONE_FILES | CLONE_FS) < 0)
		failed("unshare");
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		failed("getrlimit");
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		failed("setrlimit");
	/* An O_PATH open, the plain open_tree's way. */
	int fd = open(path, O_PATH | O_CLOEXEC);
	if (fd < 0)
		failed("open");
	close(fd);
	ok(NULL);
}

static char victim_buffer[8] = "VICTIM!";

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: surface LABEL OP ARG...\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	label = argv[1];
	const char *op = argv[2];
	char **arg = argv + 3;
	int nargs = argc - 3;
	if (!strcmp(op, "uring-read") && nargs == 1)
		uring_read(arg[0]);
	if (!strcmp(op, "uring-unlink") && nargs == 1)
		uring_unlink(arg[0]);
	if (!strcmp(op, "chroot") || !strcmp(op, "bind-mount") || !strcmp(op, "tree-clone") ||
	    !strcmp(op, "move-mount") || !strcmp(op, "fsmount")) {
		if (nargs < 1)
			return 2;
		char *action[5] = {argv[2], NULL, NULL, NULL, NULL};
		for (int i = 1; i < nargs && i < 4; i++)
			action[i] = arg[i];
		in_namespaces(arg[0], action);
	}
	if (!strcmp(op, "umount") && nargs == 1) {
		if (umount2(arg[0], 0) < 0)
			failed("umount2");
		ok(NULL);
	}
	if (!strcmp(op, "pivot-root") && nargs == 1) {
		if (chdir(arg[0]) < 0)
			failed("chdir");
		if (syscall(SYS_pivot_root, ".", ".") < 0)
			failed("pivot_root");
		ok(NULL);
	}
	if (!strcmp(op, "setns") && nargs == 0) {
		/* A pidfd of our own process names its namespaces (setns(2), 5.8+). */
		int fd = syscall(SYS_pidfd_open, getpid(), 0);
		if (fd < 0)
			failed("pidfd_open");
		if (setns(fd, CLONE_NEWUTS) < 0)
			failed("setns");
		ok(NULL);
	}
	if (!strcmp(op, "handle") && nargs == 1)
		handle(arg[0]);
	if (!strcmp(op, "open-handle") && nargs == 2)
		open_handle(arg[0], arg[1]);
	if (!strcmp(op, "fanotify") && nargs == 1) {
		int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_CLOEXEC, O_RDONLY);
		if (fd < 0)
			failed("fanotify_init");
		if (fanotify_mark(fd, FAN_MARK_ADD, FAN_OPEN | FAN_CLOSE_NOWRITE, AT_FDCWD, arg[0]) < 0)
			failed("fanotify_mark");
		ok(NULL);
	}
	if (!strcmp(op, "tree-open") && nargs == 1) {
		/* Without OPEN_TREE_CLONE: an O_PATH fd of the path, which fstat reads. */
		int fd = syscall(SYS_open_tree, AT_FDCWD, arg[0], OPEN_TREE_CLOEXEC);
		struct stat st;
		if (fd < 0)
			failed("open_tree");
		if (fstat(fd, &st) < 0)
			failed("fstat");
		char what[64];
		snprintf(what, sizeof what, "size=%lld", (long long)st.st_size);
		ok(what);
	}
	if (!strcmp(op, "acct") && nargs == 1) {
		if (acct(arg[0]) < 0)
			failed("acct");
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		waitpid(pid, NULL, 0);
		acct(NULL);
		ok(NULL);
	}
	if (!strcmp(op, "swapon") && nargs == 1) {
		if (swapon(arg[0], 0) < 0)
			failed("swapon");
		swapoff(arg[0]);
		ok(NULL);
	}
	if (!strcmp(op, "ptrace") && nargs == 1) {
		pid_t pid = atoi(arg[0]);
		if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0)
			failed("ptrace");
		waitpid(pid, NULL, __WALL);
		ptrace(PTRACE_DETACH, pid, NULL, NULL);
		ok(NULL);
	}
	if ((!strcmp(op, "vm-read") || !strcmp(op, "vm-write")) && nargs == 2) {
		char buf[8] = "PWNED!!";
		struct iovec local = {buf, sizeof buf};
		struct iovec remote = {(void *)strtoul(arg[1], NULL, 16), sizeof buf};
		pid_t pid = atoi(arg[0]);
		if (!strcmp(op, "vm-read")) {
			if (process_vm_readv(pid, &local, 1, &remote, 1, 0) < 0)
				failed("process_vm_readv");
		} else if (process_vm_writev(pid, &local, 1, &remote, 1, 0) < 0) {
			failed("process_vm_writev");
		}
		ok(NULL);
	}
	if (!strcmp(op, "getfd") && nargs == 1) {
		int pidfd = syscall(SYS_pidfd_open, atoi(arg[0]), 0);
		if (pidfd < 0)
			failed("pidfd_open");
		if (syscall(SYS_pidfd_getfd, pidfd, 0, 0) < 0)
			failed("pidfd_getfd");
		ok(NULL);
	}
	if (!strcmp(op, "userfaultfd") && nargs == 0) {
		if (syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY) < 0)
			failed("userfaultfd");
		ok(NULL);
	}
	if (!strcmp(op, "uffd-dev") && nargs == 0) {
		int fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (fd < 0)
			failed("open");
		if (ioctl(fd, USERFAULTFD_IOC_NEW, O_CLOEXEC) < 0)
			failed("ioctl");
		ok(NULL);
	}
	if (!strcmp(op, "prlimit") && nargs == 1) {
		struct rlimit rl;
		pid_t pid = atoi(arg[0]);
		if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) < 0 || prlimit(pid, RLIMIT_NOFILE, &rl, NULL) < 0)
			failed("prlimit");
		ok(NULL);
	}
	if (!strcmp(op, "quotactl") && nargs == 1) {
		struct dqblk q;
		if (quotactl(QCMD(Q_GETQUOTA, USRQUOTA), arg[0], (int)getuid(), (caddr_t)&q) < 0)
			failed("quotactl");
		ok(NULL);
	}
	if (!strcmp(op, "bpf") && nargs == 0) {
		union bpf_attr attr;
		memset(&attr, 0, sizeof attr);
		attr.map_type = BPF_MAP_TYPE_ARRAY;
		attr.key_size = 4;
		attr.value_size = 4;
		attr.max_entries = 1;
		if (syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr) < 0)
			failed("bpf");
		ok(NULL);
	}
	if (!strcmp(op, "clone3") && nargs == 0) {
		struct clone_args args;
		memset(&args, 0, sizeof args);
		args.exit_signal = SIGCHLD;
		fflush(stdout);
		long pid = syscall(SYS_clone3, &args, sizeof args);
		if (pid < 0)
			failed("clone3");
		if (pid == 0)
			_exit(0);
		waitpid(pid, NULL, 0);
		ok(NULL);
	}
	if (!strcmp(op, "ordinary") && nargs == 1)
		ordinary(arg[0]);
	if (!strcmp(op, "victim") && nargs == 0) {
		printf("%p\n", (void *)victim_buffer);
		pause();
		return 0;
	}
	fprintf(stderr, "surface: unknown op or wrong arguments: %s\n", op);
	return 2;
}
