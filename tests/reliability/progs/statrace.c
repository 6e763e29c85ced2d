/* statrace: one thread rewrites the path buffer while another stats it.
 *
 *   statrace ALLOWED DENIED DENIED_INO TRIES
 *
 * The stat counterpart of toctou.c. ALLOWED and DENIED have the same
 * length; DENIED_INO is DENIED's inode number (the caller looks it up: a
 * rule denies DENIED to this program). The main thread stats the shared
 * buffer TRIES times, in turn with stat(2), newfstatat(2) and statx(2); a
 * second thread keeps copying ALLOWED and DENIED into it. A supervisor that
 * checks ALLOWED and lets the kernel run the call (CONTINUE) can have the
 * kernel stat DENIED. Prints
 * "tries=N allowed=A escaped=E denied=D other=O": escaped counts stats that
 * returned DENIED's inode, denied those that failed with EACCES.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "flipper.h"

/* The inode of the shared path by the i-th method, or 0 with errno set. */
static unsigned long long stat_once(long i)
{
	struct stat st;
	struct statx stx;
	long r;
	switch (i % 3) {
	case 0:
		r = syscall(SYS_stat, path, &st);
		return r < 0 ? 0 : (unsigned long long)st.st_ino;
	case 1:
		r = syscall(SYS_newfstatat, AT_FDCWD, path, &st, 0);
		return r < 0 ? 0 : (unsigned long long)st.st_ino;
	default:
		r = syscall(SYS_statx, AT_FDCWD, path, 0, STATX_INO, &stx);
		return r < 0 ? 0 : (unsigned long long)stx.stx_ino;
	}
}

int main(int argc, char **argv)
{
	if (argc != 5 || strlen(argv[1]) != strlen(argv[2]))
		return 2;
	unsigned long long denied_ino = strtoull(argv[3], NULL, 10);
	long tries = atol(argv[4]), ok = 0, escaped = 0, refused = 0, other = 0;
	struct stat st;
	if (stat(argv[1], &st) < 0 || st.st_ino == denied_ino)
		return 3;
	unsigned long long allowed_ino = st.st_ino;
	pthread_t t = start_flipping(argv[1], argv[2]);
	for (long i = 0; i < tries; i++) {
		errno = 0;
		unsigned long long ino = stat_once(i);
		if (ino == denied_ino)
			escaped++;
		else if (ino == allowed_ino)
			ok++;
		else if (ino == 0 && errno == EACCES)
			refused++;
		else
			other++;
	}
	stop_flipping(t, tries, ok, escaped, refused, other);
	return 0;
}
