/* What evpy's C transports share: the state asyncio's _SelectorTransport
 * keeps (the lifecycle, conn_lost, paused reading, write flow control) and
 * the behaviour built on it (close, abort, fatal errors, pause/resume, the
 * Python-visible accessors). stream.c and datagram.c add their queues and
 * data paths through evpy_transport_ops.
 *
 * The lifecycle is one state machine, all of it in transport.c:
 *
 *            close()            queue drained (data path)
 *   OPEN ------------> CLOSING -------------------------+
 *    |                    |                             | connection_lost
 *    | abort(), fatal     | abort(), fatal error        | called now
 *    | error, pipe EOF    v                             v
 *    +--------------->  LOST  ------------------------> CLOSED
 *        queue dropped,  connection_lost scheduled      fd released:
 *        no interest     (tr_lose, the one place)       tr_release
 *
 * conn_lost counts, as asyncio's _conn_lost, the loss and the writes tried
 * after it (a warning past EVPY_CONNLOST_WARN_THRESHOLD). A transport the
 * GC collects while not CLOSED warns and is released by its finalizer.
 */
#ifndef EVPY_TRANSPORT_H
#define EVPY_TRANSPORT_H

#include "evpy.h"

#define EVPY_DEFAULT_HIGH_WATER (64 * 1024)
#define EVPY_CONNLOST_WARN_THRESHOLD 5

typedef struct TransportObject TransportObject;

typedef enum {
    EVPY_TR_OPEN = 0,
    EVPY_TR_CLOSING, /* close(): queued data still to send */
    EVPY_TR_LOST,    /* connection_lost scheduled or running */
    EVPY_TR_CLOSED,  /* fd released */
} evpy_tr_state;

typedef struct {
    Py_ssize_t (*queued)(TransportObject *self); /* write buffer size */
    void (*clear_queue)(TransportObject *self);
    void (*clear_protocol)(TransportObject *self); /* cached callables */
} evpy_transport_ops;

struct TransportObject {
    IOObject io;    /* must be first */
    evpy_state *st; /* borrowed: the type keeps the module */
    const evpy_transport_ops *ops;
    /* socket.socket, or the pipe object;
     * NULL while fd_owned (made on demand) */
    PyObject *sock;
    PyObject *protocol;
    PyObject *empty_waiter; /* sendfile support, or NULL */
    PyObject *server;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int conn_lost;
    char kind;            /* type-specific flavour, see _attach */
    char state;           /* evpy_tr_state */
    char paused;          /* pause_reading() called */
    char protocol_paused; /* pause_writing() called */
    char released;        /* fd lent out (_release_fd), loop kept */
    char fd_owned;        /* io.fd is ours, no socket object yet */
    int family;           /* with fd_owned: to make the socket */
    int socktype;
    int proto;
};

#define TR_LOOP(t) (((TransportObject *)(t))->io.loop)
/* asyncio's _closing: close() or an abort has begun. */
#define EVPY_TR_CLOSING(t) (((TransportObject *)(t))->state != EVPY_TR_OPEN)

/* Initialises the head in tp_new; -1 with an exception on failure. */
int evpy_tr_init(TransportObject *t, PyTypeObject *type,
                 const evpy_io_vtable *vt, const evpy_transport_ops *ops);
int evpy_tr_traverse(TransportObject *t, visitproc visit, void *arg);
void evpy_tr_clear(TransportObject *t);

int evpy_tr_set_want(TransportObject *t, unsigned set, unsigned clear);
/* Adds write interest; RuntimeError if the loop has been closed. */
int evpy_tr_want_write(TransportObject *t);
int evpy_tr_is_fatal_to_loop(void);
/* Reporting: each returns -1 only for SystemExit/KeyboardInterrupt. */
int evpy_tr_fatal(TransportObject *t, PyObject *exc, const char *message);
int evpy_tr_fatal_errno(TransportObject *t, int err, const char *message);
int evpy_tr_callback_failed(TransportObject *t, const char *message);
/* self.<name>() or self.<name>(exc) (with_exc: the current exception),
 * name one of the interned names in evpy_state. */
int evpy_tr_python_hook(TransportObject *t, PyObject *name, int with_exc);
PyObject *evpy_tr_call_protocol(TransportObject *t, PyObject *name);
int evpy_tr_maybe_pause_protocol(TransportObject *t);
int evpy_tr_maybe_resume_protocol(TransportObject *t);
/* close(); see the state machine above. */
int evpy_tr_do_close(TransportObject *t);
/* The data path emptied the write queue: a closing transport is lost
 * (connection_lost is called now). -1 only for SystemExit and co. */
int evpy_tr_drained(TransportObject *t);
PyObject *evpy_tr_write_after_close(TransportObject *t);
int evpy_tr_check_bytes_like(PyObject *data);
/* Attaches a stream socket transport to loop over a bare connected fd it
 * owns from then on (the socket object is made on demand). -1 with an
 * exception, the fd still the caller's. */
int evpy_tr_attach_fd(TransportObject *t, LoopObject *loop, int fd, int family,
                      int socktype, int proto);
/* StreamTransport.set_protocol() (csrc/stream.c); t must be a stream. */
int evpy_stream_set_protocol(TransportObject *t, PyObject *protocol);
/* Drops a transport whose set-up failed: unregisters, closes its fd,
 * leaves its server; the pending exception, if any, is kept. */
void evpy_tr_discard(TransportObject *t);

/* _core.TransportBase: the shared methods, as a base class of
 * StreamTransport and DatagramTransport (it subclasses
 * asyncio.BaseTransport, whose `_extra` slot starts IOObject). Made and
 * added to the module (st->TransportBaseType); -1 with an exception. */
int evpy_transport_add_base_type(PyObject *mod, evpy_state *st);
/* A concrete transport type from spec, with TransportBase and
 * asyncio.<asyncio_name> (and asyncio.<asyncio_name2> unless NULL) as
 * bases, added to the module. New reference or NULL. */
PyTypeObject *evpy_transport_make_type(PyObject *mod, evpy_state *st,
                                       PyType_Spec *spec,
                                       const char *asyncio_name,
                                       const char *asyncio_name2);
/* StreamTransport and DatagramTransport (stream.c, datagram.c): made and
 * added to the module; -1 with an exception. */
int evpy_stream_add_type(PyObject *mod, evpy_state *st);
int evpy_datagram_add_type(PyObject *mod, evpy_state *st);

#endif /* EVPY_TRANSPORT_H */
