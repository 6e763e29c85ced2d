/* selfseccomp: a sandboxed program adds seccomp filters of its own.
 *
 *   selfseccomp SRC
 *
 * SRC is redirected by the test's policy. Prints one line per step:
 *   nnp=1                      NO_NEW_PRIVS is set (the launcher set it)
 *   own-errno-filter=OK getppid=EPERM open=CONTENTS
 *                              a filter failing getppid installs, and the
 *                              supervisor's redirect still applies
 *   own-trace-filter=OK open=CONTENTS
 *                              RET_TRACE for openat (no tracer) is weaker than
 *                              USER_NOTIF: the redirect still applies
 *   own-listener=EBUSY         a second listener in the same filter chain is
 *                              refused by the kernel, so a program cannot
 *                              answer its own calls and bypass ours
 *   own-deny-openat=OK open=EXDEV
 *                              RET_ERRNO beats USER_NOTIF: a program may always
 *                              restrict itself further
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *ename(int e)
{
	static char buf[32];
	switch (e) {
	case 0: return "OK";
	case EPERM: return "EPERM";
	case EBUSY: return "EBUSY";
	case EXDEV: return "EXDEV";
	case EACCES: return "EACCES";
	case ENOSYS: return "ENOSYS";
	case ENOENT: return "ENOENT";
	}
	snprintf(buf, sizeof buf, "E%d", e);
	return buf;
}

/* A filter: syscall NR gets ACTION, everything else ALLOW (x86_64 only). */
static long install(int nr, unsigned action, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static const char *slurp(const char *path)
{
	static char buf[128];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return ename(errno);
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = 0;
	return buf;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("nnp=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));

	long r = install(SYS_getppid, SECCOMP_RET_ERRNO | EPERM, 0);
	int e = r < 0 ? errno : 0;
	long pp = syscall(SYS_getppid);
	printf("own-errno-filter=%s getppid=%s open=%s\n", ename(e), pp < 0 ? ename(errno) : "OK",
	       slurp(argv[1]));

	r = install(SYS_openat, SECCOMP_RET_TRACE, 0);
	printf("own-trace-filter=%s open=%s\n", ename(r < 0 ? errno : 0), slurp(argv[1]));

	r = install(SYS_openat, SECCOMP_RET_USER_NOTIF, SECCOMP_FILTER_FLAG_NEW_LISTENER);
	if (r >= 0) {
		/* Our own listener now answers openat, and nobody reads it: stop here. */
		printf("own-listener=OK\n");
		return 0;
	}
	printf("own-listener=%s\n", ename(errno));

	r = install(SYS_openat, SECCOMP_RET_ERRNO | EXDEV, 0);
	printf("own-deny-openat=%s open=%s\n", ename(r < 0 ? errno : 0), slurp(argv[1]));
	return 0;
}
