/* toctou: one thread rewrites the path buffer while another opens it.
 *
 *   toctou ALLOWED DENIED TRIES
 *
 * ALLOWED and DENIED have the same length. The main thread opens the shared
 * buffer TRIES times; a second thread keeps copying ALLOWED and DENIED into
 * it. A supervisor that checks ALLOWED and lets the kernel run the call
 * (CONTINUE) can have the kernel open DENIED. Prints
 * "tries=N allowed=A escaped=E denied=D other=O": escaped counts opens that
 * returned DENIED's contents (which start with "SECRET").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "flipper.h"

int main(int argc, char **argv)
{
	if (argc != 4 || strlen(argv[1]) != strlen(argv[2]))
		return 2;
	long tries = atol(argv[3]), ok = 0, escaped = 0, refused = 0, other = 0;
	pthread_t t = start_flipping(argv[1], argv[2]);
	char buf[64];
	for (long i = 0; i < tries; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0) {
			if (errno == EACCES)
				refused++;
			else
				other++;
			continue;
		}
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		if (strncmp(buf, "SECRET", 6) == 0)
			escaped++;
		else
			ok++;
	}
	stop_flipping(t, tries, ok, escaped, refused, other);
	return 0;
}
