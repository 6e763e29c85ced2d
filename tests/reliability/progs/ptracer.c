/* ptracer: a sandboxed program traces its child's system calls.
 *
 *   ptracer observe SRC N        the child opens SRC N times under PTRACE_SYSCALL
 *   ptracer rewrite SRC N DENIED the tracer rewrites the path in the child's
 *                                memory at every openat entry stop to DENIED
 *                                (same length): seccomp runs after that stop,
 *                                so the supervisor sees (and judges) DENIED
 *
 * The child prints "child redirected=R secret=S denied=D other=O" (contents
 * starting with "REDIRECTED" / "SECRET", EACCES); the tracer prints
 * "tracer stops=N rewrites=W".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[4096];

static void child(long n)
{
	long red = 0, secret = 0, denied = 0, other = 0;
	char buf[64];
	ptrace(PTRACE_TRACEME, 0, 0, 0);
	raise(SIGSTOP);
	for (long i = 0; i < n; i++) {
		int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
		if (fd < 0) {
			if (errno == EACCES)
				denied++;
			else
				other++;
			continue;
		}
		ssize_t k = read(fd, buf, sizeof buf - 1);
		close(fd);
		buf[k > 0 ? k : 0] = 0;
		if (strncmp(buf, "REDIRECTED", 10) == 0)
			red++;
		else if (strncmp(buf, "SECRET", 6) == 0)
			secret++;
		else
			other++;
	}
	printf("child redirected=%ld secret=%ld denied=%ld other=%ld\n", red, secret, denied, other);
	fflush(stdout);
	_exit(0);
}

static void poke_string(pid_t pid, unsigned long addr, const char *s)
{
	size_t len = strlen(s) + 1;
	for (size_t off = 0; off < len; off += sizeof(long)) {
		long word = ptrace(PTRACE_PEEKDATA, pid, addr + off, 0);
		size_t chunk = len - off < sizeof(long) ? len - off : sizeof(long);
		memcpy(&word, s + off, chunk);
		ptrace(PTRACE_POKEDATA, pid, addr + off, word);
	}
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	int rewrite = strcmp(argv[1], "rewrite") == 0;
	if (rewrite && (argc != 5 || strlen(argv[4]) != strlen(argv[2])))
		return 2;
	snprintf(path, sizeof path, "%s", argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	pid_t pid = fork();
	if (pid == 0)
		child(atol(argv[3]));
	int status;
	waitpid(pid, &status, 0);
	ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL);
	long stops = 0, rewrites = 0;
	int entering = 1;
	for (;;) {
		if (ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0)
			break;
		if (waitpid(pid, &status, 0) < 0 || WIFEXITED(status) || WIFSIGNALED(status))
			break;
		if (!(WIFSTOPPED(status) && WSTOPSIG(status) == (SIGTRAP | 0x80)))
			continue;
		stops++;
		struct user_regs_struct regs;
		ptrace(PTRACE_GETREGS, pid, 0, &regs);
		if (entering && rewrite && regs.orig_rax == SYS_openat && regs.rsi == (unsigned long)path) {
			poke_string(pid, regs.rsi, argv[4]);
			rewrites++;
		}
		entering = !entering;
	}
	printf("tracer stops=%ld rewrites=%ld\n", stops, rewrites);
	return 0;
}
