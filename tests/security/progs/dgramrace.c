/* dgramrace KIND TRIES ALLOWED DENIED: datagrams whose destination is flipped meanwhile.
 *
 * Sends TRIES one-byte datagrams (sendmsg and sendto, in turn) to the socket
 * path ALLOWED, while something keeps flipping that path, in the sender's
 * own memory, to DENIED (a path of the same length that differs in one byte):
 *   thread  - a second thread of the sender;
 *   shared  - another process, through a MAP_SHARED page holding the address.
 * A supervisor that checked the address and then let the kernel read it
 * again (CONTINUE) would send some datagrams to DENIED.
 * Prints "sent=N refused=M other=K tries=T"; the receivers count where they went.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_un *addr;
static size_t at;
static char good, bad;
static volatile int stop;

static void flip_forever(void)
{
    volatile char *c = &addr->sun_path[at];
    while (!stop) {
        *c = bad;
        *c = good;
    }
}

static void *flipper(void *unused)
{
    (void)unused;
    flip_forever();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5 || strlen(argv[3]) != strlen(argv[4]) || strlen(argv[3]) >= sizeof addr->sun_path) {
        fprintf(stderr, "usage: dgramrace thread|shared TRIES ALLOWED DENIED (same length)\n");
        return 2;
    }
    const char *kind = argv[1], *allowed = argv[3], *denied = argv[4];
    long tries = atol(argv[2]);
    for (at = 0; allowed[at] == denied[at]; at++)
        ;
    if (strcmp(allowed + at + 1, denied + at + 1) != 0) {
        fprintf(stderr, "dgramrace: the paths must differ in one byte\n");
        return 2;
    }
    good = allowed[at];
    bad = denied[at];
    addr = mmap(NULL, sizeof *addr, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED)
        return perror("mmap"), 2;
    addr->sun_family = AF_UNIX;
    strcpy(addr->sun_path, allowed);

    pthread_t thread;
    pid_t child = -1;
    if (strcmp(kind, "thread") == 0) {
        if (pthread_create(&thread, NULL, flipper, NULL) != 0)
            return fprintf(stderr, "pthread_create failed\n"), 2;
    } else if (strcmp(kind, "shared") == 0) {
        child = fork();
        if (child < 0)
            return perror("fork"), 2;
        if (child == 0) {
            flip_forever();
            _exit(0);
        }
    } else {
        fprintf(stderr, "dgramrace: unknown kind %s\n", kind);
        return 2;
    }

    /* Only once the flipper is seen flipping: natively the sends take microseconds
     * in all, and a flipper not yet scheduled would make the control show nothing. */
    while (*(volatile char *)&addr->sun_path[at] == good)
        ;
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (s < 0)
        return perror("socket"), 2;
    long sent = 0, refused = 0, other = 0;
    char byte = 'x';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    struct msghdr msg = { .msg_name = addr, .msg_namelen = sizeof *addr, .msg_iov = &iov, .msg_iovlen = 1 };
    for (long i = 0; i < tries; i++) {
        ssize_t n = i % 2 ? sendto(s, &byte, 1, 0, (struct sockaddr *)addr, sizeof *addr)
                          : sendmsg(s, &msg, 0);
        if (n == 1)
            sent++;
        else if (errno == EACCES)
            refused++;
        else {
            if (other == 0)
                fprintf(stderr, "dgramrace: %s\n", strerror(errno));
            other++;
        }
    }
    stop = 1;
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    } else {
        pthread_join(thread, NULL);
    }
    printf("sent=%ld refused=%ld other=%ld tries=%ld\n", sent, refused, other, tries);
    return 0;
}
