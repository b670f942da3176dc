/* iotvideo.media._native: the module object; the parts add their types (see native.h). */
#include "native.h"

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native",
    "C implementations of the media hot path; media/accel.py chooses them or their Python twins.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL) return NULL;
    if (native_init_fanout(m) < 0 || native_init_ingest(m) < 0 || native_init_lane(m) < 0 ||
        native_init_poll(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
