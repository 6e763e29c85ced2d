/* Races an exec allow-list: how often does a forbidden binary run?
 *
 * usage: execrace KIND TRIES ALLOWED FORBIDDEN WORKDIR
 *
 * Each try forks a child that calls execve(2) on a path which something
 * else keeps flipping between ALLOWED (a binary that exits 0) and FORBIDDEN
 * (one that exits 1). A supervisor that checks the path it reads and then
 * lets the kernel run the call (CONTINUE) is raced: the kernel reads the
 * path again, after the flip. KIND says who flips:
 *
 *   thread   a second thread of the child (CLONE_VM) rewrites the path bytes
 *   shared   another process rewrites them in a MAP_SHARED page
 *   symlink  another process renames symlinks so that WORKDIR/link points
 *            at one binary, then the other (the path bytes never change)
 *
 * Both paths are padded with leading slashes to the same length, so that
 * every flip writes a whole path. Prints one line:
 *   forbidden=N allowed=M refused=K other=O tries=T
 * "forbidden" counts the children that ran FORBIDDEN.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define REFUSED 120 /* the child's exit status when execve failed */
#define MAXPATH 1024

static char paths[2][MAXPATH];
static size_t length;

static void pad(const char *allowed, const char *forbidden) {
    size_t a = strlen(allowed), f = strlen(forbidden);
    length = a > f ? a : f;
    if (length + 1 > MAXPATH) {
        fprintf(stderr, "execrace: paths too long\n");
        exit(2);
    }
    memset(paths[0], '/', length - a);
    memcpy(paths[0] + (length - a), allowed, a + 1);
    memset(paths[1], '/', length - f);
    memcpy(paths[1] + (length - f), forbidden, f + 1);
}

/* Rewrites `buf` with one path, then the other, forever. */
static atomic_int flipping;

static void flip_forever(volatile char *buf) {
    for (unsigned i = 0;; i++) {
        const char *src = paths[i & 1];
        for (size_t k = 0; k < length; k++) buf[k] = src[k];
        if (i == 2) atomic_store(&flipping, 1);
    }
}

static void *flipper_thread(void *arg) {
    flip_forever(arg);
    return NULL;
}

static void exec_path(const char *path) {
    char *argv[] = {"racer", NULL};
    char *envp[] = {NULL};
    execve(path, argv, envp);
    _exit(REFUSED);
}

static void symlink_forever(const char *workdir) {
    char link[MAXPATH], tmp[MAXPATH];
    snprintf(link, sizeof link, "%s/link", workdir);
    snprintf(tmp, sizeof tmp, "%s/link.tmp", workdir);
    for (unsigned i = 0;; i++) {
        unlink(tmp);
        if (symlink(paths[i & 1], tmp) == 0) rename(tmp, link);
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: execrace KIND TRIES ALLOWED FORBIDDEN WORKDIR\n");
        return 2;
    }
    const char *kind = argv[1];
    long tries = atol(argv[2]);
    pad(argv[3], argv[4]);

    char *shared = NULL;
    pid_t flipper = -1;
    char link[MAXPATH];
    snprintf(link, sizeof link, "%s/link", argv[5]);
    if (strcmp(kind, "shared") == 0 || strcmp(kind, "symlink") == 0) {
        shared = mmap(NULL, MAXPATH, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shared == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
        memcpy(shared, paths[0], length + 1);
        if (strcmp(kind, "symlink") == 0) symlink(paths[0], link);
        flipper = fork();
        if (flipper == 0) {
            if (strcmp(kind, "shared") == 0) flip_forever(shared);
            symlink_forever(argv[5]);
        }
    } else if (strcmp(kind, "thread") != 0) {
        fprintf(stderr, "execrace: unknown kind %s\n", kind);
        return 2;
    }

    long forbidden = 0, allowed = 0, refused = 0, other = 0;
    for (long i = 0; i < tries; i++) {
        pid_t child = fork();
        if (child == 0) {
            if (strcmp(kind, "thread") == 0) {
                static char buf[MAXPATH];
                pthread_t t;
                memcpy(buf, paths[0], length + 1);
                if (pthread_create(&t, NULL, flipper_thread, buf) != 0) _exit(REFUSED + 1);
                /* Exec only once the flips have begun: otherwise the thread may
                 * not have run at all by then (the kernel kills it at exec). */
                while (!atomic_load(&flipping)) sched_yield();
                exec_path(buf);
            }
            exec_path(strcmp(kind, "shared") == 0 ? shared : link);
        }
        int status;
        if (child < 0 || waitpid(child, &status, 0) < 0) {
            perror("fork/waitpid");
            return 2;
        }
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (code == 0) allowed++;
        else if (code == 1) forbidden++;
        else if (code == REFUSED) refused++;
        else other++;
    }
    if (flipper > 0) {
        kill(flipper, SIGKILL);
        waitpid(flipper, NULL, 0);
    }
    printf("forbidden=%ld allowed=%ld refused=%ld other=%ld tries=%ld\n", forbidden, allowed,
           refused, other, tries);
    return 0;
}
