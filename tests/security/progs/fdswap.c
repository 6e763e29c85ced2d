/* A magic link raced: /proc/self/fd/N flips between a pipe and a file.
 *
 * usage: fdswap open|chmod FILE TRIES
 *
 * A second thread keeps dup2()ing, onto fd N, a pipe (no name: a supervisor
 * decides on the link itself) and then FILE (opened read-only). The main
 * thread meanwhile acts through /proc/self/fd/N: "open" opens it for
 * writing, "chmod" changes its mode. Natively many acts reach FILE; under
 * --enforce with FILE in a read-only tree, none may: each is judged by the
 * file it reaches, not the name it was decided on.
 *
 * Prints: reached=R refused=E other=O tries=T
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { N = 100 };
static int file_fd, pipe_fds[2];
static atomic_int stop, flips;

static void *flip(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        dup2(file_fd, N);
        dup2(pipe_fds[0], N);
        atomic_fetch_add(&flips, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: fdswap open|chmod FILE TRIES\n");
        return 2;
    }
    int do_open = strcmp(argv[1], "open") == 0, tries = atoi(argv[3]);
    file_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (file_fd < 0 || pipe(pipe_fds) < 0 || dup2(pipe_fds[0], N) < 0) {
        perror("setup");
        return 2;
    }
    struct stat want;
    fstat(file_fd, &want);
    mode_t mode = want.st_mode & 07777;
    pthread_t t;
    pthread_create(&t, NULL, flip, NULL);
    while (atomic_load(&flips) < 100)
        ; /* until the flipper is seen flipping */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", N);
    int reached = 0, refused = 0, other = 0;
    for (int i = 0; i < tries; i++) {
        if (do_open) {
            int fd = open(link, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0) {
                errno == EROFS ? refused++ : other++;
                continue;
            }
            struct stat got;
            fstat(fd, &got);
            reached += got.st_dev == want.st_dev && got.st_ino == want.st_ino;
            close(fd);
        } else {
            if (chmod(link, 0600) < 0) {
                errno == EROFS ? refused++ : other++;
                continue;
            }
            struct stat now;
            fstat(file_fd, &now);
            if ((now.st_mode & 07777) != mode) {
                reached++;
                fchmod(file_fd, mode); /* natively: ready for the next try */
            }
        }
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("reached=%d refused=%d other=%d tries=%d\n", reached, refused, other, tries);
    return 0;
}
