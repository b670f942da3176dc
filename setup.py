"""Build script for the optional C accelerator (``iotvideo.media._native``); metadata is in pyproject.toml.

The extension is optional: when it cannot be built (no compiler, no Python headers) the
package installs without it and the pure-Python media path runs (the same behaviour, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "iotvideo.media._native",
            sources=[f"src/iotvideo/media/native/{name}.c" for name in ("module", "fanout", "ingest", "lane", "poll")],
            depends=["src/iotvideo/media/native/native.h"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
