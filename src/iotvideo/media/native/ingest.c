/* The RTMP chunk reader and FLV tag parsing in C (twins of rtmp/chunk.py ChunkReader and flvtags.py). */
#include "native.h"

int native_init_ingest(PyObject *module) { return 0; }
