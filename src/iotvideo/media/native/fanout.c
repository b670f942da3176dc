/* Fan-out of a stream's frames to its RTMP players in C.
 *
 * Twins (same behaviour, same bytes) of rtmp/chunk.py ``ChunkWriter`` and ``SharedMessage`` and of
 * timeline.py ``Timeline``, plus two types with no Python twin that replace the per-player
 * Python work of a frame:
 *   RtmpOut  one player's direct delivery (what rtmp_server.py's ``take`` closure does in Python);
 *   Fanout   a hub's set of players fed directly: one call per frame writes it to all of them.
 * Everything runs on the event loop's thread with the GIL held. */
#include "native.h"
#include <structmember.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL /* not on every platform; Python ignores SIGPIPE anyway */
#define MSG_NOSIGNAL 0
#endif

#define MAX_WHOLE 4        /* SharedMessage.MAX_HEADERS */
#define EXT_TS 0xFFFFFFu   /* a timestamp field at or above this goes in the extended field */
#define JUMP_BACK_MS 5000  /* timeline.JUMP_BACK_MS */
#define JUMP_AHEAD_MS 10000

/* --- chunk headers ------------------------------------------------------------------------- */

/* The 1-3 byte basic header; -1 (ValueError set) for a chunk stream id out of 2..65599. */
static int basic_header(uint8_t *out, int fmt, long csid) {
    if (csid >= 2 && csid <= 63) {
        out[0] = (uint8_t)((fmt << 6) | csid);
        return 1;
    }
    if (csid >= 64 && csid <= 319) {
        out[0] = (uint8_t)(fmt << 6);
        out[1] = (uint8_t)(csid - 64);
        return 2;
    }
    if (csid >= 320 && csid <= 65599) {
        out[0] = (uint8_t)((fmt << 6) | 1);
        out[1] = (uint8_t)((csid - 64) & 0xFF);
        out[2] = (uint8_t)((csid - 64) >> 8);
        return 3;
    }
    PyErr_Format(PyExc_ValueError, "chunk stream id %ld out of range 2..65599", csid);
    return -1;
}

static void put_be24(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 16);
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

typedef struct {
    long csid;
    int64_t stream_id; /* -1: none yet */
    int64_t length;
    int64_t type_id;
    uint32_t timestamp;
    int64_t delta; /* -1 after a type-0 header */
    uint8_t basic3[3];
    int basic3_len;
} OutStream;

/* --- SharedMessage ------------------------------------------------------------------------- */

typedef struct {
    int fmt;
    uint32_t field;
    int64_t stream_id;
    long size;
    PyObject *whole; /* bytes */
} WholeEntry;

typedef struct {
    PyObject_HEAD
    long csid;
    long type_id;
    PyObject *type_obj; /* what was given (an IntEnum member, say), returned by .type_id */
    PyObject *payload;  /* bytes: the payload after ``head`` */
    uint8_t head[NATIVE_MAX_HEAD]; /* the payload's first head_len bytes, when it came in two pieces */
    int head_len;
    Py_ssize_t length;  /* head_len + len(payload) */
    PyObject *tail;     /* everything after the first chunk header, cut with tail_size; or NULL */
    long tail_size;
    int n_whole;
    WholeEntry whole[MAX_WHOLE];
} SharedMessageObject;

static PyTypeObject SharedMessageType;

static int shared_message_set(SharedMessageObject *self, long csid, PyObject *type_obj, PyObject *payload);

static int SharedMessage_init(SharedMessageObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"csid", "type_id", "payload", NULL};
    long csid;
    PyObject *type_obj, *payload;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "lOO:SharedMessage", kwlist, &csid, &type_obj, &payload))
        return -1;
    return shared_message_set(self, csid, type_obj, payload);
}

static int shared_message_set(SharedMessageObject *self, long csid, PyObject *type_obj, PyObject *payload) {
    long type_id = PyLong_AsLong(type_obj);
    if (type_id == -1 && PyErr_Occurred()) return -1;
    PyObject *data;
    if (PyBytes_CheckExact(payload)) {
        data = Py_NewRef(payload);
    } else {
        data = PyBytes_FromObject(payload);
        if (data == NULL) return -1;
    }
    if (PyBytes_GET_SIZE(data) > 0xFFFFFF) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds the 24-bit length field", PyBytes_GET_SIZE(data));
        Py_DECREF(data);
        return -1;
    }
    Py_XSETREF(self->payload, data);
    Py_XSETREF(self->type_obj, Py_NewRef(type_obj));
    self->csid = csid;
    self->type_id = type_id;
    self->head_len = 0;
    self->length = PyBytes_GET_SIZE(data);
    Py_CLEAR(self->tail);
    self->tail_size = 0;
    for (int i = 0; i < self->n_whole; i++) Py_CLEAR(self->whole[i].whole);
    self->n_whole = 0;
    return 0;
}

static void SharedMessage_dealloc(SharedMessageObject *self) {
    Py_XDECREF(self->payload);
    Py_XDECREF(self->type_obj);
    Py_XDECREF(self->tail);
    for (int i = 0; i < self->n_whole; i++) Py_XDECREF(self->whole[i].whole);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *SharedMessage_get_type_id(SharedMessageObject *self, void *closure) {
    return Py_NewRef(self->type_obj);
}

/* A message's payload as its two pieces: the head (often none), then the rest. */
typedef struct {
    const char *p[2];
    Py_ssize_t n[2];
} Pieces;

static inline Pieces msg_pieces(const SharedMessageObject *m) {
    return (Pieces){{(const char *)m->head, PyBytes_AS_STRING(m->payload)}, {m->head_len, PyBytes_GET_SIZE(m->payload)}};
}

static inline Pieces one_piece(const char *p, Py_ssize_t n) { return (Pieces){{p, p}, {0, n}}; }

/* Copy bytes [off, off + len) of the pieces to ``out``. */
static void pieces_copy(const Pieces *s, Py_ssize_t off, Py_ssize_t len, char *out) {
    for (int k = 0; k < 2 && len > 0; k++) {
        if (off >= s->n[k]) {
            off -= s->n[k];
            continue;
        }
        Py_ssize_t take = s->n[k] - off < len ? s->n[k] - off : len;
        memcpy(out, s->p[k] + off, (size_t)take);
        out += take;
        len -= take;
        off = 0;
    }
}

static PyObject *SharedMessage_get_payload(SharedMessageObject *self, void *closure) {
    if (!self->head_len) return Py_NewRef(self->payload);
    PyObject *whole = PyBytes_FromStringAndSize(NULL, self->length);
    if (whole == NULL) return NULL;
    Pieces s = msg_pieces(self);
    pieces_copy(&s, 0, self->length, PyBytes_AS_STRING(whole));
    return whole;
}

static PyMemberDef SharedMessage_members[] = {
    {"csid", T_LONG, offsetof(SharedMessageObject, csid), READONLY, NULL},
    {"length", T_PYSSIZET, offsetof(SharedMessageObject, length), READONLY, NULL},
    {NULL},
};

static PyGetSetDef SharedMessage_getset[] = {
    {"type_id", (getter)SharedMessage_get_type_id, NULL, NULL, NULL},
    {"payload", (getter)SharedMessage_get_payload, NULL, "The message's bytes.", NULL},
    {NULL},
};

static PyTypeObject SharedMessageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.SharedMessage",
    .tp_doc = PyDoc_STR("One audio or video message sent to many connections (twin of rtmp/chunk.py SharedMessage)."),
    .tp_basicsize = sizeof(SharedMessageObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SharedMessage_init,
    .tp_dealloc = (destructor)SharedMessage_dealloc,
    .tp_members = SharedMessage_members,
    .tp_getset = SharedMessage_getset,
};

/* --- ChunkWriter --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    long chunk_size;
    int n_streams;
    int cap_streams;
    OutStream *streams;
} ChunkWriterObject;

static PyTypeObject ChunkWriterType;

static int ChunkWriter_init(ChunkWriterObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"chunk_size", NULL};
    long chunk_size = 128;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|l:ChunkWriter", kwlist, &chunk_size)) return -1;
    self->chunk_size = chunk_size;
    self->n_streams = 0;
    return 0;
}

static void ChunkWriter_dealloc(ChunkWriterObject *self) {
    PyMem_Free(self->streams);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static OutStream *writer_stream(ChunkWriterObject *self, long csid) {
    for (int i = 0; i < self->n_streams; i++)
        if (self->streams[i].csid == csid) return &self->streams[i];
    uint8_t basic3[3];
    int n = basic_header(basic3, 3, csid);
    if (n < 0) return NULL;
    if (self->n_streams == self->cap_streams) {
        int cap = self->cap_streams ? self->cap_streams * 2 : 8;
        OutStream *grown = PyMem_Realloc(self->streams, (size_t)cap * sizeof(OutStream));
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        self->streams = grown;
        self->cap_streams = cap;
    }
    OutStream *st = &self->streams[self->n_streams++];
    st->csid = csid;
    st->stream_id = -1;
    st->length = -1;
    st->type_id = -1;
    st->timestamp = 0;
    st->delta = -1;
    memcpy(st->basic3, basic3, 3);
    st->basic3_len = n;
    return st;
}

/* Choose the header format of a new message and record it as the chunk stream's last. */
static OutStream *writer_advance(ChunkWriterObject *self, long csid, long type_id, int64_t stream_id, uint32_t timestamp,
                                 int64_t length, int *fmt, uint32_t *field) {
    OutStream *st = writer_stream(self, csid);
    if (st == NULL) return NULL;
    if (st->stream_id != stream_id || timestamp < st->timestamp) {
        *fmt = 0;
        *field = timestamp;
    } else {
        *field = timestamp - st->timestamp;
        if (length != st->length || type_id != st->type_id)
            *fmt = 1;
        else if ((int64_t)*field == st->delta)
            *fmt = 3;
        else
            *fmt = 2;
    }
    st->stream_id = stream_id;
    st->length = length;
    st->type_id = type_id;
    st->timestamp = timestamp;
    st->delta = *fmt == 0 ? -1 : (int64_t)*field;
    return st;
}

/* The first chunk's header into out (at most 18 bytes); its length. */
static int writer_header(uint8_t *out, const OutStream *st, int fmt, uint32_t field, int64_t length, long type_id,
                         int64_t stream_id) {
    int ext = field >= EXT_TS;
    uint32_t f24 = ext ? EXT_TS : field;
    int n;
    if (fmt == 3) {
        memcpy(out, st->basic3, (size_t)st->basic3_len);
        n = st->basic3_len;
    } else {
        n = basic_header(out, fmt, st->csid); /* csid was checked when the stream was made */
        put_be24(out + n, f24);
        n += 3;
        if (fmt <= 1) {
            put_be24(out + n, (uint32_t)length);
            out[n + 3] = (uint8_t)type_id;
            n += 4;
        }
        if (fmt == 0) {
            uint32_t sid = (uint32_t)stream_id;
            out[n] = (uint8_t)sid;
            out[n + 1] = (uint8_t)(sid >> 8);
            out[n + 2] = (uint8_t)(sid >> 16);
            out[n + 3] = (uint8_t)(sid >> 24);
            n += 4;
        }
    }
    if (ext) {
        put_be32(out + n, field);
        n += 4;
    }
    return n;
}

/* header + the payload cut in chunks of chunk_size with type-3 continuation headers, as one bytes. */
static PyObject *writer_chunks(ChunkWriterObject *self, const OutStream *st, const uint8_t *header, int header_len,
                               uint32_t field, const Pieces *payload, Py_ssize_t length) {
    Py_ssize_t size = self->chunk_size;
    uint8_t cont[7];
    int cont_len = st->basic3_len;
    memcpy(cont, st->basic3, (size_t)cont_len);
    if (field >= EXT_TS) {
        put_be32(cont + cont_len, field);
        cont_len += 4;
    }
    Py_ssize_t n_cont = length > size ? (length - 1) / size : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, header_len + length + n_cont * cont_len);
    if (out == NULL) return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, header, (size_t)header_len);
    p += header_len;
    Py_ssize_t first = length < size ? length : size;
    pieces_copy(payload, 0, first, p);
    p += first;
    for (Py_ssize_t off = size; off < length; off += size) {
        memcpy(p, cont, (size_t)cont_len);
        p += cont_len;
        Py_ssize_t n = length - off < size ? length - off : size;
        pieces_copy(payload, off, n, p);
        p += n;
    }
    return out;
}

static int parse_u32_mask(PyObject *obj, uint32_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLongMask(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = (uint32_t)(v & 0xFFFFFFFFull);
    return 0;
}

static int check_stream_id(int64_t stream_id) {
    if (stream_id < 0 || stream_id > 0xFFFFFFFFll) {
        PyErr_SetString(PyExc_OverflowError, "message stream id out of range 0..2**32-1");
        return -1;
    }
    return 0;
}

static PyObject *ChunkWriter_write(ChunkWriterObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "write(csid, type_id, stream_id, timestamp, payload)");
        return NULL;
    }
    long csid = PyLong_AsLong(args[0]);
    if (csid == -1 && PyErr_Occurred()) return NULL;
    long type_id = PyLong_AsLong(args[1]);
    if (type_id == -1 && PyErr_Occurred()) return NULL;
    long long stream_id = PyLong_AsLongLong(args[2]);
    if (stream_id == -1 && PyErr_Occurred()) return NULL;
    uint32_t timestamp;
    if (parse_u32_mask(args[3], &timestamp) < 0) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *result = NULL;
    if (view.len > 0xFFFFFF) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds the 24-bit length field", view.len);
        goto done;
    }
    if (check_stream_id(stream_id) < 0) goto done;
    if (type_id < 0 || type_id > 255) {
        PyErr_SetString(PyExc_OverflowError, "message type id out of range 0..255");
        goto done;
    }
    int fmt;
    uint32_t field;
    OutStream *st = writer_advance(self, csid, type_id, stream_id, timestamp, view.len, &fmt, &field);
    if (st == NULL) goto done;
    uint8_t header[24];
    int header_len = writer_header(header, st, fmt, field, view.len, type_id, stream_id);
    Pieces one = one_piece(view.buf, view.len);
    result = writer_chunks(self, st, header, header_len, field, &one, view.len);
done:
    PyBuffer_Release(&view);
    return result;
}

/* write_shared: a new reference to the message's bytes for this writer (usually shared, built once). */
static PyObject *writer_shared(ChunkWriterObject *self, SharedMessageObject *msg, int64_t stream_id, uint32_t timestamp) {
    int fmt;
    uint32_t field;
    OutStream *st = writer_advance(self, msg->csid, msg->type_id, stream_id, timestamp, msg->length, &fmt, &field);
    if (st == NULL) return NULL;
    long size = self->chunk_size;
    for (int i = 0; i < msg->n_whole; i++) {
        WholeEntry *e = &msg->whole[i];
        if (e->fmt == fmt && e->field == field && e->stream_id == stream_id && e->size == size) return Py_NewRef(e->whole);
    }
    uint8_t header[24];
    int header_len = writer_header(header, st, fmt, field, msg->length, msg->type_id, stream_id);
    PyObject *whole;
    Pieces payload = msg_pieces(msg);
    if (field >= EXT_TS) { /* continuation chunks repeat the extended timestamp: nothing to share */
        whole = writer_chunks(self, st, header, header_len, field, &payload, msg->length);
    } else if (msg->tail != NULL && msg->tail_size == size) {
        Py_ssize_t tail_len = PyBytes_GET_SIZE(msg->tail);
        whole = PyBytes_FromStringAndSize(NULL, header_len + tail_len);
        if (whole != NULL) {
            memcpy(PyBytes_AS_STRING(whole), header, (size_t)header_len);
            memcpy(PyBytes_AS_STRING(whole) + header_len, PyBytes_AS_STRING(msg->tail), (size_t)tail_len);
        }
    } else {
        whole = writer_chunks(self, st, header, header_len, field, &payload, msg->length);
        if (whole != NULL) {
            PyObject *tail = PyBytes_FromStringAndSize(PyBytes_AS_STRING(whole) + header_len,
                                                       PyBytes_GET_SIZE(whole) - header_len);
            if (tail == NULL) {
                Py_DECREF(whole);
                return NULL;
            }
            Py_XSETREF(msg->tail, tail);
            msg->tail_size = size;
        }
    }
    if (whole == NULL) return NULL;
    if (msg->n_whole < MAX_WHOLE) {
        WholeEntry *e = &msg->whole[msg->n_whole++];
        e->fmt = fmt;
        e->field = field;
        e->stream_id = stream_id;
        e->size = size;
        e->whole = Py_NewRef(whole);
    }
    return whole;
}

static PyObject *ChunkWriter_write_shared(ChunkWriterObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "write_shared(msg: SharedMessage, stream_id, timestamp)");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &SharedMessageType)) { /* the Python twin's message: built here */
        PyObject *w[5] = {NULL, NULL, args[1], args[2], NULL};
        PyObject *result = NULL;
        if ((w[0] = PyObject_GetAttrString(args[0], "csid")) != NULL &&
            (w[1] = PyObject_GetAttrString(args[0], "type_id")) != NULL &&
            (w[4] = PyObject_GetAttrString(args[0], "payload")) != NULL)
            result = ChunkWriter_write(self, w, 5);
        Py_XDECREF(w[0]);
        Py_XDECREF(w[1]);
        Py_XDECREF(w[4]);
        return result;
    }
    long long stream_id = PyLong_AsLongLong(args[1]);
    if (stream_id == -1 && PyErr_Occurred()) return NULL;
    if (check_stream_id(stream_id) < 0) return NULL;
    uint32_t timestamp;
    if (parse_u32_mask(args[2], &timestamp) < 0) return NULL;
    return writer_shared(self, (SharedMessageObject *)args[0], stream_id, timestamp);
}

static PyObject *ChunkWriter_forget(ChunkWriterObject *self, PyObject *arg) {
    long csid = PyLong_AsLong(arg);
    if (csid == -1 && PyErr_Occurred()) return NULL;
    for (int i = 0; i < self->n_streams; i++) {
        if (self->streams[i].csid == csid) {
            self->streams[i] = self->streams[--self->n_streams];
            break;
        }
    }
    Py_RETURN_NONE;
}

static int ChunkWriter_set_chunk_size(ChunkWriterObject *self, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete chunk_size");
        return -1;
    }
    long v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 1) {
        PyErr_SetString(PyExc_ValueError, "chunk_size must be at least 1");
        return -1;
    }
    self->chunk_size = v;
    return 0;
}

static PyObject *ChunkWriter_get_chunk_size(ChunkWriterObject *self, void *closure) {
    return PyLong_FromLong(self->chunk_size);
}

static PyMethodDef ChunkWriter_methods[] = {
    {"write", (PyCFunction)(void (*)(void))ChunkWriter_write, METH_FASTCALL,
     PyDoc_STR("write(csid, type_id, stream_id, timestamp, payload) -> bytes: the chunks carrying one message.")},
    {"write_shared", (PyCFunction)(void (*)(void))ChunkWriter_write_shared, METH_FASTCALL,
     PyDoc_STR("write_shared(msg, stream_id, timestamp) -> bytes: write() of a SharedMessage, mostly without building.")},
    {"forget", (PyCFunction)ChunkWriter_forget, METH_O,
     PyDoc_STR("forget(csid): drop the header state of csid (its next message starts with a type-0 header).")},
    {NULL},
};

static PyGetSetDef ChunkWriter_getset[] = {
    {"chunk_size", (getter)ChunkWriter_get_chunk_size, (setter)ChunkWriter_set_chunk_size, NULL, NULL},
    {NULL},
};

static PyTypeObject ChunkWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.ChunkWriter",
    .tp_doc = PyDoc_STR("Splits messages into chunks with header compression (twin of rtmp/chunk.py ChunkWriter)."),
    .tp_basicsize = sizeof(ChunkWriterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ChunkWriter_init,
    .tp_dealloc = (destructor)ChunkWriter_dealloc,
    .tp_methods = ChunkWriter_methods,
    .tp_getset = ChunkWriter_getset,
};

/* --- Timeline ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int has_base;
    int64_t base;
    int64_t last;
} TimelineObject;

static PyTypeObject TimelineType;

static int64_t timeline_at(TimelineObject *self, int64_t dts, int is_config) {
    if (is_config) return self->last;
    if (!self->has_base) {
        self->has_base = 1;
        self->base = dts;
    }
    int64_t t = dts - self->base, last = self->last;
    if (t >= last) {
        if (t <= last + JUMP_AHEAD_MS) {
            self->last = t;
            return t;
        }
    } else if (t >= last - JUMP_BACK_MS) {
        return t > 0 ? t : 0;
    }
    self->base = dts - last; /* a jump in the source's clock: continue from the last time */
    return last;
}

static PyObject *str_dts, *str_is_config, *str_data, *str_is_closing, *str_get_write_buffer_size;

/* A frame's dts and is_config (MediaFrame attributes); -1 with an exception set on failure. */
static int frame_fields(PyObject *frame, int64_t *dts, int *is_config) {
    PyObject *v = PyObject_GetAttr(frame, str_is_config);
    if (v == NULL) return -1;
    int cfg = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (cfg < 0) return -1;
    *is_config = cfg;
    if (cfg) return 0; /* a configuration takes the last time: its dts does not matter */
    v = PyObject_GetAttr(frame, str_dts);
    if (v == NULL) return -1;
    long long d = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (d == -1 && PyErr_Occurred()) return -1;
    *dts = d;
    return 0;
}

static PyObject *Timeline_at(TimelineObject *self, PyObject *frame) {
    int64_t dts = 0;
    int is_config;
    if (frame_fields(frame, &dts, &is_config) < 0) return NULL;
    return PyLong_FromLongLong(timeline_at(self, dts, is_config));
}

static PyObject *Timeline_get_base(TimelineObject *self, void *closure) {
    if (!self->has_base) Py_RETURN_NONE;
    return PyLong_FromLongLong(self->base);
}

static PyObject *Timeline_get_last(TimelineObject *self, void *closure) { return PyLong_FromLongLong(self->last); }

static PyMethodDef Timeline_methods[] = {
    {"at", (PyCFunction)Timeline_at, METH_O, PyDoc_STR("at(frame) -> int: the frame's time on this player's timeline.")},
    {NULL},
};

static PyGetSetDef Timeline_getset[] = {
    {"base", (getter)Timeline_get_base, NULL, NULL, NULL},
    {"last", (getter)Timeline_get_last, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject TimelineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.Timeline",
    .tp_doc = PyDoc_STR("A player's timestamps: the first media frame at 0, never jumping (twin of timeline.Timeline)."),
    .tp_basicsize = sizeof(TimelineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = Timeline_methods,
    .tp_getset = Timeline_getset,
};

/* --- RtmpOut ------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *write;      /* the transport's write */
    PyObject *pending;    /* the connection's list of queued output: a frame waits while it is not empty */
    ChunkWriterObject *writer;
    int64_t stream_id;
    TimelineObject *timeline;
    PyObject *message;    /* frame -> SharedMessage | None (shared by all players of a server) */
    char paused;          /* the socket's write buffer is above its high mark (T_BOOL: a char) */
    char closing;
    long long frames_out;
    long long bytes_out;
    /* direct sends: while the transport holds nothing unsent and is not closing, a message goes
     * to the socket with one sendmsg() of iovecs pointing into the shared payload: no bytes object
     * is built, nothing is copied in user space. Whatever the kernel does not take at once is handed
     * to the transport (which then owns the ordering until its buffer is empty again). */
    PyObject *transport;  /* or NULL: every message goes through write() */
    PyObject *is_closing; /* its bound methods */
    PyObject *get_write_buffer_size;
    int fd;
    /* RtmpOut: ``fd`` is its own duplicate of the socket's descriptor (closed when it starts closing),
     * so it never names another socket, whatever the transport does; and while ``known_empty`` holds
     * (set by a whole direct send; cleared by a write through the transport, here or by the owner)
     * the transport is not asked how it stands before each send. */
    char own_fd;
    char known_empty;
    long long direct_sends;
    int flv;              /* an FlvOut (same layout): writer, pending, stream_id unused */
    Py_ssize_t max_buffer; /* FlvOut: refused while the transport holds more than this */
} RtmpOutObject;

static PyTypeObject RtmpOutType, FlvOutType;

int native_dup_fd(int fd) { return fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0); }

static void out_close_fd(RtmpOutObject *self) {
    if (self->own_fd && self->fd >= 0) close(self->fd);
    self->fd = -1;
    self->own_fd = 0;
    self->known_empty = 0;
}

/* Direct sends go to ``fd`` (``own``: to a duplicate of it) while ``transport`` (its bound methods
 * kept) holds nothing; without a transport (None) or an fd (-1) every message goes through write(). */
static int out_set_transport(RtmpOutObject *self, PyObject *transport, int fd, int own) {
    Py_CLEAR(self->transport);
    Py_CLEAR(self->is_closing);
    Py_CLEAR(self->get_write_buffer_size);
    out_close_fd(self);
    if (transport == Py_None) return 0;
    if ((self->is_closing = PyObject_GetAttr(transport, str_is_closing)) == NULL) return -1;
    if ((self->get_write_buffer_size = PyObject_GetAttr(transport, str_get_write_buffer_size)) == NULL) return -1;
    self->transport = Py_NewRef(transport);
    if (own && fd >= 0) {
        fd = native_dup_fd(fd); /* -1 (out of descriptors, say): no direct sends */
        self->own_fd = fd >= 0;
    }
    self->fd = fd;
    return 0;
}

static int RtmpOut_init(RtmpOutObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"write", "pending", "writer", "stream_id", "timeline", "message", "transport", "fd", NULL};
    PyObject *write, *pending, *writer, *timeline, *message, *transport = Py_None;
    long long stream_id;
    int fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O!LO!O|$Oi:RtmpOut", kwlist, &write, &PyList_Type, &pending,
                                     &ChunkWriterType, &writer, &stream_id, &TimelineType, &timeline, &message,
                                     &transport, &fd))
        return -1;
    if (out_set_transport(self, fd >= 0 ? transport : Py_None, fd, 1) < 0) return -1;
    if (check_stream_id(stream_id) < 0) return -1;
    Py_XSETREF(self->write, Py_NewRef(write));
    Py_XSETREF(self->pending, Py_NewRef(pending));
    Py_XSETREF(self->writer, (ChunkWriterObject *)Py_NewRef(writer));
    Py_XSETREF(self->timeline, (TimelineObject *)Py_NewRef(timeline));
    Py_XSETREF(self->message, Py_NewRef(message));
    self->stream_id = stream_id;
    return 0;
}

static int RtmpOut_traverse(RtmpOutObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->write);
    Py_VISIT(self->pending);
    Py_VISIT(self->message);
    Py_VISIT(self->transport);
    Py_VISIT(self->is_closing);
    Py_VISIT(self->get_write_buffer_size);
    return 0;
}

static int RtmpOut_clear(RtmpOutObject *self) {
    Py_CLEAR(self->write);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->writer);
    Py_CLEAR(self->timeline);
    Py_CLEAR(self->message);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->is_closing);
    Py_CLEAR(self->get_write_buffer_size);
    out_close_fd(self);
    return 0;
}

static void RtmpOut_dealloc(RtmpOutObject *self) {
    PyObject_GC_UnTrack(self);
    RtmpOut_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Write msg (a SharedMessage or None) at dts now: 1 written, 0 refused (paused, closing, output queued
 * before it), -1 error. */
#define TRANSPORT_CLOSING (-2)

/* What the transport holds unsent (0: a direct send may go first), TRANSPORT_CLOSING, or -1 (error). */
static Py_ssize_t transport_buffered(RtmpOutObject *self) {
    PyObject *r = PyObject_CallNoArgs(self->is_closing);
    if (r == NULL) return -1;
    int closing = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (closing != 0) return closing < 0 ? -1 : TRANSPORT_CLOSING;
    r = PyObject_CallNoArgs(self->get_write_buffer_size);
    if (r == NULL) return -1;
    Py_ssize_t size = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return size;
}

/* One sendmsg() of ``n`` iovecs, never blocking: the bytes the kernel took (0 when it would block),
 * or -1 for a socket error (errno set; the transport will meet it too). */
static Py_ssize_t send_iov(int fd, struct iovec *iov, size_t n) {
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = n;
    for (;;) {
        ssize_t sent = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent >= 0) return sent;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
    }
}

#define MAX_IOV 1024

/* Send one message straight to the socket: its first chunk header, then the payload in chunk-size
 * pieces with continuation headers between them, by one sendmsg() of iovecs into the payload.
 * Returns the bytes the kernel took (all, part, or 0 when it would block), -1 for a socket error
 * (errno set; the transport will meet it too), -2 when the message needs more iovecs than allowed. */
static Py_ssize_t send_direct(int fd, const uint8_t *header, int header_len, const uint8_t *cont, int cont_len,
                              const Pieces *payload, Py_ssize_t length, long size) {
    struct iovec iov[MAX_IOV];
    int n = 0;
    iov[n].iov_base = (void *)header;
    iov[n++].iov_len = (size_t)header_len;
    int k = 0;             /* the piece at ``off`` */
    Py_ssize_t at = 0;     /* where piece k starts in the payload */
    for (Py_ssize_t off = 0; off < length; off += size) {
        if (n + 3 > MAX_IOV) return -2;
        if (off > 0) {
            iov[n].iov_base = (void *)cont;
            iov[n++].iov_len = (size_t)cont_len;
        }
        Py_ssize_t end = length - off < size ? length : off + size;
        for (Py_ssize_t pos = off; pos < end;) { /* this chunk's bytes: from one piece or two */
            while (pos >= at + payload->n[k]) at += payload->n[k++];
            Py_ssize_t stop = at + payload->n[k] < end ? at + payload->n[k] : end;
            iov[n].iov_base = (void *)(payload->p[k] + (pos - at));
            iov[n++].iov_len = (size_t)(stop - pos);
            pos = stop;
        }
    }
    return send_iov(fd, iov, (size_t)n);
}

static int rtmpout_write(RtmpOutObject *self, PyObject *data) {
    self->known_empty = 0;
    PyObject *r = PyObject_CallOneArg(self->write, data);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* The message's bytes from offset ``skip`` on, through the transport (what a direct send left). */
static int rtmpout_write_rest(RtmpOutObject *self, const Pieces *payload, Py_ssize_t length, const OutStream *st,
                              const uint8_t *header, int header_len, uint32_t field, Py_ssize_t skip) {
    PyObject *whole = writer_chunks(self->writer, st, header, header_len, field, payload, length);
    if (whole == NULL) return -1;
    PyObject *rest = skip ? PyBytes_FromStringAndSize(PyBytes_AS_STRING(whole) + skip, PyBytes_GET_SIZE(whole) - skip)
                          : Py_NewRef(whole);
    Py_DECREF(whole);
    if (rest == NULL) return -1;
    int r = rtmpout_write(self, rest);
    Py_DECREF(rest);
    return r;
}

/* A direct send of the message (csid, type_id, payload) at dts, the transport known to hold nothing
 * (``known``: without asking it): 1 written (what the kernel did not take went to the transport), -1 error. */
static int rtmpout_send_direct(RtmpOutObject *self, int64_t dts, int is_config, long csid, long type_id,
                               const Pieces *payload, Py_ssize_t length, int known) {
    int64_t ts = timeline_at(self->timeline, dts, is_config);
    int fmt;
    uint32_t field;
    OutStream *st = writer_advance(self->writer, csid, type_id, self->stream_id, (uint32_t)ts, length, &fmt, &field);
    if (st == NULL) return -1;
    uint8_t header[24], cont[7];
    int header_len = writer_header(header, st, fmt, field, length, type_id, self->stream_id);
    int cont_len = st->basic3_len;
    memcpy(cont, st->basic3, (size_t)cont_len);
    if (field >= EXT_TS) {
        put_be32(cont + cont_len, field);
        cont_len += 4;
    }
    long size = self->writer->chunk_size;
    Py_ssize_t n_cont = length > size ? (length - 1) / size : 0;
    Py_ssize_t total = header_len + length + n_cont * cont_len;
    Py_ssize_t sent = send_direct(self->fd, header, header_len, cont, cont_len, payload, length, size);
    self->known_empty = sent == total;
    if (sent < 0 && known) { /* a socket error, unasked: a closing transport takes nothing more */
        Py_ssize_t buffered = transport_buffered(self);
        if (buffered == -1) return -1;
        if (buffered == TRANSPORT_CLOSING) return 1;
    }
    if (sent != total && rtmpout_write_rest(self, payload, length, st, header, header_len, field, sent > 0 ? sent : 0) < 0)
        return -1; /* a short send, a full socket or an error: the transport takes the rest (and the error) */
    if (sent > 0) self->direct_sends++;
    self->frames_out++;
    self->bytes_out += total;
    return 1;
}

static int flvout_send(RtmpOutObject *self, int64_t dts, int is_config, int is_video, PyObject *tail);

/* Whether an RtmpOut takes a message now (else it refuses: paused, closing, output queued before it). */
static inline int rtmpout_writing(const RtmpOutObject *self) {
    return !self->paused && !self->closing && self->write != NULL && PyList_GET_SIZE(self->pending) == 0;
}

/* Write the message (csid, type_id, payload) at dts, taken (rtmpout_writing): directly while the transport
 * holds nothing, else through write(); ``m`` (or NULL): the SharedMessage it is, whose chunked forms
 * players with the same chunk size share. 1 written, -1 error. */
static int rtmpout_put(RtmpOutObject *self, int64_t dts, int is_config, long csid, long type_id,
                       const Pieces *payload, Py_ssize_t length, SharedMessageObject *m) {
    if (self->transport != NULL && self->fd >= 0) {
        int known = self->known_empty;
        Py_ssize_t buffered = known ? 0 : transport_buffered(self);
        if (buffered == -1) return -1;
        if (buffered == 0) return rtmpout_send_direct(self, dts, is_config, csid, type_id, payload, length, known);
    }
    int64_t ts = timeline_at(self->timeline, dts, is_config);
    PyObject *data;
    if (m != NULL) {
        data = writer_shared(self->writer, m, self->stream_id, (uint32_t)ts);
    } else {
        int fmt;
        uint32_t field;
        OutStream *st = writer_advance(self->writer, csid, type_id, self->stream_id, (uint32_t)ts, length, &fmt, &field);
        if (st == NULL) return -1;
        uint8_t header[24];
        int header_len = writer_header(header, st, fmt, field, length, type_id, self->stream_id);
        data = writer_chunks(self->writer, st, header, header_len, field, payload, length);
    }
    if (data == NULL) return -1;
    PyObject *r = PyObject_CallOneArg(self->write, data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    Py_DECREF(data);
    if (r == NULL) return -1;
    Py_DECREF(r);
    self->frames_out++;
    self->bytes_out += n;
    return 1;
}

static int rtmpout_send(RtmpOutObject *self, int64_t dts, int is_config, int is_video, PyObject *msg) {
    if (self->flv) return flvout_send(self, dts, is_config, is_video, msg);
    if (!rtmpout_writing(self)) return 0;
    if (msg == Py_None) return 1; /* a frame RTMP cannot carry: nothing to write */
    if (!PyObject_TypeCheck(msg, &SharedMessageType)) {
        PyErr_SetString(PyExc_TypeError, "RtmpOut: message() must give a SharedMessage or None");
        return -1;
    }
    SharedMessageObject *m = (SharedMessageObject *)msg;
    Pieces payload = msg_pieces(m);
    return rtmpout_put(self, dts, is_config, m->csid, m->type_id, &payload, m->length, m);
}

/* --- FlvOut: an HTTP-FLV player (chunked transfer encoding), same layout as RtmpOut ------------ */

static PyObject *str_is_video, *FlvError; /* flvtags.FlvError, looked up on first use */

/* Send one frame as one HTTP chunk: "<size hex>\r\n", the 11-byte tag header (this player's time),
 * the shared tail (tag body + PreviousTagSize), "\r\n". 1 sent, 0 refused, -1 error. */
static int flvout_send(RtmpOutObject *self, int64_t dts, int is_config, int is_video, PyObject *tail) {
    if (self->paused || self->closing || self->write == NULL) return 0;
    if (tail == Py_None) return 1; /* a frame FLV cannot carry: skipped */
    if (!PyBytes_Check(tail) || PyBytes_GET_SIZE(tail) < 4 || PyBytes_GET_SIZE(tail) - 4 > 0xFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "FlvOut: tails() must give a tag body + PreviousTagSize under 16 MiB");
        return -1;
    }
    int idle = 0;
    if (self->transport != NULL) {
        Py_ssize_t buffered = transport_buffered(self);
        if (buffered == -1) return -1;
        if (buffered == TRANSPORT_CLOSING || buffered > self->max_buffer) return 0;
        idle = buffered == 0 && self->fd >= 0;
    }
    uint32_t ts = (uint32_t)timeline_at(self->timeline, dts, is_config);
    Py_ssize_t n = PyBytes_GET_SIZE(tail);
    uint8_t header[11];
    header[0] = is_video ? 9 : 8;
    put_be24(header + 1, (uint32_t)(n - 4));
    put_be24(header + 4, ts & 0xFFFFFF);
    header[7] = (uint8_t)(ts >> 24);
    header[8] = header[9] = header[10] = 0;
    char line[24];
    int line_len = snprintf(line, sizeof line, "%zx\r\n", (size_t)(11 + n));
    Py_ssize_t total = line_len + 11 + n + 2;
    Py_ssize_t sent = 0;
    if (idle) {
        struct iovec iov[4] = {{line, (size_t)line_len}, {header, 11}, {PyBytes_AS_STRING(tail), (size_t)n},
                               {"\r\n", 2}};
        sent = send_iov(self->fd, iov, 4);
        if (sent < 0) sent = 0; /* an error the transport will meet too */
        if (sent > 0) self->direct_sends++;
    }
    if (sent < total) { /* through the transport: all of it, or what the kernel did not take */
        PyObject *whole = PyBytes_FromStringAndSize(NULL, total - sent);
        if (whole == NULL) return -1;
        char *w = PyBytes_AS_STRING(whole);
        Py_ssize_t skip = sent;
        const struct { const char *p; Py_ssize_t len; } parts[4] = {
            {line, line_len}, {(const char *)header, 11}, {PyBytes_AS_STRING(tail), n}, {"\r\n", 2}};
        for (int k = 0; k < 4; k++) {
            Py_ssize_t from = skip < parts[k].len ? skip : parts[k].len;
            memcpy(w, parts[k].p + from, (size_t)(parts[k].len - from));
            w += parts[k].len - from;
            skip -= from;
        }
        int r = rtmpout_write(self, whole);
        Py_DECREF(whole);
        if (r < 0) return -1;
    }
    self->frames_out++;
    self->bytes_out += total;
    return 1;
}

static int frame_is_video(PyObject *frame) {
    PyObject *v = PyObject_GetAttr(frame, str_is_video);
    if (v == NULL) return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static int FlvOut_init(RtmpOutObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"write", "timeline", "tails", "transport", "fd", "max_buffer", NULL};
    PyObject *write, *timeline, *tails, *transport = Py_None;
    int fd = -1;
    Py_ssize_t max_buffer = 1 << 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O|$Oin:FlvOut", kwlist, &write, &TimelineType, &timeline, &tails,
                                     &transport, &fd, &max_buffer))
        return -1;
    if (out_set_transport(self, transport, fd, 0) < 0) return -1;
    self->flv = 1;
    self->max_buffer = max_buffer;
    Py_XSETREF(self->write, Py_NewRef(write));
    Py_XSETREF(self->timeline, (TimelineObject *)Py_NewRef(timeline));
    Py_XSETREF(self->message, Py_NewRef(tails));
    return 0;
}

/* FlvOut(frame) -> bool, as Subscription.deliver_to expects; a frame FLV cannot carry is skipped. */
static PyObject *FlvOut_call(RtmpOutObject *self, PyObject *args, PyObject *kwds) {
    PyObject *frame;
    if (!PyArg_ParseTuple(args, "O:FlvOut", &frame)) return NULL;
    if (self->paused || self->closing || self->write == NULL) Py_RETURN_FALSE;
    int64_t dts = 0;
    int is_config;
    if (frame_fields(frame, &dts, &is_config) < 0) return NULL;
    int is_video = frame_is_video(frame);
    if (is_video < 0) return NULL;
    PyObject *tail = PyObject_CallOneArg(self->message, frame);
    if (tail == NULL) {
        if (FlvError == NULL) { /* looked up once, keeping the exception being handled */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *m = PyImport_ImportModule("iotvideo.media.flvtags");
            if (m != NULL) {
                FlvError = PyObject_GetAttrString(m, "FlvError");
                Py_DECREF(m);
            }
            PyErr_Clear();
            PyErr_Restore(type, value, tb);
        }
        if (FlvError != NULL && PyErr_ExceptionMatches(FlvError)) {
            PyErr_Clear();
            Py_RETURN_TRUE;
        }
        return NULL;
    }
    int ok = flvout_send(self, dts, is_config, is_video, tail);
    Py_DECREF(tail);
    if (ok < 0) return NULL;
    return PyBool_FromLong(ok);
}

/* take(frame) -> bool, as Subscription.deliver_to expects. */
static PyObject *RtmpOut_call(RtmpOutObject *self, PyObject *args, PyObject *kwds) {
    PyObject *frame;
    if (!PyArg_ParseTuple(args, "O:RtmpOut", &frame)) return NULL;
    if (self->paused || self->closing || self->write == NULL || PyList_GET_SIZE(self->pending) != 0) Py_RETURN_FALSE;
    int64_t dts = 0;
    int is_config;
    if (frame_fields(frame, &dts, &is_config) < 0) return NULL;
    PyObject *msg = PyObject_CallOneArg(self->message, frame);
    if (msg == NULL) return NULL;
    int ok = rtmpout_send(self, dts, is_config, 0, msg);
    Py_DECREF(msg);
    if (ok < 0) return NULL;
    return PyBool_FromLong(ok);
}

static PyMemberDef RtmpOut_members[] = {
    {"paused", T_BOOL, offsetof(RtmpOutObject, paused), 0, "the socket is full: frames are refused (queued)"},
    {"known_empty", T_BOOL, offsetof(RtmpOutObject, known_empty), 0,
     "the transport holds nothing unsent (set by direct sends): whoever else writes to it sets this False"},
    {"frames_out", T_LONGLONG, offsetof(RtmpOutObject, frames_out), READONLY, NULL},
    {"bytes_out", T_LONGLONG, offsetof(RtmpOutObject, bytes_out), READONLY, NULL},
    {"stream_id", T_LONGLONG, offsetof(RtmpOutObject, stream_id), READONLY, NULL},
    {"direct_sends", T_LONGLONG, offsetof(RtmpOutObject, direct_sends), READONLY,
     "messages that went (at least partly) straight to the socket"},
    {NULL},
};

static PyObject *RtmpOut_get_closing(RtmpOutObject *self, void *closure) { return PyBool_FromLong(self->closing); }

static int RtmpOut_set_closing(RtmpOutObject *self, PyObject *value, void *closure) {
    int v = value == NULL ? 0 : PyObject_IsTrue(value);
    if (v < 0) return -1;
    self->closing = (char)v;
    if (v) out_close_fd(self); /* (nothing more goes straight to the socket) */
    return 0;
}

static PyGetSetDef RtmpOut_getset[] = {
    {"closing", (getter)RtmpOut_get_closing, (setter)RtmpOut_set_closing,
     "the connection is closing: frames are refused (and the out's descriptor is let go)", NULL},
    {NULL},
};

static PyTypeObject RtmpOutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.RtmpOut",
    .tp_doc = PyDoc_STR("RtmpOut(write, pending, writer, stream_id, timeline, message, *, transport=None, fd=-1): "
                        "one RTMP player's direct delivery; call it with a frame (True: sent, False: refused, "
                        "queue it). With a transport and its socket's fd, messages go straight to the socket "
                        "while the transport holds nothing unsent."),
    .tp_basicsize = sizeof(RtmpOutObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RtmpOut_init,
    .tp_dealloc = (destructor)RtmpOut_dealloc,
    .tp_traverse = (traverseproc)RtmpOut_traverse,
    .tp_clear = (inquiry)RtmpOut_clear,
    .tp_call = (ternaryfunc)RtmpOut_call,
    .tp_members = RtmpOut_members,
    .tp_getset = RtmpOut_getset,
};

static PyTypeObject FlvOutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.FlvOut",
    .tp_doc = PyDoc_STR("FlvOut(write, timeline, tails, *, transport=None, fd=-1, max_buffer=1 MiB): one HTTP-FLV "
                        "player's direct delivery (a chunked response body): call it with a frame (True: sent or "
                        "skipped, False: refused, queue it). Frames go straight to the socket while the transport "
                        "holds nothing; refused while it holds more than max_buffer."),
    .tp_basicsize = sizeof(RtmpOutObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlvOut_init,
    .tp_dealloc = (destructor)RtmpOut_dealloc,
    .tp_traverse = (traverseproc)RtmpOut_traverse,
    .tp_clear = (inquiry)RtmpOut_clear,
    .tp_call = (ternaryfunc)FlvOut_call,
    .tp_members = RtmpOut_members,
    .tp_getset = RtmpOut_getset,
};

/* --- Fanout -------------------------------------------------------------------------------- */

typedef struct {
    PyObject *sub;      /* the hub's Subscription */
    RtmpOutObject *out;
    Py_ssize_t max_bytes; /* a larger frame is refused (the subscription's queue bound applies) */
    int dead;             /* discarded during a send: removed when it ends */
} FanEntry;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;
    FanEntry *entries;
    unsigned long long version; /* changes whenever the membership does */
    int sending;
} FanoutObject;

static PyTypeObject FanoutType;

static int Fanout_traverse(FanoutObject *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_VISIT(self->entries[i].sub);
        Py_VISIT((PyObject *)self->entries[i].out);
    }
    return 0;
}

static void fanout_clear_entries(FanoutObject *self) {
    Py_ssize_t n = self->n;
    FanEntry *e = self->entries;
    self->n = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(e[i].sub);
        Py_DECREF((PyObject *)e[i].out);
    }
}

static int Fanout_clear(FanoutObject *self) {
    fanout_clear_entries(self);
    self->version++;
    return 0;
}

static void Fanout_dealloc(FanoutObject *self) {
    PyObject_GC_UnTrack(self);
    fanout_clear_entries(self);
    PyMem_Free(self->entries);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t fanout_find(FanoutObject *self, PyObject *sub) {
    for (Py_ssize_t i = 0; i < self->n; i++)
        if (self->entries[i].sub == sub && !self->entries[i].dead) return i;
    return -1;
}

static void fanout_remove_at(FanoutObject *self, Py_ssize_t i) {
    FanEntry e = self->entries[i];
    memmove(&self->entries[i], &self->entries[i + 1], (size_t)(self->n - i - 1) * sizeof(FanEntry));
    self->n--;
    self->version++;
    Py_DECREF(e.sub);
    Py_DECREF((PyObject *)e.out);
}

static PyObject *Fanout_add(FanoutObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !(PyObject_TypeCheck(args[1], &RtmpOutType) || PyObject_TypeCheck(args[1], &FlvOutType))) {
        PyErr_SetString(PyExc_TypeError, "add(sub, out: RtmpOut | FlvOut, max_bytes)");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[2]);
    if (max_bytes == -1 && PyErr_Occurred()) return NULL;
    if (fanout_find(self, args[0]) >= 0) Py_RETURN_NONE;
    if (self->n == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 8;
        FanEntry *grown = PyMem_Realloc(self->entries, (size_t)cap * sizeof(FanEntry));
        if (grown == NULL) return PyErr_NoMemory();
        self->entries = grown;
        self->cap = cap;
    }
    FanEntry *e = &self->entries[self->n++];
    e->sub = Py_NewRef(args[0]);
    e->out = (RtmpOutObject *)Py_NewRef(args[1]);
    e->max_bytes = max_bytes;
    e->dead = 0;
    self->version++;
    Py_RETURN_NONE;
}

/* Remove entry i now, or (during a send, whose loop holds indexes) mark it and remove it when the send ends. */
static void fanout_drop(FanoutObject *self, Py_ssize_t i) {
    if (self->sending) {
        self->entries[i].dead = 1;
        self->version++;
    } else {
        fanout_remove_at(self, i);
    }
}

static PyObject *Fanout_discard(FanoutObject *self, PyObject *sub) {
    Py_ssize_t i = fanout_find(self, sub);
    if (i >= 0) fanout_drop(self, i);
    Py_RETURN_NONE;
}

static PyObject *Fanout_clear_method(FanoutObject *self, PyObject *unused) {
    if (self->sending) {
        for (Py_ssize_t i = 0; i < self->n; i++) self->entries[i].dead = 1;
        self->version++;
    } else if (self->n) {
        Fanout_clear(self);
    }
    Py_RETURN_NONE;
}

/* Entry i refuses the frame being sent: its subscription goes to ``*refused`` (made on first use) and
 * it leaves the set when the send ends; unless it was discarded meanwhile (nobody to queue it for). */
static int fanout_refuse(FanoutObject *self, Py_ssize_t i, PyObject **refused) {
    if (self->entries[i].dead) return 0;
    if (*refused == NULL && (*refused = PyList_New(0)) == NULL) return -1;
    if (PyList_Append(*refused, self->entries[i].sub) < 0) return -1;
    self->entries[i].dead = 1;
    return 0;
}

/* A send ends: (its result, ``refused``, released) the entries marked meanwhile leave. */
static PyObject *fanout_end_send(FanoutObject *self, PyObject *result, PyObject *refused) {
    self->sending = 0;
    for (Py_ssize_t i = self->n - 1; i >= 0; i--)
        if (self->entries[i].dead) fanout_remove_at(self, i);
    Py_XDECREF(refused);
    return result;
}

/* Send ``frame`` (at ``dts``, ``size`` bytes of data) to every member: the list of the subscriptions
 * that refused it (removed from the set), or None. Members whose message() is ``fn`` get ``msg``
 * without calling it (``fn`` NULL: every message() is called). A media frame only (not a
 * configuration): the hub hands configurations to every subscription. */
PyObject *native_fanout_send(PyObject *fan, PyObject *frame, int64_t dts, int is_config, Py_ssize_t size, PyObject *fn,
                             PyObject *msg) {
    FanoutObject *self = (FanoutObject *)fan;
    if (self->sending) {
        PyErr_SetString(PyExc_RuntimeError, "Fanout.send is not reentrant");
        return NULL;
    }
    PyObject *refused = NULL;
    PyObject *last_fn = NULL, *last_msg = NULL; /* message() of the previous player, usually everyone's */
    if (fn != NULL) {
        last_fn = Py_NewRef(fn);
        last_msg = Py_NewRef(msg);
    }
    int is_video = -1;                          /* asked of the frame when an FlvOut needs it */
    PyObject *result = NULL;
    self->sending = 1;
    /* members are addressed by index and re-read after every call out: a write may run Python code
     * (pause_writing) that adds or discards members; discarded ones are only marked until the end */
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (self->entries[i].dead) continue;
        RtmpOutObject *out = self->entries[i].out;
        int ok = 0;
        if (size <= self->entries[i].max_bytes && !out->paused && !out->closing && out->write != NULL &&
            (out->pending == NULL || PyList_GET_SIZE(out->pending) == 0)) {
            if (out->flv && is_video < 0 && (is_video = frame_is_video(frame)) < 0) {
                PyErr_WriteUnraisable(frame);
                goto refuse;
            }
            if (out->message != last_fn) {
                PyObject *msg = PyObject_CallOneArg(out->message, frame);
                if (msg == NULL) { /* its message() failed: reported, and it refuses the frame */
                    PyErr_WriteUnraisable(out->message);
                    Py_CLEAR(last_fn);
                    Py_CLEAR(last_msg);
                    goto refuse;
                }
                Py_XSETREF(last_msg, msg);
                Py_XSETREF(last_fn, Py_NewRef(out->message));
            }
            Py_INCREF(out);
            ok = rtmpout_send(out, dts, is_config, is_video, last_msg);
            Py_DECREF(out);
            if (ok < 0) {
                /* this player's transport raised: reported here, and it leaves the set like a refusal
                 * (the subscription queues the frame; its consumer meets the failure itself) */
                PyErr_WriteUnraisable(frame);
                ok = 0;
            }
        }
        if (ok) continue;
    refuse:
        if (fanout_refuse(self, i, &refused) < 0) goto error;
    }
    result = refused != NULL ? Py_NewRef(refused) : Py_NewRef(Py_None);
error:
    Py_XDECREF(last_fn);
    Py_XDECREF(last_msg);
    return fanout_end_send(self, result, refused);
}

/* Whether every member takes a media frame with ``size`` bytes of data now, so that
 * native_fanout_send_plain may send it without a frame object: an RtmpOut whose message() is ``fn``,
 * writing, the frame within its bound. */
static int plain_member(const FanEntry *e, Py_ssize_t size, PyObject *fn) {
    return !e->dead && !e->out->flv && e->out->message == fn && size <= e->max_bytes && rtmpout_writing(e->out);
}

int native_fanout_plain_ok(PyObject *fan, Py_ssize_t size, PyObject *fn) {
    FanoutObject *self = (FanoutObject *)fan;
    if (self->sending) return 0;
    for (Py_ssize_t i = 0; i < self->n; i++)
        if (!plain_member(&self->entries[i], size, fn)) return 0;
    return 1;
}

/* The media frame at ``dts`` whose RTMP message (csid, type_id) is p[0:n], to every member, when
 * native_fanout_plain_ok(fan, size, fn) said so just before: as native_fanout_send (the list of the
 * subscriptions that refused it, or None: a write to one player may have changed another, or failed),
 * but from the bytes given. */
PyObject *native_fanout_send_plain(PyObject *fan, int64_t dts, Py_ssize_t size, PyObject *fn, long csid, long type_id,
                                   const uint8_t *p, Py_ssize_t n) {
    FanoutObject *self = (FanoutObject *)fan;
    if (self->sending) {
        PyErr_SetString(PyExc_RuntimeError, "Fanout.send is not reentrant");
        return NULL;
    }
    Pieces payload = one_piece((const char *)p, n);
    PyObject *refused = NULL;
    self->sending = 1;
    /* (by index, re-read after every call: a write may run Python code that adds or discards members) */
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (self->entries[i].dead) continue;
        if (plain_member(&self->entries[i], size, fn)) { /* (else changed by a write before: it refuses) */
            RtmpOutObject *out = (RtmpOutObject *)Py_NewRef(self->entries[i].out);
            int ok = rtmpout_put(out, dts, 0, csid, type_id, &payload, n, NULL);
            Py_DECREF(out);
            if (ok >= 0) continue;
            PyErr_WriteUnraisable(fan); /* its transport raised: it leaves the set like a refusal */
        }
        if (fanout_refuse(self, i, &refused) < 0) return fanout_end_send(self, NULL, refused);
    }
    return fanout_end_send(self, refused != NULL ? Py_NewRef(refused) : Py_NewRef(Py_None), refused);
}

/* send(frame): native_fanout_send with the frame's own fields. */
static PyObject *Fanout_send(FanoutObject *self, PyObject *frame) {
    int64_t dts = 0;
    int is_config;
    if (frame_fields(frame, &dts, &is_config) < 0) return NULL;
    PyObject *data = PyObject_GetAttr(frame, str_data);
    if (data == NULL) return NULL;
    Py_ssize_t size = PyObject_Length(data);
    Py_DECREF(data);
    if (size < 0) return NULL;
    return native_fanout_send((PyObject *)self, frame, dts, is_config, size, NULL, NULL);
}

int native_is_fanout(PyObject *obj) { return PyObject_TypeCheck(obj, &FanoutType); }

unsigned long long native_fanout_version(PyObject *fan) { return ((FanoutObject *)fan)->version; }

PyObject *native_shared_message_split(long csid, PyObject *type_id, const uint8_t *head, int head_len, PyObject *body) {
    if (head_len < 0 || head_len > NATIVE_MAX_HEAD || !PyBytes_CheckExact(body)) {
        PyErr_SetString(PyExc_ValueError, "SharedMessage: a head of at most 16 bytes and a bytes body");
        return NULL;
    }
    if (PyBytes_GET_SIZE(body) > 0xFFFFFF - head_len) {
        PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds the 24-bit length field", PyBytes_GET_SIZE(body) + head_len);
        return NULL;
    }
    SharedMessageObject *msg = (SharedMessageObject *)PyType_GenericNew(&SharedMessageType, NULL, NULL);
    if (msg == NULL) return NULL;
    long type = PyLong_AsLong(type_id);
    if (type == -1 && PyErr_Occurred()) {
        Py_DECREF(msg);
        return NULL;
    }
    msg->csid = csid;
    msg->type_id = type;
    msg->type_obj = Py_NewRef(type_id);
    msg->payload = Py_NewRef(body);
    memcpy(msg->head, head, (size_t)head_len);
    msg->head_len = head_len;
    msg->length = head_len + PyBytes_GET_SIZE(body);
    return (PyObject *)msg;
}

static Py_ssize_t Fanout_len(FanoutObject *self) { return self->n; }

static int Fanout_contains(FanoutObject *self, PyObject *sub) { return fanout_find(self, sub) >= 0; }

static PyObject *Fanout_get_version(FanoutObject *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->version);
}

static PyMethodDef Fanout_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Fanout_add, METH_FASTCALL,
     PyDoc_STR("add(sub, out, max_bytes): feed sub's frames to out directly from now on.")},
    {"discard", (PyCFunction)Fanout_discard, METH_O, PyDoc_STR("discard(sub): no longer fed from here.")},
    {"clear", (PyCFunction)Fanout_clear_method, METH_NOARGS, PyDoc_STR("clear(): nobody is fed from here.")},
    {"send", (PyCFunction)Fanout_send, METH_O,
     PyDoc_STR("send(frame) -> list | None: write a media frame to every member; those that refused it "
               "(socket full, closing, frame over their bound, a failure) leave and are returned.")},
    {NULL},
};

static PyGetSetDef Fanout_getset[] = {
    {"version", (getter)Fanout_get_version, NULL, PyDoc_STR("changes whenever the membership does"), NULL},
    {NULL},
};

static PySequenceMethods Fanout_as_sequence = {
    .sq_length = (lenfunc)Fanout_len,
    .sq_contains = (objobjproc)Fanout_contains,
};

static PyTypeObject FanoutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.Fanout",
    .tp_doc = PyDoc_STR("A hub's subscriptions fed directly: send(frame) writes it to each member's RtmpOut."),
    .tp_basicsize = sizeof(FanoutObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Fanout_dealloc,
    .tp_traverse = (traverseproc)Fanout_traverse,
    .tp_clear = (inquiry)Fanout_clear,
    .tp_methods = Fanout_methods,
    .tp_getset = Fanout_getset,
    .tp_as_sequence = &Fanout_as_sequence,
};

/* --- module -------------------------------------------------------------------------------- */

int native_init_fanout(PyObject *module) {
    if ((str_dts = PyUnicode_InternFromString("dts")) == NULL) return -1;
    if ((str_is_config = PyUnicode_InternFromString("is_config")) == NULL) return -1;
    if ((str_data = PyUnicode_InternFromString("data")) == NULL) return -1;
    if ((str_is_closing = PyUnicode_InternFromString("is_closing")) == NULL) return -1;
    if ((str_get_write_buffer_size = PyUnicode_InternFromString("get_write_buffer_size")) == NULL) return -1;
    if ((str_is_video = PyUnicode_InternFromString("is_video")) == NULL) return -1;
    PyTypeObject *types[] = {&SharedMessageType, &ChunkWriterType, &TimelineType, &RtmpOutType, &FlvOutType, &FanoutType};
    const char *names[] = {"SharedMessage", "ChunkWriter", "Timeline", "RtmpOut", "FlvOut", "Fanout"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) return -1;
        if (PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0) return -1;
    }
    return 0;
}
