/* symrace: swap a directory for a symlink to "/" while opening through it.
 *
 *   symrace SWAP PATH TRIES
 *
 * SWAP is a directory the program owns, and SWAP.link a symlink to "/": a
 * thread keeps exchanging the two (renameat2 RENAME_EXCHANGE), so SWAP is
 * a directory one moment and a link to "/" the next. The main thread opens
 * PATH, which leads through SWAP, TRIES times: through the directory it
 * finds a decoy file, through the link a secret one outside the rule. Prints "tries=N decoy=D secret=S errors=E
 * enoent=M": secret counts opens that returned contents starting with
 * "SECRET".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *swap;
static char linkpath[PATH_MAX];
static atomic_int stop;

static void *swapper(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		renameat2(AT_FDCWD, linkpath, AT_FDCWD, swap, RENAME_EXCHANGE);
		renameat2(AT_FDCWD, linkpath, AT_FDCWD, swap, RENAME_EXCHANGE);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	swap = argv[1];
	snprintf(linkpath, sizeof linkpath, "%s.link", swap);
	long tries = atol(argv[3]), decoy = 0, secret = 0, errors = 0, enoent = 0;
	const char *path = argv[2];
	char buf[64];
	pthread_t t;
	pthread_create(&t, NULL, swapper, NULL);
	for (long i = 0; i < tries; i++) {
		int fd = open(path, O_RDONLY);
		if (fd < 0) {
			if (errno == ENOENT)
				enoent++;
			else
				errors++;
			continue;
		}
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		if (strncmp(buf, "SECRET", 6) == 0)
			secret++;
		else
			decoy++;
	}
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	printf("tries=%ld decoy=%ld secret=%ld errors=%ld enoent=%ld\n", tries, decoy, secret,
	       errors, enoent);
	return 0;
}
