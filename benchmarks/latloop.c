/* latloop: time every single open, for latency percentiles across programs.
 *
 *   latloop [-t START_NS] [-s SPIN_NS] [-d DIR] PATH N
 *
 * Opens PATH (O_RDONLY|O_CLOEXEC, through glibc's open(), i.e. openat) N
 * times, closing it after each open, and times each open() alone with
 * CLOCK_MONOTONIC.
 *
 *   -t START_NS  sleep until CLOCK_MONOTONIC reaches START_NS before the
 *                timed loop (a start barrier for many programs at once;
 *                CLOCK_MONOTONIC is the same clock in every process)
 *   -s SPIN_NS   busy-loop SPIN_NS between two opens (an isolated call: the
 *                program computes, then opens, as a compiler does)
 *   -d DIR       write the N samples (native-endian uint32 ns, saturated)
 *                to DIR/lat-PID.bin
 *
 * Output: one line on stdout, written with a single write(2) so that many
 * programs can share a pipe:
 *   latloop pid=.. n=.. start_ns=.. end_ns=.. p50_ns=.. p99_ns=.. max_ns=..
 *           failures=.. late=0|1 content="..."
 * start_ns/end_ns bound the timed loop; late=1 if START_NS had already
 * passed when the program got there. content= is what the first (untimed)
 * open really read, to prove a redirect or a pass-through.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static void usage(void)
{
	fprintf(stderr, "usage: latloop [-t START_NS] [-s SPIN_NS] [-d DIR] PATH N\n");
	exit(2);
}

/* Escape up to len bytes of buf for a "..." field. out needs 4*len+1 bytes. */
static void escape(const char *buf, ssize_t len, char *out)
{
	for (ssize_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];
		if (c == '\n') { *out++ = '\\'; *out++ = 'n'; }
		else if (c == '"' || c == '\\') { *out++ = '\\'; *out++ = (char)c; }
		else if (c < 32 || c > 126) out += sprintf(out, "\\x%02x", c);
		else *out++ = (char)c;
	}
	*out = 0;
}

int main(int argc, char *argv[])
{
	uint64_t start_at = 0, spin = 0;
	const char *dir = NULL;
	int opt;

	while ((opt = getopt(argc, argv, "+t:s:d:")) != -1) {
		switch (opt) {
		case 't': start_at = strtoull(optarg, NULL, 10); break;
		case 's': spin = strtoull(optarg, NULL, 10); break;
		case 'd': dir = optarg; break;
		default: usage();
		}
	}
	if (argc - optind != 2) usage();
	const char *path = argv[optind];
	long n = atol(argv[optind + 1]);
	if (n <= 0) usage();

	uint32_t *lat = malloc((size_t)n * sizeof *lat);
	if (!lat) {
		perror("latloop: malloc");
		return 1;
	}
	/* Touch the buffer now, so that page faults stay out of the loop. */
	memset(lat, 0, (size_t)n * sizeof *lat);

	char buf[64], esc[4 * sizeof buf + 1];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "latloop: open(%s): %s\n", path, strerror(errno));
		return 1;
	}
	ssize_t r = read(fd, buf, sizeof buf);
	close(fd);
	escape(buf, r < 0 ? 0 : r, esc);

	int late = 0;
	if (start_at) {
		if (now_ns() >= start_at) {
			late = 1;
		} else {
			struct timespec ts = {
				.tv_sec = (time_t)(start_at / 1000000000ull),
				.tv_nsec = (long)(start_at % 1000000000ull),
			};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
	}

	long failures = 0;
	uint64_t t_start = now_ns();
	for (long i = 0; i < n; i++) {
		if (spin) {
			uint64_t until = now_ns() + spin;
			while (now_ns() < until)
				;
		}
		uint64_t t0 = now_ns();
		fd = open(path, O_RDONLY | O_CLOEXEC);
		uint64_t d = now_ns() - t0;
		lat[i] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		if (fd < 0) failures++;
		else close(fd);
	}
	uint64_t t_end = now_ns();

	if (dir) {
		char name[4096];
		snprintf(name, sizeof name, "%s/lat-%ld.bin", dir, (long)getpid());
		FILE *f = fopen(name, "wb");
		if (!f || fwrite(lat, sizeof *lat, (size_t)n, f) != (size_t)n || fclose(f) != 0) {
			fprintf(stderr, "latloop: %s: %s\n", name, strerror(errno));
			return 1;
		}
	}
	qsort(lat, (size_t)n, sizeof *lat, cmp_u32);
	long i50 = (n - 1) / 2, i99 = (long)((double)(n - 1) * 0.99);

	char line[512 + sizeof esc];
	int len = snprintf(line, sizeof line,
			"latloop pid=%ld n=%ld start_ns=%llu end_ns=%llu p50_ns=%u p99_ns=%u "
			"max_ns=%u failures=%ld late=%d content=\"%s\"\n",
			(long)getpid(), n, (unsigned long long)t_start, (unsigned long long)t_end,
			lat[i50], lat[i99], lat[n - 1], failures, late, esc);
	if (len > 0 && write(1, line, (size_t)len) != len)
		return 1;
	return failures ? 1 : 0;
}
