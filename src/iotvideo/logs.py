"""Logging setup: one line per record, key=value, to stderr; and a cheap path for hot lines.

``setup_logging`` installs ONE :class:`LineHandler` on the root logger with the format
``%(asctime)s %(levelname)s %(name)s %(message)s``. Besides the usual records it takes
lines formatted by the caller (:class:`HotLog`: the API gateway's one line per call),
written as that formatter would write them but without a ``LogRecord``, ``formatTime``
(``strftime``) and a ``write`` + ``flush`` per line: they are buffered and written
together at most :data:`FLUSH_S` later (from the event loop), before any ordinary record
(so the order of lines is kept), when the buffer is full, and at exit.

A :class:`HotLog` respects the configuration: it writes nothing below its logger's level,
and whenever logging is set up otherwise than by ``setup_logging`` (another handler, a
filter, a handler on the logger itself; tests' ``caplog``) it hands the line to the
logger as an ordinary record instead.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FLUSH_S = 0.01  # buffered hot lines reach the stream at most this late
MAX_BUFFER = 64 * 1024  # characters: written at once when more are buffered


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that also takes pre-formatted lines, buffered (module docstring)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter(FORMAT))
        self._buf: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._sec = -1
        self._sec_text = ""
        atexit.register(self.flush_lines)

    def asctime(self, now: float) -> str:
        """``now`` as ``%(asctime)s`` shows it (local time, ``YYYY-mm-dd HH:MM:SS,mmm``); the
        strftime is done once a second (on the main thread: the cache is its own)."""
        sec = int(now)
        if threading.get_ident() != _MAIN:
            return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(sec))},{int((now - sec) * 1000):03d}"
        if sec != self._sec:
            self._sec_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
            self._sec = sec
        return f"{self._sec_text},{int((now - sec) * 1000):03d}"

    def add_line(self, level: str, name: str, message: str) -> None:
        """Queues one line: ``<asctime> <level> <name> <message>``. Only the main thread's
        event loop buffers (the buffer is its own, without a lock); elsewhere the line is
        written at once."""
        line = f"{self.asctime(time.time())} {level} {name} {message}\n"
        loop = asyncio._get_running_loop()
        if loop is None or threading.get_ident() != _MAIN:
            self.flush_lines()  # (a no-op off the main thread)
            self._write(line)
            return
        self._buf.append(line)
        self._size += len(line)
        if self._size >= MAX_BUFFER:
            self.flush_lines()
        elif self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(FLUSH_S, self._flush_later)
            self._timer_loop = loop

    def _flush_later(self) -> None:
        self._timer = None
        self.flush_lines()

    def flush_lines(self) -> None:
        """Writes the buffered lines now (main thread; elsewhere nothing happens: another
        thread's record may come before the loop's queued lines, as it could anyway)."""
        if not self._buf or threading.get_ident() != _MAIN:
            return
        buf, self._buf = self._buf, []
        self._size = 0
        self._write("".join(buf))

    def _write(self, text: str) -> None:
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream: as logging itself does, never raise
            pass
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        self.flush_lines()  # lines queued earlier come first
        super().emit(record)

    def flush(self) -> None:
        self.flush_lines()
        super().flush()

    def close(self) -> None:
        self.flush_lines()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().close()


_MAIN = threading.main_thread().ident


class HotLog:
    """An ``info`` line per event on a hot path: cheap when logging is set up by
    :func:`setup_logging`, an ordinary record otherwise (module docstring)."""

    __slots__ = ("logger", "name")

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.name = name

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def info(self, message: str) -> None:
        """Logs ``message`` (already formatted, one line) at ``info``; check :meth:`enabled` first."""
        handler = _hot_handler(self.logger)
        if handler is not None:
            handler.add_line("INFO", self.name, message)
        else:
            self.logger.info("%s", message)


def _hot_handler(lg: logging.Logger) -> LineHandler | None:
    """The root's LineHandler when it alone would write ``lg``'s info records unfiltered."""
    if lg.filters:
        return None
    c: logging.Logger | None = lg
    root = logging.root
    while c is not None and c is not root:
        if c.handlers or not c.propagate:
            return None
        c = c.parent
    hs = root.handlers
    if len(hs) != 1 or type(hs[0]) is not LineHandler or hs[0].filters or hs[0].level > logging.INFO:
        return None
    return hs[0]


def setup_logging(level: str = "info") -> None:
    handler = LineHandler(sys.stderr)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, LineHandler):
            old.flush_lines()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
