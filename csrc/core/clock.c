/* The loop's clock. It must agree with time.monotonic(): CPython uses
 * CLOCK_MONOTONIC on Linux and the BSDs and mach_absolute_time (the same
 * clock as CLOCK_UPTIME_RAW) on macOS. */
#include "clock.h"

#include <math.h>
#include <time.h>

int64_t
evpy_clock_now_ns(void)
{
    struct timespec ts;
#if defined(__APPLE__)
    clock_gettime(CLOCK_UPTIME_RAW, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * EVPY_NS_PER_SEC + ts.tv_nsec;
}

int64_t
evpy_clock_sec_to_ns_ceil(double seconds)
{
    /* 9.2e9 s is about 292 years: far beyond any deadline a loop keeps. */
    if (isnan(seconds)) {
        return INT64_MAX;
    }
    if (seconds >= 9.2e9) {
        return INT64_MAX;
    }
    if (seconds <= -9.2e9) {
        return INT64_MIN + 1;
    }
    double ns = ceil(seconds * 1e9);
    return (int64_t)ns;
}
