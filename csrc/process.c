/* _core.spawn(): start a child process the way subprocess.Popen does on
 * Linux, for loop.subprocess_exec()/subprocess_shell() (evpy/process.py).
 *
 * What Popen does in Python per child (pipes, an error pipe, the argument
 * and environment conversion, reading the child's report) is done here in
 * one call, and the child is started with clone(CLONE_VM | CLONE_VFORK)
 * on a stack of its own (the parent sleeps until the child has called
 * execve() or exited, as with vfork), asking the kernel for a pidfd of the
 * child at the same time (CLONE_PIDFD, Linux >= 5.2; older kernels ignore
 * the flag and the pidfd comes back as -1).
 *
 * The child does what CPython's _posixsubprocess child does for the same
 * arguments, in the same order: make pass_fds inheritable, put the stdio
 * fds in place (taking care of sources that are 0, 1 or 2), chdir(cwd),
 * restore SIGPIPE/SIGXFSZ, setsid(), setpgid(), close the other fds, then
 * try each candidate path with execve().  It first sets every caught
 * signal back to its default and only then unblocks signals: it shares the
 * parent's memory, where Python's signal handler must not run.  A failure
 * is reported through a close-on-exec pipe as (stage, errno); end of file
 * on that pipe means execve() succeeded.  The pipe rather than shared
 * memory: under valgrind the child is a copy, not a vfork child.
 *
 * Python-level options the child cannot honour here (preexec_fn, user,
 * group, umask, pipesize...) go through subprocess.Popen instead.
 */
#include "process.h"

#ifdef __linux__

#  include <fcntl.h>
#  include <sched.h>
#  include <signal.h>
#  include <string.h>
#  include <sys/resource.h>
#  include <sys/syscall.h>
#  include <sys/wait.h>
#  include <unistd.h>

#  ifndef CLONE_PIDFD
#    define CLONE_PIDFD 0x00001000
#  endif

#  define CHILD_STACK_SIZE (64 * 1024)

/* What went wrong in the child: picks the OSError's filename. */
enum { STAGE_EXEC = 0, STAGE_CHDIR = 1, STAGE_OTHER = 2 };

/* stdin/stdout/stderr arguments, as the subprocess module spells them. */
enum { ARG_PIPE = -1, ARG_STDOUT = -2, ARG_DEVNULL = -3, ARG_INHERIT = -4 };

typedef struct {
    char *const *argv;
    char *const *envp; /* NULL: the parent's environ */
    char *const *exes; /* candidate paths */
    Py_ssize_t nexes;
    const char *cwd; /* NULL: stay */
    int fds[3];      /* the child's stdio sources, -1: inherit */
    const int *keep; /* sorted: pass_fds and the error pipe */
    Py_ssize_t nkeep;
    int errpipe;
    int close_fds;
    int restore_signals;
    int new_session;
    int pgid;             /* -1: none */
    const sigset_t *mask; /* the parent's signal mask */
} child_args;

/* -- the child (async-signal-safe calls only) -------------------------- */

static void
report(int fd, int stage, int err)
{
    int msg[2] = {stage, err};
    ssize_t n;
    do {
        n = write(fd, msg, sizeof(msg));
    } while (n < 0 && errno == EINTR);
}

static int
set_inheritable(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) {
        return -1;
    }
    if (flags & FD_CLOEXEC) {
        return fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return 0;
}

static void
close_range_of(unsigned int lo, unsigned int hi)
{
#  ifdef SYS_close_range
    if (syscall(SYS_close_range, lo, hi, 0) == 0) {
        return;
    }
#  endif
    /* No close_range() (Linux < 5.9): close each possible fd. */
    struct rlimit rl;
    unsigned int end = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
        && rl.rlim_cur < 0x7fffffff) {
        end = (unsigned int)rl.rlim_cur;
    }
    if (hi >= end) {
        hi = end - 1;
    }
    for (unsigned int fd = lo; fd <= hi && fd < end; fd++) {
        (void)close((int)fd);
    }
}

static void
close_other_fds(const int *keep, Py_ssize_t nkeep)
{
    unsigned int start = 3;
    for (Py_ssize_t i = 0; i < nkeep; i++) {
        if (keep[i] < 0 || (unsigned int)keep[i] < start) {
            continue;
        }
        if ((unsigned int)keep[i] > start) {
            close_range_of(start, (unsigned int)keep[i] - 1);
        }
        start = (unsigned int)keep[i] + 1;
    }
    close_range_of(start, ~0U);
}

static void
default_signals(int restore)
{
    struct sigaction sa;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) {
            continue;
        }
        if (sigaction(sig, NULL, &sa) < 0) {
            continue; /* glibc's internal signals */
        }
        int ignored = sa.sa_handler == SIG_IGN;
        if (sa.sa_handler == SIG_DFL
            || (ignored && !(restore && (sig == SIGPIPE || sig == SIGXFSZ)))) {
            continue;
        }
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_DFL;
        (void)sigaction(sig, &sa, NULL);
    }
}

static int
child_main(void *arg)
{
    const child_args *c = arg;
    int stage = STAGE_OTHER;

    default_signals(c->restore_signals);
    pthread_sigmask(SIG_SETMASK, c->mask, NULL);

    for (Py_ssize_t i = 0; i < c->nkeep; i++) {
        if (c->keep[i] != c->errpipe && set_inheritable(c->keep[i]) < 0) {
            goto fail;
        }
    }
    int in = c->fds[0], out = c->fds[1], err = c->fds[2];
    /* A source among 0..2 must not be overwritten before it is used. */
    if (out == 0) {
        out = fcntl(out, F_DUPFD_CLOEXEC, 3);
        if (out < 0) {
            goto fail;
        }
    }
    if (err == 0 || err == 1) {
        err = fcntl(err, F_DUPFD_CLOEXEC, 3);
        if (err < 0) {
            goto fail;
        }
    }
    int src[3] = {in, out, err};
    for (int target = 0; target < 3; target++) {
        if (src[target] == target) {
            if (set_inheritable(target) < 0) {
                goto fail;
            }
        }
        else if (src[target] != -1 && dup2(src[target], target) < 0) {
            goto fail;
        }
    }
    if (c->cwd != NULL && chdir(c->cwd) < 0) {
        stage = STAGE_CHDIR;
        goto fail;
    }
    if (c->new_session && setsid() < 0) {
        goto fail;
    }
    if (c->pgid >= 0 && setpgid(0, c->pgid) < 0) {
        goto fail;
    }
    if (c->close_fds) {
        close_other_fds(c->keep, c->nkeep);
    }
    int saved = 0;
    for (Py_ssize_t i = 0; i < c->nexes; i++) {
        if (c->envp != NULL) {
            execve(c->exes[i], c->argv, c->envp);
        }
        else {
            execv(c->exes[i], c->argv);
        }
        if (errno != ENOENT && errno != ENOTDIR && saved == 0) {
            saved = errno;
        }
    }
    if (saved != 0) {
        errno = saved;
    }
    stage = STAGE_EXEC;
fail:
    report(c->errpipe, stage, errno);
    _exit(255);
    return 0;
}

/* -- the parent -------------------------------------------------------- */

/* A list of bytes objects and the NULL-terminated char * array over them. */
typedef struct {
    PyObject *owner; /* list of bytes */
    char **ptrs;
} cstrings;

static void
cstrings_free(cstrings *cs)
{
    Py_CLEAR(cs->owner);
    PyMem_Free(cs->ptrs);
    cs->ptrs = NULL;
}

static int
cstrings_finish(cstrings *cs)
{
    Py_ssize_t n = PyList_GET_SIZE(cs->owner);
    cs->ptrs = PyMem_New(char *, n + 1);
    if (cs->ptrs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        cs->ptrs[i] = PyBytes_AS_STRING(PyList_GET_ITEM(cs->owner, i));
    }
    cs->ptrs[n] = NULL;
    return 0;
}

/* Appends os.fsencode(obj) (str, bytes or path-like; no NUL). */
static int
append_fs(PyObject *list, PyObject *obj)
{
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(obj, &b)) {
        return -1;
    }
    int r = PyList_Append(list, b);
    Py_DECREF(b);
    return r;
}

static int
argv_from(PyObject *args, cstrings *cs)
{
    PyObject *seq = PySequence_Fast(args, "args must be a sequence");
    if (seq == NULL) {
        return -1;
    }
    cs->owner = PyList_New(0);
    int r = cs->owner == NULL ? -1 : 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        r = append_fs(cs->owner, PySequence_Fast_GET_ITEM(seq, i));
    }
    Py_DECREF(seq);
    return r < 0 ? -1 : cstrings_finish(cs);
}

/* Popen's env_list: b'key=value' for each item, no '=' in a key. */
static int
envp_from(PyObject *env, cstrings *cs)
{
    PyObject *items = PyMapping_Items(env);
    if (items == NULL) {
        return -1;
    }
    cs->owner = PyList_New(0);
    int r = cs->owner == NULL ? -1 : 0;
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *k = NULL, *v = NULL, *entry = NULL;
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
            PyErr_SetString(PyExc_TypeError, "env items must be pairs");
            r = -1;
            break;
        }
        if (!PyUnicode_FSConverter(PyTuple_GET_ITEM(kv, 0), &k)) {
            r = -1;
            break;
        }
        if (memchr(PyBytes_AS_STRING(k), '=', PyBytes_GET_SIZE(k))) {
            PyErr_SetString(PyExc_ValueError,
                            "illegal environment variable name");
            r = -1;
        }
        else if (!PyUnicode_FSConverter(PyTuple_GET_ITEM(kv, 1), &v)) {
            r = -1;
        }
        else {
            entry = PyBytes_FromFormat("%s=%s", PyBytes_AS_STRING(k),
                                       PyBytes_AS_STRING(v));
            r = entry == NULL ? -1 : PyList_Append(cs->owner, entry);
        }
        Py_XDECREF(k);
        Py_XDECREF(v);
        Py_XDECREF(entry);
    }
    Py_DECREF(items);
    return r < 0 ? -1 : cstrings_finish(cs);
}

/* The paths to try: the executable itself if it names a directory, else
 * os.path.join(dir, exe) for each dir of get_exec_path(env). */
static int
exes_from(PyObject *executable, PyObject *env, PyObject *get_exec_path,
          cstrings *cs)
{
    PyObject *exe = NULL;
    if (!PyUnicode_FSConverter(executable, &exe)) {
        return -1;
    }
    cs->owner = PyList_New(0);
    if (cs->owner == NULL) {
        Py_DECREF(exe);
        return -1;
    }
    const char *name = PyBytes_AS_STRING(exe);
    int r = 0;
    if (strchr(name, '/') != NULL) {
        r = PyList_Append(cs->owner, exe);
    }
    else {
        PyObject *dirs = PyObject_CallOneArg(get_exec_path, env);
        PyObject *seq = dirs == NULL
                            ? NULL
                            : PySequence_Fast(
                                dirs, "get_exec_path() must give a sequence");
        Py_XDECREF(dirs);
        r = seq == NULL ? -1 : 0;
        Py_ssize_t n = seq == NULL ? 0 : PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
            PyObject *dir = NULL, *path;
            if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(seq, i),
                                       &dir)) {
                r = -1;
                break;
            }
            Py_ssize_t len = PyBytes_GET_SIZE(dir);
            const char *d = PyBytes_AS_STRING(dir);
            if (len == 0) {
                path = Py_NewRef(exe);
            }
            else {
                path = PyBytes_FromFormat(d[len - 1] == '/' ? "%s%s" : "%s/%s",
                                          d, name);
            }
            Py_DECREF(dir);
            r = path == NULL ? -1 : PyList_Append(cs->owner, path);
            Py_XDECREF(path);
        }
        Py_XDECREF(seq);
    }
    Py_DECREF(exe);
    return r < 0 ? -1 : cstrings_finish(cs);
}

/* None, PIPE, STDOUT, DEVNULL, an fd or an object with fileno(). */
static int
stdio_arg(PyObject *obj, int *out)
{
    if (obj == Py_None) {
        *out = ARG_INHERIT;
        return 0;
    }
    PyObject *num = PyLong_Check(obj)
                        ? Py_NewRef(obj)
                        : PyObject_CallMethod(obj, "fileno", NULL);
    if (num == NULL) {
        return -1;
    }
    int r = evpy_as_int(num, out);
    Py_DECREF(num);
    return r;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        (void)close(*fd);
        *fd = -1;
    }
}

static int
int_compare(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* spawn(args, executable, env, cwd, stdin, stdout, stderr, close_fds,
 *       pass_fds, flags, process_group, err_names, get_exec_path)
 * -> (pid, pidfd, stdin_w, stdout_r, stderr_r); -1 for what is absent.
 * flags: 1 restore_signals, 2 start_new_session.  err_names: the OSError
 * filename for a failed exec, chdir and anything else.  An OSError from
 * the child is raised after it was reaped; nothing is left open then. */
int
evpy_spawn(PyObject *const *a, int out[5])
{
    PyObject *args = a[0], *executable = a[1], *env = a[2], *cwd = a[3];
    PyObject *pass_fds = a[8], *err_names = a[11];
    if (!PyTuple_Check(err_names) || PyTuple_GET_SIZE(err_names) != 3) {
        PyErr_SetString(PyExc_TypeError, "err_names must be a 3-tuple");
        return -1;
    }
    int close_fds = PyObject_IsTrue(a[7]);
    int flags, pgid;
    if (close_fds < 0 || evpy_as_int(a[9], &flags) < 0
        || evpy_as_int(a[10], &pgid) < 0) {
        return -1;
    }
    if (PySys_Audit("subprocess.Popen", "OOOO", executable, args, cwd, env)
        < 0) {
        return -1;
    }

    int result = -1;
    PyObject *cwd_b = NULL;
    cstrings argv = {NULL, NULL}, envp = {NULL, NULL}, exes = {NULL, NULL};
    int *keep = NULL;
    char *stack = NULL;
    int arg[3];
    int parent_end[3] = {-1, -1, -1}, child_end[3] = {-1, -1, -1};
    int devnull = -1, errpipe[2] = {-1, -1}, pidfd = -1;
    pid_t pid = -1;

    for (int i = 0; i < 3; i++) {
        if (stdio_arg(a[4 + i], &arg[i]) < 0) {
            return -1;
        }
    }
    if (argv_from(args, &argv) < 0
        || (env != Py_None && envp_from(env, &envp) < 0)
        || exes_from(executable, env, a[12], &exes) < 0
        || (cwd != Py_None && !PyUnicode_FSConverter(cwd, &cwd_b))) {
        goto done;
    }
    PyObject *fds = PySequence_Fast(pass_fds, "pass_fds must be a sequence");
    if (fds == NULL) {
        goto done;
    }
    Py_ssize_t nkeep = PySequence_Fast_GET_SIZE(fds) + 1;
    keep = PyMem_New(int, nkeep);
    if (keep == NULL) {
        Py_DECREF(fds);
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nkeep - 1; i++) {
        if (evpy_as_int(PySequence_Fast_GET_ITEM(fds, i), &keep[i]) < 0) {
            Py_DECREF(fds);
            goto done;
        }
    }
    Py_DECREF(fds);

    /* The fds: pipes (the parent's end non-blocking), /dev/null, the
     * error pipe (above 2, as the child may dup2 over 0..2). */
    int src[3];
    for (int i = 0; i < 3; i++) {
        src[i] = arg[i] >= 0 ? arg[i] : -1;
        if (arg[i] == ARG_PIPE) {
            int p[2];
            if (pipe2(p, O_CLOEXEC) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            parent_end[i] = i == 0 ? p[1] : p[0];
            child_end[i] = i == 0 ? p[0] : p[1];
            src[i] = child_end[i];
            if (fcntl(parent_end[i], F_SETFL, O_NONBLOCK) < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
        }
        else if (arg[i] == ARG_DEVNULL) {
            if (devnull < 0) {
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (devnull < 0) {
                    PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/null");
                    goto fail;
                }
            }
            src[i] = devnull;
        }
        else if (arg[i] == ARG_STDOUT && i == 2) {
            src[2] = src[1];
        }
        else if (arg[i] < -1 && arg[i] != ARG_INHERIT) {
            src[i] = arg[i]; /* as Popen: dup2() in the child fails */
        }
    }
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    if (errpipe[1] < 3) {
        int fd = fcntl(errpipe[1], F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        close(errpipe[1]);
        errpipe[1] = fd;
    }
    keep[nkeep - 1] = errpipe[1];
    qsort(keep, (size_t)nkeep, sizeof(int), int_compare);

    stack = PyMem_RawMalloc(CHILD_STACK_SIZE);
    if (stack == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    child_args c = {
        .argv = argv.ptrs,
        .envp = envp.ptrs,
        .exes = exes.ptrs,
        .nexes = PyList_GET_SIZE(exes.owner),
        .cwd = cwd_b ? PyBytes_AS_STRING(cwd_b) : NULL,
        .fds = {src[0], src[1], src[2]},
        .keep = keep,
        .nkeep = nkeep,
        .errpipe = errpipe[1],
        .close_fds = close_fds,
        .restore_signals = flags & 1,
        .new_session = (flags & 2) != 0,
        .pgid = pgid,
        .mask = &old,
    };
    pid = clone(child_main, stack + CHILD_STACK_SIZE,
                CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &c, &pidfd);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        pidfd = -1;
        errno = clone_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }

    for (int i = 0; i < 3; i++) {
        close_fd(&child_end[i]);
    }
    close_fd(&devnull);
    close_fd(&errpipe[1]);
    int msg[2];
    ssize_t n;
    do {
        n = read(errpipe[0], msg, sizeof(msg));
    } while (n < 0 && errno == EINTR);
    close_fd(&errpipe[0]);
    if (n != 0) {
        /* The child failed before or in execve() and has exited. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        if (n == (ssize_t)sizeof(msg) && msg[0] >= 0 && msg[0] <= 2) {
            PyObject *name = PyTuple_GET_ITEM(err_names, msg[0]);
            errno = msg[1];
            PyErr_SetFromErrnoWithFilenameObject(
                PyExc_OSError, name == Py_None ? NULL : name);
        }
        else {
            PyErr_SetString(PyExc_RuntimeError,
                            "bad error report from the child process");
        }
        goto fail;
    }
    out[0] = (int)pid;
    out[1] = pidfd;
    for (int i = 0; i < 3; i++) {
        out[2 + i] = parent_end[i];
    }
    result = 0;
    goto done;

fail:
    for (int i = 0; i < 3; i++) {
        close_fd(&child_end[i]);
        close_fd(&parent_end[i]);
    }
    close_fd(&devnull);
    close_fd(&errpipe[0]);
    close_fd(&errpipe[1]);
    close_fd(&pidfd);
done:
    PyMem_RawFree(stack);
    PyMem_Free(keep);
    cstrings_free(&argv);
    cstrings_free(&envp);
    cstrings_free(&exes);
    Py_XDECREF(cwd_b);
    return result;
}

static PyObject *
spawn(PyObject *module, PyObject *const *a, Py_ssize_t nargs)
{
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "spawn() takes 13 arguments");
        return NULL;
    }
    int out[5];
    if (evpy_spawn(a, out) < 0) {
        return NULL;
    }
    PyObject *r = Py_BuildValue("iiiii", out[0], out[1], out[2], out[3],
                                out[4]);
    if (r == NULL) {
        /* No memory for the result: close what only we could close; the
         * child runs on, unwatched. */
        for (int i = 1; i < 5; i++) {
            close_fd(&out[i]);
        }
    }
    return r;
}

#endif /* __linux__ */

PyMethodDef evpy_process_methods[] = {
#ifdef __linux__
    {"spawn", (PyCFunction)(void (*)(void))spawn, METH_FASTCALL,
     "spawn(args, executable, env, cwd, stdin, stdout, stderr, close_fds, "
     "pass_fds, flags, process_group, err_names, get_exec_path)\n--\n\n"
     "Start a child process as subprocess.Popen would (Linux); return "
     "(pid, pidfd, stdin_w, stdout_r, stderr_r)."},
#endif
    {NULL, NULL, 0, NULL},
};
