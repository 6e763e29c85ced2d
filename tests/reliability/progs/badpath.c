/* badpath: hand the open family paths the kernel must refuse, print the errnos.
 *
 *   badpath PREFIX [SANITY]
 *
 * Every path starts with PREFIX (a directory the test's rules name), so a
 * supervisor has to read it all before it can decide. For each case and
 * each of open, openat, openat2, creat prints "CASE SYSCALL ERRNO-NAME"
 * (OK if it succeeded). With SANITY, finally opens it and prints
 * "sanity CONTENTS" (or its errno), to show the supervisor still serves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long page;

static const char *ename(long r)
{
	static char buf[32];
	if (r >= 0)
		return "OK";
	switch (errno) {
	case EFAULT: return "EFAULT";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case ENOTSUP: return "ENOTSUP";
	case ENOTDIR: return "ENOTDIR";
	case EPERM: return "EPERM";
	case EINVAL: return "EINVAL";
	}
	snprintf(buf, sizeof buf, "E%d", errno);
	return buf;
}

static void try_all(const char *name, const char *path)
{
	struct open_how how = { .flags = O_RDONLY };
	long r;
	r = syscall(SYS_open, path, O_RDONLY);
	printf("%s open %s\n", name, ename(r));
	if (r >= 0) close(r);
	r = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
	printf("%s openat %s\n", name, ename(r));
	if (r >= 0) close(r);
	r = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
	printf("%s openat2 %s\n", name, ename(r));
	if (r >= 0) close(r);
	r = syscall(SYS_creat, path, 0600);
	printf("%s creat %s\n", name, ename(r));
	if (r >= 0) close(r);
}

/* Fill buf[0..len) with PREFIX/nodir/aaa/aaa... (components of 200 bytes). */
static void fill(char *buf, size_t len, const char *prefix)
{
	size_t i = snprintf(buf, len, "%s/nodir/", prefix);
	for (size_t k = 0; i < len; i++, k++)
		buf[i] = (k % 200 == 199) ? '/' : 'a';
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	page = sysconf(_SC_PAGESIZE);
	const char *prefix = argv[1];
	/* Three pages: RW RW NONE, and a hole (an unmapped page) after them. */
	char *map = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return 1;
	munmap(map + 3 * page, page);
	mprotect(map + 2 * page, page, PROT_NONE);
	char *big = malloc(2 * PATH_MAX);

	/* No NUL within PATH_MAX (one comes later): ENAMETOOLONG. */
	fill(big, 2 * PATH_MAX, prefix);
	big[PATH_MAX + 10] = 0;
	try_all("nonul-within-path-max", big);

	/* Exactly PATH_MAX bytes including the NUL: a valid length. */
	fill(big, PATH_MAX, prefix);
	big[PATH_MAX - 1] = 0;
	try_all("path-max-with-nul", big);

	/* PATH_MAX bytes, then the NUL: one too many. */
	fill(big, PATH_MAX, prefix);
	big[PATH_MAX] = 0;
	try_all("path-max-without-nul", big);

	/* A component longer than NAME_MAX. */
	snprintf(big, 2 * PATH_MAX, "%s/", prefix);
	memset(big + strlen(big), 'b', 300);
	big[strlen(prefix) + 1 + 300] = 0;
	try_all("component-too-long", big);

	try_all("null", NULL);
	try_all("unmapped", map + 3 * page);
	try_all("prot-none", map + 2 * page);
	try_all("kernel-address", (const char *)0xffff880000000000UL);

	/* Runs from a RW page into the PROT_NONE one, no NUL before it. */
	size_t n = strlen(prefix) + 40;
	char *s = map + 2 * page - n;
	fill(s, n, prefix);
	try_all("straddle-into-prot-none", s);

	/* Ends exactly at the last byte before the PROT_NONE page. */
	fill(s, n, prefix);
	s[n - 1] = 0;
	try_all("nul-at-page-end", s);

	/* Crosses from one RW page into the next, NUL in the second. */
	s = map + page - n / 2;
	fill(s, n, prefix);
	s[n] = 0;
	try_all("straddle-rw-pages", s);

	/* NUL-free up to unmapped memory: within PATH_MAX (EFAULT), and after
	 * more than PATH_MAX bytes (ENAMETOOLONG comes first). */
	mprotect(map + 2 * page, page, PROT_READ | PROT_WRITE);
	s = map + 3 * page - n;
	fill(s, n, prefix);
	try_all("run-into-unmapped", s);
	fill(map, 3 * page, prefix);
	try_all("long-run-then-unmapped", map);

	if (argc > 2) {
		char buf[128] = { 0 };
		int fd = open(argv[2], O_RDONLY);
		if (fd < 0) {
			printf("sanity %s\n", ename(fd));
		} else {
			ssize_t r = read(fd, buf, sizeof buf - 1);
			buf[r > 0 ? r : 0] = 0;
			printf("sanity %s", buf);
		}
	}
	return 0;
}
