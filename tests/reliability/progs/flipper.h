/* flipper.h: the path buffer of the race tests (toctou.c, statrace.c).
 *
 * One thread keeps copying ALLOWED and DENIED (the same length) into the
 * shared `path` while the main thread makes a call on it: a supervisor that
 * checks the path and then lets the kernel read it again (CONTINUE) can
 * have the kernel act on DENIED.
 */
#ifndef FLIPPER_H
#define FLIPPER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static char path[4096];
static const char *allowed, *denied;
static atomic_int stop;

static void *flipper(void *arg)
{
	(void)arg;
	size_t len = strlen(allowed) + 1;
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		memcpy((char *)path, denied, len);
		for (volatile int i = 0; i < 50; i++)
			;
		memcpy((char *)path, allowed, len);
		for (volatile int i = 0; i < 50; i++)
			;
	}
	return NULL;
}

/* Put ALLOWED in `path` and start flipping it. */
static pthread_t start_flipping(const char *a, const char *d)
{
	pthread_t t;
	allowed = a;
	denied = d;
	strcpy(path, allowed);
	pthread_create(&t, NULL, flipper, NULL);
	return t;
}

/* Stop flipping and print the counts in the form the tests read. */
static void stop_flipping(pthread_t t, long tries, long ok, long escaped, long refused, long other)
{
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	printf("tries=%ld allowed=%ld escaped=%ld denied=%ld other=%ld\n", tries, ok, escaped,
	       refused, other);
}

#endif
