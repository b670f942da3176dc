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
PyObject *native_parse_tag(int video, PyObject *payload, PyObject *timestamp); /* (MediaFrame | None, as_built) */
PyObject *native_chunk_feed(PyObject *reader, PyObject *data);                  /* reader.feed(data) */
PyObject *native_chunk_feed_raw(PyObject *reader, const uint8_t *p, Py_ssize_t n); /* reader.feed(p[0:n]) */
enum { FF_CODEC, FF_DTS, FF_PTS, FF_DATA, FF_KEYFRAME, FF_IS_CONFIG }; /* MediaFrame fields */
enum { RF_TYPE_ID, RF_STREAM_ID, RF_TIMESTAMP, RF_PAYLOAD }; /* RawMessage fields */
PyObject *native_frame_field(PyObject *frame, int k); /* a MediaFrame's field (new reference) */
PyObject *native_raw_field(PyObject *raw, int k);     /* a RawMessage's field (new reference) */
int native_is_flv_error(void);                        /* the exception set is flvtags.FlvError (or a subclass) */

/* lane.c, for the other parts */
PyObject *native_lane_readable(PyObject *lane); /* PublishLane.readable() */

/* fanout.c, for the other parts */
int native_is_fanout(PyObject *obj);
unsigned long long native_fanout_version(PyObject *fan);
PyObject *native_fanout_send(PyObject *fan, PyObject *frame, int64_t dts, int is_config, Py_ssize_t size, PyObject *fn,
                             PyObject *msg); /* Fanout.send; members whose message() is fn get msg */
PyObject *native_shared_message(long csid, PyObject *type_id, PyObject *payload); /* a new SharedMessage */

#endif
