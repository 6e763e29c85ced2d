/*
 * isolation: the victim and the attackers of tests/security/test_isolation.py.
 *
 *     isolation OP ARG...
 *
 * Ops (each prints "key=value ..." lines; a line that starts with "ready"
 * means the op's steady state is reached and the test may go on):
 *
 *   opens SECS N PATH EXPECT
 *       up to N timed open+read+close of PATH, stopping early once SECS
 *       seconds have gone by; what is read must be EXPECT. Prints
 *       "runs=R fails=F p50_us= p99_us= max_us=".
 *   lessor PATH
 *       opens PATH read-only, ignores SIGIO and takes a write lease on it;
 *       prints "ready", then takes the lease again every time the kernel
 *       broke it (after /proc/sys/fs/lease-break-time), until killed.
 *   truncate THREADS COUNT PATH
 *       THREADS threads each call truncate(PATH, 0) COUNT times (0: until
 *       killed), pausing 20 ms after a call that did not wait for a lease
 *       break; prints "ready" once they are started and, if they all end,
 *       "calls=C errors=E max_us=M".
 *   fifos THREADS PATH...
 *       THREADS threads, thread i opening PATH[i mod count] for reading
 *       (a FIFO without a writer waits); prints "ready" once they are
 *       started, then sleeps until killed.
 *   uffd
 *       maps a page, registers it with userfaultfd for missing faults and
 *       never serves it; prints "ready", then calls open() with a path that
 *       lies in that page. Whoever reads the path waits for the page.
 *   uffd-probe
 *       the native control of uffd: a child reads the same kind of page of
 *       its parent with process_vm_readv, as the supervisor would. Prints
 *       "blocked=yes" if the read is still waiting after one second.
 *   idle SOCKET N
 *       opens N connections to the daemon's control socket and sends
 *       nothing. Prints the first refusal it reads as "refusal TEXT" (its
 *       JSON), after a second "held=H refused=R", then "ready". Until
 *       killed, every connection the daemon closes is opened again a
 *       second later.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	printf("error=%s:%s\n", what, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
	exit(1);
}

static void ready(void)
{
	printf("ready\n");
	fflush(stdout);
}

/* --- opens ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int op_opens(double secs, long n, const char *path, const char *expect)
{
	double *lat = calloc(n, sizeof *lat);
	char buf[256];
	size_t want = strlen(expect);
	long runs = 0, fails = 0;
	double start = now();
	while (runs < n && now() - start < secs) {
		double t = now();
		int fd = open(path, O_RDONLY);
		ssize_t got = -1;
		if (fd >= 0) {
			got = read(fd, buf, sizeof buf);
			close(fd);
		}
		lat[runs++] = (now() - t) * 1e6;
		if (got != (ssize_t)want || memcmp(buf, expect, want) != 0)
			fails++;
	}
	if (runs == 0)
		runs = 1; /* no time at all: report one zero sample */
	qsort(lat, runs, sizeof *lat, cmp_double);
	printf("runs=%ld fails=%ld p50_us=%.0f p99_us=%.0f max_us=%.0f\n", runs, fails,
	       lat[runs / 2], lat[(long)(runs * 0.99)], lat[runs - 1]);
	return 0;
}

/* --- lessor ------------------------------------------------------------------- */

static int op_lessor(const char *path)
{
	/* The break notice is SIGIO, whose default action would end us: then
	 * the lease would go at once instead of after the break time. */
	signal(SIGIO, SIG_IGN);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open");
	if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0)
		die("F_SETLEASE");
	ready();
	for (;;) {
		/* While a break is pending the lease reads as F_UNLCK, and taking
		 * it again fails (EAGAIN: the breaker holds write access); once the
		 * kernel removed it, it is ours again within a millisecond. */
		if (fcntl(fd, F_GETLEASE) == F_UNLCK)
			fcntl(fd, F_SETLEASE, F_WRLCK);
		usleep(1000);
	}
	return 0;
}

/* --- truncate ----------------------------------------------------------------- */

struct trunc_arg {
	const char *path;
	long count;
	long calls, errors;
	double max_us;
};

static void *trunc_thread(void *p)
{
	struct trunc_arg *a = p;
	for (long i = 0; a->count == 0 || i < a->count; i++) {
		double t = now();
		if (truncate(a->path, 0) < 0)
			a->errors++;
		double us = (now() - t) * 1e6;
		if (us > a->max_us)
			a->max_us = us;
		a->calls++;
		/* A call that did not wait found no lease: the lessor is taking
		 * it again, which fails while any truncate holds write access to
		 * the file. Give it room, or the threads would starve it. */
		if (us < 100000)
			usleep(20000);
	}
	return NULL;
}

static int op_truncate(int threads, long count, const char *path)
{
	struct trunc_arg *args = calloc(threads, sizeof *args);
	pthread_t *tids = calloc(threads, sizeof *tids);
	for (int i = 0; i < threads; i++) {
		args[i].path = path;
		args[i].count = count;
		if (pthread_create(&tids[i], NULL, trunc_thread, &args[i]) != 0)
			die("pthread_create");
	}
	ready();
	long calls = 0, errors = 0;
	double max_us = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(tids[i], NULL);
		calls += args[i].calls;
		errors += args[i].errors;
		if (args[i].max_us > max_us)
			max_us = args[i].max_us;
	}
	printf("calls=%ld errors=%ld max_us=%.0f\n", calls, errors, max_us);
	return 0;
}

/* --- fifos -------------------------------------------------------------------- */

static void *fifo_thread(void *p)
{
	/* Waits for a writer that never comes (unless the test releases it). */
	int fd = open(p, O_RDONLY);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static int op_fifos(int threads, int npaths, char **paths)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (int i = 0; i < threads; i++) {
		pthread_t t;
		if (pthread_create(&t, &attr, fifo_thread, paths[i % npaths]) != 0)
			die("pthread_create");
	}
	ready();
	for (;;)
		pause();
	return 0;
}

/* --- uffd --------------------------------------------------------------------- */

/* A page registered for missing faults that nobody will ever serve. Not
 * UFFD_USER_MODE_ONLY: that flag would let faults from the kernel (another
 * process's process_vm_readv) fail at once instead of waiting, and without
 * it userfaultfd needs CAP_SYS_PTRACE (vm.unprivileged_userfaultfd = 0). */
static char *trapped_page(void)
{
	long size = sysconf(_SC_PAGESIZE);
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	char *page = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		die("mmap");
	struct uffdio_register reg = {
		.range = {.start = (uintptr_t)page, .len = size},
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
	return page; /* uffd stays open: closing it would release the faults */
}

static int op_uffd(void)
{
	char *page = trapped_page();
	ready();
	int fd = open(page, O_RDONLY);
	printf("opened=%s\n", fd < 0 ? strerrorname_np(errno) : "OK");
	return 0;
}

static int op_uffd_probe(void)
{
	char *page = trapped_page();
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char buf[16];
		struct iovec local = {buf, sizeof buf}, remote = {page, sizeof buf};
		ssize_t n = process_vm_readv(parent, &local, 1, &remote, 1, 0);
		_exit(n < 0 ? 1 : 0);
	}
	double start = now();
	int status;
	while (waitpid(child, &status, WNOHANG) == 0) {
		if (now() - start > 1.0) {
			printf("blocked=yes\n");
			kill(child, SIGKILL);
			waitpid(child, &status, 0);
			return 0;
		}
		usleep(10000);
	}
	printf("blocked=no status=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}

/* --- idle --------------------------------------------------------------------- */

static int dial(const char *path, double deadline)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
			return fd;
		int err = errno;
		close(fd);
		/* EAGAIN: the backlog is full; the daemon has not accepted yet. */
		if (err != EAGAIN || now() > deadline) {
			errno = err;
			return -1;
		}
		usleep(1000);
	}
}

static int op_idle(const char *path, int n)
{
	struct pollfd *fds = calloc(n, sizeof *fds);
	double *closed_at = calloc(n, sizeof *closed_at);
	for (int i = 0; i < n; i++) {
		fds[i].fd = dial(path, now() + 5);
		if (fds[i].fd < 0)
			die("connect");
		fds[i].events = POLLIN;
	}
	char buf[4096];
	int refused = 0, shown = 0, reported = 0;
	double start = now();
	for (;;) {
		if (poll(fds, n, 100) < 0 && errno != EINTR)
			die("poll");
		for (int i = 0; i < n; i++) {
			if (fds[i].fd >= 0 && fds[i].revents) {
				/* An answer to a connection that asked nothing is a
				 * refusal (busy, over a limit, a timeout). */
				ssize_t got = recv(fds[i].fd, buf, sizeof buf - 1, MSG_DONTWAIT);
				if (got > 4) {
					refused++;
					if (!shown) {
						buf[got] = 0;
						printf("refusal %s\n", buf + 4);
						shown = 1;
					}
				}
				close(fds[i].fd);
				fds[i].fd = -1;
				closed_at[i] = now();
			} else if (fds[i].fd < 0 && now() - closed_at[i] > 1.0) {
				/* Dial again, but not at once: the point is to hold
				 * connections, not to flood the daemon with refusals. */
				fds[i].fd = dial(path, now() + 1);
				if (fds[i].fd < 0)
					closed_at[i] = now();
			}
			fds[i].revents = 0;
		}
		if (!reported && now() - start >= 1.0) {
			int held = 0;
			for (int i = 0; i < n; i++)
				held += fds[i].fd >= 0;
			printf("held=%d refused=%d\n", held, refused);
			ready();
			reported = 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 6 && strcmp(argv[1], "opens") == 0)
		return op_opens(atof(argv[2]), atol(argv[3]), argv[4], argv[5]);
	if (argc == 3 && strcmp(argv[1], "lessor") == 0)
		return op_lessor(argv[2]);
	if (argc == 5 && strcmp(argv[1], "truncate") == 0)
		return op_truncate(atoi(argv[2]), atol(argv[3]), argv[4]);
	if (argc >= 4 && strcmp(argv[1], "fifos") == 0)
		return op_fifos(atoi(argv[2]), argc - 3, argv + 3);
	if (argc == 2 && strcmp(argv[1], "uffd") == 0)
		return op_uffd();
	if (argc == 2 && strcmp(argv[1], "uffd-probe") == 0)
		return op_uffd_probe();
	if (argc == 4 && strcmp(argv[1], "idle") == 0)
		return op_idle(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: see the comment at the top of isolation.c\n");
	return 2;
}
