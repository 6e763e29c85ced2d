/* spawnloop: launch a command N times, one after the other, and time each launch.
 *
 *   spawnloop N PROG [ARGS...]
 *
 * Each launch is posix_spawnp() (a vfork-like clone in glibc: the cost of
 * the launcher stays out of the numbers) up to waitpid() returning, with
 * stdin and stdout on /dev/null and stderr inherited. Every run must exit 0.
 *
 * Output: one line on stdout:
 *   spawnloop n=.. mean_ns=.. p50_ns=.. p99_ns=.. min_ns=.. failures=..
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

int main(int argc, char *argv[])
{
	if (argc < 3) {
		fprintf(stderr, "usage: spawnloop N PROG [ARGS...]\n");
		return 2;
	}
	long n = atol(argv[1]);
	if (n <= 0) {
		fprintf(stderr, "spawnloop: bad N\n");
		return 2;
	}
	char **cmd = argv + 2;
	uint64_t *t = calloc((size_t)n, sizeof *t);
	if (!t) {
		perror("spawnloop: calloc");
		return 1;
	}

	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);

	long failures = 0;
	double sum = 0;
	for (long i = 0; i < n; i++) {
		pid_t pid;
		uint64_t t0 = now_ns();
		int e = posix_spawnp(&pid, cmd[0], &fa, NULL, cmd, environ);
		if (e != 0) {
			fprintf(stderr, "spawnloop: %s: %s\n", cmd[0], strerror(e));
			return 1;
		}
		int st;
		while (waitpid(pid, &st, 0) < 0)
			if (errno != EINTR) {
				perror("spawnloop: waitpid");
				return 1;
			}
		t[i] = now_ns() - t0;
		sum += (double)t[i];
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (failures++ == 0)
				fprintf(stderr, "spawnloop: %s: wait status %#x\n", cmd[0], st);
		}
	}
	qsort(t, (size_t)n, sizeof *t, cmp_u64);
	printf("spawnloop n=%ld mean_ns=%.0f p50_ns=%llu p99_ns=%llu min_ns=%llu failures=%ld\n",
			n, sum / (double)n, (unsigned long long)t[(n - 1) / 2],
			(unsigned long long)t[(long)((double)(n - 1) * 0.99)],
			(unsigned long long)t[0], failures);
	return failures ? 1 : 0;
}
