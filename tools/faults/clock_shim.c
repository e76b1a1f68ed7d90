/* Preloaded before libfaketime by tools/faults/clock.py (why: libfaketime 0.9.10, Debian 12's,
 * mangles clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) when FAKETIME_DONT_FAKE_MONOTONIC=1
 * and the kernel answers EINVAL; Python 3.11's time.sleep makes that call: wolfcw/libfaketime
 * issue 426). Sleeps on a monotonic clock go straight to the kernel, whose monotonic clock is
 * the one we leave untouched; every other clock goes on to libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req,
                    struct timespec *rem) {
    if (clock_id == CLOCK_MONOTONIC || clock_id == CLOCK_MONOTONIC_RAW ||
        clock_id == CLOCK_BOOTTIME) {
        return syscall(SYS_clock_nanosleep, clock_id, flags, req, rem) == -1 ? errno : 0;
    }
    sleep_fn next = (sleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next ? next(clock_id, flags, req, rem) : ENOSYS;
}
