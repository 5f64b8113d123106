/* Platform feature switches for the reactor core.
 *
 * Every backend file includes this and compiles to nothing where its
 * facility is missing, so the build lists all sources unconditionally.
 */
#ifndef EVPY_CONFIG_H
#define EVPY_CONFIG_H

#if defined(__linux__)
#  define EVPY_HAVE_EPOLL 1
#  define EVPY_HAVE_EVENTFD 1
#endif

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) \
    || defined(__NetBSD__) || defined(__DragonFly__)
#  define EVPY_HAVE_KQUEUE 1
#endif

/* poll(2) is POSIX: always available as the fallback backend. */
#define EVPY_HAVE_POLL 1

#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__) \
    || defined(__OpenBSD__) || defined(__DragonFly__)
#  define EVPY_HAVE_PPOLL 1
#endif

#endif /* EVPY_CONFIG_H */
