/*
 * attack: run the attacks named on the command line, one after the other, and
 * print one line per attack: "LABEL OUTCOME".
 *
 *     attack LABEL OP ARG... [; LABEL OP ARG...]...
 *
 * OUTCOME is "OK" followed by what the call revealed, or the errno name of the
 * failure. It depends only on what the kernel (or the supervisor) answered, so
 * that a run under unotifyd can be compared byte for byte with a native run.
 *
 * Ops:
 *   read PATH             open O_RDONLY, read: "OK n=N fnv=HASH"
 *   peek PATH             open O_RDONLY|O_NONBLOCK, read: "OK nonempty", "OK empty", "OK read=E"
 *   write PATH            open O_WRONLY (nothing written)
 *   create PATH           open O_WRONLY|O_CREAT|O_EXCL, mode 0644
 *   opendir PATH          open O_RDONLY|O_DIRECTORY
 *   stat PATH             stat: "OK mode=M uid=U size=S"
 *   access PATH           access(R_OK)
 *   readlink PATH         readlink: "OK TEXT"
 *   chdir PATH            chdir (then back to "/")
 *   setxattr PATH NAME V  V, or with V "@cap" a v2 security.capability blob for cap_setuid+ep
 *   getxattr PATH NAME    "OK VALUE"
 *   listxattr PATH        "OK NAME,NAME..." (sorted)
 *   chown PATH UID GID
 *   chmod PATH MODE       MODE in octal
 *   utimes PATH           utimensat with explicit times (needs ownership or CAP_FOWNER)
 *   mknod PATH            a character device 1:3 (/dev/null), mode 0666
 *   link OLD NEW
 *   unlink PATH
 *   kallsyms              read /proc/kallsyms: "OK addresses=real" or "OK addresses=hidden"
 *   pagemap               this process's PFN of a page it touched, from /proc/self/pagemap:
 *                         "OK pfn=real", "OK pfn=hidden"
 *   kmsg                  open /dev/kmsg and read a record: "OK read", "OK read=E"
 *   parent                pidfd_open(getppid()) then pidfd_getfd of each of its fds 0..1023,
 *                         and process_vm_readv of its memory:
 *                         "parent=unotifyd|other getfd=E|OK listener=yes|no vm=E|OK"
 *   signal FIFO           open FIFO for reading in a second thread (it waits for a writer,
 *                         under unotifyd in a supervisor thread acting for us), then
 *                         tgkill(2) with signal 0 every thread of the parent, then open
 *                         FIFO for writing to release the reader:
 *                         "signal=OK|E fifo=OK|E" (OK if any thread could be signalled)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static void fail(const char *label)
{
	const char *name = strerrorname_np(errno);
	printf("%s %s\n", label, name ? name : "E?");
}

static void ok(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ok(const char *label, const char *fmt, ...)
{
	va_list ap;
	printf("%s OK", label);
	if (fmt) {
		putchar(' ');
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
	}
	putchar('\n');
}

static void check(const char *label, int rc)
{
	if (rc < 0)
		fail(label);
	else
		ok(label, NULL);
}

static void do_read(const char *label, const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail(label);
	ssize_t n = 0, got;
	while (n < (ssize_t)sizeof buf && (got = read(fd, buf + n, sizeof buf - n)) > 0)
		n += got;
	if (n == 0 && got < 0) {
		printf("%s OK read=%s\n", label, strerrorname_np(errno));
		close(fd);
		return;
	}
	uint64_t h = 0xcbf29ce484222325ULL;
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ULL;
	ok(label, "n=%zd fnv=%016llx", n, (unsigned long long)h);
	close(fd);
}

static void do_peek(const char *label, const char *path)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return fail(label);
	ssize_t n = read(fd, buf, sizeof buf);
	if (n < 0)
		printf("%s OK read=%s\n", label, strerrorname_np(errno));
	else
		ok(label, n ? "nonempty" : "empty");
	close(fd);
}

static void do_open(const char *label, const char *path, int flags)
{
	int fd = open(path, flags, 0644);
	if (fd < 0)
		return fail(label);
	close(fd);
	ok(label, NULL);
}

/* struct vfs_cap_data, revision 2 (include/uapi/linux/capability.h). */
static const uint32_t cap_blob[5] = {
	0x02000000 | 0x000001, /* VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE */
	1u << 7, 0,            /* permitted, inheritable (low word): CAP_SETUID */
	0, 0,                  /* high words */
};

static void do_setxattr(const char *label, const char *path, const char *name, const char *v)
{
	if (strcmp(v, "@cap") == 0)
		check(label, setxattr(path, name, cap_blob, sizeof cap_blob, 0));
	else
		check(label, setxattr(path, name, v, strlen(v), 0));
}

/* chattr +a through an fd (FS_IOC_SETFLAGS), which needs CAP_LINUX_IMMUTABLE
 * and ownership; undone at once, so that the workspace can be removed. */
static void do_chattr(const char *label, const char *path)
{
	long flags = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fail(label);
		return;
	}
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) {
		fail(label);
	} else {
		long appended = flags | FS_APPEND_FL;
		if (ioctl(fd, FS_IOC_SETFLAGS, &appended) < 0) {
			fail(label);
		} else {
			ioctl(fd, FS_IOC_SETFLAGS, &flags);
			ok(label, NULL);
		}
	}
	close(fd);
}

static void do_getxattr(const char *label, const char *path, const char *name)
{
	char buf[4096];
	ssize_t n = getxattr(path, name, buf, sizeof buf - 1);
	if (n < 0)
		return fail(label);
	buf[n] = 0;
	ok(label, "%s", buf);
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void do_listxattr(const char *label, const char *path)
{
	char buf[8192], *names[256];
	ssize_t n = listxattr(path, buf, sizeof buf);
	if (n < 0)
		return fail(label);
	size_t count = 0;
	for (char *p = buf; p < buf + n && count < 256; p += strlen(p) + 1)
		names[count++] = p;
	qsort(names, count, sizeof *names, cmp);
	printf("%s OK ", label);
	for (size_t i = 0; i < count; i++)
		printf("%s%s", i ? "," : "", names[i]);
	putchar('\n');
}

static void do_stat(const char *label, const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return fail(label);
	ok(label, "mode=%o uid=%u size=%lld", st.st_mode, st.st_uid, (long long)st.st_size);
}

static void do_readlink(const char *label, const char *path)
{
	char buf[4096];
	ssize_t n = readlink(path, buf, sizeof buf - 1);
	if (n < 0)
		return fail(label);
	buf[n] = 0;
	ok(label, "%s", buf);
}

static void do_utimes(const char *label, const char *path)
{
	struct timespec t[2] = {{1, 0}, {1, 0}};
	check(label, utimensat(AT_FDCWD, path, t, 0));
}

static void do_kallsyms(const char *label)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	if (!f)
		return fail(label);
	char line[512];
	int lines = 0, real = 0;
	while (lines < 1000 && fgets(line, sizeof line, f)) {
		lines++;
		if (strtoull(line, NULL, 16) != 0)
			real = 1;
	}
	fclose(f);
	if (!lines)
		return ok(label, "empty");
	ok(label, "addresses=%s", real ? "real" : "hidden");
}

static void do_pagemap(const char *label)
{
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return fail(label);
	p[0] = 1;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return fail(label);
	uint64_t entry;
	ssize_t n = pread(fd, &entry, sizeof entry, (off_t)((uintptr_t)p / page * sizeof entry));
	close(fd);
	if (n != (ssize_t)sizeof entry) {
		printf("%s OK read=%s\n", label, n < 0 ? strerrorname_np(errno) : "short");
		return;
	}
	if (!(entry >> 63))
		return ok(label, "absent");
	ok(label, "pfn=%s", entry & ((1ULL << 55) - 1) ? "real" : "hidden");
}

static void do_kmsg(const char *label)
{
	char buf[8192];
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return fail(label);
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	if (n < 0)
		printf("%s OK read=%s\n", label, strerrorname_np(errno));
	else
		ok(label, "read");
}

/* What a process could take from its parent: its fds (pidfd_getfd, which
 * needs PTRACE_MODE_ATTACH_REALCREDS) and its memory (process_vm_readv, the
 * same check). Natively a dumpable parent of the same uid gives both. */
static void do_parent(const char *label)
{
	pid_t ppid = getppid();
	int pidfd = (int)syscall(SYS_pidfd_open, ppid, 0);
	if (pidfd < 0)
		return fail(label);
	const char *getfd = NULL;
	int got = 0, listener = 0;
	for (int n = 0; n < 1024; n++) {
		int fd = (int)syscall(SYS_pidfd_getfd, pidfd, n, 0);
		if (fd < 0) {
			if (errno != EBADF) {
				getfd = strerrorname_np(errno);
				break;
			}
			continue;
		}
		got++;
		char link[64], target[256];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t t = readlink(link, target, sizeof target - 1);
		if (t > 0) {
			target[t] = 0;
			if (strcmp(target, "anon_inode:seccomp notify") == 0)
				listener = 1;
		}
		close(fd);
	}
	close(pidfd);
	/* An address of the parent: the start of its first readable mapping if
	 * its maps can be read, else any page (the access check comes first, so
	 * a refusal is EPERM whatever the address; EFAULT means it was allowed). */
	unsigned long addr = 0x10000;
	char path[64], line[512], perms[8];
	snprintf(path, sizeof path, "/proc/%d/maps", (int)ppid);
	FILE *maps = fopen(path, "r");
	if (maps) {
		unsigned long start, end;
		while (fgets(line, sizeof line, maps))
			if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) == 3 && perms[0] == 'r') {
				addr = start;
				break;
			}
		fclose(maps);
	}
	char byte;
	struct iovec local = {&byte, 1}, remote = {(void *)addr, 1};
	ssize_t n = process_vm_readv(ppid, &local, 1, &remote, 1, 0);
	const char *vm = n == 1 ? "OK" : strerrorname_np(errno);
	/* Whether the parent is `unotifyd launch`: its command line is readable by all. */
	char cmdline[4096];
	size_t len = 0;
	snprintf(path, sizeof path, "/proc/%d/cmdline", (int)ppid);
	FILE *f = fopen(path, "r");
	if (f) {
		len = fread(cmdline, 1, sizeof cmdline, f);
		fclose(f);
	}
	int supervisor = memmem(cmdline, len, "unotifyd\0launch", 16) != NULL;
	printf("%s parent=%s getfd=%s listener=%s vm=%s\n", label,
	       supervisor ? "unotifyd" : "other", getfd ? getfd : got ? "OK" : "EBADF",
	       listener ? "yes" : "no", vm);
}

struct reader {
	const char *path;
	int result; /* the fd, or -errno */
};

static void *open_reader(void *arg)
{
	struct reader *r = arg;
	int fd = open(r->path, O_RDONLY);
	r->result = fd < 0 ? -errno : fd;
	return NULL;
}

/* Whether a process could signal the threads of its parent while one of them
 * waits on its behalf. kill_ok_by_cred() compares the sender's uids with the
 * target thread's real and saved uid: natively a parent of the same uid may
 * be signalled; a root supervisor acting for us must not become one. Signal
 * 0 checks the permission and sends nothing (kill(2)). */
static void do_signal(const char *label, const char *fifo)
{
	struct reader r = {fifo, 0};
	pthread_t t;
	if (pthread_create(&t, NULL, open_reader, &r) != 0)
		return fail(label);
	usleep(300 * 1000);
	pid_t ppid = getppid();
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", (int)ppid);
	DIR *d = opendir(path);
	int allowed = 0, err = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			if (syscall(SYS_tgkill, ppid, atoi(e->d_name), 0) == 0)
				allowed++;
			else if (!err)
				err = errno;
		}
	if (d)
		closedir(d);
	/* A writer releases the reader; the reader may not be there yet. */
	int w = -1;
	for (int i = 0; i < 500 && w < 0; i++) {
		w = open(fifo, O_WRONLY | O_NONBLOCK);
		if (w < 0)
			usleep(10 * 1000);
	}
	pthread_join(t, NULL);
	if (w >= 0)
		close(w);
	if (r.result >= 0)
		close(r.result);
	printf("%s signal=%s fifo=%s\n", label,
	       allowed ? "OK" : err ? strerrorname_np(err) : "none",
	       r.result >= 0 ? "OK" : strerrorname_np(-r.result));
}

static int argc_of(const char *op)
{
	static const struct { const char *op; int args; } ops[] = {
		{"read", 1}, {"peek", 1}, {"write", 1}, {"create", 1}, {"opendir", 1},
		{"stat", 1}, {"access", 1}, {"readlink", 1}, {"chdir", 1}, {"setxattr", 3}, {"chattr", 1},
		{"getxattr", 2}, {"listxattr", 1}, {"chown", 3}, {"chmod", 2}, {"utimes", 1},
		{"mknod", 1}, {"link", 2}, {"unlink", 1}, {"kallsyms", 0}, {"pagemap", 0},
		{"kmsg", 0}, {"parent", 0}, {"signal", 1},
	};
	for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
		if (strcmp(ops[i].op, op) == 0)
			return ops[i].args;
	return -1;
}

static void run(const char *label, const char *op, char **a)
{
	if (!strcmp(op, "read")) do_read(label, a[0]);
	else if (!strcmp(op, "peek")) do_peek(label, a[0]);
	else if (!strcmp(op, "write")) do_open(label, a[0], O_WRONLY);
	else if (!strcmp(op, "create")) do_open(label, a[0], O_WRONLY | O_CREAT | O_EXCL);
	else if (!strcmp(op, "opendir")) do_open(label, a[0], O_RDONLY | O_DIRECTORY);
	else if (!strcmp(op, "stat")) do_stat(label, a[0]);
	else if (!strcmp(op, "access")) check(label, access(a[0], R_OK));
	else if (!strcmp(op, "readlink")) do_readlink(label, a[0]);
	else if (!strcmp(op, "chdir")) {
		check(label, chdir(a[0]));
		if (chdir("/") < 0)
			perror("chdir /");
	}
	else if (!strcmp(op, "setxattr")) do_setxattr(label, a[0], a[1], a[2]);
	else if (!strcmp(op, "getxattr")) do_getxattr(label, a[0], a[1]);
	else if (!strcmp(op, "chattr")) do_chattr(label, a[0]);
	else if (!strcmp(op, "listxattr")) do_listxattr(label, a[0]);
	else if (!strcmp(op, "chown"))
		check(label, chown(a[0], (uid_t)atoi(a[1]), (gid_t)atoi(a[2])));
	else if (!strcmp(op, "chmod")) check(label, chmod(a[0], (mode_t)strtoul(a[1], NULL, 8)));
	else if (!strcmp(op, "utimes")) do_utimes(label, a[0]);
	else if (!strcmp(op, "mknod")) check(label, mknod(a[0], S_IFCHR | 0666, makedev(1, 3)));
	else if (!strcmp(op, "link")) check(label, link(a[0], a[1]));
	else if (!strcmp(op, "unlink")) check(label, unlink(a[0]));
	else if (!strcmp(op, "kallsyms")) do_kallsyms(label);
	else if (!strcmp(op, "pagemap")) do_pagemap(label);
	else if (!strcmp(op, "kmsg")) do_kmsg(label);
	else if (!strcmp(op, "parent")) do_parent(label);
	else if (!strcmp(op, "signal")) do_signal(label, a[0]);
}

int main(int argc, char **argv)
{
	int i = 1;
	while (i < argc) {
		if (i + 1 >= argc) {
			fprintf(stderr, "attack: %s: no op\n", argv[i]);
			return 2;
		}
		const char *label = argv[i], *op = argv[i + 1];
		int n = argc_of(op);
		if (n < 0 || i + 2 + n > argc) {
			fprintf(stderr, "attack: %s: bad op or arguments: %s\n", label, op);
			return 2;
		}
		run(label, op, argv + i + 2);
		fflush(stdout);
		i += 2 + n;
		if (i < argc) {
			if (strcmp(argv[i], ";") != 0) {
				fprintf(stderr, "attack: expected ';' before %s\n", argv[i]);
				return 2;
			}
			i++;
		}
	}
	return 0;
}
