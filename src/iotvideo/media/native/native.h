/* The C accelerator of the media path (module iotvideo.media._native): shared declarations.
 *
 * Each part adds its types to the module; every type has a pure-Python twin that behaves the
 * same (media/accel.py picks one), and tests compare the two. Everything runs on the event
 * loop's thread with the GIL held. */
#ifndef IOTVIDEO_NATIVE_H
#define IOTVIDEO_NATIVE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int native_init_fanout(PyObject *module); /* fanout.c: ChunkWriter, SharedMessage, Timeline, RtmpOut, Fanout */
int native_init_ingest(PyObject *module); /* ingest.c: the RTMP chunk reader and FLV tag parsing */

#endif
