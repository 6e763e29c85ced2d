/*
 * memrace SELF FILE: a supervisor that keeps a thread's /proc/TID/mem open
 * between its calls must keep only a file bound to the memory that thread
 * will write with (audit helper-50). P (this process) makes C with
 * clone(CLONE_VM): C shares P's memory. A thread X of C calls execve; in
 * de_thread() X takes C's leader's tid, and only later, in exec_mmap(), a
 * memory of its own. userfaultfd (on pages of the shared memory) holds each
 * side where the race needs it:
 *
 *  1. X's argv string: the execve is received (and let through) by the
 *     supervisor, then X waits, before de_thread();
 *  2. the path of a stat the leader makes then: the supervisor's thread
 *     that reads it waits, the call received after the execve;
 *  3. the argv page given back: X kills the leader, takes its tid, and
 *     waits at its clear_child_tid (exec_mm_release()), the old memory
 *     still its own; flood threads make calls meanwhile, so that the
 *     supervisor sweeps the threads that are gone (X's own tid is);
 *  4. the path given back: the supervisor answers the leader's stat, and
 *     may open /proc/TID/mem of the tid, which names X now;
 *  5. X goes on: the new image ("memrace after FILE") stats FILE 1000
 *     times into buf, filled with 0xA5 before each call, and prints how
 *     many answers were 0 with FILE's size there. Built -static, buf lies
 *     at the same address in P; P prints whether its own buf, filled with
 *     0x5A, was written ("written") or not ("intact").
 *
 * Natively the leader's stat reads its own path (the fault is the
 * leader's); output: "path read by the leader" or "by another thread".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "memafter.h"

#define PAGE 4096
#define FLOODERS 6

static struct stat buf;
static char *file, *self;
static char missing[4200];
static char *held; /* three pages, each filled only when let go */
static int uffd;
static volatile int go_x, go_leader, stop_flood;
static volatile pid_t x_tid;
static volatile long flooded;
static char c_stack[1 << 16] __attribute__((aligned(16)));
static char x_stack[1 << 16] __attribute__((aligned(16)));

#define PATH_PAGE (held)
#define ARGV_PAGE (held + PAGE)
#define CTID_PAGE (held + 2 * PAGE)

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

static void wait_for(volatile int *flag)
{
	long end = now_ms() + 10000;
	while (!*flag && now_ms() < end)
		;
}

static int x_main(void *arg)
{
	(void)arg;
	x_tid = (pid_t)syscall(SYS_gettid);
	wait_for(&go_x);
	syscall(SYS_set_tid_address, CTID_PAGE);
	char *argv[] = {"memrace", "after", ARGV_PAGE, NULL};
	syscall(SYS_execve, self, argv, (char *[]){NULL});
	syscall(SYS_exit, 111);
	return 0;
}

static int leader_main(void *arg)
{
	(void)arg;
	int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
		    CLONE_SYSVSEM;
	if (clone(x_main, x_stack + sizeof x_stack, flags, NULL) < 0)
		syscall(SYS_exit_group, 3);
	wait_for(&go_leader);
	struct stat st;
	syscall(SYS_stat, PATH_PAGE, &st); /* held; X's de_thread() kills us */
	syscall(SYS_exit_group, 4);
	return 0;
}

static void *flood(void *arg)
{
	(void)arg;
	struct stat st;
	while (!stop_flood) {
		syscall(SYS_stat, missing, &st);
		__atomic_add_fetch(&flooded, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Wait (10 s at most) for a fault on page; 1 with the thread that made it
 * in *who, or 0. Faults on other pages are a thread's fault made again
 * (each is reported; a page let go wakes every thread that waits on it). */
static int fault_on(const char *page, pid_t *who)
{
	long end = now_ms() + 10000;
	for (long left; (left = end - now_ms()) > 0;) {
		struct pollfd p = {uffd, POLLIN, 0};
		struct uffd_msg m;
		if (poll(&p, 1, (int)left) != 1 || read(uffd, &m, sizeof m) != sizeof m)
			return 0;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		char *at = (char *)(uintptr_t)(m.arg.pagefault.address & ~(uint64_t)(PAGE - 1));
		*who = (pid_t)m.arg.pagefault.feat.ptid;
		if (at == page)
			return 1;
		fprintf(stderr, "memrace: a fault on page %ld by %d\n", (long)(at - held) / PAGE, *who);
	}
	return 0;
}

/* Let go of a held page, filled with s (zeros for NULL). */
static void let_go(char *page, const char *s)
{
	static char src[PAGE] __attribute__((aligned(PAGE)));
	memset(src, 0, sizeof src);
	if (s)
		snprintf(src, sizeof src, "%s", s);
	struct uffdio_copy c = {.dst = (uintptr_t)page, .src = (uintptr_t)src, .len = PAGE};
	if (ioctl(uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
		perror("UFFDIO_COPY");
}

/* Let every page go and end C, which would otherwise wait for them for
 * ever (its copy of our userfaultfd keeps it open); status. */
static int give_up(pid_t c, int status)
{
	stop_flood = 1;
	let_go(ARGV_PAGE, file);
	let_go(PATH_PAGE, file);
	let_go(CTID_PAGE, NULL);
	if (c > 0) {
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
	}
	fprintf(stderr, "memrace: gave up (%d)\n", status);
	return status;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	file = argv[2];
	if (!strcmp(argv[1], "after"))
		return stats_after(file, &buf);
	self = argv[1];
	snprintf(missing, sizeof missing, "%s-missing", file);
	memset(&buf, 0x5A, sizeof buf);
	setvbuf(stdout, NULL, _IONBF, 0);
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID};
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
		perror("userfaultfd");
		return 5;
	}
	held = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = {.range = {(uintptr_t)held, 3 * PAGE},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (held == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		perror("UFFDIO_REGISTER");
		return 6;
	}
	pthread_t flooders[FLOODERS];
	for (int i = 0; i < FLOODERS; i++)
		pthread_create(&flooders[i], NULL, flood, NULL);
	usleep(300000); /* a supervisor's lane starts after a few calls */
	pid_t c = clone(leader_main, c_stack + sizeof c_stack, CLONE_VM | SIGCHLD, NULL);
	for (long end = now_ms() + 10000; !x_tid && now_ms() < end;)
		;
	if (c < 0 || !x_tid)
		return give_up(c, 11);
	pid_t who;
	go_x = 1;
	if (!fault_on(ARGV_PAGE, &who))
		return give_up(c, 7);
	go_leader = 1;
	if (!fault_on(PATH_PAGE, &who))
		return give_up(c, 8);
	printf("path read by %s\n", who == c ? "the leader" : "another thread");
	let_go(ARGV_PAGE, file);
	if (!fault_on(CTID_PAGE, &who))
		return give_up(c, 9);
	long base = flooded, end = now_ms() + 3000;
	while (flooded - base < 1500 && now_ms() < end)
		usleep(1000); /* sweeps, which find X's own tid gone */
	let_go(PATH_PAGE, file);
	usleep(200000);
	stop_flood = 1;
	for (int i = 0; i < FLOODERS; i++)
		pthread_join(flooders[i], NULL);
	usleep(100000);
	let_go(CTID_PAGE, NULL); /* X's exec goes on, to a memory of its own */
	int status;
	if (waitpid(c, &status, 0) < 0)
		return 10;
	const unsigned char *b = (const unsigned char *)&buf;
	int intact = 1;
	for (size_t i = 0; i < sizeof buf; i++)
		intact &= b[i] == 0x5A;
	printf("parent %s\n", intact ? "intact" : "written");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}
