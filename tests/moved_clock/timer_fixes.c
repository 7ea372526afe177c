/*
 * Preloaded *before* libfaketime (Debian's 0.9.10) for the moved-clock CI passes.  Two of its
 * gaps make waits with a timeout hang, which is the clock's fault, not the code's:
 *
 * 1. libfaketime's epoll_wait()/epoll_pwait() wrappers stop faking time on the calling thread
 *    while they wait.  PostgreSQL waits for locks and clients in epoll_wait(), and its
 *    SIGALRM handler (lock_timeout, statement_timeout) then reads the *real* time, finds its
 *    deadline (computed in faked time) hundreds of days away and re-arms the timer: those
 *    timeouts never fire.  These two wrappers go straight to the system call instead.
 *
 * 2. libfaketime does not intercept sem_clockwait(), which CPython uses for every lock or
 *    Event wait with a timeout, with an absolute deadline on a clock that libfaketime fakes.
 *    The kernel compares that deadline with the real clock, so the wait outlives its timeout
 *    by the whole offset.  This wrapper moves the deadline back by the faked-minus-real offset.
 *
 * Nothing here changes what a program observes as the time; only how long it waits.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    return (int) syscall(SYS_epoll_pwait, epfd, events, maxevents, timeout, NULL, _NSIG / 8);
}

int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
                const sigset_t *sigmask)
{
    return (int) syscall(SYS_epoll_pwait, epfd, events, maxevents, timeout, sigmask, _NSIG / 8);
}

int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime)
{
    static int (*real)(sem_t *, clockid_t, const struct timespec *);
    struct timespec faked, actual, deadline;
    long long offset_ns;

    if (real == NULL)
        real = (int (*)(sem_t *, clockid_t, const struct timespec *)) dlsym(RTLD_NEXT, "sem_clockwait");
    clock_gettime(clock, &faked);                  /* through libfaketime */
    syscall(SYS_clock_gettime, clock, &actual);    /* the kernel's own */
    offset_ns = (faked.tv_sec - actual.tv_sec) * 1000000000LL + (faked.tv_nsec - actual.tv_nsec);
    long long at = abstime->tv_sec * 1000000000LL + abstime->tv_nsec - offset_ns;
    deadline.tv_sec = at / 1000000000LL;
    deadline.tv_nsec = at % 1000000000LL;
    return real(sem, clock, &deadline);
}
