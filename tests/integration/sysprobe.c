/* Calls the syscalls named on the command line directly and prints "NAME ok" or "NAME E<errno>". */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long call(const char *name) {
    if (!strcmp(name, "getpid")) return syscall(SYS_getpid);
    if (!strcmp(name, "unshare-user")) return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "unshare-mount")) return syscall(SYS_unshare, CLONE_NEWNS);
    if (!strcmp(name, "clone-newuser") || !strcmp(name, "clone-plain")) {
        long flags = SIGCHLD | (name[6] == 'n' ? CLONE_NEWUSER : 0);
        long pid = syscall(SYS_clone, flags, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, NULL, 0);
        return pid;
    }
    if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0);
    if (!strcmp(name, "mount")) return syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL);
    if (!strcmp(name, "setns")) return syscall(SYS_setns, -1, 0);
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -2 /* process */, 1);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, "user", "dockyard-probe", "x", 1, -2);
    if (!strcmp(name, "request_key")) return syscall(SYS_request_key, "user", "dockyard-none", NULL, 0);
    if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */);
    if (!strcmp(name, "bpf")) { char attr[128] = {0}; return syscall(SYS_bpf, 0, attr, sizeof attr); }
    if (!strcmp(name, "perf_event_open")) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE; a.size = sizeof a; a.config = PERF_COUNT_SW_TASK_CLOCK;
        a.exclude_kernel = 1; a.exclude_hv = 1;
        return syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
    }
    if (!strcmp(name, "personality-query")) return syscall(SYS_personality, 0xffffffffUL);
    if (!strcmp(name, "personality-norandom")) return syscall(SYS_personality, 0x0040000UL);
    if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0);
    if (!strcmp(name, "init_module")) return syscall(SYS_init_module, NULL, 0, "");
    errno = EDOM;
    return -1;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long r = call(argv[i]);
        if (r < 0) printf("%s E%d\n", argv[i], errno);
        else printf("%s ok\n", argv[i]);
        fflush(stdout);
    }
    return 0;
}
