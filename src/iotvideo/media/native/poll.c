/* LanePoll: one epoll descriptor for all the armed publish lanes of a server, so that the event
 * loop makes one callback (LanePoll.run) for every lane ready at once instead of one per lane.
 *
 * The loop watches fileno() (add_reader(poll.fileno(), poll.run)); add(fd, lane) puts a lane's
 * socket descriptor in the set, discard(fd) takes it out (before the owner closes it). run() asks
 * epoll which are ready (level-triggered, no waiting) and calls each one's PublishLane.readable()
 * (native_lane_readable). A table fd -> (lane, generation) is the truth: each epoll event carries
 * the fd and the generation it was added with, and is dropped unless the table still holds that
 * very entry, so a lane discarded by an earlier callback of the same run() is never touched, nor
 * is a lane added later under the same (reused) descriptor number called for the old one's event.
 * An exception from a lane goes to on_error(lane, exc); the others are still read.
 *
 * Linux only (epoll): elsewhere the module has no LanePoll and media/accel.py says None. */
#include "native.h"

#ifdef __linux__

#include <errno.h>
#include <string.h>
#include <structmember.h>
#include <sys/epoll.h>
#include <unistd.h>

/* run(): one epoll_wait() of up to POLL_BATCH events; only when that filled up (more may be ready)
 * another, at most POLL_ROUNDS in all. What is left stays ready (level-triggered) and is met on the
 * loop's next turn, after the loop's other callbacks and timers: run() never starves the loop. In the
 * common case (fewer ready lanes than POLL_BATCH) this is one system call per run(). */
#define POLL_BATCH 64
#define POLL_ROUNDS 4

typedef struct {
    PyObject *lane;    /* NULL: the slot is free */
    uint32_t gen;      /* which add() put it there (in each epoll event's data with the fd) */
} PollSlot;

typedef struct {
    PyObject_HEAD
    int epfd;          /* -1 once closed */
    PyObject *on_error;
    PollSlot *slots;   /* indexed by fd */
    Py_ssize_t cap, n; /* slots allocated; lanes in the set */
    uint32_t next_gen;
    long long runs, reads; /* run() calls; lanes called */
} LanePollObject;

static PyTypeObject LanePollType;

static inline uint64_t poll_key(int fd, uint32_t gen) { return ((uint64_t)gen << 32) | (uint32_t)fd; }

static int LanePoll_init(LanePollObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"on_error", NULL};
    PyObject *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:LanePoll", kwlist, &on_error)) return -1;
    if (!PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "LanePoll(on_error): on_error(lane, exc) must be callable");
        return -1;
    }
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "LanePoll is already initialised");
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_XSETREF(self->on_error, Py_NewRef(on_error));
    return 0;
}

static PyObject *LanePoll_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    LanePollObject *self = (LanePollObject *)type->tp_alloc(type, 0);
    if (self != NULL) self->epfd = -1;
    return (PyObject *)self;
}

/* Empty the table (the lanes are released after it is consistent: their deallocation may run code). */
static void poll_clear_slots(LanePollObject *self) {
    PollSlot *slots = self->slots;
    Py_ssize_t cap = self->cap;
    self->slots = NULL;
    self->cap = self->n = 0;
    for (Py_ssize_t i = 0; i < cap; i++) Py_XDECREF(slots[i].lane);
    PyMem_Free(slots);
}

static int LanePoll_traverse(LanePollObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_error);
    for (Py_ssize_t i = 0; i < self->cap; i++) Py_VISIT(self->slots[i].lane);
    return 0;
}

static int LanePoll_clear(LanePollObject *self) {
    poll_clear_slots(self);
    Py_CLEAR(self->on_error);
    return 0;
}

static void LanePoll_dealloc(LanePollObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->epfd >= 0) close(self->epfd);
    self->epfd = -1;
    LanePoll_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int poll_fd_arg(PyObject *arg, int *fd) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "LanePoll: a file descriptor must be >= 0");
        return -1;
    }
    *fd = (int)v;
    return 0;
}

/* add(fd, lane): lane.readable() is called whenever fd is readable (a lane already there for fd is replaced). */
static PyObject *LanePoll_add(LanePollObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(fd, lane)");
        return NULL;
    }
    int fd;
    if (poll_fd_arg(args[0], &fd) < 0) return NULL;
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "LanePoll is closed");
        return NULL;
    }
    if (fd >= self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 64;
        while (cap <= fd) cap *= 2;
        PollSlot *grown = PyMem_Realloc(self->slots, (size_t)cap * sizeof(PollSlot));
        if (grown == NULL) return PyErr_NoMemory();
        memset(grown + self->cap, 0, (size_t)(cap - self->cap) * sizeof(PollSlot));
        self->slots = grown;
        self->cap = cap;
    }
    PollSlot *slot = &self->slots[fd];
    uint32_t gen = ++self->next_gen;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = poll_key(fd, gen)};
    if (epoll_ctl(self->epfd, slot->lane != NULL ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *old = slot->lane;
    slot->lane = Py_NewRef(args[1]);
    slot->gen = gen;
    if (old == NULL) self->n++;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* discard(fd): no longer (call it before closing fd); nothing when fd is not in the set or the poll is closed. */
static PyObject *LanePoll_discard(LanePollObject *self, PyObject *arg) {
    int fd;
    if (poll_fd_arg(arg, &fd) < 0) return NULL;
    if (fd >= self->cap || self->slots[fd].lane == NULL) Py_RETURN_NONE;
    PyObject *lane = self->slots[fd].lane;
    self->slots[fd].lane = NULL;
    self->n--;
    int failed = self->epfd >= 0 && epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != ENOENT;
    int err = errno;
    Py_DECREF(lane);
    if (failed) { /* EBADF: fd was closed before discard(): its events can no longer be taken out */
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* The lane raised (the exception is set): on_error(lane, exc). 0, or -1 with an exception to propagate
 * (a BaseException that is not an Exception, e.g. KeyboardInterrupt, or on_error's own failure). */
static int poll_lane_failed(LanePollObject *self, PyObject *lane) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
    PyObject *on_error = self->on_error != NULL ? Py_NewRef(self->on_error) : NULL;
    PyObject *r = on_error != NULL && value != NULL ? PyObject_CallFunctionObjArgs(on_error, lane, value, NULL)
                                                    : Py_NewRef(Py_None);
    Py_XDECREF(on_error);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* run(): the loop's reader callback for fileno(): call readable() of every lane whose descriptor is readable. */
static PyObject *LanePoll_run(LanePollObject *self, PyObject *unused) {
    struct epoll_event events[POLL_BATCH]; /* (on the stack: a callback may even run() again) */
    PyObject *failure_type = NULL, *failure_value = NULL, *failure_tb = NULL; /* on_error's first failure */
    self->runs++;
    Py_INCREF(self); /* (a callback may drop the owner's last reference to the poll) */
    for (int round = 0; round < POLL_ROUNDS && self->epfd >= 0; round++) {
        int n = epoll_wait(self->epfd, events, POLL_BATCH, 0);
        if (n < 0) {
            if (errno == EINTR) break;
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            int fd = (int)(uint32_t)events[i].data.u64;
            uint32_t gen = (uint32_t)(events[i].data.u64 >> 32);
            /* the table is read again for every event: a callback may have discarded, added or closed */
            if (fd >= self->cap || self->slots[fd].lane == NULL || self->slots[fd].gen != gen) continue;
            PyObject *lane = Py_NewRef(self->slots[fd].lane); /* (it may be discarded during its call) */
            self->reads++;
            PyObject *r = native_lane_readable(lane);
            if (r != NULL) {
                Py_DECREF(r);
            } else if (poll_lane_failed(self, lane) < 0) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) { /* KeyboardInterrupt, SystemExit: at once */
                    Py_DECREF(lane);
                    goto fail;
                }
                if (failure_type == NULL) {
                    PyErr_Fetch(&failure_type, &failure_value, &failure_tb);
                } else {
                    PyErr_WriteUnraisable(self->on_error);
                }
            }
            Py_DECREF(lane);
        }
        if (n < POLL_BATCH) break;
    }
    Py_DECREF(self);
    if (failure_type != NULL) { /* the loop's exception handler reports it; the poll stays */
        PyErr_Restore(failure_type, failure_value, failure_tb);
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    Py_DECREF(self);
    Py_XDECREF(failure_type);
    Py_XDECREF(failure_value);
    Py_XDECREF(failure_tb);
    return NULL;
}

static PyObject *LanePoll_fileno(LanePollObject *self, PyObject *unused) { return PyLong_FromLong(self->epfd); }

/* close(): the epoll descriptor is closed and every lane let go; then add() fails, discard() and run() do nothing. */
static PyObject *LanePoll_close(LanePollObject *self, PyObject *unused) {
    int epfd = self->epfd;
    self->epfd = -1;
    poll_clear_slots(self);
    if (epfd >= 0 && close(epfd) < 0 && errno != EINTR) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *LanePoll_contains_fd(LanePollObject *self, PyObject *arg) {
    int fd;
    if (poll_fd_arg(arg, &fd) < 0) return NULL;
    return PyBool_FromLong(fd < self->cap && self->slots[fd].lane != NULL);
}

static Py_ssize_t LanePoll_len(LanePollObject *self) { return self->n; }

static PyObject *LanePoll_get_closed(LanePollObject *self, void *closure) { return PyBool_FromLong(self->epfd < 0); }

static PyMemberDef LanePoll_members[] = {
    {"runs", T_LONGLONG, offsetof(LanePollObject, runs), READONLY, "run() calls"},
    {"reads", T_LONGLONG, offsetof(LanePollObject, reads), READONLY, "lanes run() called readable() of"},
    {NULL},
};

static PyGetSetDef LanePoll_getset[] = {
    {"closed", (getter)LanePoll_get_closed, NULL, "close() was called", NULL},
    {NULL},
};

static PyMethodDef LanePoll_methods[] = {
    {"fileno", (PyCFunction)LanePoll_fileno, METH_NOARGS,
     PyDoc_STR("fileno() -> int: the epoll descriptor the loop watches (add_reader(fileno(), run)); -1 once closed.")},
    {"add", (PyCFunction)(void (*)(void))LanePoll_add, METH_FASTCALL,
     PyDoc_STR("add(fd, lane): lane.readable() whenever fd is readable (replaces a lane already there for fd).")},
    {"discard", (PyCFunction)LanePoll_discard, METH_O,
     PyDoc_STR("discard(fd): no longer; call it before closing fd (nothing if fd is not in the set).")},
    {"run", (PyCFunction)LanePoll_run, METH_NOARGS,
     PyDoc_STR("run(): the loop's reader callback: readable() of each lane whose descriptor is readable "
               "(a bounded number of them); a lane's exception goes to on_error(lane, exc).")},
    {"close", (PyCFunction)LanePoll_close, METH_NOARGS,
     PyDoc_STR("close(): close the epoll descriptor and let every lane go.")},
    {"watches", (PyCFunction)LanePoll_contains_fd, METH_O, PyDoc_STR("watches(fd) -> bool: fd is in the set.")},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods LanePoll_as_sequence = {.sq_length = (lenfunc)LanePoll_len};

static PyTypeObject LanePollType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.LanePoll",
    .tp_doc = PyDoc_STR("LanePoll(on_error): one epoll descriptor for the armed PublishLanes of a server; "
                        "on_error(lane, exc) gets what a lane's readable() raised."),
    .tp_basicsize = sizeof(LanePollObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = LanePoll_new,
    .tp_init = (initproc)LanePoll_init,
    .tp_dealloc = (destructor)LanePoll_dealloc,
    .tp_traverse = (traverseproc)LanePoll_traverse,
    .tp_clear = (inquiry)LanePoll_clear,
    .tp_members = LanePoll_members,
    .tp_getset = LanePoll_getset,
    .tp_methods = LanePoll_methods,
    .tp_as_sequence = &LanePoll_as_sequence,
};

int native_init_poll(PyObject *module) {
    if (PyType_Ready(&LanePollType) < 0) return -1;
    return PyModule_AddObjectRef(module, "LanePoll", (PyObject *)&LanePollType);
}

#else /* no epoll: no LanePoll (accel.LanePoll is None, the lanes are the loop's readers one by one) */

int native_init_poll(PyObject *module) { return 0; }

#endif
