/*
 * memexec vfork|thread FILE: where a supervisor writes a call's results
 * (a stat's struct stat, under --enforce) once the thread that made the
 * call has another memory than at its earlier calls.
 *
 *  - vfork: a vfork child, which runs on its parent's memory, stats FILE
 *    300 times (a supervisor may then hold /proc/CHILD/mem, bound to the
 *    parent's mm), then execs "memexec after FILE";
 *  - thread: the leader stats FILE 300 times, then another thread of the
 *    group execs "memexec after FILE" and takes the leader's tid
 *    (de_thread() in fs/exec.c), whose old mm is then gone.
 *
 * "after" stats FILE 1000 times into buf, filled with 0xA5 before each
 * call, and prints how many answers were 0 with FILE's size in buf. Built
 * -static (no loader's calls first, and no PIE), buf lies at the same
 * address in every image: a result written
 * into the vfork parent's memory lands in the parent's buf, which the
 * parent filled with 0x5A and prints, once the child is done, as "intact"
 * or "written".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memafter.h"

static struct stat buf;
static char *file;
static char stack[1 << 16];

static void warm(void)
{
	struct stat st;
	for (int i = 0; i < 300; i++)
		stat(file, &st);
}

static int exec_after(void *arg)
{
	(void)arg;
	char *argv[] = {"memexec", "after", file, NULL};
	execv("/proc/self/exe", argv);
	_exit(127);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	file = argv[2];
	if (!strcmp(argv[1], "after"))
		return stats_after(file, &buf);
	if (!strcmp(argv[1], "thread")) {
		warm();
		int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
			    CLONE_SYSVSEM;
		if (clone(exec_after, stack + sizeof stack, flags, NULL) < 0)
			return 4;
		for (;;)
			pause();
	}
	memset(&buf, 0x5A, sizeof buf);
	fflush(stdout);
	pid_t child = vfork();
	if (child == 0) {
		warm();
		exec_after(NULL);
	}
	int status;
	if (child < 0 || waitpid(child, &status, 0) < 0)
		return 5;
	const unsigned char *b = (const unsigned char *)&buf;
	int intact = 1;
	for (size_t i = 0; i < sizeof buf; i++)
		intact &= b[i] == 0x5A;
	printf("parent %s\n", intact ? "intact" : "written");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 6;
}
