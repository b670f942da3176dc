"""A publisher's steady-state lane: ``RtmpServerConnection.receive_media`` (media handed straight to a
callback) against ``receive_data`` (every message an event), and ``_RtmpPeer`` publishing through it.

Runs with whichever chunk reader ``accel`` picks (C, or Python with IOTVIDEO_NATIVE=0)."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media.auth import StaticAuthorizer
from iotvideo.media.frames import Codec
from iotvideo.media.hub import HubRegistry
from iotvideo.media.rtmp import (
    MediaData,
    RtmpClientConnection,
    RtmpServerConnection,
    StreamCreated,
)
from iotvideo.media.rtmp.messages import SetChunkSize, WindowAckSize
from iotvideo.media.rtmp_server import RtmpServer, _RtmpPeer
from rtmp_support import FakeTransport, publish_on

FUZZ = settings(
    max_examples=int(os.environ.get("IOTVIDEO_FUZZ_EXAMPLES", "200")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip

AVC_CONFIG = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f" + bytes([1, 0, 2, 0x68, 0xEB])
CONFIG_TAG = b"\x17\x00\x00\x00\x00" + AVC_CONFIG


def fixed_random(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def key_tag(n: int) -> bytes:
    return b"\x17\x01\x00\x00\x00" + struct.pack(">I", n) + bytes(n)


def inter_tag(n: int) -> bytes:
    return b"\x27\x01\x00\x00\x00" + struct.pack(">I", n) + bytes(n)


# --- the connection: receive_media == receive_data ----------------------------------------------


class Twins:
    """A client and two servers fed the same bytes: ``a`` by ``receive_data``, ``b`` by ``receive_media``."""

    def __init__(self) -> None:
        self.client = RtmpClientConnection("live", "rtmp://127.0.0.1/live", random=fixed_random)
        self.a = RtmpServerConnection(random=fixed_random)
        self.b = RtmpServerConnection(random=fixed_random)

    def feed(self, data: bytes) -> tuple[list[Any], list[Any]]:
        """Feed both; return (a's events, b's callbacks as MediaData followed by its events)."""
        ea = self.a.receive_data(data)
        got: list[Any] = []
        eb = self.b.receive_media(
            data, lambda sid, video, ts, payload: got.append(MediaData(sid, "video" if video else "audio", ts, payload))
        )
        return ea, got + eb

    def check_same(self) -> None:
        a, b = self.a, self.b
        assert (a.closed, a.buffered, a.bytes_to_send) == (b.closed, b.buffered, b.bytes_to_send)
        assert a.data_to_send() == b.data_to_send()

    def pump(self) -> list[Any]:
        events: list[Any] = []
        for _ in range(50):
            out = self.client.data_to_send()
            if out:
                ea, eb = self.feed(out)
                assert ea == eb
                events += ea
            back = self.a.data_to_send()
            assert self.b.data_to_send() == back
            if back:
                self.client.receive_data(back)
            if not out and not back:
                return events
        raise AssertionError("conversation did not settle")

    def publishing(self) -> tuple[int, int]:
        """Connect, create two streams, publish on the first; return their ids."""
        self.pump()
        assert self.a.accept_connect() == self.b.accept_connect() == []
        self.pump()
        assert self.client.connected
        self.client.create_stream()
        self.client.create_stream()
        sids = [e.stream_id for e in self.pump()]
        self.client.publish(sids[0], "cam")
        self.pump()
        assert self.a.accept_publish(sids[0]) == self.b.accept_publish(sids[0]) == []
        self.pump()
        return sids[0], sids[1]


_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["video", "audio", "video-other"]), st.integers(0, 2**32 - 1), st.binary(max_size=300)),
        st.tuples(st.just("big"), st.integers(1, 20_000)),
        st.tuples(st.sampled_from(["meta", "publish-other", "delete", "delete-other"])),
        st.tuples(st.just("chunk-size"), st.integers(1, 5000)),
        st.tuples(st.just("window"), st.integers(1, 3000)),
        st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=40)),
    ),
    max_size=40,
)


@FUZZ
@given(_ops, st.lists(st.integers(0, 60_000), max_size=12), st.booleans())
def test_receive_media_is_receive_data_with_media_first(ops: list[Any], cuts: list[int], accept: bool) -> None:
    t = Twins()
    sid, other = t.publishing()
    client = t.client
    wire = bytearray()
    for op in ops:
        kind = op[0]
        if kind in ("video", "audio", "video-other"):
            (client.send_audio if kind == "audio" else client.send_video)(
                other if kind == "video-other" else sid, op[1], op[2]
            )
        elif kind == "big":
            client.send_video(sid, 0, key_tag(op[1]))
        elif kind == "meta":
            client.send_metadata(sid, {"width": 160.0})
        elif kind == "publish-other":
            client.publish(other, "cam2")
        elif kind == "delete":
            client.delete_stream(sid)
        elif kind == "delete-other":
            client.delete_stream(other)
        elif kind == "chunk-size":
            client._send_control(SetChunkSize(op[1]))
        elif kind == "window":
            client._send_control(WindowAckSize(op[1]))
        wire += client.data_to_send()
        if kind == "garbage":
            wire += op[1]
    pieces = [bytes(wire[i:j]) for i, j in zip([0, *sorted(cuts)], [*sorted(cuts), len(wire)])]
    for piece in pieces:
        ea, eb = t.feed(piece)
        assert ea == eb
        t.check_same()
    if accept and t.a.stream_state(other) == "publish-pending" and not t.a.closed:
        assert t.a.accept_publish(other) == t.b.accept_publish(other)
        t.check_same()
        for piece in (bytes(wire[-5:]), b""):
            ea, eb = t.feed(piece)
            assert ea == eb
            t.check_same()


def test_receive_media_hands_over_media_of_a_publishing_stream_only() -> None:
    t = Twins()
    sid, other = t.publishing()
    t.client.send_video(sid, 40, key_tag(100))
    t.client.send_audio(other, 41, b"\xaf\x01\x00")  # not publishing: dropped
    t.client.send_audio(sid, 42, b"\xaf\x01\x00")
    got: list[Any] = []
    events = t.b.receive_media(t.client.data_to_send(), lambda *a: got.append(a))
    assert events == []
    assert got == [(sid, True, 40, key_tag(100)), (sid, False, 42, b"\xaf\x01\x00")]
    assert t.b.receive_media(b"", lambda *a: got.append(a))[0].__class__.__name__ == "ConnectionClosed"


# --- the peer ------------------------------------------------------------------------------------


async def _publishing_peer() -> tuple[RtmpClientConnection, _RtmpPeer, FakeTransport, HubRegistry, int]:
    registry = HubRegistry()
    server = RtmpServer(registry, StaticAuthorizer({"cam": "cam", "cam2": "cam2"}))
    peer = _RtmpPeer(server, 1)
    transport = FakeTransport()
    peer.connection_made(transport)  # type: ignore[arg-type]
    client = RtmpClientConnection("live", "rtmp://127.0.0.1/live")
    return client, peer, transport, registry, await publish_on(peer, transport, client)


def test_peer_publishes_in_order_counts_bad_tags_and_keeps_commands_after_media() -> None:
    async def run() -> None:
        client, peer, transport, registry, sid = await _publishing_peer()
        hub = registry.get("cam")
        assert hub is not None
        seen: list[Any] = []
        hub.add_sink(seen.append)
        client.send_video(sid, 0, CONFIG_TAG)
        client.send_video(sid, 0, key_tag(50))
        client.send_video(sid, 40, b"\x27\x01")  # truncated: a bad tag
        client.send_video(sid, 40, inter_tag(20))
        client.create_stream()  # an event after media, in the same read
        client.send_video(sid, 80, inter_tag(21))
        transport.deliver(peer, client.data_to_send())
        await asyncio.sleep(0)
        assert [(f.is_config, f.keyframe, f.dts, len(f.data)) for f in seen] == [
            (True, False, 0, len(AVC_CONFIG)), (False, True, 0, 54), (False, False, 40, 24), (False, False, 80, 25),
        ]  # fmt: skip
        assert (peer.snapshot().frames_in, peer.stats.bad_tags, peer.closing) == (4, 1, False)
        assert hub.stats().frames_in == 4 and hub.stats().video_codec is Codec.H264
        events = client.receive_data(bytes(transport.out))
        assert any(isinstance(e, StreamCreated) for e in events)  # the command after the media was answered
        client.send_video(sid, 120, b"\x1f\x01\x00\x00\x00")  # codec id 15: unsupported, closes
        client.send_video(sid, 160, inter_tag(22))
        client.create_stream()  # after the close: dropped like the tag before it
        transport.deliver(peer, client.data_to_send())
        assert peer.closing and peer.stats.closed_reason.startswith("unsupported codec")
        assert not peer._events
        assert peer.snapshot().frames_in == 4 and not hub.publishing

    asyncio.run(run())


def test_peer_failing_hub_closes_with_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        client, peer, transport, registry, sid = await _publishing_peer()
        hub = registry.get("cam")
        assert hub is not None

        def boom(frame: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(hub, "_publish", boom)
        client.send_video(sid, 0, CONFIG_TAG)
        client.send_video(sid, 0, key_tag(50))
        transport.deliver(peer, client.data_to_send())
        assert peer.closing and transport.closed and peer.stats.closed_reason == "internal error"

    asyncio.run(run())
