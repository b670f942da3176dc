"""The log setup (iotvideo/logs.py): the hot path writes what the formatter would, in order,
soon, and steps aside whenever logging is configured otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo import logs
from iotvideo.logs import FLUSH_S, HotLog, LineHandler, setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ([\w.]+) (.*)$")


@pytest.fixture()
def stream() -> Iterator[io.StringIO]:
    """Logging as ``setup_logging`` leaves it, writing to a StringIO."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("info")
    out = io.StringIO()
    root.handlers[0].setStream(out)  # type: ignore[attr-defined]
    yield out
    root.handlers[0].flush()
    root.handlers[:], root.level = saved[0], saved[1]


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Without the handlers pytest's logging plugin adds for each test phase."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [h for h in saved if isinstance(h, LineHandler)]
    try:
        yield
    finally:
        root.handlers[:] = saved


def test_hot_lines_look_like_records_and_keep_their_order(stream: io.StringIO) -> None:
    hot = HotLog("iotvideo.test.hot")

    async def go() -> None:
        hot.info("first k=v")
        logging.getLogger("iotvideo.test.other").warning("second %d", 2)  # flushes what is queued first
        hot.info("third")
        assert "third" not in stream.getvalue()  # buffered ...
        await asyncio.sleep(FLUSH_S * 3)
        assert "third" in stream.getvalue()  # ... briefly

    with alone():
        asyncio.run(go())
    lines = stream.getvalue().splitlines()
    assert [LINE.match(ln).groups() for ln in lines] == [  # type: ignore[union-attr]
        ("INFO", "iotvideo.test.hot", "first k=v"), ("WARNING", "iotvideo.test.other", "second 2"),
        ("INFO", "iotvideo.test.hot", "third")]
    # The same time format as logging.Formatter's %(asctime)s.
    ref = logging.Formatter(logs.FORMAT).format(logging.LogRecord("n", logging.INFO, "", 0, "m", None, None))
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO n m$", ref)


def test_level_respected_and_other_configurations_get_records(stream: io.StringIO,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    hot = HotLog("iotvideo.test.level")
    logging.getLogger().setLevel(logging.WARNING)
    with alone():
        assert not hot.enabled()
        hot_written = stream.getvalue()
        logging.getLogger().setLevel(logging.INFO)
        assert hot.enabled()
        hot.info("direct")
        assert stream.getvalue().endswith(" INFO iotvideo.test.level direct\n") and not hot_written
    # caplog adds its own handler: the line must reach it as an ordinary record.
    with caplog.at_level(logging.INFO, logger="iotvideo.test.level"):
        hot.info("api k=v")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [("iotvideo.test.level", "INFO", "api k=v")]


def test_without_a_loop_lines_are_written_at_once(stream: io.StringIO) -> None:
    with alone():
        HotLog("iotvideo.test.sync").info("now")
    assert stream.getvalue().endswith(" INFO iotvideo.test.sync now\n")


def test_a_full_buffer_is_written_and_close_flushes() -> None:
    out = io.StringIO()
    h = LineHandler(out)

    async def go() -> None:
        for i in range(2000):
            h.add_line("INFO", "n", "x" * 60 + str(i))
        assert out.getvalue().count("\n") >= logs.MAX_BUFFER // 100  # written in big pieces
        h.close()
        assert out.getvalue().count("\n") == 2000

    asyncio.run(go())


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_the_gateway_line_shows_caller_strings_escaped(s: str) -> None:
    """Caller-chosen action names and key ids are cut and escaped: one line, always
    (the fast path for plain ASCII gives what unicode_escape gives)."""
    from iotvideo.openapi.gateway import _safe

    out = _safe(s)
    assert out == (s[:80].encode("unicode_escape").decode() if s else "-")
    assert "\n" not in out and "\r" not in out


def test_lines_from_other_threads_are_never_lost(stream: io.StringIO) -> None:
    """The loop's buffer is the main thread's own: another thread's lines go out at once."""
    import threading

    hot = HotLog("iotvideo.test.threads")

    def other() -> None:
        for i in range(500):
            hot.info(f"thread {i}")
            if i % 50 == 0:
                logging.getLogger("iotvideo.test.threads").warning("record %d", i)

    async def go() -> None:
        t = threading.Thread(target=other)
        t.start()
        for i in range(500):
            hot.info(f"loop {i}")
            if i % 20 == 0:
                await asyncio.sleep(0)
        t.join()
        await asyncio.sleep(FLUSH_S * 3)

    with alone():
        asyncio.run(go())
    lines = stream.getvalue().splitlines()
    assert all(LINE.match(ln) for ln in lines)
    for who in ("thread", "loop"):
        assert sorted(int(ln.rsplit(" ", 1)[1]) for ln in lines if f" {who} " in ln) == list(range(500))
    assert sum(" record " in ln for ln in lines) == 10
