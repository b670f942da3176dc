"""The armed lanes' epoll (media/native/poll.c: ``LanePoll``) on real sockets, then in a real ``RtmpServer``.

``LanePoll.run`` calls ``readable()`` of each lane whose descriptor is readable. The lanes here are
real ``PublishLane``s (armed with a window of 0, so that every read wakes their owner: the test's
``wake`` is where a callback discards, closes, reuses or raises) and, where a lane must do something
a PublishLane cannot, a Python object with ``readable()``. Then a publisher on a real server: read by
its lane through the server's poll, acknowledged, played, and let go of when it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iotvideo.media import accel
from iotvideo.media.auth import StaticAuthorizer
from iotvideo.media.hub import FrameMemo, HubRegistry
from iotvideo.media.rtmp.messages import WindowAckSize
from iotvideo.media.rtmp_server import RtmpServer, _message

from rtmp_support import RtmpPeer

pytestmark = pytest.mark.skipif(accel.LanePoll is None, reason="no LanePoll (not built, or not Linux)")

AVC_CONFIG = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f" + bytes([1, 0, 2, 0x68, 0xEB])


def avc_tag(key: bool, n: int) -> bytes:
    return (b"\x17" if key else b"\x27") + b"\x01\x00\x00\x00" + struct.pack(">I", n) + b"\x65" * n


class End:
    """One lane on one end of a socketpair: the lane reads a descriptor of its own (``set_fd``
    duplicates the socket's, as the server's lanes do; ``fd``), the test writes to ``other``. ``woken`` is what the lane's ``wake`` was given."""

    def __init__(self, name: str, wake: Callable[[End, Any, Any], None] | None = None) -> None:
        self.name = name
        self.sock, self.other = socket.socketpair()
        self.sock.setblocking(False)
        self.writer = accel.ChunkWriter()
        self.woken: list[tuple[Any, Any]] = []
        self._on_wake = wake
        memo: FrameMemo[Any] = FrameMemo(_message)
        self.lane = accel.PublishLane(accel.ChunkReader(), memo, self._never, self._never, (6, 9), (4, 8))
        self.lane.arm(0, self._wake, self)  # window 0: every read wakes
        self.fd = self.lane.set_fd(self.sock.fileno())
        assert self.fd >= 0 and self.fd != self.sock.fileno()

    @staticmethod
    def _never(*args: Any) -> None:
        raise AssertionError("no stream was added to the lane")

    def _wake(self, rest: Any, error: Any) -> None:
        self.woken.append((rest, error))
        if self._on_wake is not None:
            self._on_wake(self, rest, error)

    def send(self, n: int = 1) -> int:
        """``n`` video messages on stream 1 (the lane has no stream: they come back to ``wake``)."""
        data = b"".join(bytes(self.writer.write(6, 9, 1, 40 * i, avc_tag(False, 100))) for i in range(n))
        self.other.sendall(data)
        return len(data)

    def close_fd(self) -> None:
        if self.fd >= 0:
            self.lane.set_fd(-1)  # (the lane closes its descriptor)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.sock.close()
        self.other.close()


@contextlib.contextmanager
def ends(*names: str, wake: Callable[[End, Any, Any], None] | None = None) -> Iterator[list[End]]:
    made = [End(n, wake) for n in names]
    try:
        yield made
    finally:
        for e in made:
            e.close()


def wait_readable(poll: Any, timeout: float = 5.0) -> None:
    """Until the poll's descriptor is readable, as the loop would see it (some lane is ready)."""
    r, _, _ = select.select([poll.fileno()], [], [], timeout)
    assert r, "the poll's descriptor did not become readable"


class Errors:
    def __init__(self) -> None:
        self.got: list[tuple[Any, BaseException]] = []

    def __call__(self, lane: Any, exc: BaseException) -> None:
        self.got.append((lane, exc))


# --- the poll on its own ------------------------------------------------------------------------


def test_several_lanes_on_one_poll_each_read_when_readable() -> None:
    errors = Errors()
    poll = accel.LanePoll(errors)
    with ends("a", "b", "c") as (a, b, c):
        for e in (a, b, c):
            poll.add(e.fd, e.lane)
        assert len(poll) == 3 and all(poll.watches(e.fd) for e in (a, b, c))
        assert poll.run() is None and poll.runs == 1 and poll.reads == 0  # nothing readable: nothing called
        sent_a, sent_c = a.send(3), c.send(1)
        wait_readable(poll)
        poll.run()
        # one recv per lane per run(); a socketpair delivers a small write at once
        assert len(a.woken) == 1 and len(c.woken) == 1 and b.woken == []
        assert [len(a.woken[0][0]), len(c.woken[0][0])] == [3, 1]  # the messages, handed back
        assert a.lane.bytes_in == sent_a and c.lane.bytes_in == sent_c and b.lane.bytes_in == 0
        assert poll.reads == 2
        poll.run()  # drained: nothing more
        assert (len(a.woken), len(b.woken), len(c.woken)) == (1, 0, 1)
        b.send(2)
        wait_readable(poll)
        poll.run()
        assert len(b.woken) == 1 and len(b.woken[0][0]) == 2
        for e in (a, b, c):
            poll.discard(e.fd)
        assert len(poll) == 0
        a.send(1)
        poll.run()
        assert len(a.woken) == 1  # not in the set any more
    assert errors.got == []
    poll.close()


def lowest_free_is(number: int) -> list[int]:
    """Descriptors opened on /dev/null to fill every free number below ``number`` (free itself), so
    that the next one made gets ``number``; the caller closes them."""
    fillers = []
    while True:
        f = os.open(os.devnull, os.O_RDONLY)
        if f >= number:
            os.close(f)
            assert f == number, (f, number)
            return fillers
        fillers.append(f)


def test_add_discard_and_close_rules() -> None:
    with pytest.raises(TypeError):
        accel.LanePoll(42)
    poll = accel.LanePoll(Errors())
    assert poll.fileno() >= 0 and not poll.closed
    with ends("a", "b") as (a, b):
        with pytest.raises(ValueError):
            poll.add(-1, a.lane)
        poll.add(a.fd, a.lane)
        b.fd = b.lane.set_fd(a.sock.fileno())  # b reads a's socket
        poll.add(a.fd, b.lane)  # a second add for the same descriptor replaces the lane
        assert len(poll) == 1
        a.send(1)
        wait_readable(poll)
        poll.run()
        assert a.woken == [] and len(b.woken) == 1
        b.fd = b.lane.set_fd(b.sock.fileno())
        poll.discard(a.fd)
        poll.discard(a.fd)  # not there: nothing
        poll.discard(12345)
        poll.add(a.fd, a.lane)
        refs = sys.getrefcount(a.lane)
        poll.close()
        after = sys.getrefcount(a.lane)
        assert after == refs - 1  # let go
        assert poll.closed and poll.fileno() == -1 and len(poll) == 0
        poll.close()  # again: nothing
        poll.discard(a.fd)  # nothing
        assert poll.run() is None
        with pytest.raises(ValueError):
            poll.add(a.fd, a.lane)


def test_a_lane_discarded_during_run_by_another_lanes_callback_is_never_touched() -> None:
    """Both lanes are ready in the same run(); the first one called discards the other and closes its
    descriptor (as a publisher replacing another one's stream closes that connection)."""
    poll = accel.LanePoll(Errors())
    order: list[str] = []

    def wake(e: End, rest: Any, error: Any) -> None:
        order.append(e.name)
        other = b if e is a else a
        if other.fd >= 0:
            poll.discard(other.fd)
            other.close_fd()

    with ends("a", "b", wake=wake) as (a, b):
        for e in (a, b):
            poll.add(e.fd, e.lane)
            e.send(1)
        wait_readable(poll)
        poll.run()
        assert len(order) == 1  # the other one was ready too, but discarded before its turn
        other = b if order[0] == "a" else a
        assert other.woken == [] and other.lane.bytes_in == 0 and len(poll) == 1


def test_a_lane_that_discards_itself_and_drops_its_last_reference_is_held_until_its_call_returns() -> None:
    poll = accel.LanePoll(Errors())
    box: dict[str, Any] = {}

    def wake(e: End, rest: Any, error: Any) -> None:
        poll.discard(e.fd)
        e.close_fd()
        box.pop("lane")  # the poll's reference is the last one now
        e.lane = None

    with ends("a", wake=wake) as (a,):
        poll.add(a.fd, a.lane)
        box["lane"] = a.lane
        a.send(2)
        wait_readable(poll)
        poll.run()  # (the lane's readable() is still running when its wake drops it)
        assert len(a.woken) == 1 and len(poll) == 0 and "lane" not in box
        gc.collect()


def test_an_fd_number_closed_and_reused_during_run_is_not_taken_for_the_old_one() -> None:
    """The first lane called discards the other, closes its descriptor and adds a new lane under the
    same number (which is readable already). The old descriptor's event of this run() must not call
    the new lane; the next run() does."""
    poll = accel.LanePoll(Errors())
    made: list[End] = []

    def wake(e: End, rest: Any, error: Any) -> None:
        if made:
            return
        other = b if e is a else a
        new = End("new")  # (before the close: its socket must not take the number itself)
        made.append(new)
        number = other.fd
        poll.discard(number)
        other.close_fd()
        new.send(1)
        fillers = lowest_free_is(number)
        new.fd = new.lane.set_fd(new.sock.fileno())  # the new lane's descriptor gets the old number
        for f in fillers:
            os.close(f)
        assert new.fd == number
        poll.add(number, new.lane)

    with ends("a", "b", wake=wake) as (a, b):
        try:
            for e in (a, b):
                poll.add(e.fd, e.lane)
                e.send(1)
            wait_readable(poll)
            poll.run()
            assert len(made) == 1
            new = made[0]
            assert len(a.woken) + len(b.woken) == 1  # the first one only
            assert new.woken == [] and new.lane.bytes_in == 0  # not called for the old descriptor's event
            assert poll.watches(new.fd) and len(poll) == 2
            wait_readable(poll)
            poll.run()
            assert len(new.woken) == 1 and new.lane.bytes_in > 0
        finally:
            for e in made:
                e.close()


def test_a_poll_closed_and_dropped_by_a_lanes_callback_calls_no_other_lane() -> None:
    holder: dict[str, Any] = {"poll": accel.LanePoll(Errors())}

    def wake(e: End, rest: Any, error: Any) -> None:
        poll = holder.pop("poll", None)
        if poll is not None:
            poll.close()  # (the server shutting down from inside a read; its last reference goes)

    with ends("a", "b", "c", wake=wake) as group:
        poll = holder["poll"]
        for e in group:
            poll.add(e.fd, e.lane)
            e.send(1)
        wait_readable(poll)
        run = poll.run
        del poll
        run()
        assert sum(len(e.woken) for e in group) == 1 and "poll" not in holder
        assert run.__self__.closed and len(run.__self__) == 0


def test_an_exception_in_one_lane_goes_to_on_error_and_the_others_are_read() -> None:
    errors = Errors()
    poll = accel.LanePoll(errors)

    def wake(e: End, rest: Any, error: Any) -> None:
        if e.name == "bad":
            raise RuntimeError("boom")

    with ends("bad", "good1", "good2", wake=wake) as group:
        for e in group:
            poll.add(e.fd, e.lane)
        for round_ in (1, 2):  # the poll goes on working
            for e in group:
                e.send(1)
            wait_readable(poll)
            poll.run()
            assert [len(e.woken) for e in group] == [round_] * 3
            assert len(errors.got) == round_
            lane, exc = errors.got[-1]
            assert lane is group[0].lane and isinstance(exc, RuntimeError) and str(exc) == "boom"
            assert exc.__traceback__ is not None
        assert len(poll) == 3


def test_a_failing_on_error_is_raised_by_run_after_the_other_lanes() -> None:
    def on_error(lane: Any, exc: BaseException) -> None:
        raise ValueError("on_error failed")

    poll = accel.LanePoll(on_error)

    def wake(e: End, rest: Any, error: Any) -> None:
        if e.name == "bad":
            raise RuntimeError("boom")

    with ends("bad", "good", wake=wake) as (bad, good):
        for e in (bad, good):
            poll.add(e.fd, e.lane)
            e.send(1)
        wait_readable(poll)
        with pytest.raises(ValueError, match="on_error failed"):
            poll.run()
        assert len(bad.woken) == 1 and len(good.woken) == 1  # both read
        good.send(1)
        wait_readable(poll)
        poll.run()  # still working
        assert len(good.woken) == 2


def test_a_python_lane_is_called_through_readable() -> None:
    """Anything with ``readable()`` can be in the set (``native_lane_readable`` calls it)."""
    errors = Errors()
    poll = accel.LanePoll(errors)
    sock, other = socket.socketpair()
    calls: list[bytes] = []

    class Reader:
        def readable(self) -> None:
            calls.append(sock.recv(100))
            raise KeyError("python lane")

    try:
        lane = Reader()
        poll.add(sock.fileno(), lane)
        other.sendall(b"xyz")
        wait_readable(poll)
        poll.run()
        assert calls == [b"xyz"] and len(errors.got) == 1 and errors.got[0][0] is lane
        assert isinstance(errors.got[0][1], KeyError)
        poll.discard(sock.fileno())
    finally:
        sock.close()
        other.close()
        poll.close()


def test_end_of_stream_wakes_the_lane_with_eof() -> None:
    poll = accel.LanePoll(Errors())

    def wake(e: End, rest: Any, error: Any) -> None:
        if error is not None:  # the owner disarms: out of the set, descriptor closed
            poll.discard(e.fd)
            e.close_fd()

    with ends("a", "b", wake=wake) as (a, b):
        for e in (a, b):
            poll.add(e.fd, e.lane)
        fd = a.fd
        a.send(1)
        a.other.close()  # the peer goes away after that message
        wait_readable(poll)
        poll.run()
        if len(a.woken) == 1:  # the message first, then (next run) the end
            wait_readable(poll)
            poll.run()
        assert len(a.woken) == 2 and len(a.woken[0][0]) == 1
        assert a.woken[1][0] is None and isinstance(a.woken[1][1], EOFError)
        assert len(poll) == 1 and not poll.watches(fd) and a.fd == -1
        assert b.woken == []


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_the_event_loop_calls_run_when_a_lane_is_readable(loop_kind: str) -> None:
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    errors = Errors()
    poll = accel.LanePoll(errors)

    async def main(group: list[End]) -> None:
        asyncio.get_running_loop().add_reader(poll.fileno(), poll.run)
        try:
            for e in group:
                poll.add(e.fd, e.lane)
            for i in range(3):
                for e in group:
                    e.send(1)
                async with asyncio.timeout(5):
                    while sum(len(e.woken) for e in group) < (i + 1) * len(group):
                        await asyncio.sleep(0.005)
        finally:
            asyncio.get_running_loop().remove_reader(poll.fileno())

    try:
        with ends("a", "b", "c") as group:
            loop.run_until_complete(main(group))
            assert all(len(e.woken) >= 1 for e in group) and errors.got == []
    finally:
        poll.close()
        loop.close()


# --- in the server ------------------------------------------------------------------------------


def _server_loop() -> asyncio.AbstractEventLoop:
    try:  # what ``iotvideo serve`` runs on
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def test_a_publisher_in_a_real_server_is_read_through_the_poll_acknowledged_played_and_let_go() -> None:
    async def main() -> None:
        server = RtmpServer(HubRegistry(), StaticAuthorizer({"cam": "cam"}))
        port = await server.start("127.0.0.1", 0)
        poll = server._poll
        try:
            assert poll is not None and len(poll) == 0
            pub = await RtmpPeer.open(port)
            sid, status = await pub.stream("publish", "cam")
            assert status.code == "NetStream.Publish.Start"
            pub.conn._send_control(WindowAckSize(20_000))  # acknowledge every 20 kB
            pub.conn.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
            for i in range(20):
                pub.conn.send_video(sid, 40 * i, avc_tag(i % 10 == 0, 2000))
            await pub.flush()
            peer = None
            async with asyncio.timeout(5):  # the connection reaches the steady state: its lane is in the poll
                while peer is None or not peer._armed:
                    await asyncio.sleep(0.01)
                    peer = next((p for p in server._peers if p.stats.role == "publisher"), None)
            fd = peer._lane_fd
            assert fd >= 0 and peer._lane_poll is poll and poll.watches(fd) and len(poll) == 1
            ino = os.fstat(fd).st_ino
            player = await RtmpPeer.open(port)
            psid, pstatus = await player.stream("play", "cam")
            assert pstatus.code in ("NetStream.Play.Reset", "NetStream.Play.Start")
            reads = poll.reads
            for i in range(20, 80):
                pub.conn.send_video(sid, 40 * i, avc_tag(i % 10 == 0, 2000))
            await pub.flush()
            await player.video_frames(40)
            await pub.acknowledged(100_000)  # the server's acknowledgements reach the publisher
            assert poll.reads > reads  # read by the lane through the poll
            assert peer.snapshot().bytes_in >= pub.conn.peer_acknowledged
            pub.writer.transport.abort()  # the publisher drops the connection
            async with asyncio.timeout(5):
                while peer in server._peers:
                    await asyncio.sleep(0.01)
            assert peer.closing and not peer._armed and peer._lane_fd == -1 and peer._lane_poll is None
            assert len(poll) == 0 and not poll.watches(fd)
            try:  # that descriptor is closed (or is another file now)
                assert os.fstat(fd).st_ino != ino
            except OSError:
                pass
            player.writer.close()
        finally:
            await server.close()
        assert server._poll is None and poll.closed

    loop = _server_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_lane_failing_in_the_servers_poll_closes_its_connection_as_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        server = RtmpServer(HubRegistry(), StaticAuthorizer({"cam": "cam", "cam2": "cam2"}))
        port = await server.start("127.0.0.1", 0)
        poll = server._poll
        try:
            pubs = []
            for name in ("cam", "cam2"):
                pub = await RtmpPeer.open(port)
                sid, status = await pub.stream("publish", name)
                assert status.code == "NetStream.Publish.Start"
                pub.conn.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
                pub.conn.send_video(sid, 0, avc_tag(True, 500))
                await pub.flush()
                pubs.append((pub, sid))
            async with asyncio.timeout(5):
                while len(poll) < 2:
                    await asyncio.sleep(0.01)
            bad = next(p for p in server._peers if p.stats.stream == "cam")
            good = next(p for p in server._peers if p.stats.stream == "cam2")

            def broken(rest: Any, error: Any) -> None:
                raise RuntimeError("lane broke")

            bad._lane_wake = broken  # type: ignore[method-assign]  (what re-arming gives the lane)
            bad._lane.arm(0, broken, bad)
            for i, (pub, sid) in enumerate(pubs):
                pub.conn.send_video(sid, 40, avc_tag(False, 500))
                await pub.flush()
            async with asyncio.timeout(5):
                while bad in server._peers:
                    await asyncio.sleep(0.01)
            assert bad.stats.closed_reason == "internal error" and bad._lane_fd == -1
            assert not good.closing and good._armed and len(poll) == 1
            frames = good._lane.frames_in
            pub, sid = pubs[1]
            pub.conn.send_video(sid, 80, avc_tag(False, 500))
            await pub.flush()
            async with asyncio.timeout(5):
                while good._lane.frames_in == frames:
                    await asyncio.sleep(0.01)
            for pub, _ in pubs:
                pub.writer.close()
        finally:
            await server.close()

    loop = _server_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert any("failed reading" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_lane_owns_the_descriptor_it_reads() -> None:
    """``set_fd`` gives the lane a duplicate of its own (returned), which the next ``set_fd`` and
    the lane's end close; the socket's own descriptor is never closed by it."""
    sock, other = socket.socketpair()
    try:
        lane = accel.PublishLane(accel.ChunkReader(), FrameMemo(_message), End._never, End._never, (6, 9), (4, 8))
        assert lane.set_fd(-1) == -1
        first = lane.set_fd(sock.fileno())
        assert first >= 0 and first != sock.fileno()
        assert os.fstat(first).st_ino == os.fstat(sock.fileno()).st_ino
        again = lane.set_fd(sock.fileno())  # (made before the first one is closed: another number)
        assert again >= 0 and again != first
        with pytest.raises(OSError):
            os.fstat(first)
        assert lane.set_fd(-1) == -1
        with pytest.raises(OSError):
            os.fstat(again)
        last = lane.set_fd(sock.fileno())
        del lane  # its end closes it
        with pytest.raises(OSError):
            os.fstat(last)
        os.fstat(sock.fileno())  # the socket's own is untouched
    finally:
        sock.close()
        other.close()
