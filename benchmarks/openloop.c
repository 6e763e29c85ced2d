/* openloop: time a tight loop of one system call, from inside the program.
 *
 *   openloop [-F] [-S libc|open|openat|openat2|lstat] PATH N
 *   openloop [-F] -g N
 *
 * The first form opens PATH read-only (O_CLOEXEC) and closes it, N times
 * (with -S lstat: lstat()s it N times, a call of the stat family).
 * Before the timed loop, one untimed open reads the first 64 bytes of what
 * PATH really is, so that a run shows whether a supervisor redirected it.
 * The second form calls getppid() N times: a call no filter of ours traps,
 * so it measures what a filter costs a call it lets through.
 *
 *   -S HOW  how to open: libc = glibc's open() (an openat on Linux, the
 *           default), or the raw open, openat or openat2 system call
 *   -F      first install a seccomp filter of one instruction that allows
 *           everything: the least any filter costs an untrapped call
 *   -g      getppid() instead of opens
 *
 * Output: one line on stdout,
 *   openloop call=.. n=.. ns_per_iter=.. failures=.. content="..."
 * ns_per_iter is CLOCK_MONOTONIC time of the whole loop divided by N (one
 * open and its close, or one getppid); content= is left out with -g. The
 * bytes of content= are escaped as latloop.c does (benchmarks/harness.py,
 * c_escape, must agree). Exit status 1 if any open failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

/* struct open_how of openat2(2); spelled out for headers older than 5.6. */
struct how {
	uint64_t flags, mode, resolve;
};

enum call { C_LIBC, C_OPEN, C_OPENAT, C_OPENAT2, C_LSTAT };
static const char *const call_names[] = { "libc", "open", "openat", "openat2", "lstat" };

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: openloop [-F] [-S libc|open|openat|openat2|lstat] PATH N\n"
		"       openloop [-F] -g N\n");
	exit(2);
}

static int open_with(enum call how, const char *path)
{
	int flags = O_RDONLY | O_CLOEXEC;
	switch (how) {
	case C_OPEN:
#ifdef SYS_open
		return (int)syscall(SYS_open, path, flags, 0);
#else
		errno = ENOSYS;
		return -1;
#endif
	case C_OPENAT:
		return (int)syscall(SYS_openat, AT_FDCWD, path, flags, 0);
	case C_OPENAT2: {
		struct how h = { .flags = (uint64_t)flags };
		return (int)syscall(SYS_openat2, AT_FDCWD, path, &h, sizeof h);
	}
	case C_LIBC:
	default:
		return open(path, flags);
	}
}

/* A filter that returns ALLOW for every call; seccomp(2) needs no_new_privs
 * (or CAP_SYS_ADMIN) to install one. */
static void allow_all_filter(void)
{
	struct sock_filter insns[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = insns };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
		perror("openloop: -F: seccomp");
		exit(1);
	}
}

/* Escape len bytes of buf into out (room for 4 * len + 1): \n, \" and \\ as
 * such, other bytes outside printable ASCII as \xHH. */
static void escape(const unsigned char *buf, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = buf[i];
		if (c == '\n') {
			*out++ = '\\';
			*out++ = 'n';
		} else if (c == '"' || c == '\\') {
			*out++ = '\\';
			*out++ = (char)c;
		} else if (c < 32 || c > 126) {
			out += sprintf(out, "\\x%02x", c);
		} else {
			*out++ = (char)c;
		}
	}
	*out = 0;
}

int main(int argc, char *argv[])
{
	enum call how = C_LIBC;
	int getppid_loop = 0, floor_filter = 0, opt;

	while ((opt = getopt(argc, argv, "+FgS:")) != -1) {
		switch (opt) {
		case 'F': floor_filter = 1; break;
		case 'g': getppid_loop = 1; break;
		case 'S':
			for (how = C_LIBC; how <= C_LSTAT; how++)
				if (strcmp(optarg, call_names[how]) == 0)
					break;
			if (how > C_LSTAT)
				usage();
			break;
		default: usage();
		}
	}
	if (argc - optind != (getppid_loop ? 1 : 2))
		usage();
	const char *path = getppid_loop ? NULL : argv[optind];
	long n = atol(argv[argc - 1]);
	if (n <= 0)
		usage();
	if (floor_filter)
		allow_all_filter();

	char esc[4 * 64 + 1] = "";
	if (path) {
		unsigned char buf[64];
		int fd = open_with(how == C_LSTAT ? C_LIBC : how, path);
		if (fd < 0) {
			fprintf(stderr, "openloop: open(%s): %s\n", path, strerror(errno));
			return 1;
		}
		ssize_t r = read(fd, buf, sizeof buf);
		close(fd);
		escape(buf, r < 0 ? 0 : (size_t)r, esc);
	}

	long failures = 0;
	uint64_t t0 = now_ns();
	if (how == C_LSTAT) {
		struct stat st;
		for (long i = 0; i < n; i++)
			failures += lstat(path, &st) != 0;
	} else if (path) {
		for (long i = 0; i < n; i++) {
			int fd = open_with(how, path);
			if (fd < 0)
				failures++;
			else
				close(fd);
		}
	} else {
		for (long i = 0; i < n; i++)
			(void)getppid();
	}
	uint64_t t1 = now_ns();

	printf("openloop call=%s n=%ld ns_per_iter=%.2f failures=%ld",
	       path ? call_names[how] : "getppid", n, (double)(t1 - t0) / (double)n, failures);
	if (path)
		printf(" content=\"%s\"", esc);
	printf("\n");
	return failures ? 1 : 0;
}
