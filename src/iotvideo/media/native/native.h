/* The C accelerator of the media path (module iotvideo.media._native): shared declarations.
 *
 * Each part adds its types to the module; every type has a pure-Python twin that behaves the
 * same (media/accel.py picks one), and tests compare the two. Everything runs on the event
 * loop's thread with the GIL held. */
#ifndef IOTVIDEO_NATIVE_H
#define IOTVIDEO_NATIVE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

int native_init_fanout(PyObject *module); /* fanout.c: ChunkWriter, SharedMessage, Timeline, RtmpOut, Fanout */
int native_init_ingest(PyObject *module); /* ingest.c: the RTMP chunk reader and FLV tag parsing */
int native_init_lane(PyObject *module);   /* lane.c: HubCore, PublishLane */
int native_init_poll(PyObject *module);   /* poll.c: LanePoll (Linux: epoll) */

/* ingest.c, for the other parts */

/* A whole audio/video message the reader completed, not made into a RawMessage. */
typedef struct {
    uint8_t type_id;
    uint32_t stream_id;
    uint32_t timestamp;
    const uint8_t *p; /* the message: in ``body`` or, when that is NULL, in the input fed */
    Py_ssize_t n;
    PyObject *body;   /* an owned bytes holding it (nothing else refers to it), or NULL */
} NativeRecord;
typedef struct {
    NativeRecord *v;
    Py_ssize_t n, cap;
} NativeRecords;

int native_is_chunk_reader(PyObject *obj); /* a C ChunkReader */
/* reader.feed(p[0:n]) (reader: a C ChunkReader; recs: empty) where the audio/video messages before the
 * first other message become records in ``recs`` (in order) instead of RawMessages: the list of the
 * RawMessages, which follow the records. NULL with an exception (recs emptied). Records that point
 * into p[0:n] are valid while it is. */
PyObject *native_chunk_feed_records(PyObject *reader, const uint8_t *p, Py_ssize_t n, NativeRecords *recs);
void native_records_clear(NativeRecords *recs);       /* their bodies let go; n = 0 */
void native_records_free(NativeRecords *recs);        /* and the array */
PyObject *native_record_payload(NativeRecord *r);     /* its bytes (takes its body) */
PyObject *native_record_message(NativeRecord *r);     /* the RawMessage it would have been (takes its body) */
/* The MediaFrame of the FLV tag p[0:n] (a new reference; Py_None: none), as flvtags.parse_*_tag; *as_built:
 * the tag is exactly its header, then the frame's data. ``*own`` (or NULL): the bytes p[0:n] lives in, that
 * becomes the frame's data in place when nothing else holds it (then *own is set NULL and p is invalid). */
PyObject *native_tag_frame(int video, const uint8_t *p, Py_ssize_t n, PyObject **own, uint32_t timestamp, int *as_built);
enum { FF_CODEC, FF_DTS, FF_PTS, FF_DATA, FF_KEYFRAME, FF_IS_CONFIG }; /* MediaFrame fields */
PyObject *native_frame_field(PyObject *frame, int k); /* a MediaFrame's field (new reference) */
int native_is_flv_error(void);                        /* the exception set is flvtags.FlvError (or a subclass) */
PyObject *native_codec(int video); /* the H.264 or AAC Codec member (borrowed) */
/* The offset of the frame's data in the FLV tag p[0:n] when it is a plain one: an H.264 key or inter frame of
 * length-prefixed NAL units or an AAC frame, which native_tag_frame makes a MediaFrame of as it came (not a
 * configuration, *as_built); else 0. */
Py_ssize_t native_plain_tag(int video, const uint8_t *p, Py_ssize_t n);

/* lane.c, for the other parts */
PyObject *native_lane_readable(PyObject *lane); /* PublishLane.readable() */

/* fanout.c, for the other parts */
int native_is_fanout(PyObject *obj);
int native_dup_fd(int fd); /* a descriptor of our own for fd's file (close-on-exec), or -1 */
unsigned long long native_fanout_version(PyObject *fan);
PyObject *native_fanout_send(PyObject *fan, PyObject *frame, int64_t dts, int is_config, Py_ssize_t size, PyObject *fn,
                             PyObject *msg); /* Fanout.send; members whose message() is fn get msg */
int native_fanout_plain_ok(PyObject *fan, Py_ssize_t size, PyObject *fn); /* every member takes it directly now */
/* Fanout.send of a media frame whose message (csid, type_id) is p[0:n], without the frame: after plain_ok */
PyObject *native_fanout_send_plain(PyObject *fan, int64_t dts, Py_ssize_t size, PyObject *fn, long csid, long type_id,
                                   const uint8_t *p, Py_ssize_t n);
#define NATIVE_MAX_HEAD 16
/* a new SharedMessage whose payload is head[0:head_len] (at most NATIVE_MAX_HEAD bytes) + body (bytes) */
PyObject *native_shared_message_split(long csid, PyObject *type_id, const uint8_t *head, int head_len, PyObject *body);

#endif
