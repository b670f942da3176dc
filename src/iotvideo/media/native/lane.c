/* A publisher's ordinary frames without Python: HubCore (twin of media/hubcore.py, a hub's
 * per-frame state) and PublishLane (a publishing RTMP connection's receive path).
 *
 * PublishLane.feed(data) reads the chunks and, for each audio/video message of a stream it was
 * given, parses the tag and hands the frame to the stream's HubCore; HubCore takes the frame
 * itself (counters, the cached GOP, the hub's Fanout) when it is an ordinary one: not a key frame
 * or a configuration, of the codec already seen, within the cache's bounds, while the hub says
 * ``fast`` (no sinks, no slow subscriptions) and the publisher is still the hub's. Anything else
 * goes to the Python callbacks, which do exactly what the pure-Python path does. Gop is the twin of
 * hubcore.Gop (a cached GOP), which the fast path appends to. A plain frame (an H.264 frame or an AAC
 * frame as it came) that every player takes now makes no object at all (lane_plain): the GOP
 * keeps its tag as a record, made a MediaFrame only when Python reads the GOP, and the players get
 * the tag itself. */
#include "native.h"

#include <errno.h>
#include <limits.h>
#include <structmember.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static PyObject *str_offer, *str_append, *str_popleft, *time_monotonic;
static PyObject *str_eof_received, *str_connection_lost, *str_pause_writing, *str_resume_writing;

/* ---- Gop (twin of hubcore.Gop) --------------------------------------------------------------- */

/* A frame the fast path cached without making it an object: its FLV tag (the message as it came),
 * copied into one of the GOP's blocks; made a MediaFrame when Python first looks at the GOP. */
typedef struct {
    const uint8_t *p;
    uint32_t n, timestamp;
    char video;
} GopRecord;

/* A block of a GOP's records: BLOCK_MIN << cls bytes. A GOP's blocks double from BLOCK_MIN up to
 * BLOCK_MAX (a low-rate stream wastes little; a high-rate one gets large blocks soon). */
typedef struct {
    uint8_t *p;
    int cls;
} GopBlock;

#define BLOCK_MIN (16 * 1024)
#define BLOCK_CLASSES 5 /* up to 256 KiB */
#define BLOCK_MAX (BLOCK_MIN << (BLOCK_CLASSES - 1))
#define POOL_MAX 64     /* blocks kept per class: at most 31 MiB in all */

typedef struct {
    PyObject_HEAD
    PyObject *configs, *frames; /* frames: the cached frames as objects, then (after them) ``recs`` */
    long long start_dts, nbytes;
    GopRecord *recs;
    Py_ssize_t n_recs, cap_recs;
    GopBlock *blocks;           /* where the records' tags are; the last one filled up to ``used`` */
    Py_ssize_t n_blocks, cap_blocks, used;
} GopObject;

static PyTypeObject GopType;

/* The blocks of every GOP: a GOP let go gives its blocks back, the next ones take them (the most
 * recently given first, while they may still be in the cache). */
static uint8_t *pool[BLOCK_CLASSES][POOL_MAX];
static int pool_n[BLOCK_CLASSES];

static void gop_release_records(GopObject *self) {
    for (Py_ssize_t i = 0; i < self->n_blocks; i++) {
        GopBlock b = self->blocks[i];
        if (pool_n[b.cls] < POOL_MAX) {
            pool[b.cls][pool_n[b.cls]++] = b.p;
        } else {
            PyMem_RawFree(b.p);
        }
    }
    self->n_blocks = self->n_recs = self->used = 0;
}

/* Room for one more item in the array ``*v`` (``n`` items of ``size`` bytes, room for ``*cap``; ``first``
 * when it has none): 0, or -1 (out of memory; nothing changed). */
static int reserve(void **v, Py_ssize_t n, Py_ssize_t *cap, Py_ssize_t first, size_t size) {
    if (n < *cap) return 0;
    Py_ssize_t grown_cap = *cap ? *cap * 2 : first;
    void *grown = PyMem_Realloc(*v, (size_t)grown_cap * size);
    if (grown == NULL) return -1;
    *v = grown;
    *cap = grown_cap;
    return 0;
}

/* Cache the tag p[0:n] (at most BLOCK_MAX bytes) as a record: 0 done, -1 out of memory. */
static int gop_add_record(GopObject *self, int video, uint32_t timestamp, const uint8_t *p, Py_ssize_t n) {
    if (reserve((void **)&self->recs, self->n_recs, &self->cap_recs, 64, sizeof(GopRecord)) < 0) return -1;
    int last = self->n_blocks ? self->blocks[self->n_blocks - 1].cls : -1; /* (the class of the last block) */
    if (last < 0 || self->used + n > ((Py_ssize_t)BLOCK_MIN << last)) {
        if (reserve((void **)&self->blocks, self->n_blocks, &self->cap_blocks, 4, sizeof(GopBlock)) < 0) return -1;
        int cls = last + 1 < BLOCK_CLASSES ? last + 1 : BLOCK_CLASSES - 1;
        while (((Py_ssize_t)BLOCK_MIN << cls) < n) cls++; /* (n <= BLOCK_MAX) */
        uint8_t *block = pool_n[cls] ? pool[cls][--pool_n[cls]] : PyMem_RawMalloc((size_t)BLOCK_MIN << cls);
        if (block == NULL) return -1;
        self->blocks[self->n_blocks++] = (GopBlock){block, cls};
        self->used = 0;
    }
    uint8_t *at = self->blocks[self->n_blocks - 1].p + self->used;
    memcpy(at, p, (size_t)n);
    self->used += n;
    self->recs[self->n_recs++] = (GopRecord){at, (uint32_t)n, timestamp, (char)video};
    return 0;
}

/* The records made MediaFrames, appended to ``frames`` (all or, on an error, none): 0, or -1. */
static int gop_materialize(GopObject *self) {
    if (self->n_recs == 0) return 0;
    if (self->frames == NULL || !PyList_Check(self->frames)) {
        PyErr_SetString(PyExc_TypeError, "Gop.frames must be a list");
        return -1;
    }
    PyObject *made = PyList_New(0);
    if (made == NULL) return -1;
    for (Py_ssize_t i = 0; i < self->n_recs; i++) {
        GopRecord *r = &self->recs[i];
        int as_built;
        PyObject *frame = native_tag_frame(r->video, r->p, r->n, NULL, r->timestamp, &as_built);
        if (frame == NULL || (frame != Py_None && PyList_Append(made, frame) < 0)) {
            Py_XDECREF(frame);
            Py_DECREF(made);
            return -1;
        }
        Py_DECREF(frame);
    }
    Py_ssize_t at = PyList_GET_SIZE(self->frames);
    int rc = PyList_SetSlice(self->frames, at, at, made);
    Py_DECREF(made);
    if (rc == 0) gop_release_records(self);
    return rc;
}

static int Gop_init(GopObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"configs", "start_dts", "frames", "nbytes", NULL};
    PyObject *configs, *frames;
    long long start_dts, nbytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OLO!L:Gop", kwlist, &configs, &start_dts, &PyList_Type, &frames, &nbytes))
        return -1;
    gop_release_records(self);
    Py_XSETREF(self->configs, Py_NewRef(configs));
    Py_XSETREF(self->frames, Py_NewRef(frames));
    self->start_dts = start_dts;
    self->nbytes = nbytes;
    return 0;
}

static int Gop_traverse(GopObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->configs);
    Py_VISIT(self->frames);
    return 0;
}

static int Gop_clear(GopObject *self) {
    Py_CLEAR(self->configs);
    Py_CLEAR(self->frames);
    return 0;
}

static void Gop_dealloc(GopObject *self) {
    PyObject_GC_UnTrack(self);
    Gop_clear(self);
    gop_release_records(self);
    PyMem_Free(self->recs);
    PyMem_Free(self->blocks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Gop_set_frames(GopObject *self, PyObject *value, void *closure) {
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Gop.frames must be a list");
        return -1;
    }
    gop_release_records(self);
    Py_XSETREF(self->frames, Py_NewRef(value));
    return 0;
}

static PyObject *Gop_get_frames(GopObject *self, void *closure) {
    if (gop_materialize(self) < 0) return NULL;
    return Py_NewRef(self->frames ? self->frames : Py_None);
}

static PyMemberDef Gop_members[] = {
    {"configs", T_OBJECT, offsetof(GopObject, configs), 0, NULL},
    {"start_dts", T_LONGLONG, offsetof(GopObject, start_dts), 0, NULL},
    {"nbytes", T_LONGLONG, offsetof(GopObject, nbytes), 0, NULL},
    {"records", T_PYSSIZET, offsetof(GopObject, n_recs), READONLY,
     "frames the fast path cached as records, made MediaFrames (at the end of frames) when it is read"},
    {NULL},
};

static PyGetSetDef Gop_getset[] = {
    {"frames", (getter)Gop_get_frames, (setter)Gop_set_frames, NULL, NULL},
    {NULL},
};

static PyTypeObject GopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.Gop",
    .tp_doc = PyDoc_STR("Gop(configs, start_dts, frames: list, nbytes): one cached GOP (hubcore.Gop's twin)."),
    .tp_basicsize = sizeof(GopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gop_init,
    .tp_dealloc = (destructor)Gop_dealloc,
    .tp_traverse = (traverseproc)Gop_traverse,
    .tp_clear = (inquiry)Gop_clear,
    .tp_members = Gop_members,
    .tp_getset = Gop_getset,
};

/* ---- HubCore ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    long long frames_in, bytes_in, rate_bytes, cache_bytes;
    long long gop_max_bytes, gop_max_ms, cache_max_bytes, fan_version, preroll_ms;
    double last_frame, rate_start, bitrate;
    PyObject *gops, *gop, *configs, *video_codec, *audio_codec, *fan, *publisher, *clock;
    char has_video, fast;
} HubCoreObject;

static PyTypeObject HubCoreType;

static int HubCore_init(HubCoreObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock", NULL};
    PyObject *clock = time_monotonic;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:HubCore", kwlist, &clock)) return -1;
    Py_XSETREF(self->clock, Py_NewRef(clock));
    PyObject **objs[] = {&self->gops, &self->gop, &self->video_codec, &self->audio_codec, &self->fan, &self->publisher};
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++) Py_XSETREF(*objs[i], Py_NewRef(Py_None));
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return -1;
    Py_XSETREF(self->configs, empty);
    self->fan_version = -1;
    return 0;
}

static int HubCore_traverse(HubCoreObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->gops);
    Py_VISIT(self->configs);
    Py_VISIT(self->gop);
    Py_VISIT(self->video_codec);
    Py_VISIT(self->audio_codec);
    Py_VISIT(self->fan);
    Py_VISIT(self->publisher);
    Py_VISIT(self->clock);
    return 0;
}

static int HubCore_clear(HubCoreObject *self) {
    Py_CLEAR(self->gops);
    Py_CLEAR(self->configs);
    Py_CLEAR(self->gop);
    Py_CLEAR(self->video_codec);
    Py_CLEAR(self->audio_codec);
    Py_CLEAR(self->fan);
    Py_CLEAR(self->publisher);
    Py_CLEAR(self->clock);
    return 0;
}

static void HubCore_dealloc(HubCoreObject *self) {
    PyObject_GC_UnTrack(self);
    HubCore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The hub's clock now: time.monotonic read directly, any other clock called. */
static int core_now(HubCoreObject *self, double *now) {
    if (self->clock == time_monotonic) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(self->clock);
    if (r == NULL) return -1;
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return *now == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static void core_count(HubCoreObject *self, long long size, double now) {
    self->frames_in++;
    self->bytes_in += size;
    self->last_frame = now;
    self->rate_bytes += size;
    if (now - self->rate_start >= 1.0) {
        double rate = (double)self->rate_bytes * 8 / (now - self->rate_start);
        self->bitrate = self->bitrate == 0.0 ? rate : 0.5 * self->bitrate + 0.5 * rate;
        self->rate_start = now;
        self->rate_bytes = 0;
    }
}

static PyObject *HubCore_count(HubCoreObject *self, PyObject *arg) {
    long long size = PyLong_AsLongLong(arg);
    if (size == -1 && PyErr_Occurred()) return NULL;
    double now;
    if (core_now(self, &now) < 0) return NULL;
    core_count(self, size, now);
    Py_RETURN_NONE;
}

static int as_int64(PyObject *obj, int64_t *out) { /* owns obj */
    if (obj == NULL) return -1;
    long long v = PyLong_AsLongLong(obj);
    Py_DECREF(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* A key frame starts a GOP (StreamHub._new_gop): appended to ``gops``, older GOPs let go beyond the
 * history kept and the cache bound. The key frame is ``frame`` or (NULL) the plain one whose tag is
 * tag[0:tag_n] at ``dts``, kept as a record. 0 done, -1 error. */
static int core_new_gop(HubCoreObject *self, PyObject *frame, int64_t dts, Py_ssize_t size, const uint8_t *tag,
                        Py_ssize_t tag_n) {
    GopObject *gop = PyObject_GC_New(GopObject, &GopType);
    if (gop == NULL) return -1;
    gop->recs = NULL;
    gop->blocks = NULL;
    gop->n_recs = gop->cap_recs = gop->n_blocks = gop->cap_blocks = gop->used = 0;
    gop->configs = Py_NewRef(self->configs);
    gop->start_dts = dts;
    gop->nbytes = size;
    if ((gop->frames = PyList_New(frame != NULL)) == NULL) {
        gop->configs = NULL; /* (a plain dealloc: nothing else set) */
        Py_DECREF(self->configs);
        PyObject_GC_Del(gop);
        return -1;
    }
    if (frame != NULL) PyList_SET_ITEM(gop->frames, 0, Py_NewRef(frame));
    PyObject_GC_Track(gop);
    if (frame == NULL && gop_add_record(gop, 1, (uint32_t)dts, tag, tag_n) < 0) {
        Py_DECREF(gop);
        PyErr_NoMemory();
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(self->gops, str_append, (PyObject *)gop);
    if (r == NULL) {
        Py_DECREF(gop);
        return -1;
    }
    Py_DECREF(r);
    Py_SETREF(self->gop, (PyObject *)gop);
    self->cache_bytes += size;
    int64_t keep_from = dts - self->preroll_ms;
    for (;;) {
        Py_ssize_t n = PyObject_Length(self->gops);
        if (n < 0) return -1;
        if (n <= 1) break;
        PyObject *second = PySequence_GetItem(self->gops, 1);
        if (second == NULL) return -1;
        int drop = Py_TYPE(second) != &GopType || ((GopObject *)second)->start_dts <= keep_from ||
                   self->cache_bytes > self->cache_max_bytes;
        Py_DECREF(second);
        if (!drop) break;
        PyObject *old = PyObject_CallMethodNoArgs(self->gops, str_popleft);
        if (old == NULL) return -1;
        if (Py_TYPE(old) == &GopType) self->cache_bytes -= ((GopObject *)old)->nbytes;
        Py_DECREF(old);
    }
    return 0;
}

/* The subscriptions that refused ``frame`` (``refused``: a list, or None) queue it, its message ``msg``
 * memoised for them (``put(frame, msg)``): 0, or -1. */
static int offer_refused(PyObject *refused, PyObject *put, PyObject *frame, PyObject *msg, int sync) {
    if (refused == Py_None || !PyList_GET_SIZE(refused)) return 0;
    PyObject *r = PyObject_CallFunctionObjArgs(put, frame, msg, NULL);
    if (r == NULL) return -1;
    Py_DECREF(r);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refused); i++) {
        r = PyObject_CallMethodObjArgs(PyList_GET_ITEM(refused, i), str_offer, frame, sync ? Py_True : Py_False,
                                       Py_False, NULL);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* The fast path for ``frame`` from ``publisher``, whose RTMP message for every player is ``msg``
 * (what ``fn``, the server's message memo, would give; ``put(frame, msg)`` stores it there): what
 * StreamHub._publish does for an ordinary frame or key frame while nothing else needs it (no sinks,
 * no slow subscriptions, the codec already known, the cache within its bounds). 1 taken, 0 not
 * (nothing changed: the caller hands it to the hub's Python path), -1 error. */
static int core_take(HubCoreObject *self, PyObject *publisher, PyObject *frame, PyObject *fn, PyObject *msg,
                     PyObject *put) {
    if (!self->fast || self->publisher != publisher || !native_is_fanout(self->fan) ||
        (long long)native_fanout_version(self->fan) != self->fan_version)
        return 0;
    int rc = -1, video, key = 0;
    PyObject *codec = NULL, *flag = NULL, *data = NULL, *refused = NULL;
    int64_t dts;
    double now;
    if (core_now(self, &now) < 0) goto done; /* (first: a Python clock may change anything) */
    if ((flag = native_frame_field(frame, FF_IS_CONFIG)) == NULL) goto done;
    if (flag != Py_False) goto not_taken;
    Py_CLEAR(flag);
    if ((codec = native_frame_field(frame, FF_CODEC)) == NULL) goto done;
    if (codec == self->video_codec) {
        video = 1;
        if ((flag = native_frame_field(frame, FF_KEYFRAME)) == NULL) goto done;
        key = flag == Py_True;
        if (!key && flag != Py_False) goto not_taken;
    } else if (codec == self->audio_codec) {
        video = 0;
    } else {
        goto not_taken;
    }
    if (as_int64(native_frame_field(frame, FF_DTS), &dts) < 0) goto done;
    if ((data = native_frame_field(frame, FF_DATA)) == NULL) goto done;
    if (!PyBytes_Check(data)) goto not_taken;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    GopObject *gop = NULL;
    if (key) { /* a GOP of its own within the bounds, a place to keep it */
        if (size > self->gop_max_bytes || self->gops == Py_None || !PyTuple_Check(self->configs)) goto not_taken;
    } else if (self->gop != Py_None) { /* within the bounds, else the Python path trims the cache */
        if (Py_TYPE(self->gop) != &GopType) goto not_taken;
        gop = (GopObject *)self->gop;
        if (gop->nbytes + size > self->gop_max_bytes || dts - gop->start_dts > self->gop_max_ms ||
            self->cache_bytes + size > self->cache_max_bytes)
            goto not_taken;
    }
    core_count(self, size, now);
    if (video) self->has_video = 1;
    if (key) {
        if (core_new_gop(self, frame, dts, size, NULL, 0) < 0) goto done;
    } else if (gop != NULL) {
        if (gop_materialize(gop) < 0 || PyList_Append(gop->frames, frame) < 0) goto done; /* (in order) */
        gop->nbytes += size;
        self->cache_bytes += size;
    }
    int sync = key || (!video && !self->has_video); /* in an audio-only stream every frame is a starting point */
    refused = native_fanout_send(self->fan, frame, dts, 0, size, fn, msg);
    if (refused == NULL) goto done;
    if (offer_refused(refused, put, frame, msg, sync) < 0) goto done;
    rc = 1;
    goto done;
not_taken:
    rc = 0;
done:
    Py_XDECREF(codec);
    Py_XDECREF(flag);
    Py_XDECREF(data);
    Py_XDECREF(refused);
    return rc;
}

static PyMemberDef HubCore_members[] = {
    {"frames_in", T_LONGLONG, offsetof(HubCoreObject, frames_in), 0, NULL},
    {"bytes_in", T_LONGLONG, offsetof(HubCoreObject, bytes_in), 0, NULL},
    {"rate_bytes", T_LONGLONG, offsetof(HubCoreObject, rate_bytes), 0, NULL},
    {"cache_bytes", T_LONGLONG, offsetof(HubCoreObject, cache_bytes), 0, NULL},
    {"gop_max_bytes", T_LONGLONG, offsetof(HubCoreObject, gop_max_bytes), 0, NULL},
    {"gop_max_ms", T_LONGLONG, offsetof(HubCoreObject, gop_max_ms), 0, NULL},
    {"cache_max_bytes", T_LONGLONG, offsetof(HubCoreObject, cache_max_bytes), 0, NULL},
    {"fan_version", T_LONGLONG, offsetof(HubCoreObject, fan_version), 0, NULL},
    {"last_frame", T_DOUBLE, offsetof(HubCoreObject, last_frame), 0, NULL},
    {"rate_start", T_DOUBLE, offsetof(HubCoreObject, rate_start), 0, NULL},
    {"bitrate", T_DOUBLE, offsetof(HubCoreObject, bitrate), 0, NULL},
    {"gop", T_OBJECT, offsetof(HubCoreObject, gop), 0, NULL},
    {"gops", T_OBJECT, offsetof(HubCoreObject, gops), 0, NULL},
    {"configs", T_OBJECT, offsetof(HubCoreObject, configs), 0, NULL},
    {"preroll_ms", T_LONGLONG, offsetof(HubCoreObject, preroll_ms), 0, NULL},
    {"video_codec", T_OBJECT, offsetof(HubCoreObject, video_codec), 0, NULL},
    {"audio_codec", T_OBJECT, offsetof(HubCoreObject, audio_codec), 0, NULL},
    {"fan", T_OBJECT, offsetof(HubCoreObject, fan), 0, NULL},
    {"publisher", T_OBJECT, offsetof(HubCoreObject, publisher), 0, NULL},
    {"clock", T_OBJECT, offsetof(HubCoreObject, clock), READONLY, NULL},
    {"has_video", T_BOOL, offsetof(HubCoreObject, has_video), 0, NULL},
    {"fast", T_BOOL, offsetof(HubCoreObject, fast), 0, NULL},
    {NULL},
};

static PyMethodDef HubCore_methods[] = {
    {"count", (PyCFunction)HubCore_count, METH_O, PyDoc_STR("count(size): one frame of size bytes arrived now.")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HubCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.HubCore",
    .tp_doc = PyDoc_STR("HubCore(clock=time.monotonic): a hub's per-frame state (media/hubcore.py's twin); a "
                        "PublishLane hands it ordinary frames, which it takes without Python while fast."),
    .tp_basicsize = sizeof(HubCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HubCore_init,
    .tp_dealloc = (destructor)HubCore_dealloc,
    .tp_traverse = (traverseproc)HubCore_traverse,
    .tp_clear = (inquiry)HubCore_clear,
    .tp_members = HubCore_members,
    .tp_methods = HubCore_methods,
};

/* ---- PublishLane ------------------------------------------------------------------------------ */

typedef struct {
    long long stream_id;
    PyObject *publisher;
    HubCoreObject *core;
} LaneStream;

typedef struct {
    PyObject_HEAD
    PyObject *reader;   /* the connection's ChunkReader */
    PyObject *memo;     /* the server's message memo (a player's message()) */
    PyObject *put;      /* memo.put */
    PyObject *slow;     /* slow(stream_id, frame, msg | None): a frame the core did not take */
    PyObject *fallback; /* fallback(stream_id, is_video, timestamp, payload): a tag that did not parse */
    long csid[2];       /* the chunk stream ids of the messages players get: [0] audio, [1] video */
    PyObject *type[2];  /* and their type ids (what was given) */
    long type_id[2];    /* (as numbers) */
    LaneStream *streams;
    Py_ssize_t n, cap;
    long long frames_in, frames_plain;
    /* receiving on its own (data_received): */
    PyObject *wake;              /* wake(rest, error): what it cannot handle; NULL until armed */
    PyObject *protocol;          /* the connection's protocol: the other protocol callbacks go to it */
    int fd;                      /* its own descriptor of the connection's socket, which readable() reads (-1: none) */
    long long window_left;       /* bytes it may read before the owner must see them (acknowledgements) */
    long long unsynced, bytes_in; /* read since the owner last took them (take_unsynced); read in all */
    NativeRecords recs;          /* the reader's audio/video messages of one read */
} PublishLaneObject;

static PyTypeObject PublishLaneType;

static int PublishLane_init(PublishLaneObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"reader", "memo", "slow", "fallback", "video", "audio", NULL};
    PyObject *reader, *memo, *slow, *fallback, *vtype, *atype;
    long vcsid, acsid;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO(lO)(lO):PublishLane", kwlist, &reader, &memo, &slow, &fallback,
                                     &vcsid, &vtype, &acsid, &atype))
        return -1;
    if (!native_is_chunk_reader(reader)) {
        PyErr_SetString(PyExc_TypeError, "PublishLane needs the C ChunkReader");
        return -1;
    }
    self->fd = -1;
    long vt = PyLong_AsLong(vtype), at = PyLong_AsLong(atype);
    if ((vt == -1 || at == -1) && PyErr_Occurred()) return -1;
    self->type_id[1] = vt;
    self->type_id[0] = at;
    PyObject *put = PyObject_GetAttrString(memo, "put");
    if (put == NULL) return -1;
    Py_XSETREF(self->put, put);
    Py_XSETREF(self->reader, Py_NewRef(reader));
    Py_XSETREF(self->memo, Py_NewRef(memo));
    Py_XSETREF(self->slow, Py_NewRef(slow));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    self->csid[1] = vcsid;
    self->csid[0] = acsid;
    Py_XSETREF(self->type[1], Py_NewRef(vtype));
    Py_XSETREF(self->type[0], Py_NewRef(atype));
    return 0;
}

static void lane_clear_streams(PublishLaneObject *self) {
    Py_ssize_t n = self->n;
    self->n = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(self->streams[i].publisher);
        Py_DECREF((PyObject *)self->streams[i].core);
    }
}

static int PublishLane_traverse(PublishLaneObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->reader);
    Py_VISIT(self->memo);
    Py_VISIT(self->put);
    Py_VISIT(self->slow);
    Py_VISIT(self->fallback);
    Py_VISIT(self->wake);
    Py_VISIT(self->protocol);
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_VISIT(self->streams[i].publisher);
        Py_VISIT((PyObject *)self->streams[i].core);
    }
    return 0;
}

static int PublishLane_clear(PublishLaneObject *self) {
    lane_clear_streams(self);
    Py_CLEAR(self->reader);
    Py_CLEAR(self->memo);
    Py_CLEAR(self->put);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->type[0]);
    Py_CLEAR(self->type[1]);
    return 0;
}

static void lane_close_fd(PublishLaneObject *self);

static void PublishLane_dealloc(PublishLaneObject *self) {
    PyObject_GC_UnTrack(self);
    PublishLane_clear(self);
    lane_close_fd(self);
    PyMem_Free(self->streams);
    native_records_free(&self->recs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t lane_find(PublishLaneObject *self, long long stream_id) {
    for (Py_ssize_t i = 0; i < self->n; i++)
        if (self->streams[i].stream_id == stream_id) return i;
    return -1;
}

static void lane_remove_at(PublishLaneObject *self, Py_ssize_t i) {
    LaneStream s = self->streams[i];
    memmove(&self->streams[i], &self->streams[i + 1], (size_t)(self->n - i - 1) * sizeof(LaneStream));
    self->n--;
    Py_DECREF(s.publisher);
    Py_DECREF((PyObject *)s.core);
}

static PyObject *PublishLane_add(PublishLaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[2], &HubCoreType)) {
        PyErr_SetString(PyExc_TypeError, "add(stream_id, publisher, core: HubCore)");
        return NULL;
    }
    long long sid = PyLong_AsLongLong(args[0]);
    if (sid == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t i = lane_find(self, sid);
    if (i >= 0) lane_remove_at(self, i);
    if (reserve((void **)&self->streams, self->n, &self->cap, 2, sizeof(LaneStream)) < 0) return PyErr_NoMemory();
    LaneStream *s = &self->streams[self->n++];
    s->stream_id = sid;
    s->publisher = Py_NewRef(args[1]);
    s->core = (HubCoreObject *)Py_NewRef(args[2]);
    Py_RETURN_NONE;
}

static PyObject *PublishLane_discard(PublishLaneObject *self, PyObject *arg) {
    long long sid = PyLong_AsLongLong(arg);
    if (sid == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t i = lane_find(self, sid);
    if (i >= 0) lane_remove_at(self, i);
    Py_RETURN_NONE;
}

static PyObject *PublishLane_clear_method(PublishLaneObject *self, PyObject *unused) {
    lane_clear_streams(self);
    Py_RETURN_NONE;
}

/* The audio/video record ``r`` of a plain frame (native_plain_tag) of a stream whose core is fast, when every
 * player takes it now: what core_take does, without making the frame an object at all: it is cached
 * as a record (its tag copied into the GOP's blocks; a key frame starts a GOP) and sent from the tag as
 * it came. 1 taken, 0 not (nothing changed: the caller takes the object path), -1 error. */
static int lane_plain(PublishLaneObject *self, PyObject *publisher, HubCoreObject *core, NativeRecord *r) {
    int video = r->type_id == 9;
    const uint8_t *p = r->p;
    Py_ssize_t n = r->n, head = n <= BLOCK_MAX ? native_plain_tag(video, p, n) : 0;
    if (!head) return 0;
    PyObject *codec = native_codec(video);
    if (codec == NULL) return -1;
    double now;
    if (core_now(core, &now) < 0) return -1; /* (first: a Python clock may change anything) */
    if (!core->fast || core->publisher != publisher || !native_is_fanout(core->fan) ||
        (long long)native_fanout_version(core->fan) != core->fan_version ||
        codec != (video ? core->video_codec : core->audio_codec))
        return 0;
    Py_ssize_t size = n - head;
    int64_t dts = r->timestamp;
    int key = video && p[0] == 0x17;
    GopObject *gop = NULL;
    if (key) { /* a GOP of its own within the bounds, a place to keep it */
        if (size > core->gop_max_bytes || core->gops == Py_None || !PyTuple_Check(core->configs)) return 0;
    } else if (core->gop != Py_None) { /* within the bounds, else the Python path trims the cache */
        if (Py_TYPE(core->gop) != &GopType) return 0;
        gop = (GopObject *)core->gop;
        if (gop->nbytes + size > core->gop_max_bytes || dts - gop->start_dts > core->gop_max_ms ||
            core->cache_bytes + size > core->cache_max_bytes)
            return 0;
    }
    if (!native_fanout_plain_ok(core->fan, size, self->memo)) return 0;
    core_count(core, size, now);
    if (video) core->has_video = 1;
    if (key) {
        if (core_new_gop(core, NULL, dts, size, p, n) < 0) return -1;
    } else if (gop != NULL) {
        if (gop_add_record(gop, video, r->timestamp, p, n) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        gop->nbytes += size;
        core->cache_bytes += size;
    }
    self->frames_in++;
    self->frames_plain++;
    PyObject *refused =
        native_fanout_send_plain(core->fan, dts, size, self->memo, self->csid[video], self->type_id[video], p, n);
    if (refused == NULL) return -1;
    int rc = 1;
    if (refused != Py_None && PyList_GET_SIZE(refused)) { /* (a write changed or failed one) made for them */
        PyObject *msg = NULL, *body = NULL;
        int as_built;
        PyObject *frame = native_tag_frame(video, p, n, NULL, r->timestamp, &as_built);
        if (frame == NULL || (body = PyBytes_FromStringAndSize((const char *)p, n)) == NULL ||
            (msg = native_shared_message_split(self->csid[video], self->type[video], p, 0, body)) == NULL ||
            offer_refused(refused, self->put, frame, msg, key || (!video && !core->has_video)) < 0)
            rc = -1;
        Py_XDECREF(frame);
        Py_XDECREF(body);
        Py_XDECREF(msg);
    }
    Py_DECREF(refused);
    return rc;
}

/* The audio/video record ``r`` of a stream of this lane: 1 done, -1 error. Its frame's data is its
 * body when it has one (cut in place), else a copy: one buffer per frame; players get the tag's header
 * and that data as the message, as it came. */
static int lane_media(PublishLaneObject *self, long long sid, PyObject *publisher, HubCoreObject *core, NativeRecord *r) {
    int plain = lane_plain(self, publisher, core, r);
    if (plain) return plain;
    int video = r->type_id == 9, as_built = 0;
    Py_ssize_t n = r->n;
    uint8_t head[NATIVE_MAX_HEAD]; /* (r->p moves when the body becomes the data) */
    memcpy(head, r->p, n < NATIVE_MAX_HEAD ? (size_t)n : NATIVE_MAX_HEAD);
    PyObject *frame = native_tag_frame(video, r->p, n, &r->body, r->timestamp, &as_built);
    if (frame == NULL) {
        if (!native_is_flv_error()) return -1;
        PyErr_Clear(); /* the Python path parses it again and does what a bad tag calls for */
        PyObject *payload = native_record_payload(r);
        if (payload == NULL) return -1;
        PyObject *res = PyObject_CallFunction(self->fallback, "LOkO", sid, video ? Py_True : Py_False,
                                              (unsigned long)r->timestamp, payload);
        Py_DECREF(payload);
        if (res == NULL) return -1;
        Py_DECREF(res);
        return 1;
    }
    int rc = -1;
    PyObject *msg = NULL;
    if (frame == Py_None) {
        rc = 1;
        goto done;
    }
    self->frames_in++;
    if (as_built) { /* players get the tag as it came */
        PyObject *data = native_frame_field(frame, FF_DATA);
        if (data == NULL) goto done;
        Py_ssize_t head_len = PyBytes_Check(data) ? n - PyBytes_GET_SIZE(data) : -1;
        if (head_len >= 0 && head_len <= NATIVE_MAX_HEAD) {
            msg = native_shared_message_split(self->csid[video], self->type[video], head, (int)head_len, data);
        }
        Py_DECREF(data);
        if (msg == NULL && PyErr_Occurred()) goto done;
    }
    if (msg != NULL) {
        int taken = core_take(core, publisher, frame, self->memo, msg, self->put);
        if (taken) {
            rc = taken;
            goto done;
        }
    }
    PyObject *res = PyObject_CallFunction(self->slow, "LOO", sid, frame, msg != NULL ? msg : Py_None);
    if (res != NULL) {
        Py_DECREF(res);
        rc = 1;
    }
done:
    Py_XDECREF(msg);
    Py_DECREF(frame);
    return rc;
}

/* After the reader read (``rest``: its RawMessages, stolen; NULL: it raised), the records it left in
 * ``self->recs``: handled in order up to the first one not of a stream of this lane. Returns what the
 * lane does not handle: the records from that one on (as RawMessages), then ``rest``. */
static PyObject *lane_handle(PublishLaneObject *self, PyObject *rest) {
    NativeRecords recs = self->recs; /* its own: Python may run and feed meanwhile */
    self->recs = (NativeRecords){NULL, 0, 0};
    Py_ssize_t i = 0;
    if (rest == NULL) goto done;
    for (; i < recs.n && self->n; i++) {
        NativeRecord *r = &recs.v[i];
        Py_ssize_t k = lane_find(self, r->stream_id);
        if (k < 0) break;
        LaneStream s = self->streams[k]; /* held while Python may run and change the set */
        Py_INCREF(s.publisher);
        Py_INCREF((PyObject *)s.core);
        int rc = lane_media(self, r->stream_id, s.publisher, s.core, r);
        Py_DECREF(s.publisher);
        Py_DECREF((PyObject *)s.core);
        if (rc < 0) {
            Py_CLEAR(rest);
            goto done;
        }
    }
    if (i < recs.n) {
        PyObject *left = PyList_New(recs.n - i);
        if (left == NULL) {
            Py_CLEAR(rest);
            goto done;
        }
        for (Py_ssize_t j = i; j < recs.n; j++) {
            PyObject *raw = native_record_message(&recs.v[j]);
            if (raw == NULL) {
                Py_DECREF(left);
                Py_CLEAR(rest);
                goto done;
            }
            PyList_SET_ITEM(left, j - i, raw);
        }
        Py_ssize_t at = PyList_GET_SIZE(left);
        if (PyList_SetSlice(left, at, at, rest) < 0) Py_CLEAR(left);
        Py_SETREF(rest, left);
    }
done:
    native_records_clear(&recs);
    if (self->recs.v == NULL) {
        self->recs = recs;
    } else {
        native_records_free(&recs);
    }
    return rest;
}

/* What the lane does not handle of p[0:n] (records pointing into it are handled before it returns). */
static PyObject *lane_feed(PublishLaneObject *self, const uint8_t *p, Py_ssize_t n) {
    return lane_handle(self, native_chunk_feed_records(self->reader, p, n, &self->recs));
}

static PyObject *PublishLane_feed(PublishLaneObject *self, PyObject *data);

/* arm(window_left, wake, protocol): data_received may be called; see its doc. */
static PyObject *PublishLane_arm(PublishLaneObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "arm(window_left: int, wake: callable, protocol)");
        return NULL;
    }
    long long window = PyLong_AsLongLong(args[0]);
    if (window == -1 && PyErr_Occurred()) return NULL;
    self->window_left = window;
    Py_XSETREF(self->wake, Py_NewRef(args[1]));
    Py_XSETREF(self->protocol, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyObject *PublishLane_take_unsynced(PublishLaneObject *self, PyObject *unused) {
    long long n = self->unsynced;
    self->unsynced = 0;
    return PyLong_FromLongLong(n);
}

/* What a read left (``rest``, stolen; NULL: the reader raised): wake(rest, None) when messages are
 * left or the window is used up, wake(None, error) when the reader raised. */
static PyObject *lane_after_read(PublishLaneObject *self, PyObject *rest) {
    PyObject *r, *wake = Py_NewRef(self->wake); /* (it may re-arm meanwhile) */
    if (rest == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (value != NULL && tb != NULL) PyException_SetTraceback(value, tb);
        r = value != NULL ? PyObject_CallFunctionObjArgs(wake, Py_None, value, NULL) : NULL;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    } else if (PyList_GET_SIZE(rest) || self->unsynced >= self->window_left) {
        r = PyObject_CallFunctionObjArgs(wake, rest, Py_None, NULL);
    } else {
        r = Py_NewRef(Py_None);
    }
    Py_XDECREF(rest);
    Py_DECREF(wake);
    return r;
}

static int lane_armed(PublishLaneObject *self) {
    if (self->wake != NULL && self->reader != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "PublishLane receives only once armed");
    return 0;
}

/* data_received(data): the asyncio protocol's, while armed. */
static PyObject *PublishLane_data_received(PublishLaneObject *self, PyObject *data) {
    if (!lane_armed(self)) return NULL;
    Py_ssize_t n = PyBytes_Check(data) ? PyBytes_GET_SIZE(data) : PyObject_Length(data);
    if (n < 0) return NULL;
    self->bytes_in += n;
    self->unsynced += n;
    return lane_after_read(self, PublishLane_feed(self, data));
}

#define READ_SIZE (256 * 1024)

static void lane_close_fd(PublishLaneObject *self) {
    if (self->fd >= 0) close(self->fd);
    self->fd = -1;
}

/* set_fd(fd) -> int: readable() reads a descriptor of its own for fd's socket (a duplicate, closed by
 * the next set_fd and when the lane goes), returned, or -1 (fd -1: none; out of descriptors). */
static PyObject *PublishLane_set_fd(PublishLaneObject *self, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    int own = fd < 0 || fd > INT_MAX ? -1 : native_dup_fd((int)fd); /* (before the close: fd may be its own) */
    lane_close_fd(self);
    self->fd = own;
    return PyLong_FromLong(own);
}

/* One read buffer for every lane: they read one after another on the loop's thread, so what the
 * kernel just wrote is still in the cache when a frame's data is copied out of it. A lane that reads
 * while another one's read is being handled (a callback feeding it) gets a buffer of its own. */
static uint8_t *shared_rbuf;
static int shared_rbuf_busy;

/* readable(): the event loop's reader callback while set_fd() holds: one recv() (no bytes object per
 * read), then as data_received; at end of stream or on an error, wake(None, EOFError / OSError) and
 * nothing more (the owner lets the transport read again, and meet them itself). */
static PyObject *PublishLane_readable(PublishLaneObject *self, PyObject *unused) {
    if (self->fd < 0 || self->wake == NULL || self->reader == NULL) Py_RETURN_NONE; /* (a late callback) */
    int own = shared_rbuf_busy;
    uint8_t *buf = own ? PyMem_Malloc(READ_SIZE) : shared_rbuf != NULL ? shared_rbuf : (shared_rbuf = PyMem_Malloc(READ_SIZE));
    if (buf == NULL) return PyErr_NoMemory();
    if (!own) shared_rbuf_busy = 1;
    Py_ssize_t n = recv(self->fd, buf, READ_SIZE, MSG_DONTWAIT); /* (never blocks: no need to let the GIL go) */
    int err = errno;
    PyObject *res = NULL;
    if (n > 0) {
        self->bytes_in += n;
        self->unsynced += n;
        res = lane_after_read(self, lane_feed(self, buf, n));
    }
    if (own) {
        PyMem_Free(buf);
    } else {
        shared_rbuf_busy = 0;
    }
    if (n > 0) return res;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) Py_RETURN_NONE;
    PyObject *exc = n == 0 ? PyObject_CallFunction(PyExc_EOFError, "s", "end of stream")
                           : PyObject_CallFunction(PyExc_OSError, "is", err, strerror(err));
    if (exc == NULL) return NULL;
    PyObject *wake = Py_NewRef(self->wake);
    PyObject *r = PyObject_CallFunctionObjArgs(wake, Py_None, exc, NULL);
    Py_DECREF(wake);
    Py_DECREF(exc);
    return r;
}

PyObject *native_lane_readable(PyObject *lane) {
    if (Py_TYPE(lane) != &PublishLaneType) return PyObject_CallMethod(lane, "readable", NULL);
    return PublishLane_readable((PublishLaneObject *)lane, NULL);
}

/* The rest of the protocol: the connection's own (Python) protocol answers. */
static PyObject *lane_forward(PublishLaneObject *self, PyObject *name, PyObject *arg) {
    if (self->protocol == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PublishLane has no protocol to forward to");
        return NULL;
    }
    return arg == NULL ? PyObject_CallMethodNoArgs(self->protocol, name) : PyObject_CallMethodOneArg(self->protocol, name, arg);
}

static PyObject *PublishLane_eof_received(PublishLaneObject *self, PyObject *unused) {
    return lane_forward(self, str_eof_received, NULL);
}

static PyObject *PublishLane_connection_lost(PublishLaneObject *self, PyObject *exc) {
    return lane_forward(self, str_connection_lost, exc);
}

static PyObject *PublishLane_pause_writing(PublishLaneObject *self, PyObject *unused) {
    return lane_forward(self, str_pause_writing, NULL);
}

static PyObject *PublishLane_resume_writing(PublishLaneObject *self, PyObject *unused) {
    return lane_forward(self, str_resume_writing, NULL);
}

/* feed(data) -> the messages it did not handle (lane_handle). */
static PyObject *PublishLane_feed(PublishLaneObject *self, PyObject *data) {
    if (self->reader == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PublishLane is not initialised");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *rest = lane_feed(self, (const uint8_t *)view.buf, view.len);
    PyBuffer_Release(&view);
    return rest;
}

static Py_ssize_t PublishLane_len(PublishLaneObject *self) { return self->n; }

static PyMemberDef PublishLane_members[] = {
    {"frames_in", T_LONGLONG, offsetof(PublishLaneObject, frames_in), READONLY, "frames parsed here"},
    {"frames_plain", T_LONGLONG, offsetof(PublishLaneObject, frames_plain), READONLY,
     "of those, taken without a frame object (cached as records, sent from the tag)"},
    {"bytes_in", T_LONGLONG, offsetof(PublishLaneObject, bytes_in), READONLY, "bytes data_received was given"},
    {"unsynced", T_LONGLONG, offsetof(PublishLaneObject, unsynced), READONLY, "of those, not taken yet"},
    {NULL},
};

static PyMethodDef PublishLane_methods[] = {
    {"add", (PyCFunction)(void (*)(void))PublishLane_add, METH_FASTCALL,
     PyDoc_STR("add(stream_id, publisher, core): this stream's media are handled here (for publisher's hub).")},
    {"discard", (PyCFunction)PublishLane_discard, METH_O, PyDoc_STR("discard(stream_id): no longer.")},
    {"clear", (PyCFunction)PublishLane_clear_method, METH_NOARGS, PyDoc_STR("clear(): no stream any more.")},
    {"arm", (PyCFunction)(void (*)(void))PublishLane_arm, METH_FASTCALL,
     PyDoc_STR("arm(window_left, wake, protocol): the lane may be the connection's asyncio protocol: "
               "wake(rest, error) gets what it leaves; protocol the other callbacks.")},
    {"set_fd", (PyCFunction)PublishLane_set_fd, METH_O,
     PyDoc_STR("set_fd(fd) -> int: readable() reads a descriptor of its own for fd's socket (a duplicate, "
               "closed by the next set_fd and when the lane goes), returned; -1: none.")},
    {"readable", (PyCFunction)PublishLane_readable, METH_NOARGS,
     PyDoc_STR("readable(): the loop's reader callback: one recv() into the lane's buffer, then as "
               "data_received; at end of stream or error, wake(None, EOFError or OSError).")},
    {"eof_received", (PyCFunction)PublishLane_eof_received, METH_NOARGS, PyDoc_STR("the protocol's")},
    {"connection_lost", (PyCFunction)PublishLane_connection_lost, METH_O, PyDoc_STR("the protocol's")},
    {"pause_writing", (PyCFunction)PublishLane_pause_writing, METH_NOARGS, PyDoc_STR("the protocol's")},
    {"resume_writing", (PyCFunction)PublishLane_resume_writing, METH_NOARGS, PyDoc_STR("the protocol's")},
    {"take_unsynced", (PyCFunction)PublishLane_take_unsynced, METH_NOARGS,
     PyDoc_STR("take_unsynced() -> int: bytes data_received read since the last call.")},
    {"data_received", (PyCFunction)PublishLane_data_received, METH_O,
     PyDoc_STR("data_received(data): an asyncio protocol's data_received for the connection while armed: "
               "feed(data); wake(rest, None) when messages are left or window_left bytes were read since "
               "take_unsynced(), wake(None, error) when the reader raised.")},
    {"feed", (PyCFunction)PublishLane_feed, METH_O,
     PyDoc_STR("feed(data) -> list: read the chunks; handle each audio/video message of a stream given to "
               "add(); return the messages from the first other one on.")},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods PublishLane_as_sequence = {.sq_length = (lenfunc)PublishLane_len};

static PyTypeObject PublishLaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "iotvideo.media._native.PublishLane",
    .tp_doc = PyDoc_STR("PublishLane(reader, memo, slow, fallback, video=(csid, type_id), audio=(csid, type_id)): "
                        "a publishing RTMP connection's receive path in C (see feed)."),
    .tp_basicsize = sizeof(PublishLaneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PublishLane_init,
    .tp_dealloc = (destructor)PublishLane_dealloc,
    .tp_traverse = (traverseproc)PublishLane_traverse,
    .tp_clear = (inquiry)PublishLane_clear,
    .tp_members = PublishLane_members,
    .tp_methods = PublishLane_methods,
    .tp_as_sequence = &PublishLane_as_sequence,
};

int native_init_lane(PyObject *module) {
    if ((str_offer = PyUnicode_InternFromString("_offer")) == NULL ||
        (str_append = PyUnicode_InternFromString("append")) == NULL ||
        (str_popleft = PyUnicode_InternFromString("popleft")) == NULL ||
        (str_eof_received = PyUnicode_InternFromString("eof_received")) == NULL ||
        (str_connection_lost = PyUnicode_InternFromString("connection_lost")) == NULL ||
        (str_pause_writing = PyUnicode_InternFromString("pause_writing")) == NULL ||
        (str_resume_writing = PyUnicode_InternFromString("resume_writing")) == NULL)
        return -1;
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL) return -1;
    time_monotonic = PyObject_GetAttrString(time, "monotonic");
    Py_DECREF(time);
    if (time_monotonic == NULL) return -1;
    if (PyType_Ready(&GopType) < 0 || PyType_Ready(&HubCoreType) < 0 || PyType_Ready(&PublishLaneType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "Gop", (PyObject *)&GopType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "HubCore", (PyObject *)&HubCoreType) < 0) return -1;
    return PyModule_AddObjectRef(module, "PublishLane", (PyObject *)&PublishLaneType);
}
