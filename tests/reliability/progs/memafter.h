/* The new image's part of memexec.c and memrace.c, "PROG after FILE": FILE's
 * size by an open (whose result is an fd, not bytes written), then 1000 stats
 * of FILE into buf, filled with 0xA5 before each call; prints how many
 * answered 0 with that size. buf is the caller's, at the address the test
 * looks at in the process that shares (or shared) the memory. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int stats_after(const char *file, struct stat *buf)
{
	int fd = open(file, O_RDONLY);
	off_t size = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
	int ok = 0;
	for (int i = 0; i < 1000; i++) {
		memset(buf, 0xA5, sizeof *buf);
		ok += stat(file, buf) == 0 && buf->st_size == size;
	}
	printf("after %d\n", ok);
	return 0;
}
