/* A magic link raced: /proc/self/fd/N flips between a pipe and a file.
 *
 * usage: fdswap open|chmod|link|mkdir-below FILE TRIES
 *
 * A second thread keeps dup2()ing, onto fd N, a pipe (no name: a supervisor
 * decides on the link itself) and then FILE (opened read-only). The main
 * thread meanwhile acts through /proc/self/fd/N: "open" opens it for
 * writing with O_TRUNC, "chmod" changes its mode, "link" gives
 * it a second name (FILE.out, linkat AT_SYMLINK_FOLLOW) outside FILE's
 * directory. "mkdir-below" flips N between a removed directory and FILE's
 * directory instead, and makes directories below the link
 * (/proc/self/fd/N/dI): natively those land in FILE's directory whenever
 * N is it. Natively many acts reach FILE; under --enforce with FILE in a
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
static long file_spin = 2000;

static void *flip(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        dup2(file_fd, N);
        for (volatile long spin = 0; spin < file_spin; spin++)
            ; /* each state a while: a path walk through N takes microseconds */
        dup2(pipe_fds[0], N);
        for (volatile long spin = 0; spin < 2000; spin++)
            ;
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
    int tries = atoi(argv[3]), below = strcmp(act, "mkdir-below") == 0;
    file_fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", argv[2]);
    *strrchr(dir, '/') = '\0';
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), gone_fd = -1;
    if (below) { /* flip between a removed directory and FILE's */
        char gone[4300];
        snprintf(gone, sizeof gone, "%s.gone", dir);
        if (mkdir(gone, 0755) < 0 || (gone_fd = open(gone, O_RDONLY | O_DIRECTORY)) < 0 ||
            rmdir(gone) < 0) {
            perror("gone");
            return 2;
        }
    }
    /* Natively, to undo what an "open" did (under --enforce: -1, refused). */
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
    if (file_fd < 0 || dir_fd < 0 || pipe(pipe_fds) < 0 || dup2(pipe_fds[0], N) < 0) {
        perror("setup");
        return 2;
    }
    if (below) {
        pipe_fds[0] = gone_fd;
        file_fd = dir_fd;
        file_spin = 50000; /* a mkdir through the link is slower than an open */
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
        if (below) {
            char made[128];
            snprintf(made, sizeof made, "%s/d%d", link, i);
            if (mkdir(made, 0755) < 0) {
                /* ENOTDIR: the flip came between our look and our answer. */
                errno == EROFS || errno == ENOENT || errno == ENOTDIR ? refused++ : other++;
                continue;
            }
            reached++;
            char name[32];
            snprintf(name, sizeof name, "d%d", i);
            unlinkat(dir_fd, name, AT_REMOVEDIR); /* natively: ready for the next try */
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
            /* For writing, and O_TRUNC: an escape gives a writable fd of FILE,
             * or empties it before anyone looks. */
            int fd = open(link, O_WRONLY | O_TRUNC | O_NONBLOCK | O_CLOEXEC);
            struct stat got, now;
            int got_it = fd >= 0 && fstat(fd, &got) == 0 && got.st_dev == want.st_dev &&
                         got.st_ino == want.st_ino;
            if (fd < 0)
                errno == EROFS ? refused++ : other++;
            else
                close(fd);
            fstat(file_fd, &now);
            if (got_it || now.st_size != want.st_size) {
                reached++;
                if (restore_fd >= 0 && pwrite(restore_fd, "original\n", 9, 0) != 9)
                    perror("restore");
            }
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
