/*
 * LD_PRELOAD shim for Debian's linux.uml 6.1 on hosts whose XSAVE area is larger than
 * the one UML knows (AMX on Sapphire Rapids: 11008 bytes against UML's 2696). Such a
 * host refuses PTRACE_SETREGSET(NT_X86_XSTATE) unless the buffer has the host's full
 * size (EFAULT), and UML then panics at the first user process ("ptrace set fp regs
 * failed, errno = 14"). The shim reads the full area on each short GETREGSET, hands
 * UML its part, and writes UML's part back inside that full area on SETREGSET. The
 * components past UML's part (AMX tiles) stay as the host has them: guest programs
 * cannot enable them (that takes an arch_prctl UML does not pass on).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define FULL_MAX 65536

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static __thread unsigned char full[FULL_MAX] __attribute__((aligned(64)));
static __thread size_t full_len;   /* bytes in full[] */
static __thread pid_t full_pid;    /* whose area full[] holds (0: none) */

static ptrace_fn next_ptrace(void) {
    static ptrace_fn real;
    if (!real) real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    return real;
}

static long read_full(ptrace_fn real, pid_t pid) {
    struct iovec all = {full, sizeof full};
    long rc = real(PTRACE_GETREGSET, pid, (void *)(long)NT_X86_XSTATE, &all);
    full_pid = rc < 0 ? 0 : pid;
    full_len = rc < 0 ? 0 : all.iov_len;
    return rc;
}

long ptrace(enum __ptrace_request request, ...) {
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    ptrace_fn real = next_ptrace();
    if ((long)addr != NT_X86_XSTATE || data == NULL
        || (request != PTRACE_GETREGSET && request != PTRACE_SETREGSET))
        return real(request, pid, addr, data);
    struct iovec *iov = data;
    if (request == PTRACE_GETREGSET) {
        long rc = read_full(real, pid);
        if (rc < 0 || full_len <= iov->iov_len) return real(request, pid, addr, data);
        memcpy(iov->iov_base, full, iov->iov_len);
        return rc;
    }
    if (full_pid != pid && read_full(real, pid) < 0) return real(request, pid, addr, data);
    if (full_len <= iov->iov_len) return real(request, pid, addr, data);
    memcpy(full, iov->iov_base, iov->iov_len);
    struct iovec all = {full, full_len};
    return real(PTRACE_SETREGSET, pid, addr, &all);
}
