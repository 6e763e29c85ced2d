/* workload: the open patterns the reliability tests drive through unotifyd.
 *
 *   workload block PATH
 *       print "ready", open(PATH) once (e.g. a FIFO without a writer), then
 *       print "result=<errno name or OK> t=<CLOCK_MONOTONIC seconds>".
 *   workload untilerr PATH
 *       open+close PATH until an open fails; print "ready" after the first
 *       success and, at the end, "result=<errno name> t=<seconds> opens=N".
 *   workload effects SRCDIR N APPEND READ EXPECT
 *       N rounds of: open(SRCDIR/fI, O_CREAT|O_EXCL|O_WRONLY) (must succeed),
 *       the same again (must fail with EEXIST), open(APPEND, O_WRONLY|O_APPEND)
 *       and write one line, open(READ) and compare its contents with EXPECT.
 *       SIGUSR1 and SIGCHLD are caught (SA_RESTART) and counted.
 *   workload load ID SRC NRED PASS NPASS
 *       waits for EOF on stdin, then NRED opens of SRC (whose contents must be
 *       "ID\n") interleaved with NPASS opens of PASS; every open must return
 *       the same fd number (an injected duplicate would leave one behind).
 *   workload latency PATH N EXPECT
 *       N timed opens (+read, close) of PATH, whose contents must be EXPECT;
 *       print "fails=F p50_us=.. p99_us=.. max_us=..".
 *
 * Every mode prints one "key=value ..." line; the exit status is 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *ename(int e)
{
	static char buf[32];
	switch (e) {
	case 0: return "OK";
	case ENOSYS: return "ENOSYS";
	case EINTR: return "EINTR";
	case EEXIST: return "EEXIST";
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	case EMFILE: return "EMFILE";
	case ENXIO: return "ENXIO";
	}
	snprintf(buf, sizeof buf, "E%d", e);
	return buf;
}

static volatile sig_atomic_t signals_seen;
static void on_signal(int sig) { (void)sig; signals_seen++; }

static int slurp(const char *path, int flags, char *buf, size_t size, int *fdno)
{
	int fd = open(path, flags);
	if (fd < 0)
		return -errno;
	if (fdno)
		*fdno = fd;
	ssize_t n = pread(fd, buf, size - 1, 0);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

static int mode_block(const char *path)
{
	printf("ready\n");
	fflush(stdout);
	int fd = open(path, O_RDONLY);
	int err = fd < 0 ? errno : 0;
	printf("result=%s t=%.6f\n", ename(err), now());
	return 0;
}

static int mode_untilerr(const char *path)
{
	long opens = 0;
	int err;
	for (;;) {
		int fd = open(path, O_RDONLY);
		if (fd < 0) {
			err = errno;
			break;
		}
		close(fd);
		if (opens++ == 0) {
			printf("ready\n");
			fflush(stdout);
		}
	}
	printf("result=%s t=%.6f opens=%ld\n", ename(err), now(), opens);
	return 0;
}

static int mode_effects(const char *dir, long n, const char *append, const char *readp,
			const char *expect)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	long excl_ok = 0, excl_fail = 0, again_eexist = 0, again_wrong = 0;
	long append_ok = 0, append_fail = 0, read_ok = 0, read_wrong = 0, eintr = 0;
	char path[4096], buf[256], line[64];
	printf("ready\n");
	fflush(stdout);
	for (long i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/f%ld", dir, i);
		int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd >= 0) {
			excl_ok++;
			close(fd);
		} else {
			excl_fail++;
			eintr += errno == EINTR;
			fprintf(stderr, "excl %s: %s\n", path, ename(errno));
		}
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0 && errno == EEXIST) {
			again_eexist++;
		} else {
			again_wrong++;
			eintr += fd < 0 && errno == EINTR;
			if (fd >= 0)
				close(fd);
		}
		fd = open(append, O_WRONLY | O_APPEND);
		if (fd >= 0) {
			int len = snprintf(line, sizeof line, "line %ld\n", i);
			if (write(fd, line, len) == len)
				append_ok++;
			else
				append_fail++;
			close(fd);
		} else {
			append_fail++;
			eintr += errno == EINTR;
		}
		int r = slurp(readp, O_RDONLY, buf, sizeof buf, NULL);
		if (r == 0 && strcmp(buf, expect) == 0)
			read_ok++;
		else {
			read_wrong++;
			eintr += r == -EINTR;
		}
	}
	printf("excl_ok=%ld excl_fail=%ld again_eexist=%ld again_wrong=%ld append_ok=%ld "
	       "append_fail=%ld read_ok=%ld read_wrong=%ld eintr=%ld signals=%ld\n",
	       excl_ok, excl_fail, again_eexist, again_wrong, append_ok, append_fail, read_ok,
	       read_wrong, eintr, (long)signals_seen);
	return 0;
}

static int mode_load(const char *id, const char *src, long nred, const char *pass, long npass)
{
	char c;
	while (read(0, &c, 1) > 0)
		;
	char expect[64], buf[256];
	snprintf(expect, sizeof expect, "%s\n", id);
	long ok = 0, lost = 0, wrong = 0, fd_moved = 0, pass_ok = 0, pass_fail = 0;
	int first_fd = -1;
	double t0 = now();
	for (long i = 0; i < nred || i < npass; i++) {
		if (i < nred) {
			int fdno = -1;
			int r = slurp(src, O_RDONLY, buf, sizeof buf, &fdno);
			if (r < 0) {
				lost++;
				if (lost < 5)
					fprintf(stderr, "load %s: open: %s\n", id, ename(-r));
			} else if (strcmp(buf, expect) != 0) {
				wrong++;
				if (wrong < 5)
					fprintf(stderr, "load %s: got %s", id, buf);
			} else {
				ok++;
			}
			if (fdno >= 0) {
				if (first_fd < 0)
					first_fd = fdno;
				else if (fdno != first_fd)
					fd_moved++;
			}
		}
		if (i < npass) {
			int fd = open(pass, O_RDONLY);
			if (fd < 0) {
				pass_fail++;
			} else {
				pass_ok++;
				if (fd != first_fd && first_fd >= 0)
					fd_moved++;
				close(fd);
			}
		}
	}
	printf("id=%s ok=%ld lost=%ld wrong=%ld fd_moved=%ld pass_ok=%ld pass_fail=%ld secs=%.3f\n",
	       id, ok, lost, wrong, fd_moved, pass_ok, pass_fail, now() - t0);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int mode_latency(const char *path, long n, const char *expect)
{
	double *lat = calloc(n, sizeof *lat);
	char buf[256];
	long fails = 0;
	for (long i = 0; i < n; i++) {
		double t = now();
		int r = slurp(path, O_RDONLY, buf, sizeof buf, NULL);
		lat[i] = (now() - t) * 1e6;
		if (r < 0 || strcmp(buf, expect) != 0)
			fails++;
	}
	qsort(lat, n, sizeof *lat, cmp_double);
	printf("fails=%ld p50_us=%.0f p99_us=%.0f max_us=%.0f\n", fails, lat[n / 2],
	       lat[(long)(n * 0.99)], lat[n - 1]);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && strcmp(argv[1], "block") == 0)
		return mode_block(argv[2]);
	if (argc == 3 && strcmp(argv[1], "untilerr") == 0)
		return mode_untilerr(argv[2]);
	if (argc == 7 && strcmp(argv[1], "effects") == 0)
		return mode_effects(argv[2], atol(argv[3]), argv[4], argv[5], argv[6]);
	if (argc == 7 && strcmp(argv[1], "load") == 0)
		return mode_load(argv[2], argv[3], atol(argv[4]), argv[5], atol(argv[6]));
	if (argc == 5 && strcmp(argv[1], "latency") == 0)
		return mode_latency(argv[2], atol(argv[3]), argv[4]);
	fprintf(stderr, "usage: see the comment at the top of workload.c\n");
	return 2;
}
