/* _core.ProcessTransport: the C half of evpy.process.ProcessTransport, the
 * subprocess transport over a child started by evpy_spawn()
 * (csrc/process.c).
 *
 * It keeps asyncio's BaseSubprocessTransport state (the attributes its
 * Python methods, its repr and asyncio.subprocess read: _protocol, _loop,
 * _pid, _returncode, _exit_waiters, _pending_calls, _pipes, _finished,
 * _closed) in C fields exposed as attributes, and does per child in C
 * what asyncio does in Python frames: the set-up (argument handling,
 * spawning, scheduling connection_made), get_pid/get_returncode/
 * get_pipe_transport, _wait, the exit bookkeeping (_process_exited,
 * _try_finish, _call_connection_lost), the pipe callbacks and close().
 * The exit bookkeeping is that of the running asyncio (the state flag
 * proc_wake_at_exit, set by evpy/process.py): _wait()'s futures are woken
 * at exit and kept in a set since gh-119710, after connection_lost in a
 * list before it.
 *
 * The child is reaped through its pidfd, which the transport watches
 * itself as an I/O object of the loop (no reader Handle, no Python
 * callback): when the pidfd becomes readable the child has exited;
 * waitpid(WNOHANG) reaps it, the pidfd is closed and _process_exited is
 * scheduled, one loop iteration later as asyncio's child watchers do
 * (through a replaced os.waitpid if code replaced it, as they would).
 * The reaper runs in a copy of the context the transport was made in
 * (as a reader Handle added then would).
 *
 * Cold paths stay in Python (evpy/process.py): making the pipe transports,
 * killing a running child on close, a child reaped elsewhere, debug
 * logging, kernels without CLONE_PIDFD.
 */
#include "process.h"

#ifdef __linux__

#  include <sys/wait.h>
#  include <unistd.h>


typedef struct {
    /* io.fd: the pidfd (owned), -1 once closed;
     * io.loop: set while it is watched */
    IOObject io;
    evpy_state *st; /* borrowed: the type keeps the module */
    /* asyncio's attributes; NULL reads as None */
    PyObject *aloop;         /* _loop */
    PyObject *protocol;      /* _protocol */
    PyObject *pipes;         /* _pipes: fd -> pipe protocol */
    PyObject *exit_waiters;  /* _exit_waiters */
    PyObject *pending_calls; /* _pending_calls */
    PyObject *pid;           /* _pid */
    PyObject *returncode;    /* _returncode */
    /* evpy's */
    PyObject *reaped; /* _reaped: the return code this reaped */
    PyObject *popen;  /* _popen: get_extra_info('subprocess') */
    PyObject *args;   /* _args: Popen.args of that Popen */
    /* the loop it was made on, kept after
     * connection_lost (_wait's futures) */
    PyObject *home;
    pid_t cpid;    /* the child, 0 before it exists */
    char closed;   /* _closed */
    char finished; /* _finished */
    char gone;     /* _gone: asyncio's `_proc is None` */
} ProcObject;

#  define PT(o) ((ProcObject *)(o))

static PyObject *
none_if_null(PyObject *o)
{
    return Py_NewRef(o != NULL ? o : Py_None);
}

/* -- scheduling ------------------------------------------------------------- */

/* loop.call_soon(cb, *args): in C on an evpy loop outside debug mode,
 * through the method otherwise (its debug checks). */
static int
pt_call_soon(ProcObject *self, PyObject *cb, PyObject *const *args,
             Py_ssize_t nargs)
{
    PyObject *loop = self->aloop;
    if (loop == NULL) {
        PyErr_SetString(PyExc_AttributeError,
                        "'NoneType' object has no attribute 'call_soon'");
        return -1;
    }
    if (PyObject_TypeCheck(loop, self->st->LoopType)
        && !((LoopObject *)loop)->debug) {
        return evpy_loop_call_soon_n((LoopObject *)loop, cb, args, nargs,
                                     NULL);
    }
    PyObject *stack[4] = {loop, cb};
    for (Py_ssize_t i = 0; i < nargs; i++) {
        stack[2 + i] = args[i];
    }
    PyObject *r = PyObject_VectorcallMethod(self->st->str_call_soon, stack,
                                            (size_t)(2 + nargs), NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* asyncio's _call(cb, *data): queued while _pending_calls is a deque
 * (never here: connection_made is scheduled at once), else call_soon. */
static int
pt_call(ProcObject *self, PyObject *cb, PyObject *const *args,
        Py_ssize_t nargs)
{
    if (self->pending_calls != NULL) {
        PyObject *data = PyTuple_New(nargs);
        if (data == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            PyTuple_SET_ITEM(data, i, Py_NewRef(args[i]));
        }
        PyObject *pair = PyTuple_Pack(2, cb, data);
        PyObject *r = pair == NULL
                          ? NULL
                          : PyObject_CallMethodOneArg(
                              self->pending_calls, self->st->str_append, pair);
        Py_XDECREF(pair);
        Py_DECREF(data);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    return pt_call_soon(self, cb, args, nargs);
}

/* _call(self._protocol.<name>, *args) */
static int
pt_call_protocol(ProcObject *self, PyObject *name, PyObject *const *args,
                 Py_ssize_t nargs)
{
    PyObject *proto = self->protocol != NULL ? self->protocol : Py_None;
    PyObject *cb = PyObject_GetAttr(proto, name);
    if (cb == NULL) {
        return -1;
    }
    int rc = pt_call(self, cb, args, nargs);
    Py_DECREF(cb);
    return rc;
}

static int
pt_loop_debug(ProcObject *self)
{
    PyObject *loop = self->aloop;
    if (loop == NULL) {
        return 0;
    }
    if (PyObject_TypeCheck(loop, self->st->LoopType)) {
        return ((LoopObject *)loop)->debug;
    }
    PyObject *r = PyObject_CallMethodNoArgs(loop, self->st->str_get_debug);
    if (r == NULL) {
        return -1;
    }
    int debug = PyObject_IsTrue(r);
    Py_DECREF(r);
    return debug;
}

/* -- the exit bookkeeping --------------------------------------------------- */

/* Gives the return code to the futures waiting in _wait(), except those
 * cancelled (those done, where the waiters are a set: asyncio since
 * gh-119710); _exit_waiters becomes None. -1 with a future's exception. */
static int
pt_wake_waiters(ProcObject *self)
{
    PyObject *waiters = self->exit_waiters;
    self->exit_waiters = NULL;
    if (waiters == NULL) {
        return 0;
    }
    PyObject *skip = PyAnySet_Check(waiters) ? self->st->str_done
                                             : self->st->str_cancelled;
    PyObject *list = PySequence_List(waiters); /* a set_result may add */
    Py_DECREF(waiters);
    if (list == NULL) {
        return -1;
    }
    PyObject *rc = self->returncode != NULL ? self->returncode : Py_None;
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(list); i++) {
        PyObject *w = PyList_GET_ITEM(list, i);
        PyObject *c = PyObject_CallMethodNoArgs(w, skip);
        int yes = c == NULL ? -1 : PyObject_IsTrue(c);
        Py_XDECREF(c);
        if (yes == 0) {
            PyObject *s = PyObject_CallMethodOneArg(
                w, self->st->str_set_result, rc);
            yes = s == NULL ? -1 : 0;
            Py_XDECREF(s);
        }
        r = yes < 0 ? -1 : 0;
    }
    Py_DECREF(list);
    return r;
}

static PyObject *
pt_try_finish(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->finished) {
        PyErr_SetString(PyExc_AssertionError, "");
        return NULL;
    }
    if (self->returncode == NULL) {
        Py_RETURN_NONE;
    }
    if (self->pipes != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *proto;
        while (PyDict_Next(self->pipes, &pos, &key, &proto)) {
            if (proto == Py_None) {
                Py_RETURN_NONE;
            }
            PyObject *d = PyObject_GetAttr(proto, self->st->str_disconnected);
            if (d == NULL) {
                return NULL;
            }
            int yes = PyObject_IsTrue(d);
            Py_DECREF(d);
            if (yes <= 0) {
                return yes < 0 ? NULL : Py_NewRef(Py_None);
            }
        }
    }
    self->finished = 1;
    PyObject *cb = PyObject_GetAttr((PyObject *)self,
                                    self->st->str_call_connection_lost);
    if (cb == NULL) {
        return NULL;
    }
    PyObject *arg = Py_None;
    int rc = pt_call(self, cb, &arg, 1);
    Py_DECREF(cb);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pt_process_exited(ProcObject *self, PyObject *returncode)
{
    if (returncode == Py_None || self->returncode != NULL) {
        PyObject *r = returncode == Py_None ? returncode : self->returncode;
        PyObject *msg = PyObject_Repr(r);
        if (msg != NULL) {
            PyErr_SetObject(PyExc_AssertionError, msg);
            Py_DECREF(msg);
        }
        return NULL;
    }
    int debug = pt_loop_debug(self);
    if (debug < 0) {
        return NULL;
    }
    if (debug) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_log_exited", "O",
                                          returncode);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_XSETREF(self->returncode, Py_NewRef(returncode));
    if (self->popen != NULL) {
        PyObject *prc = PyObject_GetAttr(self->popen,
                                         self->st->str_returncode);
        if (prc == NULL) {
            return NULL;
        }
        int unset = prc == Py_None;
        Py_DECREF(prc);
        if (unset
            && PyObject_SetAttr(self->popen, self->st->str_returncode,
                                returncode)
                   < 0) {
            return NULL;
        }
    }
    if (pt_call_protocol(self, self->st->str_process_exited, NULL, 0) < 0) {
        return NULL;
    }
    PyObject *r = pt_try_finish(self, NULL);
    /* gh-119710: wait() returns at exit, even while a grandchild holds a
     * pipe open */
    if (r != NULL && self->st->proc_wake_at_exit
        && pt_wake_waiters(self) < 0) {
        Py_CLEAR(r);
    }
    return r;
}

static PyObject *
pt_call_connection_lost(ProcObject *self, PyObject *exc)
{
    PyObject *proto = self->protocol != NULL ? self->protocol : Py_None;
    PyObject *r = PyObject_CallMethodOneArg(
        proto, self->st->str_connection_lost, exc);
    PyObject *err = r == NULL ? evpy_fetch_exc() : NULL;
    Py_XDECREF(r);
    /* finally (before gh-119710): wake up what waits in wait(); an error
     * there wins, as a raising `finally` would */
    if (!self->st->proc_wake_at_exit && pt_wake_waiters(self) < 0) {
        Py_XDECREF(err);
        err = evpy_fetch_exc();
    }
    Py_CLEAR(self->aloop);
    self->gone = 1;
    Py_CLEAR(self->protocol);
    if (err != NULL) {
        evpy_restore_exc(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- the reaper ------------------------------------------------------------- */

/* An exception in the reaper goes to the loop's exception handler (as one
 * in a reader callback would), through self._reaper_failed(exc). */
static int
pt_report(ProcObject *self, LoopObject *loop)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    PyObject *exc = evpy_fetch_exc();
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_reaper_failed", "OO",
                                      loop, exc);
    Py_DECREF(exc);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit)
            || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(r);
    return 0;
}

/* Closes the pidfd: no longer watched (the caller detached it). */
static void
pt_close_pidfd(ProcObject *self)
{
    if (self->io.fd >= 0) {
        (void)close(self->io.fd);
        self->io.fd = -1;
    }
}

/* The return code reaped: recorded, copied into the Popen if one was made,
 * and _process_exited scheduled (3.11: one iteration later still). */
static int
pt_reaped(ProcObject *self, LoopObject *loop, PyObject *rc)
{
    Py_XSETREF(self->reaped, Py_NewRef(rc));
    if (self->popen != NULL) {
        PyObject *prc = PyObject_GetAttr(self->popen,
                                         self->st->str_returncode);
        if (prc == NULL) {
            return -1;
        }
        int unset = prc == Py_None;
        Py_DECREF(prc);
        if (unset
            && PyObject_SetAttr(self->popen, self->st->str_returncode, rc)
                   < 0) {
            return -1;
        }
    }
    PyObject *cb = PyObject_GetAttr((PyObject *)self,
                                    self->st->str_m_process_exited);
    if (cb == NULL) {
        return -1;
    }
    int r;
#  if PY_VERSION_HEX >= 0x030C0000
    r = evpy_loop_call_soon_n(loop, cb, &rc, 1, NULL);
#  else
    PyObject *soon = PyObject_GetAttrString((PyObject *)loop, "call_soon");
    if (soon == NULL) {
        Py_DECREF(cb);
        return -1;
    }
    PyObject *args[2] = {cb, rc};
    r = evpy_loop_call_soon_n(loop, soon, args, 2, NULL);
    Py_DECREF(soon);
#  endif
    Py_DECREF(cb);
    return r;
}

/* Reaps the child whose pidfd is readable (waitpid() in C) and closes the
 * pidfd: None, or NULL with an exception. */
static PyObject *
pt_reap(ProcObject *self, LoopObject *loop)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(self->cpid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    int err = errno;
    pt_close_pidfd(self);
    int rc = 0;
    PyObject *res = NULL;
    if (r == 0) {
        /* Not reapable yet (cannot happen once the pidfd is readable, but
         * never spin on it): wait in a thread instead. */
        res = PyObject_CallMethod((PyObject *)loop, "_start_waitpid_thread",
                                  "OO", self, self->pid);
    }
    else if (r < 0) {
        /* ECHILD: reaped elsewhere (Popen.wait()); else unexpected */
        if (err == ECHILD) {
            PyObject *code = PyObject_CallMethod((PyObject *)self,
                                                 "_reaped_elsewhere", NULL);
            if (code != NULL) {
                rc = pt_reaped(self, loop, code);
                Py_DECREF(code);
                res = rc < 0 ? NULL : Py_NewRef(Py_None);
            }
        }
        else {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    else {
        int code = WIFEXITED(status)     ? WEXITSTATUS(status)
                   : WIFSIGNALED(status) ? -WTERMSIG(status)
                                         : status;
        PyObject *pycode = PyLong_FromLong(code);
        if (pycode != NULL) {
            rc = pt_reaped(self, loop, pycode);
            Py_DECREF(pycode);
            res = rc < 0 ? NULL : Py_NewRef(Py_None);
        }
    }
    return res;
}

static int
pt_on_event(IOObject *io, unsigned events)
{
    ProcObject *self = PT(io);
    LoopObject *loop = io->loop;
    if (loop == NULL) {
        return 0;
    }
    Py_INCREF(self);
    Py_INCREF(loop);
    evpy_loop_io_detach(loop, io);
    PyObject *res = NULL;
    /* An os.waitpid replaced (a test double) is called as asyncio's child
     * watcher calls it, through self._reap_with(waitpid). */
    PyObject *wp = PyObject_GetAttr(self->st->os_module,
                                    self->st->str_waitpid);
    if (wp != NULL && wp != self->st->os_waitpid) {
        PyObject *code = PyObject_CallMethodOneArg(
            (PyObject *)self, self->st->str_reap_with, wp);
        pt_close_pidfd(self);
        if (code != NULL) {
            res = pt_reaped(self, loop, code) < 0 ? NULL : Py_NewRef(Py_None);
            Py_DECREF(code);
        }
    }
    else if (wp == NULL) {
        pt_close_pidfd(self);
    }
    else {
        res = pt_reap(self, loop);
    }
    Py_XDECREF(wp);
    int rc = 0;
    if (res == NULL) {
        rc = pt_report(self, loop);
    }
    Py_XDECREF(res);
    Py_DECREF(loop);
    Py_DECREF(self);
    return rc;
}

static const evpy_io_vtable pt_vtable = {
    .on_event = pt_on_event,
    .name = "process",
};

/* -- starting the child ----------------------------------------------------- */

static PyObject *
kwarg(PyObject *kwargs, const char *name, PyObject *dflt, Py_ssize_t *used)
{
    if (kwargs == NULL) {
        return dflt;
    }
    PyObject *v = PyDict_GetItemString(kwargs, name);
    if (v == NULL) {
        return dflt;
    }
    (*used)++;
    return v;
}

/* Popen's handling of args (a str, bytes or path-like is the program),
 * as a new list. */
static PyObject *
normalize_args(ProcObject *self, PyObject *args, int shell)
{
    if (PyList_CheckExact(args) || PyTuple_CheckExact(args)) {
        return PySequence_List(args);
    }
    if (PyUnicode_Check(args) || PyBytes_Check(args)) {
        return Py_BuildValue("[O]", args);
    }
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return NULL;
    }
    PyObject *pathlike = PyObject_GetAttrString(os, "PathLike");
    Py_DECREF(os);
    if (pathlike == NULL) {
        return NULL;
    }
    int is_path = PyObject_IsInstance(args, pathlike);
    Py_DECREF(pathlike);
    if (is_path < 0) {
        return NULL;
    }
    if (is_path) {
        if (shell) {
            PyErr_SetString(PyExc_TypeError,
                            "path-like args is not allowed when shell is "
                            "true");
            return NULL;
        }
        return Py_BuildValue("[O]", args);
    }
    return PySequence_List(args);
}

/* asyncio's _start(): spawns the child, watches its pidfd and returns the
 * parent's pipe ends (-1: none) in ends[3]. */
static int
pt_start(ProcObject *self, PyObject *args, int shell, PyObject *stdin_,
         PyObject *stdout_, PyObject *stderr_, PyObject *kwargs, int ends[3])
{
    PyObject *argv = normalize_args(self, args, shell);
    if (argv == NULL) {
        return -1;
    }
    Py_ssize_t used = 0;
    PyObject *executable = kwarg(kwargs, "executable", Py_None, &used);
    PyObject *close_fds = kwarg(kwargs, "close_fds", Py_True, &used);
    PyObject *pass_fds = kwarg(kwargs, "pass_fds", self->st->empty_tuple,
                               &used);
    PyObject *cwd = kwarg(kwargs, "cwd", Py_None, &used);
    PyObject *env = kwarg(kwargs, "env", Py_None, &used);
    PyObject *restore = kwarg(kwargs, "restore_signals", Py_True, &used);
    PyObject *new_session = kwarg(kwargs, "start_new_session", Py_False,
                                  &used);
    PyObject *pgroup = kwarg(kwargs, "process_group", Py_None, &used);
    PyObject *names = NULL, *flags = NULL, *pgid = NULL, *gep = NULL;
    PyObject *errfd = NULL;
    int result = -1;
    if (kwargs != NULL && used != PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError,
                        "unexpected keyword argument for _core.spawn()");
        goto done;
    }
    if (shell) {
        PyObject *sh = Py_BuildValue("[ss]", "/bin/sh", "-c");
        if (sh == NULL) {
            goto done;
        }
        PyObject *full = PySequence_Concat(sh, argv);
        Py_DECREF(sh);
        if (full == NULL) {
            goto done;
        }
        Py_SETREF(argv, full);
        int truthy = PyObject_IsTrue(executable);
        if (truthy < 0
            || (truthy
                && PyList_SetItem(argv, 0, Py_NewRef(executable)) < 0)) {
            goto done;
        }
    }
    if (PyList_GET_SIZE(argv) == 0 && executable == Py_None) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        goto done;
    }
    if (executable == Py_None) {
        executable = PyList_GET_ITEM(argv, 0);
    }
    int want_close = PyObject_IsTrue(close_fds);
    int have_pass = PyObject_IsTrue(pass_fds);
    if (want_close < 0 || have_pass < 0) {
        goto done;
    }
    if (have_pass && !want_close) {
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         "pass_fds overriding "
                         "close_fds.",
                         1)
            < 0) {
            goto done;
        }
        want_close = 1;
    }
    int r1 = PyObject_IsTrue(restore), r2 = PyObject_IsTrue(new_session);
    if (r1 < 0 || r2 < 0) {
        goto done;
    }
    flags = PyLong_FromLong((r1 ? 1 : 0) | (r2 ? 2 : 0));
    pgid = pgroup == Py_None ? PyLong_FromLong(-1) : Py_NewRef(pgroup);
    if (flags == NULL || pgid == NULL) {
        goto done;
    }
    if (stdout_ == Py_None && PyLong_CheckExact(stderr_)
        && PyLong_AsLong(stderr_) == -2) {             /* subprocess.STDOUT */
        PyObject *out = PySys_GetObject("__stdout__"); /* borrowed */
        if (out == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "lost sys.__stdout__");
            goto done;
        }
        errfd = PyObject_CallMethod(out, "fileno", NULL);
        if (errfd == NULL) {
            goto done;
        }
        stderr_ = errfd;
    }
#  if PY_VERSION_HEX >= 0x030D0000
    names = PyTuple_Pack(3, executable, cwd, Py_None);
#  else
    names = PyTuple_Pack(3, executable, cwd, cwd);
#  endif
    if (names == NULL) {
        goto done;
    }
    gep = Py_NewRef(self->st->get_exec_path);
    PyObject *a[13] = {
        argv,     executable, env,     cwd,
        stdin_,   stdout_,    stderr_, want_close ? Py_True : Py_False,
        pass_fds, flags,      pgid,    names,
        gep};
    int out[5];
    if (evpy_spawn(a, out) < 0) {
        goto done;
    }
    self->cpid = (pid_t)out[0];
    self->io.fd = out[1];
    for (int i = 0; i < 3; i++) {
        ends[i] = out[2 + i];
    }
    Py_XSETREF(self->pid, PyLong_FromLong(out[0]));
    if (self->pid == NULL) {
        goto fail_fds;
    }
    LoopObject *loop = (LoopObject *)self->aloop;
    if (self->io.fd >= 0) {
        /* The reaper runs in a copy of this context, as a reader added
         * here would. */
        if (evpy_io_copy_context(&self->io, EVPY_IO_CTX_READ) < 0
            || evpy_loop_io_attach(loop, &self->io) < 0) {
            goto fail_fds;
        }
        if (evpy_loop_io_want(loop, &self->io, EVPY_READ) < 0) {
            evpy_loop_io_detach(loop, &self->io);
            goto fail_fds;
        }
    }
    else {
        /* Linux < 5.2: no pidfd from clone() */
        PyObject *r = PyObject_CallMethod((PyObject *)loop, "_watch_child",
                                          "O", self);
        if (r == NULL) {
            goto fail_fds;
        }
        Py_DECREF(r);
    }
    result = 0;
    goto done;

fail_fds:
    pt_close_pidfd(self);
    for (int i = 0; i < 3; i++) {
        if (ends[i] >= 0) {
            (void)close(ends[i]);
            ends[i] = -1;
        }
    }
done:
    Py_DECREF(argv);
    Py_XDECREF(names);
    Py_XDECREF(flags);
    Py_XDECREF(pgid);
    Py_XDECREF(gep);
    Py_XDECREF(errfd);
    return result;
}

static PyObject *pt_close(ProcObject *self, PyObject *Py_UNUSED(ignored));

/* ProcessTransport(loop, protocol, args, shell, stdin, stdout, stderr,
 *                  kwargs, extra=None) */
static int
pt_init(ProcObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop",   "protocol", "args",   "shell", "stdin",
                             "stdout", "stderr",   "kwargs", "extra", NULL};
    PyObject *loop, *protocol, *pargs, *stdin_, *stdout_, *stderr_;
    PyObject *kwargs, *extra = Py_None;
    int shell;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOpOOOO|O:ProcessTransport",
                                     kwlist, &loop, &protocol, &pargs, &shell,
                                     &stdin_, &stdout_, &stderr_, &kwargs,
                                     &extra)) {
        return -1;
    }
    if (self->pid != NULL || self->aloop != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already started");
        return -1;
    }
    if (!PyObject_TypeCheck(loop, self->st->LoopType)) {
        PyErr_SetString(PyExc_TypeError, "an evpy loop is required");
        return -1;
    }
    if (kwargs == Py_None
        || (PyDict_Check(kwargs) && PyDict_GET_SIZE(kwargs) == 0)) {
        kwargs = NULL;
    }
    else if (!PyDict_Check(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "kwargs must be a dict");
        return -1;
    }
    Py_XSETREF(self->io.extra,
               extra == Py_None ? PyDict_New() : Py_NewRef(extra));
    Py_XSETREF(self->pipes, PyDict_New());
    Py_XSETREF(self->exit_waiters,
               self->st->proc_wake_at_exit ? PySet_New(NULL) : PyList_New(0));
    if (self->io.extra == NULL || self->pipes == NULL
        || self->exit_waiters == NULL) {
        return -1;
    }
    Py_XSETREF(self->protocol, Py_NewRef(protocol));
    Py_XSETREF(self->aloop, Py_NewRef(loop));
    Py_XSETREF(self->home, Py_NewRef(loop));
    Py_XSETREF(self->args, Py_NewRef(pargs));

    int ends[3] = {-1, -1, -1};
    if (pt_start(self, pargs, shell, stdin_, stdout_, stderr_, kwargs, ends)
        < 0) {
        goto fail;
    }
    if (ends[0] >= 0 || ends[1] >= 0 || ends[2] >= 0) {
        /* the hook owns the fds from here on */
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_make_pipes",
                                          "iii", ends[0], ends[1], ends[2]);
        if (r == NULL) {
            goto fail;
        }
        Py_DECREF(r);
    }
    if (((LoopObject *)loop)->debug) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_log_created",
                                          NULL);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *cb = PyObject_GetAttr(protocol, self->st->str_connection_made);
    if (cb == NULL) {
        return -1;
    }
    PyObject *me = (PyObject *)self;
    int rc = pt_call_soon(self, cb, &me, 1);
    Py_DECREF(cb);
    return rc;

fail:;
    /* as asyncio: close() (kills a started child), then raise */
    PyObject *exc = evpy_fetch_exc();
    PyObject *r = PyObject_CallMethod((PyObject *)self, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)self);
    }
    Py_XDECREF(r);
    evpy_restore_exc(exc);
    return -1;
}

/* -- asyncio's methods ------------------------------------------------------ */

static PyObject *
pt_get_pid(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    return none_if_null(self->pid);
}

static PyObject *
pt_get_returncode(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    return none_if_null(self->returncode);
}

static PyObject *
pt_get_pipe_transport(ProcObject *self, PyObject *fd)
{
    if (self->pipes == NULL) {
        PyErr_SetString(PyExc_TypeError, "argument of type 'NoneType' is "
                                         "not iterable");
        return NULL;
    }
    PyObject *proto = PyDict_GetItemWithError(self->pipes, fd);
    if (proto == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    return PyObject_GetAttr(proto, self->st->str_pipe);
}

static PyObject *
pt_is_closing(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
pt_get_protocol(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    return none_if_null(self->protocol);
}

static PyObject *
pt_set_protocol(ProcObject *self, PyObject *protocol)
{
    Py_XSETREF(self->protocol, Py_NewRef(protocol));
    Py_RETURN_NONE;
}

/* Removes the futures that are done from a set of them. */
static int
pt_prune_waiters(PyObject *set, PyObject *str_done)
{
    if (PySet_GET_SIZE(set) == 0) {
        return 0;
    }
    PyObject *list = PySequence_List(set);
    if (list == NULL) {
        return -1;
    }
    int r = 0;
    for (Py_ssize_t i = 0; r == 0 && i < PyList_GET_SIZE(list); i++) {
        PyObject *w = PyList_GET_ITEM(list, i);
        PyObject *d = PyObject_CallMethodNoArgs(w, str_done);
        int yes = d == NULL ? -1 : PyObject_IsTrue(d);
        Py_XDECREF(d);
        r = yes > 0 ? PySet_Discard(set, w) : yes;
        r = r < 0 ? -1 : 0;
    }
    Py_DECREF(list);
    return r;
}

/* asyncio's `async def _wait()`, as an awaitable future: done already if
 * the return code is known (awaiting it then does not suspend, as the
 * coroutine's early return). */
static PyObject *
pt_wait(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *loop = self->returncode != NULL ? self->home : self->aloop;
    PyObject *fut = PyObject_CallMethodNoArgs(loop != NULL ? loop : Py_None,
                                              self->st->str_create_future);
    if (fut == NULL) {
        return NULL;
    }
    PyObject *r;
    if (self->returncode != NULL) {
        r = PyObject_CallMethodOneArg(fut, self->st->str_set_result,
                                      self->returncode);
    }
    else if (self->exit_waiters == NULL) {
        PyErr_SetString(PyExc_AttributeError,
                        "'NoneType' object has no attribute 'append'");
        r = NULL;
    }
    else if (PyAnySet_Check(self->exit_waiters)) {
        /* asyncio's _wait() discards its future when it is cancelled: the
         * cancelled ones are dropped here, when the next one comes */
        r = pt_prune_waiters(self->exit_waiters, self->st->str_done) < 0
                    || PySet_Add(self->exit_waiters, fut) < 0
                ? NULL
                : Py_NewRef(Py_None);
    }
    else if (PyList_Check(self->exit_waiters)) {
        r = PyList_Append(self->exit_waiters, fut) < 0 ? NULL
                                                       : Py_NewRef(Py_None);
    }
    else {
        r = PyObject_CallMethodOneArg(self->exit_waiters, self->st->str_append,
                                      fut);
    }
    if (r == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    Py_DECREF(r);
    return fut;
}

static PyObject *
pt_pipe_data_received(ProcObject *self, PyObject *const *args,
                      Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "_pipe_data_received() takes 2 arguments");
        return NULL;
    }
    if (pt_call_protocol(self, self->st->str_pipe_data_received, args, 2)
        < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pt_pipe_connection_lost(ProcObject *self, PyObject *const *args,
                        Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "_pipe_connection_lost() takes 2 arguments");
        return NULL;
    }
    if (pt_call_protocol(self, self->st->str_pipe_connection_lost, args, 2)
        < 0) {
        return NULL;
    }
    return pt_try_finish(self, NULL);
}

static PyObject *
pt_close(ProcObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->closed) {
        Py_RETURN_NONE;
    }
    self->closed = 1;
    PyObject *err = NULL;
    /* gh-114177: the pipes are left alone once the loop is closed (it may
     * be closed right after the child was killed) */
    int live = 0;
    if (self->aloop != NULL) {
        PyObject *c = PyObject_CallMethodNoArgs(self->aloop,
                                                self->st->str_is_closed);
        int closed = c == NULL ? -1 : PyObject_IsTrue(c);
        Py_XDECREF(c);
        live = closed < 0 ? -1 : !closed;
        if (live < 0) {
            err = evpy_fetch_exc();
        }
    }
    if (live > 0 && self->pipes != NULL) {
        PyObject *protos = PyDict_Values(self->pipes);
        if (protos == NULL) {
            err = evpy_fetch_exc();
        }
        for (Py_ssize_t i = 0; protos && i < PyList_GET_SIZE(protos); i++) {
            PyObject *proto = PyList_GET_ITEM(protos, i);
            if (proto == Py_None) {
                continue;
            }
            PyObject *pipe = PyObject_GetAttr(proto, self->st->str_pipe);
            PyObject *r = pipe == NULL ? NULL
                                       : PyObject_CallMethodNoArgs(
                                           pipe, self->st->str_close);
            Py_XDECREF(pipe);
            if (r == NULL) {
                err = evpy_fetch_exc();
                break;
            }
            Py_DECREF(r);
        }
        Py_XDECREF(protos);
    }
    /* finally: kill the child if it is still running */
    if (self->returncode == NULL && self->reaped == NULL) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self,
                                                self->st->str_kill_if_running);
        if (r == NULL) {
            Py_XDECREF(err);
            err = evpy_fetch_exc();
        }
        Py_XDECREF(r);
    }
    if (err != NULL) {
        evpy_restore_exc(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* __del__: the unclosed-transport warning, and the pidfd of a child never
 * reaped (its loop was closed first). */
static void
pt_finalize(ProcObject *self)
{
    PyObject *exc = evpy_fetch_exc();
    if (!self->closed) {
        if (PyErr_ResourceWarning((PyObject *)self, 1, "unclosed transport %R",
                                  self)
            < 0) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        PyObject *r = pt_close(self, NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
    }
    if (self->io.loop == NULL) {
        pt_close_pidfd(self);
    }
    evpy_restore_exc(exc);
}

/* -- attributes ------------------------------------------------------------- */

#  define OBJ_ATTR(name, field)                                              \
    static PyObject *get_##name(ProcObject *self, void *Py_UNUSED(c))        \
    {                                                                        \
      return none_if_null(self->field);                                      \
    }                                                                        \
    static int set_##name(ProcObject *self, PyObject *v, void *Py_UNUSED(c)) \
    {                                                                        \
      Py_XSETREF(self->field,                                                \
                 v == NULL || v == Py_None ? NULL : Py_NewRef(v));           \
      return 0;                                                              \
    }

#  define BOOL_ATTR(name, field)                                             \
    static PyObject *get_##name(ProcObject *self, void *Py_UNUSED(c))        \
    {                                                                        \
      return PyBool_FromLong(self->field);                                   \
    }                                                                        \
    static int set_##name(ProcObject *self, PyObject *v, void *Py_UNUSED(c)) \
    {                                                                        \
      int b = v == NULL ? 0 : PyObject_IsTrue(v);                            \
      if (b < 0) {                                                           \
        return -1;                                                           \
      }                                                                      \
      self->field = (char)b;                                                 \
      return 0;                                                              \
    }

OBJ_ATTR(loop, aloop)
OBJ_ATTR(protocol, protocol)
OBJ_ATTR(pipes, pipes)
OBJ_ATTR(exit_waiters, exit_waiters)
OBJ_ATTR(pending_calls, pending_calls)
OBJ_ATTR(returncode, returncode)
OBJ_ATTR(reaped, reaped)
OBJ_ATTR(popen, popen)
OBJ_ATTR(args, args)
BOOL_ATTR(closed, closed)
BOOL_ATTR(finished, finished)
BOOL_ATTR(gone, gone)

static PyObject *
get_pid(ProcObject *self, void *Py_UNUSED(c))
{
    return none_if_null(self->pid);
}

static int
set_pid(ProcObject *self, PyObject *v, void *Py_UNUSED(c))
{
    pid_t cpid = 0;
    if (v != NULL && v != Py_None) {
        long n = PyLong_AsLong(v);
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        cpid = (pid_t)n;
    }
    Py_XSETREF(self->pid, v == NULL || v == Py_None ? NULL : Py_NewRef(v));
    self->cpid = cpid;
    return 0;
}

static PyObject *
get_pidfd(ProcObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->io.fd);
}

#  define ATTR(name, doc)                                          \
    {                                                              \
      "_" #name, (getter)get_##name, (setter)set_##name, doc, NULL \
    }

static PyGetSetDef pt_getset[] = {
    ATTR(loop, "asyncio's _loop (None after connection_lost)"),
    ATTR(protocol, "asyncio's _protocol"),
    ATTR(pipes, "asyncio's _pipes: fd -> pipe protocol"),
    ATTR(exit_waiters, "asyncio's _exit_waiters"),
    ATTR(pending_calls, "asyncio's _pending_calls (None: call_soon)"),
    ATTR(returncode, "asyncio's _returncode"),
    ATTR(pid, "asyncio's _pid"),
    ATTR(closed, "asyncio's _closed"),
    ATTR(finished, "asyncio's _finished"),
    ATTR(reaped, "the return code this transport reaped, or None"),
    ATTR(popen, "the Popen of get_extra_info('subprocess'), or None"),
    ATTR(args, "the args given (Popen.args)"),
    ATTR(gone, "True once connection_lost ran (asyncio's _proc is None)"),
    {"_pidfd", (getter)get_pidfd, NULL, "the watched pidfd, or -1", NULL},
    {NULL},
};

static PyMethodDef pt_methods[] = {
    {"get_pid", (PyCFunction)pt_get_pid, METH_NOARGS,
     "The child's process id."},
    {"get_returncode", (PyCFunction)pt_get_returncode, METH_NOARGS,
     "The child's return code, None while it runs."},
    {"get_pipe_transport", (PyCFunction)pt_get_pipe_transport, METH_O,
     "The transport of the child's pipe fd (0, 1 or 2), or None."},
    {"is_closing", (PyCFunction)pt_is_closing, METH_NOARGS,
     "True once close() was called."},
    {"get_protocol", (PyCFunction)pt_get_protocol, METH_NOARGS,
     "The protocol."},
    {"set_protocol", (PyCFunction)pt_set_protocol, METH_O,
     "Set the protocol."},
    {"close", (PyCFunction)pt_close, METH_NOARGS,
     "Close the pipes; kill the child if it is still running."},
    {"_wait", (PyCFunction)pt_wait, METH_NOARGS,
     "An awaitable of the return code (asyncio's _wait())."},
    {"_process_exited", (PyCFunction)pt_process_exited, METH_O,
     "The child exited with this return code."},
    {"_try_finish", (PyCFunction)pt_try_finish, METH_NOARGS,
     "Schedule connection_lost once the child and its pipes are done."},
    {"_call_connection_lost", (PyCFunction)pt_call_connection_lost, METH_O,
     "protocol.connection_lost(exc), then wake the wait()ers."},
    {"_pipe_data_received", (PyCFunction)(void (*)(void))pt_pipe_data_received,
     METH_FASTCALL, "Data from the child's pipe fd."},
    {"_pipe_connection_lost",
     (PyCFunction)(void (*)(void))pt_pipe_connection_lost, METH_FASTCALL,
     "The child's pipe fd was closed."},
    {NULL, NULL, 0, NULL},
};

/* -- the type --------------------------------------------------------------- */

static PyObject *
pt_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *mod = PyType_GetModuleByDef(type, &evpy_module_def);
    if (mod == NULL) {
        return NULL;
    }
    ProcObject *self = (ProcObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->st = evpy_get_state(mod);
    self->io.vt = &pt_vtable;
    self->io.fd = -1;
    return (PyObject *)self;
}

static int
pt_traverse(ProcObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->io.extra);
    Py_VISIT(self->io.loop);
    Py_VISIT(self->io.ctx[EVPY_IO_CTX_READ]);
    Py_VISIT(self->io.ctx[EVPY_IO_CTX_WRITE]);
    Py_VISIT(self->aloop);
    Py_VISIT(self->protocol);
    Py_VISIT(self->pipes);
    Py_VISIT(self->exit_waiters);
    Py_VISIT(self->pending_calls);
    Py_VISIT(self->pid);
    Py_VISIT(self->returncode);
    Py_VISIT(self->reaped);
    Py_VISIT(self->popen);
    Py_VISIT(self->args);
    Py_VISIT(self->home);
    return 0;
}

static int
pt_clear(ProcObject *self)
{
    if (self->io.loop != NULL) {
        evpy_loop_io_detach(self->io.loop, &self->io);
    }
    Py_CLEAR(self->io.extra);
    Py_CLEAR(self->io.ctx[EVPY_IO_CTX_READ]);
    Py_CLEAR(self->io.ctx[EVPY_IO_CTX_WRITE]);
    Py_CLEAR(self->aloop);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->pipes);
    Py_CLEAR(self->exit_waiters);
    Py_CLEAR(self->pending_calls);
    Py_CLEAR(self->pid);
    Py_CLEAR(self->returncode);
    Py_CLEAR(self->reaped);
    Py_CLEAR(self->popen);
    Py_CLEAR(self->args);
    Py_CLEAR(self->home);
    return 0;
}

static void
pt_dealloc(ProcObject *self)
{
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    pt_clear(self);
    pt_close_pidfd(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot pt_slots[] = {
    {Py_tp_doc, "C base of evpy's subprocess transport "
                "(evpy.process.ProcessTransport)."},
    {Py_tp_new, pt_new},
    {Py_tp_init, pt_init},
    {Py_tp_methods, pt_methods},
    {Py_tp_getset, pt_getset},
    {Py_tp_traverse, pt_traverse},
    {Py_tp_clear, pt_clear},
    {Py_tp_finalize, pt_finalize},
    {Py_tp_dealloc, pt_dealloc},
    {0, NULL},
};

static PyType_Spec pt_spec = {
    .name = "evpy._core.ProcessTransport",
    .basicsize = sizeof(ProcObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = pt_slots,
};

#endif /* __linux__ */

int
evpy_process_add_types(PyObject *mod)
{
#ifdef __linux__
    /* A subclass of asyncio.SubprocessTransport, whose BaseTransport
     * `_extra` slot starts IOObject (checked with the other transports). */
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return -1;
    }
    PyObject *base = PyObject_GetAttrString(asyncio, "SubprocessTransport");
    Py_DECREF(asyncio);
    if (base == NULL) {
        return -1;
    }
    PyObject *tp = PyType_FromModuleAndSpec(mod, &pt_spec, base);
    Py_DECREF(base);
    if (tp == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(mod, (PyTypeObject *)tp);
    Py_DECREF(tp);
    return rc;
#else
    return 0;
#endif
}
