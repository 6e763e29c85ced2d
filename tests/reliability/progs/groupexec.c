/*
 * groupexec DIR: a thread of the group, made in a mount namespace of its own
 * (CLONE_THREAD | CLONE_NEWNS, legal without CLONE_FS), bind-mounts
 * DIR/../other over DIR and calls execve: the kernel kills the leader and
 * gives the thread its pid (de_thread() in fs/exec.c). What runs then
 * ("groupexec after DIR") stats DIR/f 1000 times and prints the sum of the
 * sizes it saw. Before the clone the leader stats DIR/f 300 times, so that
 * a supervisor's pass-through lane starts and looks at the leader.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dir;
static char stack[1 << 16];

static int moved(void *arg)
{
	(void)arg;
	char other[4096];
	snprintf(other, sizeof other, "%s/../other", dir);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(other, dir, NULL, MS_BIND, NULL) < 0) {
		perror("mount");
		_exit(1);
	}
	char *argv[] = {"groupexec", "after", dir, NULL};
	execv("/proc/self/exe", argv);
	perror("execv");
	_exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int after = argc == 3 && !strcmp(argv[1], "after");
	dir = argv[after ? 2 : 1];
	char f[4096];
	snprintf(f, sizeof f, "%s/f", dir);
	struct stat st;
	if (after) {
		long sum = 0;
		for (int i = 0; i < 1000; i++)
			sum += stat(f, &st) == 0 ? st.st_size : -1;
		printf("%ld\n", sum);
		return 0;
	}
	for (int i = 0; i < 300; i++)
		stat(f, &st);
	int flags = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_NEWNS;
	if (clone(moved, stack + sizeof stack, flags, NULL) < 0) {
		perror("clone");
		return 1;
	}
	for (;;)
		pause();
}
