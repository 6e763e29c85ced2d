/* A magic link raced: /proc/self/fd/N flips between a pipe and a file.
 *
 * usage: fdswap open|chmod|trunc|link FILE TRIES
 *
 * A second thread keeps dup2()ing, onto fd N, a pipe (no name: a supervisor
 * decides on the link itself) and then FILE (opened read-only). The main
 * thread meanwhile acts through /proc/self/fd/N: "open" opens it for
 * writing, "chmod" changes its mode, "trunc" opens it O_TRUNC, "link" gives
 * it a second name (FILE.out, linkat AT_SYMLINK_FOLLOW) outside FILE's
 * directory. Natively many acts reach FILE; under --enforce with FILE in a
 * read-only tree, none may: each is judged by the file it reaches, as a
 * whole call, not by the name it was decided on.
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
    const char *act = argv[1];
    int tries = atoi(argv[3]);
    file_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    /* Natively, to undo what a "trunc" did (under --enforce: -1, refused). */
    int restore_fd = open(argv[2], O_WRONLY | O_CLOEXEC);
    char out[4200];
    snprintf(out, sizeof out, "%s.out", argv[2]);
    char *slash = strrchr(out, '/');
    if (slash != NULL && slash > out) { /* FILE.out one directory up: out of the tree */
        char *prev = slash - 1;
        while (prev > out && *prev != '/')
            prev--;
        memmove(prev + 1, slash + 1, strlen(slash + 1) + 1);
    }
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
        if (strcmp(act, "trunc") == 0) {
            int fd = open(link, O_WRONLY | O_TRUNC | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0) {
                errno == EROFS ? refused++ : other++;
            } else {
                close(fd);
            }
            struct stat now;
            fstat(file_fd, &now);
            if (now.st_size != want.st_size) {
                reached++;
                if (restore_fd >= 0 && pwrite(restore_fd, "original\n", 9, 0) != 9)
                    perror("restore");
            }
        } else if (strcmp(act, "link") == 0) {
            if (linkat(AT_FDCWD, link, AT_FDCWD, out, AT_SYMLINK_FOLLOW) < 0) {
                errno == EXDEV ? refused++ : other++;
                continue;
            }
            struct stat got;
            if (stat(out, &got) == 0 && got.st_dev == want.st_dev && got.st_ino == want.st_ino)
                reached++;
            unlink(out);
        } else if (strcmp(act, "open") == 0) {
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
