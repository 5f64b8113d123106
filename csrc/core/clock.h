/* Monotonic clock in int64 nanoseconds: the clock time.monotonic() reads. */
#ifndef EVPY_CLOCK_H
#define EVPY_CLOCK_H

#include <stdint.h>

#define EVPY_NS_PER_SEC INT64_C(1000000000)

int64_t evpy_clock_now_ns(void);

/* Seconds (as asyncio passes them) to a nanosecond deadline, rounded up so
 * that a timer never fires before the float time it was given. Saturates. */
int64_t evpy_clock_sec_to_ns_ceil(double seconds);

#endif /* EVPY_CLOCK_H */
