/* How often a trapped call fails with EINTR when signals keep coming.
 *
 * usage: eintrloop N FILE
 *
 * A SIGUSR1 handler is installed without SA_RESTART; a child process sends
 * SIGUSR1 to us every ~20 us while we make N stat(), N open()+close() and
 * N access() calls on FILE and N unlink() calls of a missing name next to
 * it. Natively none of these ever fails with EINTR (none of them waits
 * interruptibly on a local file system). Under a seccomp user-notification
 * supervisor, a signal that arrives before the supervisor has received the
 * notification ends the wait with -ERESTARTSYS, hence EINTR without
 * SA_RESTART (seccomp_do_user_notification in kernel/seccomp.c; after the
 * receive, WAIT_KILLABLE_RECV keeps it waiting).
 *
 * Prints: stat=E open=E access=E unlink=E calls=N signals=S
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t caught;
static void on_signal(int sig) { (void)sig; caught++; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: eintrloop N FILE\n");
        return 2;
    }
    long n = atol(argv[1]);
    char missing[4096];
    snprintf(missing, sizeof missing, "%s.missing", argv[2]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    pid_t parent = getpid(), child = fork();
    if (child == 0) {
        struct timespec gap = {0, 20000};
        while (kill(parent, SIGUSR1) == 0)
            nanosleep(&gap, NULL);
        _exit(0);
    }
    long e_stat = 0, e_open = 0, e_access = 0, e_unlink = 0;
    struct stat st;
    for (long i = 0; i < n; i++) {
        e_stat += stat(argv[2], &st) < 0 && errno == EINTR;
        int fd = open(argv[2], O_RDONLY);
        if (fd >= 0)
            close(fd);
        else
            e_open += errno == EINTR;
        e_access += access(argv[2], R_OK) < 0 && errno == EINTR;
        e_unlink += unlink(missing) < 0 && errno == EINTR;
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("stat=%ld open=%ld access=%ld unlink=%ld calls=%ld signals=%ld\n", e_stat, e_open,
           e_access, e_unlink, n, (long)caught);
    return 0;
}
