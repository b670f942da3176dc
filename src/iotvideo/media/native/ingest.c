/* The RTMP chunk reader and FLV tag parsing in C (twins of rtmp/chunk.py ChunkReader and flvtags.py).
 *
 * ChunkReader reads chunk by chunk exactly as the Python reader's general path does (same state,
 * same messages, same ChunkError conditions and texts); parse_video_tag/parse_audio_tag return
 * what flvtags returns, and call the Python functions for inputs they do not take themselves
 * (not exact bytes/int arguments, huge timestamps). The Python classes they build or raise
 * (RawMessage, ChunkError, MediaFrame, Codec, FlvError, UnsupportedCodec) are looked up once, on
 * first use; the slotted dataclasses are built by filling their slots (no __init__ call).
 * Every length read from the wire is checked against what was read before it is used. */
#include "native.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* ---- the Python classes (cached on first use) ------------------------------------------------ */

#define RAW_FIELDS 4
#define FRAME_FIELDS 8
static const char *const raw_fields[RAW_FIELDS] = {"type_id", "stream_id", "timestamp", "payload"};
static const char *const frame_fields[FRAME_FIELDS] = {
    "codec", "dts", "pts", "data", "keyframe", "is_config", "sample_rate", "channels",
};

static bool resolved;
static PyTypeObject *RawMessage_type, *MediaFrame_type;
static Py_ssize_t raw_offsets[RAW_FIELDS], frame_offsets[FRAME_FIELDS]; /* [0] < 0: call the class */
static PyObject *ChunkError, *FlvError, *UnsupportedCodec;
static PyObject *codec_h264, *codec_h265, *codec_aac, *codec_pcma, *codec_pcmu;
static PyObject *py_parse_video_tag, *py_parse_audio_tag;

/* Where a slotted class keeps its fields, when building it is only filling them: object.__new__,
 * no __post_init__, plain writable object slots. Else offsets[0] = -1 (build by calling it). */
static void slot_offsets(PyTypeObject *tp, const char *const *names, int n, Py_ssize_t *offsets) {
    offsets[0] = -1;
    if (tp->tp_new != PyBaseObject_Type.tp_new || tp->tp_itemsize != 0 || tp->tp_dictoffset != 0 ||
        PyDict_GetItemString(tp->tp_dict, "__post_init__") != NULL)
        return;
    Py_ssize_t found[FRAME_FIELDS];
    for (int k = 0; k < n; k++) {
        PyObject *d = PyDict_GetItemString(tp->tp_dict, names[k]); /* borrowed */
        if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type) return;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset < (Py_ssize_t)sizeof(PyObject) ||
            m->offset + (Py_ssize_t)sizeof(PyObject *) > tp->tp_basicsize)
            return;
        found[k] = m->offset;
    }
    memcpy(offsets, found, sizeof(Py_ssize_t) * n);
}

static PyObject *attr_of(const char *module, const char *name) {
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) return NULL;
    PyObject *v = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return v;
}

static int resolve(void) {
    if (resolved) return 0;
    PyObject *raw = attr_of("iotvideo.media.rtmp.chunk", "RawMessage");
    PyObject *frame = attr_of("iotvideo.media.frames", "MediaFrame");
    PyObject *codec = attr_of("iotvideo.media.frames", "Codec");
    PyObject *chunk_error = attr_of("iotvideo.media.rtmp.chunk", "ChunkError");
    PyObject *flv_error = attr_of("iotvideo.media.flvtags", "FlvError");
    PyObject *unsupported = attr_of("iotvideo.media.flvtags", "UnsupportedCodec");
    PyObject *pv = attr_of("iotvideo.media.flvtags", "parse_video_tag");
    PyObject *pa = attr_of("iotvideo.media.flvtags", "parse_audio_tag");
    PyObject *h264 = NULL, *h265 = NULL, *aac = NULL, *pcma = NULL, *pcmu = NULL;
    if (codec != NULL) {
        h264 = PyObject_GetAttrString(codec, "H264");
        h265 = PyObject_GetAttrString(codec, "H265");
        aac = PyObject_GetAttrString(codec, "AAC");
        pcma = PyObject_GetAttrString(codec, "PCMA");
        pcmu = PyObject_GetAttrString(codec, "PCMU");
    }
    Py_XDECREF(codec);
    if (raw == NULL || frame == NULL || chunk_error == NULL || flv_error == NULL || unsupported == NULL || pv == NULL ||
        pa == NULL || h264 == NULL || h265 == NULL || aac == NULL || pcma == NULL || pcmu == NULL || !PyType_Check(raw) ||
        !PyType_Check(frame)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "RawMessage and MediaFrame must be classes");
        Py_XDECREF(raw), Py_XDECREF(frame), Py_XDECREF(chunk_error), Py_XDECREF(flv_error);
        Py_XDECREF(unsupported), Py_XDECREF(pv), Py_XDECREF(pa);
        Py_XDECREF(h264), Py_XDECREF(h265), Py_XDECREF(aac), Py_XDECREF(pcma), Py_XDECREF(pcmu);
        return -1;
    }
    RawMessage_type = (PyTypeObject *)raw;
    MediaFrame_type = (PyTypeObject *)frame;
    ChunkError = chunk_error, FlvError = flv_error, UnsupportedCodec = unsupported;
    py_parse_video_tag = pv, py_parse_audio_tag = pa;
    codec_h264 = h264, codec_h265 = h265, codec_aac = aac, codec_pcma = pcma, codec_pcmu = pcmu;
    slot_offsets(RawMessage_type, raw_fields, RAW_FIELDS, raw_offsets);
    slot_offsets(MediaFrame_type, frame_fields, FRAME_FIELDS, frame_offsets);
    resolved = true;
    return 0;
}

/* An instance of ``tp`` with fields ``vals`` (references stolen; a NULL among them: error). */
static PyObject *build(PyTypeObject *tp, const Py_ssize_t *offsets, PyObject **vals, int n) {
    PyObject *obj = NULL;
    for (int k = 0; k < n; k++)
        if (vals[k] == NULL) goto done;
    if (offsets[0] >= 0) {
        obj = tp->tp_alloc(tp, 0);
        if (obj == NULL) goto done;
        for (int k = 0; k < n; k++) {
            *(PyObject **)((char *)obj + offsets[k]) = vals[k];
            vals[k] = NULL;
        }
        /* Their fields are ints, bytes, bools and enum members: no cycle can go through them, so the
         * cycle collector need not track them (one is built per frame; the cached GOPs hold thousands). */
        if (PyObject_IS_GC(obj)) PyObject_GC_UnTrack(obj);
    } else {
        obj = PyObject_Vectorcall((PyObject *)tp, vals, n, NULL);
    }
done:
    for (int k = 0; k < n; k++) Py_XDECREF(vals[k]);
    return obj;
}

static inline uint32_t be24(const uint8_t *p) { return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2]; }
static inline uint32_t be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | be24(p + 1); }
static inline uint32_t le32(const uint8_t *p) {
    return p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- ChunkReader ---------------------------------------------------------------------------- */

#define DEFAULT_CHUNK_SIZE 128
#define MAX_CHUNK_SIZE (16 * 1024 * 1024)
#define DEFAULT_MAX_MESSAGE_SIZE (8 * 1024 * 1024)
#define DEFAULT_MAX_CHUNK_STREAMS 64
#define MAX_HEADER 18 /* basic header + type-0 message header + extended timestamp */
#define MSG_SET_CHUNK_SIZE 1
#define MSG_ABORT 2
#define INCOMPLETE (-2)
#define FIRST_BODY 4096 /* a message body grows from this (or twice what came), up to its length */

typedef struct {
    uint32_t csid;
    uint32_t timestamp;
    uint32_t delta;     /* the last type 0/1/2 timestamp field: what a new type-3 message adds */
    uint32_t length;    /* 24 bits */
    uint32_t stream_id;
    uint32_t ext_value;
    uint32_t remaining; /* bytes still expected for the message in progress (0: none) */
    uint32_t got;       /* bytes of it in ``body`` */
    uint8_t type_id;
    bool ext;           /* the last type 0/1/2 header carried an extended timestamp */
    PyObject *body;     /* bytes being filled (size: room so far, <= length), or NULL */
} InStream;

typedef struct {
    PyObject_HEAD
    long long chunk_size;
    long long max_message_size;
    long long max_chunk_streams;
    long long max_pending_bytes;
    long long pending;
    InStream **streams;
    Py_ssize_t nstreams, streams_cap;
    InStream *cur; /* stream whose chunk payload is being read */
    long long chunk_left;
    uint8_t head[2 * MAX_HEADER + 4]; /* a chunk header split across feeds (< MAX_HEADER) + a peek */
    Py_ssize_t head_len;
    PyObject *error; /* the ChunkError that killed the reader, or NULL */
    bool busy;
    NativeRecords *recs; /* during native_chunk_feed_records, until the first other message: where audio/video go */
} ChunkReaderObject;

static void drop_body(InStream *st) {
    Py_CLEAR(st->body);
    st->got = 0;
}

static void clear_streams(ChunkReaderObject *self) {
    for (Py_ssize_t k = 0; k < self->nstreams; k++) {
        drop_body(self->streams[k]);
        PyMem_Free(self->streams[k]);
    }
    self->nstreams = 0;
    self->cur = NULL;
}

static inline InStream *find_stream(ChunkReaderObject *self, uint32_t csid) {
    InStream *cur = self->cur;
    if (cur != NULL && cur->csid == csid) return cur;
    for (Py_ssize_t k = 0; k < self->nstreams; k++)
        if (self->streams[k]->csid == csid) return self->streams[k];
    return NULL;
}

static InStream *add_stream(ChunkReaderObject *self, uint32_t csid) {
    if (self->nstreams == self->streams_cap) {
        Py_ssize_t cap = self->streams_cap ? 2 * self->streams_cap : 8;
        InStream **grown = PyMem_Realloc(self->streams, sizeof(InStream *) * cap);
        if (grown == NULL) return (InStream *)PyErr_NoMemory();
        self->streams = grown;
        self->streams_cap = cap;
    }
    InStream *st = PyMem_Calloc(1, sizeof(InStream));
    if (st == NULL) return (InStream *)PyErr_NoMemory();
    st->csid = csid;
    self->streams[self->nstreams++] = st;
    return st;
}

/* A RawMessage (``payload`` stolen). */
static PyObject *raw_message(uint8_t type_id, uint32_t stream_id, uint32_t timestamp, PyObject *payload) {
    PyObject *vals[RAW_FIELDS] = {
        PyLong_FromLong(type_id), PyLong_FromUnsignedLong(stream_id), PyLong_FromUnsignedLong(timestamp), payload,
    };
    return build(RawMessage_type, raw_offsets, vals, RAW_FIELDS);
}

/* Deliver ``st``'s message (``payload`` stolen), applying Set Chunk Size and Abort. */
static int complete(ChunkReaderObject *self, InStream *st, PyObject *payload, PyObject *out) {
    if (payload == NULL) return -1;
    self->pending -= st->length;
    uint8_t type_id = st->type_id;
    if (type_id == MSG_SET_CHUNK_SIZE || type_id == MSG_ABORT) {
        if (PyBytes_GET_SIZE(payload) < 4) {
            Py_DECREF(payload);
            PyErr_Format(ChunkError, "control message type %d shorter than 4 bytes", (int)type_id);
            return -1;
        }
        uint32_t value = be32((const uint8_t *)PyBytes_AS_STRING(payload));
        if (type_id == MSG_SET_CHUNK_SIZE) {
            if ((value & 0x80000000u) || !value) {
                Py_DECREF(payload);
                PyErr_Format(ChunkError, "invalid chunk size %lu", (unsigned long)value);
                return -1;
            }
            self->chunk_size = value < MAX_CHUNK_SIZE ? value : MAX_CHUNK_SIZE;
        } else {
            InStream *aborted = find_stream(self, value);
            if (aborted != NULL && aborted->remaining) {
                self->pending -= aborted->length;
                aborted->remaining = 0;
                drop_body(aborted);
            }
        }
    }
    self->recs = NULL; /* what follows comes as messages too, in order */
    PyObject *msg = raw_message(type_id, st->stream_id, st->timestamp, payload);
    if (msg == NULL) return -1;
    int rc = PyList_Append(out, msg);
    Py_DECREF(msg);
    return rc;
}

static inline bool is_media(uint8_t type_id) { return type_id == 8 || type_id == 9; }

/* Record mode: ``st``'s audio/video message ``p[0:n]`` (held by ``body``, stolen, or by the input when
 * NULL) as a record instead of a RawMessage. 0, or -1 (out of memory). */
static int record(ChunkReaderObject *self, InStream *st, const uint8_t *p, Py_ssize_t n, PyObject *body) {
    NativeRecords *r = self->recs;
    self->pending -= st->length;
    if (r->n == r->cap) {
        Py_ssize_t cap = r->cap ? 2 * r->cap : 16;
        NativeRecord *grown = PyMem_Realloc(r->v, (size_t)cap * sizeof(NativeRecord));
        if (grown == NULL) {
            Py_XDECREF(body);
            PyErr_NoMemory();
            return -1;
        }
        r->v = grown;
        r->cap = cap;
    }
    r->v[r->n++] = (NativeRecord){st->type_id, st->stream_id, st->timestamp, p, n, body};
    return 0;
}

/* The chunk payload at ``pos`` for the current stream; returns the position after it, or -1. */
static Py_ssize_t take_payload(ChunkReaderObject *self, const uint8_t *p, Py_ssize_t pos, Py_ssize_t n, PyObject *src,
                               PyObject *out) {
    InStream *st = self->cur;
    long long take = self->chunk_left;
    if (take > n - pos) take = n - pos;
    if (take <= 0) return pos;
    Py_ssize_t end = pos + (Py_ssize_t)take;
    if (st->body == NULL && take == st->remaining) { /* the whole message is here: one copy (none as a record) */
        self->chunk_left = 0;
        st->remaining = 0;
        if (self->recs != NULL && is_media(st->type_id)) return record(self, st, p + pos, take, NULL) < 0 ? -1 : end;
        PyObject *payload = src != NULL && pos == 0 && end == n ? Py_NewRef(src)
                                                                : PyBytes_FromStringAndSize((const char *)p + pos, take);
        return complete(self, st, payload, out) < 0 ? -1 : end;
    }
    /* got + remaining == length, so the body never grows past the message's declared length */
    Py_ssize_t need = (Py_ssize_t)st->got + (Py_ssize_t)take;
    Py_ssize_t room = st->body == NULL ? 0 : PyBytes_GET_SIZE(st->body);
    if (need > room) {
        Py_ssize_t size = 2 * (room > need ? room : need);
        if (size < FIRST_BODY) size = FIRST_BODY;
        if (size > (Py_ssize_t)st->length) size = st->length;
        if (st->body == NULL) {
            st->body = PyBytes_FromStringAndSize(NULL, size);
        } else if (_PyBytes_Resize(&st->body, size) < 0) {
            st->body = NULL;
        }
        if (st->body == NULL) { /* out of memory: the message is dropped */
            self->pending -= st->length;
            st->remaining = 0;
            st->got = 0;
            self->chunk_left = 0;
            return -1;
        }
    }
    memcpy(PyBytes_AS_STRING(st->body) + st->got, p + pos, take);
    st->got += (uint32_t)take;
    st->remaining -= (uint32_t)take;
    self->chunk_left -= take;
    if (!st->remaining) { /* got == length == size of body */
        PyObject *payload = st->body;
        st->body = NULL;
        st->got = 0;
        if (self->recs != NULL && is_media(st->type_id)) {
            if (record(self, st, (const uint8_t *)PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), payload) < 0)
                return -1;
        } else if (complete(self, st, payload, out) < 0) {
            return -1;
        }
    }
    return end;
}

/* Parse and apply the chunk header at ``pos``; its size, INCOMPLETE (state untouched), or -1. */
static Py_ssize_t read_header(ChunkReaderObject *self, const uint8_t *mv, Py_ssize_t pos, Py_ssize_t end, PyObject *out) {
    uint8_t b0 = mv[pos];
    int fmt = b0 >> 6;
    uint32_t csid = b0 & 0x3F;
    Py_ssize_t i = pos + 1;
    if (csid == 0) {
        if (i >= end) return INCOMPLETE;
        csid = 64 + mv[i];
        i += 1;
    } else if (csid == 1) {
        if (i + 2 > end) return INCOMPLETE;
        csid = 64 + mv[i] + ((uint32_t)mv[i + 1] << 8);
        i += 2;
    }
    InStream *st = find_stream(self, csid);
    uint32_t field = 0, length = 0, stream_id = 0;
    uint8_t type_id = 0;
    bool ext = false;
    if (fmt == 3) {
        if (st == NULL) {
            PyErr_Format(ChunkError, "type-3 chunk on chunk stream %lu before any header", (unsigned long)csid);
            return -1;
        }
        if (st->ext) {
            /* Spec: a type-3 chunk repeats the extended timestamp of the stream's last header.
             * Some encoders leave it out; accept it only when it matches what it must repeat. */
            if (i + 4 > end) return INCOMPLETE;
            uint32_t value = be32(mv + i);
            if (value == st->ext_value || value == st->timestamp) i += 4;
        }
    } else {
        Py_ssize_t size = fmt == 0 ? 11 : fmt == 1 ? 7 : 3;
        if (i + size > end) return INCOMPLETE;
        field = be24(mv + i);
        if (fmt < 2) {
            length = be24(mv + i + 3);
            type_id = mv[i + 6];
            if (fmt == 0) stream_id = le32(mv + i + 7);
        }
        i += size;
        if (field == 0xFFFFFF) {
            if (i + 4 > end) return INCOMPLETE;
            field = be32(mv + i);
            ext = true;
            i += 4;
        }
        if (st == NULL) {
            if (fmt == 2) {
                PyErr_Format(ChunkError, "type-2 chunk on chunk stream %lu before any length", (unsigned long)csid);
                return -1;
            }
            if (self->nstreams >= self->max_chunk_streams) {
                PyErr_Format(ChunkError, "more than %lld chunk streams", self->max_chunk_streams);
                return -1;
            }
            st = add_stream(self, csid);
            if (st == NULL) return -1;
        }
    }
    /* The header is complete: apply it. */
    self->cur = st;
    if (st->remaining) {
        if (fmt == 3) { /* continuation of the message in progress */
            self->chunk_left = st->remaining < self->chunk_size ? st->remaining : self->chunk_size;
            return i - pos;
        }
        /* A new header in the middle of a message: drop the partial message, as FFmpeg does. */
        self->pending -= st->length;
        st->remaining = 0;
        drop_body(st);
    }
    if (fmt == 0) {
        st->timestamp = field;
        st->delta = field;
        st->length = length;
        st->type_id = type_id;
        st->stream_id = stream_id;
    } else if (fmt == 3) {
        st->timestamp += st->delta; /* uint32_t: wraps as the Python & 0xFFFFFFFF */
    } else {
        st->timestamp += field;
        st->delta = field;
        if (fmt == 1) {
            st->length = length;
            st->type_id = type_id;
        }
    }
    if (fmt < 3) {
        st->ext = ext;
        st->ext_value = field;
    }
    length = st->length;
    if ((long long)length > self->max_message_size) {
        PyErr_Format(ChunkError, "message of %lu bytes exceeds max_message_size %lld", (unsigned long)length,
                     self->max_message_size);
        return -1;
    }
    self->pending += length;
    if (self->pending > self->max_pending_bytes) {
        PyErr_Format(ChunkError, "messages in progress exceed %lld bytes", self->max_pending_bytes);
        return -1;
    }
    if (!length) {
        self->chunk_left = 0;
        if (complete(self, st, PyBytes_FromStringAndSize(NULL, 0), out) < 0) return -1;
    } else {
        st->remaining = length;
        self->chunk_left = (long long)length < self->chunk_size ? (long long)length : self->chunk_size;
    }
    return i - pos;
}

/* Consume ``p[0:n]`` (``src``: the bytes object it is, or NULL). 0, or -1 with an exception set. */
static int feed_bytes(ChunkReaderObject *self, const uint8_t *p, Py_ssize_t n, PyObject *src, PyObject *out) {
    Py_ssize_t pos = 0;
    if (self->head_len) {
        Py_ssize_t old = self->head_len;
        Py_ssize_t add = n < MAX_HEADER ? n : MAX_HEADER;
        memcpy(self->head + old, p, add);
        self->head_len = old + add;
        Py_ssize_t size = read_header(self, self->head, 0, self->head_len, out);
        if (size == INCOMPLETE) return 0; /* still incomplete: all of ``p`` went into ``head`` */
        if (size < 0) return -1;
        if (size < old) { /* a peeked extended timestamp was absent: held bytes are payload */
            uint8_t rest[sizeof self->head];
            Py_ssize_t rest_len = old - size;
            memcpy(rest, self->head + size, rest_len);
            self->head_len = 0;
            if (feed_bytes(self, rest, rest_len, NULL, out) < 0) return -1;
            return feed_bytes(self, p, n, src, out);
        }
        pos = size - old;
        self->head_len = 0;
    }
    for (;;) {
        if (self->chunk_left) {
            pos = take_payload(self, p, pos, n, src, out);
            if (pos < 0) return -1;
            if (self->chunk_left) return 0;
        }
        if (pos >= n) return 0;
        Py_ssize_t size = read_header(self, p, pos, n, out);
        if (size == INCOMPLETE) { /* fewer than MAX_HEADER bytes */
            memcpy(self->head, p + pos, n - pos);
            self->head_len = n - pos;
            return 0;
        }
        if (size < 0) return -1;
        pos += size;
    }
}

/* feed(): the messages ``p[0:n]`` completes (``src``: the bytes object it is, or NULL). */
static PyObject *reader_feed(ChunkReaderObject *self, const uint8_t *p, Py_ssize_t n, PyObject *src) {
    if (resolve() < 0) return NULL;
    if (self->error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(self->error), self->error);
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "ChunkReader.feed called while it runs");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    self->busy = true;
    int rc = feed_bytes(self, p, n, src, out);
    self->busy = false;
    if (rc < 0) {
        Py_CLEAR(out);
        if (PyErr_ExceptionMatches(ChunkError)) { /* dead from now on */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (tb != NULL) PyException_SetTraceback(value, tb);
            Py_XSETREF(self->error, Py_NewRef(value));
            clear_streams(self);
            self->head_len = 0;
            PyErr_Restore(type, value, tb);
        }
    }
    return out;
}

static PyObject *ChunkReader_feed(ChunkReaderObject *self, PyObject *data) {
    if (PyBytes_CheckExact(data)) /* whole messages are sliced from it */
        return reader_feed(self, (const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data);
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = reader_feed(self, (const uint8_t *)view.buf, view.len, NULL);
    PyBuffer_Release(&view);
    return out;
}

static PyObject *ChunkReader_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    ChunkReaderObject *self = (ChunkReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->chunk_size = DEFAULT_CHUNK_SIZE; /* __init__ sets them all again */
    self->max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
    self->max_chunk_streams = DEFAULT_MAX_CHUNK_STREAMS;
    self->max_pending_bytes = 2 * DEFAULT_MAX_MESSAGE_SIZE;
    return (PyObject *)self;
}

static int ChunkReader_init(ChunkReaderObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_message_size", "max_chunk_streams", "max_pending_bytes", NULL};
    long long max_message_size = DEFAULT_MAX_MESSAGE_SIZE, max_chunk_streams = DEFAULT_MAX_CHUNK_STREAMS;
    PyObject *max_pending = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$LLO:ChunkReader", kwlist, &max_message_size, &max_chunk_streams,
                                     &max_pending))
        return -1;
    if (resolve() < 0) return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "ChunkReader.__init__ called while feed runs");
        return -1;
    }
    long long max_pending_bytes;
    if (max_pending == Py_None) {
        max_pending_bytes = max_message_size > LLONG_MAX / 2 ? LLONG_MAX : 2 * max_message_size;
    } else {
        max_pending_bytes = PyLong_AsLongLong(max_pending);
        if (max_pending_bytes == -1 && PyErr_Occurred()) return -1;
    }
    clear_streams(self);
    Py_CLEAR(self->error);
    self->chunk_size = DEFAULT_CHUNK_SIZE;
    self->max_message_size = max_message_size;
    self->max_chunk_streams = max_chunk_streams;
    self->max_pending_bytes = max_pending_bytes;
    self->pending = 0;
    self->chunk_left = 0;
    self->head_len = 0;
    return 0;
}

static int ChunkReader_traverse(ChunkReaderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->error);
    return 0;
}

static int ChunkReader_clear(ChunkReaderObject *self) {
    Py_CLEAR(self->error);
    return 0;
}

static void ChunkReader_dealloc(ChunkReaderObject *self) {
    PyObject_GC_UnTrack(self);
    ChunkReader_clear(self);
    clear_streams(self);
    PyMem_Free(self->streams);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ChunkReader_get_buffered(ChunkReaderObject *self, void *closure) {
    long long held = self->head_len;
    for (Py_ssize_t k = 0; k < self->nstreams; k++)
        if (self->streams[k]->body != NULL) held += self->streams[k]->got;
    return PyLong_FromLongLong(held);
}

static PyObject *ChunkReader_get_chunk_size(ChunkReaderObject *self, void *closure) {
    return PyLong_FromLongLong(self->chunk_size);
}

static int ChunkReader_set_chunk_size(ChunkReaderObject *self, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "chunk_size cannot be deleted");
        return -1;
    }
    long long size = PyLong_AsLongLong(value);
    if (size == -1 && PyErr_Occurred()) return -1;
    if (size < 1) {
        PyErr_Format(PyExc_ValueError, "chunk_size %lld is not positive", size);
        return -1;
    }
    self->chunk_size = size;
    return 0;
}

static PyMethodDef ChunkReader_methods[] = {
    {"feed", (PyCFunction)ChunkReader_feed, METH_O,
     "Consume ``data``; return the messages (RawMessage) it completes. Raises ChunkError."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ChunkReader_getset[] = {
    {"buffered", (getter)ChunkReader_get_buffered, NULL,
     "Bytes held: a partial chunk header plus the bodies of messages in progress.", NULL},
    {"chunk_size", (getter)ChunkReader_get_chunk_size, (setter)ChunkReader_set_chunk_size,
     "The peer's chunk size (Set Chunk Size is applied by feed).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef ChunkReader_members[] = {
    {"max_message_size", T_LONGLONG, offsetof(ChunkReaderObject, max_message_size), 0, NULL},
    {"max_chunk_streams", T_LONGLONG, offsetof(ChunkReaderObject, max_chunk_streams), 0, NULL},
    {"max_pending_bytes", T_LONGLONG, offsetof(ChunkReaderObject, max_pending_bytes), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ChunkReader_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "iotvideo.media._native.ChunkReader",
    .tp_doc = "Feed it bytes after the handshake; get back whole messages (RawMessage) in order.\n\n"
              "The C twin of iotvideo.media.rtmp.chunk.ChunkReader: same keywords, limits and errors.",
    .tp_basicsize = sizeof(ChunkReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = ChunkReader_new,
    .tp_init = (initproc)ChunkReader_init,
    .tp_dealloc = (destructor)ChunkReader_dealloc,
    .tp_traverse = (traverseproc)ChunkReader_traverse,
    .tp_clear = (inquiry)ChunkReader_clear,
    .tp_methods = ChunkReader_methods,
    .tp_getset = ChunkReader_getset,
    .tp_members = ChunkReader_members,
};

/* ---- FLV tags ------------------------------------------------------------------------------- */

#define FRAME_KEY 1
#define FRAME_INTER 2
#define FRAME_GENERATED_KEY 4
#define FRAME_COMMAND 5
#define EX_HEADER 0x80
#define EX_SEQUENCE_START 0
#define EX_CODED_FRAMES 1
#define EX_SEQUENCE_END 2
#define EX_CODED_FRAMES_X 3
#define EX_METADATA 4
#define EX_MULTITRACK 6
#define EX_MODEX 7

static PyObject *fallback(PyObject *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return PyObject_Vectorcall(func, args, nargs, kwnames);
}

/* ``timestamp`` as a C integer when it is a plain int small enough that nothing overflows. */
static bool small_int(PyObject *obj, long long *value) {
    if (!PyLong_CheckExact(obj)) return false;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return false;
    }
    if (v > ((long long)1 << 60) || v < -((long long)1 << 60)) return false;
    *value = v;
    return true;
}

/* What a tag parser gives: the frame (a new reference; Py_None: none), and in *as_built whether the tag is
 * exactly what flvtags writes for that frame (the tag's header, then the frame's data). */
#define FRAME(frame, built) (*as_built = (built), (frame))
#define NO_FRAME() FRAME(Py_NewRef(Py_None), false)

static PyObject *result(PyObject *frame, bool as_built) {
    if (frame == NULL) return NULL;
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(frame);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, frame);
    PyTuple_SET_ITEM(t, 1, Py_NewRef(as_built ? Py_True : Py_False));
    return t;
}

/* ``p[off:n]`` as bytes: ``*own`` itself when it is the bytes ``p[0:n]`` lives in and nothing else
 * holds it (moved down and cut in place: no new buffer; *own becomes NULL), else a copy. */
static PyObject *body_bytes(const uint8_t *p, Py_ssize_t n, Py_ssize_t off, PyObject **own) {
    PyObject *b = own != NULL ? *own : NULL;
    if (b == NULL || !PyBytes_CheckExact(b) || Py_REFCNT(b) != 1 || (const uint8_t *)PyBytes_AS_STRING(b) != p ||
        PyBytes_GET_SIZE(b) != n || off == 0)
        return PyBytes_FromStringAndSize((const char *)p + off, n - off);
    *own = NULL;
    memmove(PyBytes_AS_STRING(b), p + off, (size_t)(n - off));
    if (_PyBytes_Resize(&b, n - off) < 0) return NULL;
    return b;
}

static PyObject *media_frame(PyObject *codec, PyObject *dts, long long pts, PyObject *data, bool keyframe,
                             bool is_config, long sample_rate, long channels) {
    long long dts_value = PyLong_AsLongLong(dts); /* (a small int: checked by the callers) */
    PyObject *vals[FRAME_FIELDS] = {
        Py_NewRef(codec),
        Py_NewRef(dts),
        pts == dts_value ? Py_NewRef(dts) : PyLong_FromLongLong(pts), /* one int for both without B-frames */
        data,
        Py_NewRef(keyframe ? Py_True : Py_False),
        Py_NewRef(is_config ? Py_True : Py_False),
        PyLong_FromLong(sample_rate),
        PyLong_FromLong(channels),
    };
    return build(MediaFrame_type, frame_offsets, vals, FRAME_FIELDS);
}

static inline int32_t si24(const uint8_t *p) {
    uint32_t v = be24(p);
    return v & 0x800000 ? (int32_t)v - (1 << 24) : (int32_t)v;
}

static const uint8_t *find3(const uint8_t *p, const uint8_t *end) { /* the next 00 00 01 in [p, end) */
    while (end - p >= 3) {
        const uint8_t *one = memchr(p + 2, 1, end - p - 2);
        if (one == NULL) return NULL;
        if (one[-1] == 0 && one[-2] == 0) return one - 2;
        p = one - 1;
    }
    return NULL;
}

/* Whether d[0:n] is length-prefixed NAL units whose lengths cover it exactly. */
static bool length_prefixed(const uint8_t *d, Py_ssize_t n) {
    uint64_t i = 0;
    while (i + 4 <= (uint64_t)n) {
        uint32_t size = be32(d + i);
        if (!size) break;
        i += 4 + (uint64_t)size;
    }
    return i == (uint64_t)n;
}

/* flvtags._nal_units: ``data`` (new reference) when it is length-prefixed NAL units, else
 * Annex B converted to that; NULL with FlvError set otherwise. */
static PyObject *nal_units(const uint8_t *p, Py_ssize_t size, Py_ssize_t off, PyObject **own, bool *same) {
    const uint8_t *d = p + off;
    Py_ssize_t n = size - off;
    *same = length_prefixed(d, n);
    if (*same) return body_bytes(p, size, off, own);
    if (!(n >= 3 && d[0] == 0 && d[1] == 0 && (d[2] == 1 || (n >= 4 && d[2] == 0 && d[3] == 1)))) {
        PyErr_SetString(FlvError, "video data is neither length-prefixed NAL units nor Annex B");
        return NULL;
    }
    /* Annex B: each NAL unit gets a 4-byte length; zeros before a start code belong to it. Two
     * passes: the size, then the bytes. */
    const uint8_t *end = d + n;
    PyObject *out = NULL;
    uint8_t *w = NULL;
    for (int pass = 0; pass < 2; pass++) {
        Py_ssize_t total = 0;
        const uint8_t *s = find3(d, end) + 3;
        for (;;) {
            const uint8_t *j = find3(s, end);
            const uint8_t *stop = j == NULL ? end : j;
            if (j != NULL)
                while (stop > s && stop[-1] == 0) stop--;
            Py_ssize_t len = stop - s;
            if (len > 0) {
                if (w != NULL) {
                    uint32_t l32 = (uint32_t)len;
                    w[0] = l32 >> 24, w[1] = l32 >> 16, w[2] = l32 >> 8, w[3] = l32;
                    memcpy(w + 4, s, len);
                    w += 4 + len;
                }
                total += 4 + len;
            }
            if (j == NULL) break;
            s = j + 3;
        }
        if (pass == 0) {
            if (!total) {
                PyErr_SetString(FlvError, "Annex B video data without NAL units");
                return NULL;
            }
            out = PyBytes_FromStringAndSize(NULL, total);
            if (out == NULL) return NULL;
            w = (uint8_t *)PyBytes_AS_STRING(out);
        }
    }
    return out;
}

/* The video tag ``p[0:n]`` at ``timestamp`` (== ts, a small int); ``own``: see body_bytes. */
static PyObject *video_frame(const uint8_t *p, Py_ssize_t n, PyObject **own, PyObject *timestamp, long long ts,
                             bool *as_built) {
    if (!n) {
        PyErr_SetString(FlvError, "empty video tag");
        return NULL;
    }
    uint8_t b0 = p[0];
    int frame_type, packet_type, cts = 0;
    bool config, ex = b0 & EX_HEADER;
    PyObject *codec;
    Py_ssize_t off;
    if (ex) {
        frame_type = (b0 >> 4) & 0x07;
        packet_type = b0 & 0x0F;
        if (frame_type == FRAME_COMMAND && packet_type != EX_METADATA) return NO_FRAME();
        if (packet_type == EX_MULTITRACK || packet_type == EX_MODEX) {
            PyErr_Format(UnsupportedCodec, "Enhanced RTMP video packet type %d", packet_type);
            return NULL;
        }
        if (n < 5) {
            PyErr_SetString(FlvError, "truncated Enhanced RTMP video header");
            return NULL;
        }
        if (memcmp(p + 1, "avc1", 4) == 0) {
            codec = codec_h264;
        } else if (memcmp(p + 1, "hvc1", 4) == 0) {
            codec = codec_h265;
        } else {
            PyObject *fourcc = PyBytes_FromStringAndSize((const char *)p + 1, 4);
            if (fourcc != NULL) PyErr_Format(UnsupportedCodec, "video FourCC %R", fourcc);
            Py_XDECREF(fourcc);
            return NULL;
        }
        if (packet_type == EX_SEQUENCE_END || packet_type == EX_METADATA) return NO_FRAME();
        if (packet_type == EX_SEQUENCE_START) {
            config = true;
            off = 5;
        } else if (packet_type == EX_CODED_FRAMES) {
            if (n < 8) {
                PyErr_SetString(FlvError, "truncated Enhanced RTMP composition time");
                return NULL;
            }
            config = false;
            cts = si24(p + 5);
            off = 8;
        } else if (packet_type == EX_CODED_FRAMES_X) {
            config = false;
            off = 5;
        } else {
            PyObject *fourcc = PyBytes_FromStringAndSize((const char *)p + 1, 4);
            if (fourcc != NULL)
                PyErr_Format(FlvError, "Enhanced RTMP video packet type %d invalid for %R", packet_type, fourcc);
            Py_XDECREF(fourcc);
            return NULL;
        }
    } else {
        frame_type = b0 >> 4;
        if (frame_type == FRAME_COMMAND) return NO_FRAME();
        int codec_id = b0 & 0x0F;
        if (codec_id == 7) {
            codec = codec_h264;
        } else if (codec_id == 12) {
            codec = codec_h265;
        } else {
            PyErr_Format(UnsupportedCodec, "video codec id %d", codec_id);
            return NULL;
        }
        if (n < 5) {
            PyErr_SetString(FlvError, "truncated AVC video header");
            return NULL;
        }
        packet_type = p[1];
        cts = si24(p + 2);
        if (packet_type == 2) return NO_FRAME();
        if (packet_type > 2) {
            PyErr_Format(FlvError, "AVCPacketType %d", packet_type);
            return NULL;
        }
        config = packet_type == 0;
        off = 5;
    }
    if (!(FRAME_KEY <= frame_type && frame_type <= FRAME_GENERATED_KEY)) {
        PyErr_Format(FlvError, "video frame type %d", frame_type);
        return NULL;
    }
    bool h264 = codec == codec_h264;
    /* what video_payload writes: legacy H.264, Enhanced ``hvc1`` H.265 (coded frames with a
     * composition time only when it is not 0), frame type 1 (key, config) or 2 (inter) */
    bool canonical = h264 != ex && (h264 || packet_type != EX_CODED_FRAMES || cts != 0);
    Py_ssize_t size = n - off;
    if (config) {
        if (h264 ? size < 7 || p[off] != 1 : size < 23) { /* some muxers write configurationVersion 0 for HEVC */
            PyErr_SetString(FlvError, h264 ? "malformed AVCDecoderConfigurationRecord" : "malformed HEVCDecoderConfigurationRecord");
            return NULL;
        }
        PyObject *data = body_bytes(p, n, off, own);
        return FRAME(media_frame(codec, timestamp, ts + cts, data, false, true, 0, 0), canonical && frame_type == FRAME_KEY);
    }
    if (!size) return NO_FRAME();
    bool keyframe = frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY;
    bool same;
    PyObject *nal = nal_units(p, n, off, own, &same);
    if (nal == NULL) return NULL;
    return FRAME(media_frame(codec, timestamp, ts + cts, nal, keyframe, false, 0, 0),
                 canonical && same && frame_type == (keyframe ? FRAME_KEY : FRAME_INTER));
}

static const long aac_rates[13] = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350};
static const long aac_channels[16] = {0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 7, 8, 24, 8, 0};
static const long g711_rates[4] = {8000, 11025, 22050, 44100};

/* The audio tag ``p[0:n]``: as video_frame. */
static PyObject *audio_frame(const uint8_t *p, Py_ssize_t n, PyObject **own, PyObject *timestamp, long long ts,
                             bool *as_built) {
    if (!n) {
        PyErr_SetString(FlvError, "empty audio tag");
        return NULL;
    }
    uint8_t b0 = p[0];
    int sound_format = b0 >> 4;
    if (sound_format == 10) { /* AAC */
        if (n < 2) {
            PyErr_SetString(FlvError, "truncated AAC audio header");
            return NULL;
        }
        int packet_type = p[1];
        const uint8_t *d = p + 2;
        Py_ssize_t size = n - 2;
        if (packet_type == 0) { /* AudioSpecificConfig: flvtags._aac_config */
            if (size < 2) {
                PyErr_SetString(FlvError, "truncated AudioSpecificConfig");
                return NULL;
            }
            uint64_t bits = 0;
            for (int k = 0; k < 8; k++) bits = (bits << 8) | (k < size ? d[k] : 0);
            int avail = (size < 8 ? (int)size : 8) * 8;
            int pos = 5;
            if ((bits >> 59) == 31) pos += 6; /* escaped audio object type */
            int index = (int)((bits >> (64 - pos - 4)) & 0x0F);
            pos += 4;
            long rate;
            if (index == 15) {
                rate = (long)((bits >> (64 - pos - 24)) & 0xFFFFFF);
                pos += 24;
            } else if (index < 13) {
                rate = aac_rates[index];
            } else {
                PyErr_Format(FlvError, "AAC sampling frequency index %d", index);
                return NULL;
            }
            if (pos + 4 > avail) {
                PyErr_SetString(FlvError, "truncated AudioSpecificConfig");
                return NULL;
            }
            long channels = aac_channels[(bits >> (64 - pos - 4)) & 0x0F];
            PyObject *data = body_bytes(p, n, 2, own);
            return FRAME(media_frame(codec_aac, timestamp, ts, data, false, true, rate, channels), b0 == 0xAF);
        }
        if (packet_type != 1) {
            PyErr_Format(FlvError, "AACPacketType %d", packet_type);
            return NULL;
        }
        if (!size) return NO_FRAME();
        PyObject *data = body_bytes(p, n, 2, own);
        return FRAME(media_frame(codec_aac, timestamp, ts, data, false, false, 0, 0), b0 == 0xAF);
    }
    if (sound_format == 7 || sound_format == 8) { /* G.711 A-law, mu-law */
        if (n < 2) return NO_FRAME();
        PyObject *data = body_bytes(p, n, 1, own);
        PyObject *codec = sound_format == 7 ? codec_pcma : codec_pcmu;
        return FRAME(media_frame(codec, timestamp, ts, data, false, false, g711_rates[(b0 >> 2) & 0x03], b0 & 0x01 ? 2 : 1),
                     b0 & 0x02);
    }
    PyErr_Format(UnsupportedCodec, "sound format %d", sound_format);
    return NULL;
}

/* parse_video_tag / parse_audio_tag(payload, timestamp): flvtags' (what it does not take itself too). */
static PyObject *parse_tag(bool video, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (resolve() < 0) return NULL;
    long long ts;
    if (nargs != 2 || kwnames != NULL || !PyBytes_CheckExact(args[0]) || !small_int(args[1], &ts))
        return fallback(video ? py_parse_video_tag : py_parse_audio_tag, args, nargs, kwnames);
    bool as_built = false;
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    PyObject *frame = video ? video_frame(p, n, NULL, args[1], ts, &as_built) : audio_frame(p, n, NULL, args[1], ts, &as_built);
    return result(frame, as_built);
}

static PyObject *parse_video_tag(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return parse_tag(true, args, nargs, kwnames);
}

static PyObject *parse_audio_tag(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return parse_tag(false, args, nargs, kwnames);
}

/* ---- for the other parts (native.h) ---------------------------------------------------------- */

PyObject *native_tag_frame(int video, const uint8_t *p, Py_ssize_t n, PyObject **own, uint32_t timestamp, int *as_built) {
    if (resolve() < 0) return NULL;
    PyObject *ts = PyLong_FromUnsignedLong(timestamp);
    if (ts == NULL) return NULL;
    bool built = false;
    PyObject *frame = video ? video_frame(p, n, own, ts, timestamp, &built) : audio_frame(p, n, own, ts, timestamp, &built);
    Py_DECREF(ts);
    *as_built = built;
    return frame;
}

PyObject *native_codec(int video) { return resolve() < 0 ? NULL : video ? codec_h264 : codec_aac; }

Py_ssize_t native_plain_tag(int video, const uint8_t *p, Py_ssize_t n) {
    if (!video) return n > 2 && p[0] == 0xAF && p[1] == 1 ? 2 : 0; /* AAC raw, data after the 2-byte head */
    /* legacy H.264 (codec id 7), key or inter frame type, AVCPacketType 1 (NALU): audio_frame/video_frame
     * make a frame of it whose data is the rest, as it came, when that is length-prefixed NAL units */
    return n >= 9 && (p[0] == 0x17 || p[0] == 0x27) && p[1] == 1 && length_prefixed(p + 5, n - 5) ? 5 : 0;
}

int native_is_chunk_reader(PyObject *obj) { return PyObject_TypeCheck(obj, &ChunkReader_Type); }

PyObject *native_chunk_feed_records(PyObject *reader, const uint8_t *p, Py_ssize_t n, NativeRecords *recs) {
    ChunkReaderObject *self = (ChunkReaderObject *)reader;
    if (recs->n) {
        PyErr_SetString(PyExc_RuntimeError, "native_chunk_feed_records: records left from before");
        return NULL;
    }
    if (self->busy) { /* (reader_feed says so) */
        self->recs = NULL;
        return reader_feed(self, p, n, NULL);
    }
    self->recs = recs;
    PyObject *out = reader_feed(self, p, n, NULL);
    self->recs = NULL;
    if (out == NULL) native_records_clear(recs);
    return out;
}

void native_records_clear(NativeRecords *recs) {
    for (Py_ssize_t i = 0; i < recs->n; i++) Py_CLEAR(recs->v[i].body);
    recs->n = 0;
}

void native_records_free(NativeRecords *recs) {
    native_records_clear(recs);
    PyMem_Free(recs->v);
    recs->v = NULL;
    recs->cap = 0;
}

PyObject *native_record_payload(NativeRecord *r) {
    PyObject *payload = r->body;
    if (payload == NULL) return PyBytes_FromStringAndSize((const char *)r->p, r->n);
    if ((const uint8_t *)PyBytes_AS_STRING(payload) != r->p || PyBytes_GET_SIZE(payload) != r->n) {
        PyErr_SetString(PyExc_RuntimeError, "a record whose body became a frame's data");
        return NULL;
    }
    r->body = NULL;
    return payload;
}

PyObject *native_record_message(NativeRecord *r) {
    if (resolve() < 0) return NULL;
    return raw_message(r->type_id, r->stream_id, r->timestamp, native_record_payload(r));
}

/* Field k of a MediaFrame (``frame_fields`` order) or of a RawMessage (``raw_fields``): a new reference. */
static PyObject *field_of(PyObject *obj, PyTypeObject *tp, const Py_ssize_t *offsets, const char *const *names, int k) {
    if (Py_TYPE(obj) == tp && offsets[0] >= 0) {
        PyObject *v = *(PyObject **)((char *)obj + offsets[k]);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttrString(obj, names[k]);
}

PyObject *native_frame_field(PyObject *frame, int k) {
    if (resolve() < 0) return NULL;
    return field_of(frame, MediaFrame_type, frame_offsets, frame_fields, k);
}

int native_is_flv_error(void) { return resolve() == 0 && PyErr_ExceptionMatches(FlvError); }

static PyMethodDef ingest_functions[] = {
    {"parse_video_tag", (PyCFunction)(void (*)(void))parse_video_tag, METH_FASTCALL | METH_KEYWORDS,
     "parse_video_tag(payload, timestamp) -> (MediaFrame | None, as_built): flvtags.parse_video_tag in C."},
    {"parse_audio_tag", (PyCFunction)(void (*)(void))parse_audio_tag, METH_FASTCALL | METH_KEYWORDS,
     "parse_audio_tag(payload, timestamp) -> (MediaFrame | None, as_built): flvtags.parse_audio_tag in C."},
    {NULL, NULL, 0, NULL},
};

int native_init_ingest(PyObject *module) {
    if (PyType_Ready(&ChunkReader_Type) < 0) return -1;
    if (PyModule_AddObjectRef(module, "ChunkReader", (PyObject *)&ChunkReader_Type) < 0) return -1;
    return PyModule_AddFunctions(module, ingest_functions);
}
