/* Fan-out of a stream's frames to its RTMP players in C (twins of rtmp/chunk.py ChunkWriter, SharedMessage). */
#include "native.h"

int native_init_fanout(PyObject *module) { return 0; }
