/* Loop.add_reader/add_writer/remove_reader/remove_writer: callbacks on
 * fds, as Handles owned by the loop's fd table (csrc/core/fdtable.h). The
 * loop (loop.c) runs them; transports register through loop.c's I/O
 * object functions instead, and an fd has one kind of owner at a time.
 */
#include "evpy.h"

#include <limits.h>

/* selectors' rules for turning a file object into an fd. */
static int
fileobj_to_fd(LoopObject *self, PyObject *fileobj)
{
    long long fd;
    int overflow = 0;
    if (PyLong_Check(fileobj)) {
        fd = PyLong_AsLongLongAndOverflow(fileobj, &overflow);
        if (fd == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    else {
        PyObject *r = PyObject_CallMethodNoArgs(fileobj, self->st->str_fileno);
        if (r == NULL || !PyLong_Check(r)) {
            Py_XDECREF(r);
            if (r == NULL && !PyErr_ExceptionMatches(PyExc_AttributeError)
                && !PyErr_ExceptionMatches(PyExc_TypeError)
                && !PyErr_ExceptionMatches(PyExc_ValueError)) {
                return -1;
            }
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
            return -1;
        }
        fd = PyLong_AsLongLongAndOverflow(r, &overflow);
        Py_DECREF(r);
        if (fd == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    /* As the selector: a negative fd is invalid, one past a C int does
     * not fit (OverflowError; remove_* then says False, it was never
     * registered). */
    if (overflow > 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "Python int too large to convert to C int");
        return -1;
    }
    if (overflow < 0 || fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %lld",
                     overflow ? (long long)LLONG_MIN : fd);
        return -1;
    }
    return (int)fd;
}

/* asyncio refuses add/remove_reader/writer on an fd a transport owns. */
int
evpy_loop_check_no_transport(LoopObject *self, int fd)
{
    evpy_fdslot_t *slot = evpy_fdtable_get(&self->fds, fd);
    if (slot != NULL && EVPY_TAG(slot->reader) == EVPY_TAG_IO) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %d is used by transport %R", fd,
                     EVPY_UNTAG(slot->reader));
        return -1;
    }
    return 0;
}

/* add_reader/add_writer; returns the new handle (asyncio's private
 * _add_reader/_add_writer do; the public methods return None). */
static PyObject *
loop_add_io(LoopObject *self, PyObject *const *args, Py_ssize_t nargs,
            unsigned which, const char *method)
{
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required positional arguments", method);
        return NULL;
    }
    int fd = fileobj_to_fd(self, args[0]);
    if (fd < 0) {
        return NULL;
    }
    if (evpy_loop_check_closed(self) < 0) {
        return NULL;
    }
    HandleObject *h = evpy_handle_new(self, self->st->HandleType, args[1],
                                      args + 2, nargs - 2, NULL);
    if (h == NULL) {
        return NULL;
    }
    evpy_fdslot_t *slot = evpy_fdtable_slot(&self->fds, fd);
    if (slot == NULL) {
        Py_DECREF(h);
        return PyErr_NoMemory();
    }
    if (evpy_loop_check_no_transport(self, fd) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    int rc = evpy_fdtable_want(&self->fds, fd, slot->want | which);
    if (rc == 0) {
        rc = evpy_fdtable_apply(&self->fds, self->poller, fd);
    }
    if (rc < 0) {
        Py_DECREF(h);
        return evpy_set_errno(rc);
    }
    /* Re-fetch: nothing above can grow the table, but stay obviously safe. */
    slot = evpy_fdtable_get(&self->fds, fd);
    void **place = (which == EVPY_READ) ? &slot->reader : &slot->writer;
    HandleObject *old = (HandleObject *)*place;
    *place = Py_NewRef(h); /* the table owns a reference */
    if (old != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)old,
                                                self->st->str_cancel);
        Py_DECREF(old);
        if (r == NULL) {
            Py_DECREF(h);
            return NULL;
        }
        Py_DECREF(r);
    }
    return (PyObject *)h;
}

/* Drops fd's reader or writer; 1 if there was one. */
int
evpy_loop_drop_io(LoopObject *self, int fd, unsigned which)
{
    evpy_fdslot_t *slot = evpy_fdtable_get(&self->fds, fd);
    if (slot == NULL) {
        return 0;
    }
    void **place = (which == EVPY_READ) ? &slot->reader : &slot->writer;
    HandleObject *old = (HandleObject *)*place;
    if (old == NULL) {
        return 0;
    }
    *place = NULL;
    (void)evpy_fdtable_want(&self->fds, fd, slot->want & ~which);
    /* Applied now, as the selector does: the caller may close fd next. */
    (void)evpy_fdtable_apply(&self->fds, self->poller, fd);
    /* Beware: cancel() and the decref may run arbitrary code; the table
     * no longer refers to `old`. */
    old->cancelled = 1;
    if (!old->running) {
        evpy_handle_clear_callback(old);
    }
    Py_DECREF(old);
    return 1;
}

static PyObject *
loop_remove_io(LoopObject *self, PyObject *fileobj, unsigned which)
{
    int fd = fileobj_to_fd(self, fileobj);
    if (fd < 0) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_FALSE;
    }
    if (evpy_loop_check_no_transport(self, fd) < 0) {
        return NULL;
    }
    return PyBool_FromLong(evpy_loop_drop_io(self, fd, which));
}

static PyObject *
discard_handle(PyObject *h)
{
    if (h == NULL) {
        return NULL;
    }
    Py_DECREF(h);
    Py_RETURN_NONE;
}

PyObject *
evpy_loop_add_reader(LoopObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return discard_handle(
        loop_add_io(self, args, nargs, EVPY_READ, "add_reader"));
}

PyObject *
evpy_loop_add_writer(LoopObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return discard_handle(
        loop_add_io(self, args, nargs, EVPY_WRITE, "add_writer"));
}

PyObject *
evpy_loop_add_reader_handle(LoopObject *self, PyObject *const *args,
                            Py_ssize_t nargs)
{
    return loop_add_io(self, args, nargs, EVPY_READ, "_add_reader");
}

PyObject *
evpy_loop_add_writer_handle(LoopObject *self, PyObject *const *args,
                            Py_ssize_t nargs)
{
    return loop_add_io(self, args, nargs, EVPY_WRITE, "_add_writer");
}

PyObject *
evpy_loop_remove_reader(LoopObject *self, PyObject *fileobj)
{
    return loop_remove_io(self, fileobj, EVPY_READ);
}

PyObject *
evpy_loop_remove_writer(LoopObject *self, PyObject *fileobj)
{
    return loop_remove_io(self, fileobj, EVPY_WRITE);
}
