/*
 * execstall RO FREE: a thread that is not its group's leader, with a cwd
 * of its own, calls execve and takes the leader's tid (de_thread() in
 * fs/exec.c), and with it whatever a supervisor keeps of the leader, its
 * cwd among them (audit helper-53). The supervisor must not keep the
 * leader's cwd for that tid until the exec is over; a lane that let the
 * exec through and then ended knew alone that it was not.
 *
 *  1. the leader (cwd RO) makes stats enough for a lane to run;
 *  2. thread X, made without CLONE_FS (its own cwd: RO), calls
 *     execve("/bin/sh") with an argv on a page userfaultfd holds: the
 *     execve is received and let through, then X waits in copy_strings(),
 *     before de_thread();
 *  3. the leader moves to FREE, idles 2 s (a lane ends after 1 s without
 *     a call), and makes stats again (a new lane, which may keep its cwd);
 *  4. the page given back, X goes on, takes the leader's tid, and runs
 *     sh -c 'echo x > f && echo wrote f' in its own cwd, RO.
 *
 * Natively: "wrote f", in RO. Under a read-only RO/** the shell's open of
 * "f" must be refused, as Python refuses it: a stale cwd (FREE) would let
 * it through.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;
static char *held;             /* X's argv: the page userfaultfd holds */
static char stack[1 << 16];

static int exec_held(void *unused)
{
    (void)unused;
    execve("/bin/sh", (char **)held, environ);
    perror("execve");
    _exit(99);
}

static void stats(int n)
{
    struct stat st;
    for (int i = 0; i < n; i++)
        stat("nothing-here", &st);
}

int main(int argc, char **argv)
{
    if (argc != 3 || chdir(argv[1]) < 0) {
        fprintf(stderr, "usage: execstall RO FREE\n");
        return 2;
    }
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api api = {.api = UFFD_API};
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0) {
        perror("userfaultfd");
        return 1;
    }
    held = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = {.range = {(unsigned long)held, 4096},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (held == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
        perror("userfaultfd register");
        return 1;
    }
    stats(300);
    if (clone(exec_held, stack + sizeof stack,
              CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_SYSVSEM, NULL) < 0) {
        perror("clone");
        return 1;
    }
    struct pollfd p = {.fd = uffd, .events = POLLIN};
    struct uffd_msg msg;
    if (poll(&p, 1, -1) != 1 || read(uffd, &msg, sizeof msg) != sizeof msg) {
        perror("userfaultfd read");
        return 1;
    }
    if (chdir(argv[2]) < 0) {
        perror("chdir");
        return 1;
    }
    sleep(2);
    stats(300);
    static char *args[] = {"sh", "-c", "echo x > f && echo wrote f", NULL};
    static char page[4096] __attribute__((aligned(4096)));
    memcpy(page, args, sizeof args);
    struct uffdio_copy copy = {.dst = (unsigned long)held, .src = (unsigned long)page, .len = 4096};
    if (ioctl(uffd, UFFDIO_COPY, &copy) < 0) {
        perror("userfaultfd copy");
        return 1;
    }
    for (;;)
        pause(); /* until X's exec ends this thread */
}
