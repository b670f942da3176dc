"""Device agent media: the virtual camera and the relay, the RTMP pusher, key-frame encryption and
the decryptor, and the LiveMedia backend answering the push services (tiny pictures, short runs)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import fractions
import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

av = pytest.importorskip("av")

from typer.testing import CliRunner  # noqa: E402

from iotvideo.agent import CameraAgent  # noqa: E402
from iotvideo.agent.media import LiveMedia, StreamProfile  # noqa: E402
from iotvideo.agent.pusher import RtmpPusher, parse_push_url, redact_url  # noqa: E402
from iotvideo.agent.sources import FrameSource, RelaySource, VirtualSource, nal_type  # noqa: E402
from iotvideo.media import flv, flvtags  # noqa: E402
from iotvideo.media.codecs import length_prefixed_nalus, parse_avc_config, parse_hevc_config  # noqa: E402
from iotvideo.media.decrypt import KeyFrameCipher  # noqa: E402
from iotvideo.media.frames import Codec, MediaFrame  # noqa: E402
from iotvideo.media.rtmp import (  # noqa: E402
    ConnectRequest,
    DeleteStream,
    MediaData,
    Metadata,
    ProtocolError,
    PublishRequest,
    RtmpServerConnection,
)

TINY = StreamProfile(160, 96, 15.0, 150_000)
TINIER = StreamProfile(128, 72, 15.0, 100_000)


def run(coro: Awaitable[Any], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def take(source: FrameSource, n: int) -> list[MediaFrame]:
    """Frames up to the ``n``-th media frame (configs are not counted)."""
    out: list[MediaFrame] = []
    async for f in source.frames():
        out.append(f)
        if sum(not x.is_config for x in out) >= n:
            break
    return out


def decode_video(codec: Codec, config: bytes, frames: list[MediaFrame]) -> list[Any]:
    ctx = av.CodecContext.create("h264" if codec is Codec.H264 else "hevc", "r")
    ctx.extradata = config
    pictures: list[Any] = []
    for f in frames:
        pictures += ctx.decode(av.Packet(f.data))
    pictures += ctx.decode(None)
    return pictures


def decode_flv(data: bytes) -> tuple[list[Any], int]:
    """(decoded pictures, packets that failed to decode) of an FLV file's video."""
    pictures: list[Any] = []
    errors = 0
    with av.open(io.BytesIO(data), format="flv") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                pictures += packet.decode()
            except av.FFmpegError:
                errors += 1
    return pictures, errors


def planes(picture: Any) -> list[bytes]:
    return [bytes(p) for p in picture.planes]


def nalus(frame: MediaFrame) -> list[bytes]:
    return list(length_prefixed_nalus(frame.data))


# --- a tiny RTMP server ------------------------------------------------------------------------------


@dataclasses.dataclass
class Publish:
    name: str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    media: list[MediaData] = dataclasses.field(default_factory=list)
    deleted: bool = False
    closed: bool = False
    writer: asyncio.StreamWriter | None = None

    def video(self) -> list[MediaFrame]:
        out = [flvtags.parse_video(m.payload, m.timestamp) for m in self.media if m.kind == "video"]
        return [f for f in out if f is not None]

    def audio(self) -> list[MediaFrame]:
        out = [flvtags.parse_audio(m.payload, m.timestamp) for m in self.media if m.kind == "audio"]
        return [f for f in out if f is not None]

    def flv_bytes(self) -> bytes:
        body = flv.file_header(has_audio=any(m.kind == "audio" for m in self.media), has_video=True)
        for m in self.media:
            body += flv.tag(flv.TagKind.VIDEO if m.kind == "video" else flv.TagKind.AUDIO, m.timestamp, m.payload)
        return body


class MiniRtmpServer:
    """Accepts every publish (or refuses them all) and records what each publisher sent."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.publishes: list[Publish] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> MiniRtmpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for p in self.publishes:
            if p.writer is not None:
                p.writer.close()

    def url(self, name: str = "cam", query: str = "token=secret") -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}" + (f"?{query}" if query else "")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RtmpServerConnection()
        current: Publish | None = None
        try:
            while not conn.closed:
                data = await reader.read(65536)
                events = conn.receive_data(data)
                for ev in events:
                    if isinstance(ev, ConnectRequest):
                        events += conn.accept_connect()
                    elif isinstance(ev, PublishRequest):
                        if self.refuse:
                            events += conn.reject_publish(ev.stream_id, "no valid push token")
                            continue
                        current = Publish(ev.name, writer=writer)
                        self.publishes.append(current)
                        events += conn.accept_publish(ev.stream_id)
                    elif isinstance(ev, Metadata) and current is not None:
                        current.metadata = ev.metadata
                    elif isinstance(ev, MediaData) and current is not None:
                        current.media.append(ev)
                    elif isinstance(ev, DeleteStream) and current is not None:
                        current.deleted = True
                    elif isinstance(ev, ProtocolError):
                        raise AssertionError(f"the pusher broke the protocol: {ev.reason}")
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if current is not None:
                current.closed = True
            writer.close()


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


# --- sources -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [Codec.H264, Codec.H265])
def test_virtual_source_decodes_and_forces_key_frames(codec: Codec) -> None:
    async def go() -> tuple[list[MediaFrame], Any]:
        src = VirtualSource(TINY.width, TINY.height, 15, codec, gop_s=5.0, audio=codec is Codec.H264)
        await src.start()
        frames: list[MediaFrame] = []
        pictures = 0
        async for f in src.frames():
            frames.append(f)
            if f.is_video and not f.is_config:
                pictures += 1
                if pictures == 4:
                    src.force_keyframe()
                if pictures == 14:
                    break
        await src.close()
        return frames, src.info

    frames, info = run(go())
    assert (info.video, info.width, info.height) == (codec, TINY.width, TINY.height)
    video = [f for f in frames if f.is_video]
    configs = [f for f in video if f.is_config]
    pictures = [f for f in video if not f.is_config]
    assert video[0].is_config and len(configs) == 1 and pictures[0].keyframe
    parsed = parse_avc_config(configs[0].data) if codec is Codec.H264 else parse_hevc_config(configs[0].data)
    assert (parsed.width, parsed.height, parsed.nal_length_size) == (TINY.width, TINY.height, 4)
    # no parameter sets in band, only length-prefixed NAL units; timestamps 1/15 s apart, pts == dts
    sets = {7, 8} if codec is Codec.H264 else {32, 33, 34}
    assert all(nal_type(codec, n) not in sets for f in pictures for n in nalus(f))
    assert [f.dts for f in pictures] == [round(i * 1000 / 15) for i in range(len(pictures))]
    assert all(f.pts == f.dts for f in pictures)
    decoded = decode_video(codec, configs[0].data, pictures)
    assert len(decoded) == len(pictures) and (decoded[0].width, decoded[0].height) == (TINY.width, TINY.height)
    # the GOP is 5 s: the only other key frame is the one force_keyframe asked for
    keys = [i for i, f in enumerate(pictures) if f.keyframe]
    assert keys[0] == 0 and len(keys) == 2 and keys[1] <= 12, keys
    if codec is Codec.H264:
        audio = [f for f in frames if f.is_audio]
        assert audio[0].is_config and audio[0].sample_rate == 16000 and audio[0].channels == 1
        assert len(audio) >= 5 and all(b.dts > a.dts for a, b in zip(audio[1:], audio[2:]))
        dec = av.CodecContext.create("aac", "r")
        dec.extradata = audio[0].data
        samples = [s for f in audio[1:] for s in dec.decode(av.Packet(f.data))]
        assert samples and samples[0].sample_rate == 16000


def make_media_file(path: Path, *, seconds: float = 1.0, fps: int = 15, audio: str | None = None) -> None:
    """A small H.264 file (B-frames, key frame every 5 frames), optionally with G.711 audio."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 96, "yuv420p"
        vs.options = {"preset": "veryfast", "x264-params": "keyint=5:min-keyint=5:scenecut=0:bframes=2"}
        aus = None
        if audio:
            aus = out.add_stream(audio, rate=8000)
            aus.layout = "mono"
        n = int(seconds * fps)
        for i in range(n):
            frame = av.VideoFrame(160, 96, "yuv420p")
            for k, plane in enumerate(frame.planes):
                row = bytes(((x + 6 * i) * (k + 1)) & 0xFF for x in range(plane.line_size))
                plane.update(row * (plane.buffer_size // plane.line_size))
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if aus is not None:
            for k in range(int(seconds * 8000 / 400)):
                chunk = av.AudioFrame(format="s16", layout="mono", samples=400)
                chunk.sample_rate = 8000
                chunk.planes[0].update(bytes((k * 7 + j) & 0xFF for j in range(800)))
                chunk.pts = k * 400
                out.mux(aus.encode(chunk))
            out.mux(aus.encode(None))


def test_relay_source_relays_a_file_without_transcoding(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    make_media_file(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata)
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    assert len(packets) == 15

    async def go(realtime: bool, n: int) -> tuple[list[MediaFrame], float]:
        src = RelaySource(str(path), realtime=realtime)
        await src.start()
        t0 = time.monotonic()
        frames = await take(src, n)
        elapsed = time.monotonic() - t0
        await src.close()
        return frames, elapsed

    frames, _ = run(go(False, 2 * len(packets) + 3))
    configs = [f for f in frames if f.is_config]
    pictures = [f for f in frames if not f.is_config]
    assert frames[0].is_config and configs[0].data == extradata  # the file's avcC, as it is
    # byte-identical samples, looped: pass two continues the timeline
    assert [f.data for f in pictures] == [packets[i % len(packets)] for i in range(len(pictures))]
    assert [f.keyframe for f in pictures[:15]] == [i % 5 == 0 for i in range(15)]
    dts = [f.dts for f in pictures]
    assert all(b > a for a, b in zip(dts, dts[1:])), dts
    assert dts[15] == pytest.approx(1000, abs=70)
    assert any(f.pts > f.dts for f in pictures)  # B-frames keep their composition offsets
    # paced in real time: 8 frames of a 15 fps file take about half a second
    _, elapsed = run(go(True, 8))
    assert 0.35 < elapsed < 2.0


def test_relay_source_converts_annex_b_and_adts(tmp_path: Path) -> None:
    """MPEG-TS carries what RTSP cameras send: Annex B with in-band SPS/PPS and AUDs, ADTS AAC."""
    from iotvideo.media.codecs import annexb_nalus

    path = tmp_path / "clip.ts"
    make_media_file(path, audio="aac")
    with av.open(str(path)) as container:
        expected = [[n for n in annexb_nalus(bytes(p)) if nal_type(Codec.H264, n) not in (7, 8, 9)]
                    for p in container.demux(container.streams.video[0]) if p.size]

    async def go() -> list[MediaFrame]:
        src = RelaySource(str(path), realtime=False, loop=False)
        await src.start()
        frames = [f async for f in src.frames()]
        await src.close()
        return frames

    frames = run(go())
    video = [f for f in frames if f.is_video and not f.is_config]
    config = next(f for f in frames if f.is_video and f.is_config)
    assert [nalus(f) for f in video] == expected and parse_avc_config(config.data).width == 160
    assert len(decode_video(Codec.H264, config.data, video)) == len(video)
    audio = [f for f in frames if f.is_audio]
    assert audio[0].is_config and audio[0].sample_rate == 8000 and audio[0].channels == 1
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = audio[0].data
    assert all(f.data[0] != 0xFF for f in audio[1:])  # ADTS headers stripped
    assert sum(len(dec.decode(av.Packet(f.data))) for f in audio[1:]) >= len(audio) - 3


def test_relay_source_refuses_what_it_cannot_relay(tmp_path: Path) -> None:
    from iotvideo.agent.sources import SourceError

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)

    async def go() -> None:
        with pytest.raises(SourceError, match="cannot open"):
            await RelaySource(str(junk)).start()

    run(go())


def test_relay_source_keeps_g711_audio(tmp_path: Path) -> None:
    path = tmp_path / "clip.mov"
    make_media_file(path, audio="pcm_alaw")
    with av.open(str(path)) as container:
        expected = b"".join(bytes(p) for p in container.demux(container.streams.audio[0]) if p.size)

    async def go() -> list[MediaFrame]:
        src = RelaySource(str(path), realtime=False, loop=False)
        await src.start()
        assert src.info is not None and src.info.audio is Codec.PCMA and src.info.sample_rate == 8000
        frames = [f async for f in src.frames()]
        await src.close()
        return frames

    frames = run(go())
    audio = [f for f in frames if f.is_audio]
    assert audio and all(f.codec is Codec.PCMA and f.sample_rate == 8000 and f.channels == 1 for f in audio)
    assert expected.endswith(b"".join(f.data for f in audio))  # as it is (what precedes the first key frame aside)
    assert len(b"".join(f.data for f in audio)) >= len(expected) * 0.8


# --- the pusher ----------------------------------------------------------------------------------------


def test_push_url_parsing() -> None:
    t = parse_push_url("rtmp://video.example.com/live/cam1?token=abc&x=1")
    assert (t.host, t.port, t.app, t.name) == ("video.example.com", 1935, "live", "cam1?token=abc&x=1")
    assert t.tc_url == "rtmp://video.example.com:1935/live"
    assert parse_push_url("rtmps://[::1]:8443/a/b/c").tc_url == "rtmps://[::1]:8443/a"
    for bad in ("http://h/live/x", "rtmp:///live/x", "rtmp://h/live", "rtmp://h:99999/a/b"):
        with pytest.raises(ValueError):
            parse_push_url(bad)
    assert redact_url("rtmp://u:p@h:1/live/x?token=secret") == "rtmp://h:1/live/x?…"


@pytest.mark.parametrize("codec", [Codec.H264, Codec.H265])
def test_pusher_publishes_configs_and_frames(codec: Codec) -> None:
    audio = codec is Codec.H264

    async def go() -> tuple[Publish, RtmpPusher]:
        async with MiniRtmpServer() as server:
            src = VirtualSource(TINY.width, TINY.height, 15, codec, gop_s=0.5, audio=audio)
            pusher = RtmpPusher(server.url(), src)
            await pusher.start()
            assert pusher.running and pusher.stats.started_at > 0
            await until(lambda: pusher.stats.key_frames >= 3, 5)
            await pusher.stop()
            assert not pusher.running and pusher.reason == "stopped" and src.closed
            publish = await until(lambda: server.publishes and server.publishes[0].closed and server.publishes[0])
            return publish, pusher

    publish, pusher = run(go())
    assert publish.name == "cam?token=secret" and publish.deleted
    assert publish.metadata["width"] == TINY.width and publish.metadata["height"] == TINY.height
    assert publish.metadata["videocodecid"] == (7 if codec is Codec.H264 else int.from_bytes(b"hvc1", "big"))
    video = publish.video()
    assert video[0].is_config and video[0].codec is codec and video[1].keyframe
    keys = [f for f in video if f.keyframe]
    assert len(keys) >= 3
    dts = [f.dts for f in video[1:]]
    assert all(b > a for a, b in zip(dts, dts[1:]))
    assert len(video) - 1 == pusher.stats.video_frames and pusher.stats.bytes > sum(len(f.data) for f in video)
    decoded = decode_video(codec, video[0].data, video[1:])
    assert len(decoded) == len(video) - 1
    if audio:
        aac = publish.audio()
        assert aac[0].is_config and len(aac) > 5
        assert all(b.dts >= a.dts for a, b in zip(aac[1:], aac[2:]))
        assert "audiocodecid" in publish.metadata


def test_pusher_reports_a_refused_or_unreachable_server() -> None:
    from iotvideo.agent.pusher import PushError

    async def go() -> None:
        async with MiniRtmpServer(refuse=True) as server:
            src = VirtualSource(TINIER.width, TINIER.height, 15)
            pusher = RtmpPusher(server.url(), src)
            with pytest.raises(PushError, match="refused the publish") as e:
                await pusher.start()
            assert "secret" not in str(e.value) and src.closed and pusher.done
            port = server.port
        pusher = RtmpPusher(f"rtmp://127.0.0.1:{port}/live/x?token=secret", VirtualSource(64, 64, 15))
        with pytest.raises(PushError, match="cannot connect"):
            await pusher.start()

    run(go())


class FakeTransport:
    """Stands in for a socket whose send buffer is as full as ``backlog`` says."""

    def __init__(self) -> None:
        self.backlog = 0
        self.written = 0

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written += len(data)


def test_pusher_drops_up_to_the_next_key_frame_when_the_network_lags() -> None:
    async def go() -> None:
        src = VirtualSource(64, 64, 15)
        forced: list[bool] = []
        src.force_keyframe = lambda: forced.append(True)  # type: ignore[method-assign]
        pusher = RtmpPusher("rtmp://127.0.0.1/live/x", src, max_buffer=1000)
        transport = FakeTransport()
        pusher._protocol = type("P", (), {"transport": transport})()  # type: ignore[assignment]
        pusher.stream_id = 1

        def frame(key: bool, t: int, config: bool = False) -> MediaFrame:
            return MediaFrame(Codec.H264, t, t, b"\x00\x00\x00\x02" + (b"\x65\x88" if key else b"\x41\x9a"),
                              keyframe=key, is_config=config)

        pusher._send(frame(True, 0))
        transport.backlog = 5000  # the network falls behind
        for t in (40, 80):
            pusher._send(frame(False, t))
        pusher._send(MediaFrame(Codec.H264, 90, 90, b"\x01\x42", is_config=True))  # configs always go
        transport.backlog = 0
        pusher._send(frame(False, 120))  # still dropped: it would not decode without the missing frames
        pusher._send(frame(True, 160))
        pusher._send(frame(False, 200))
        assert pusher.stats.dropped == 3 and pusher.stats.video_frames == 3 and forced == [True]
        assert transport.written > 0

    run(go())


# --- encryption ----------------------------------------------------------------------------------------


class TapSource(FrameSource):
    """Wraps a source and keeps what it produced (the clear frames)."""

    def __init__(self, inner: FrameSource) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[MediaFrame] = []

    async def start(self) -> None:
        await self.inner.start()
        self.info = self.inner.info

    async def frames(self) -> AsyncIterator[MediaFrame]:
        async for f in self.inner.frames():
            self.seen.append(f)
            yield f

    def force_keyframe(self) -> None:
        self.inner.force_keyframe()

    async def close(self) -> None:
        self._stop.set()
        await self.inner.close()


def test_encrypted_push_and_the_decrypt_command(tmp_path: Path) -> None:
    from iotvideo.cli import app

    key, iv = os.urandom(16), os.urandom(16)
    cipher = KeyFrameCipher(key, iv)

    async def go() -> tuple[Publish, list[MediaFrame]]:
        async with MiniRtmpServer() as server:
            tap = TapSource(VirtualSource(TINY.width, TINY.height, 15, "h264", gop_s=0.4))
            pusher = RtmpPusher(server.url(), tap, cipher=cipher)
            await pusher.start()
            await until(lambda: pusher.stats.key_frames >= 3, 5)
            await pusher.stop()
            assert pusher.stats.encrypted_frames == pusher.stats.key_frames
            publish = await until(lambda: server.publishes and server.publishes[0].closed and server.publishes[0])
            return publish, [f for f in tap.seen if f.is_video]

    publish, clear = run(go())
    sent = publish.video()
    assert len(sent) == len(clear)
    for got, orig in zip(sent, clear):
        if orig.is_config or not orig.keyframe:
            assert got.data == orig.data  # configs and non-key frames untouched
            continue
        assert got.keyframe and len(got.data) == len(orig.data) and got.data != orig.data
        for g, o in zip(nalus(got), nalus(orig)):  # same lengths and NAL headers; IDR bodies encrypted
            assert len(g) == len(o) and g[0] == o[0]
            if nal_type(Codec.H264, o) == 5:
                body = len(o) - 1
                assert g[1 : 1 + body - body % 16] != o[1 : 1 + body - body % 16]
                assert g[1 + body - body % 16 :] == o[1 + body - body % 16 :]  # the tail stays in clear
            else:
                assert g == o
        assert cipher.decrypt_sample(Codec.H264, got.data) == orig.data

    captured = tmp_path / "capture.flv"
    captured.write_bytes(publish.flv_bytes())
    n_pictures = len(clear) - 1
    pictures, errors = decode_flv(captured.read_bytes())
    assert len(pictures) < n_pictures and errors > 0  # without the key the stream does not decode

    runner = CliRunner()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    out = tmp_path / "clear.flv"
    result = runner.invoke(app, ["decrypt", "--key", b64(key), "--iv", b64(iv), str(captured), str(out)])
    assert result.exit_code == 0, result.output
    assert "key frames decrypted" in result.output
    good, errors = decode_flv(out.read_bytes())
    assert errors == 0 and len(good) == n_pictures
    restored = [f for f in (flvtags.parse_video(m.payload, m.timestamp) for m in _tags(out.read_bytes())) if f]
    assert [f.data for f in restored] == [f.data for f in clear]

    wrong = tmp_path / "wrong.flv"
    result = runner.invoke(app, ["decrypt", "--key", b64(os.urandom(16)), "--iv", b64(iv), str(captured), str(wrong)])
    assert result.exit_code == 1 and "key or IV is wrong" in result.output and not wrong.exists()
    result = runner.invoke(app, ["decrypt", "--key", b64(os.urandom(16)), "--iv", b64(iv), "--force",
                                 str(captured), str(wrong)])
    assert result.exit_code == 0
    pictures, errors = decode_flv(wrong.read_bytes())
    assert errors > 0 or [planes(p) for p in pictures] != [planes(p) for p in good]
    result = runner.invoke(app, ["decrypt", "--key", "short", "--iv", b64(iv), str(captured), str(wrong)])
    assert result.exit_code == 2


def _tags(data: bytes) -> list[MediaData]:
    """The video tags of an FLV file as MediaData."""
    out: list[MediaData] = []
    pos = 13
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        if data[pos] == 9:
            out.append(MediaData(1, "video", ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return out


# --- the backend behind the agent's services ------------------------------------------------------------


def offline_agent(media: LiveMedia) -> tuple[CameraAgent, list[dict[str, Any]]]:
    """An agent that never connects; its replies are collected."""
    agent = CameraAgent("127.0.0.1", 1, "a1TestPk001", "cam0001", "s3cr3t", media=media)
    sent: list[dict[str, Any]] = []

    async def publish(topic: str, payload: bytes, *, client: Any = None) -> None:
        sent.append(orjson.loads(payload))

    agent._publish = publish  # type: ignore[method-assign]
    return agent, sent


def test_camera_agent_answers_the_push_services() -> None:
    assert isinstance(CameraAgent("127.0.0.1", 1, "a1TestPk001", "cam0001", "s").media, LiveMedia)
    media = LiveMedia("virtual", main=TINY, sub=TINIER, gop_s=0.5)
    agent, sent = offline_agent(media)
    p = "/sys/a1TestPk001/cam0001/thing/service/"
    key, iv = base64.b64encode(os.urandom(16)).decode(), base64.b64encode(os.urandom(16)).decode()

    async def call(service: str, params: dict[str, Any]) -> dict[str, Any]:
        n = len(sent)
        await agent.handle_downlink(p + service, orjson.dumps({"id": str(n), "params": params}))
        return sent[-1]

    async def go() -> None:
        async with MiniRtmpServer() as server:
            main_url, sub_url = server.url("main"), server.url("sub")
            r = await call("StartPushStreaming", {"PushUrl": main_url, "StreamType": 0, "ForceIFrame": 1})
            assert (r["code"], r["data"]) == (200, {"Code": 0})
            r = await call("StartPushStreaming", {"PushUrl": sub_url, "StreamType": 1, "EncryptType": 1,
                                                  "Key": key, "Iv": iv})
            assert r["code"] == 200 and agent.status()["StreamsPushing"] == 2
            # the same URL again: the push goes on; ForceIFrame asks for a key frame
            r = await call("StartPushStreaming", {"PushUrl": main_url, "StreamType": 0, "ForceIFrame": 1})
            assert r["code"] == 200 and len(server.publishes) == 2
            assert (await call("ForceIFrame", {"StreamType": 0}))["code"] == 200
            await until(lambda: all(any(m.kind == "video" for m in pub.media) for pub in server.publishes))
            sizes = {pub.name.partition("?")[0]: pub.metadata["width"] for pub in server.publishes}
            assert sizes == {"main": TINY.width, "sub": TINIER.width}
            # another URL for the main stream: the old push ends, the new one starts
            r = await call("StartPushStreaming", {"PushUrl": server.url("main2"), "StreamType": 0})
            assert r["code"] == 200 and agent.status()["StreamsPushing"] == 2
            await until(lambda: server.publishes[0].closed)
            assert server.publishes[0].deleted and server.publishes[-1].name.startswith("main2")
            # StopPushStreaming: another URL is not this push; the right one stops it
            assert (await call("StopPushStreaming", {"StreamType": 0, "PushUrl": main_url}))["code"] == 200
            assert agent.status()["StreamsPushing"] == 2
            assert (await call("StopPushStreaming", {"StreamType": 0}))["code"] == 200
            assert agent.status()["StreamsPushing"] == 1
            assert (await call("StopPushStreaming", {"StreamType": 0}))["code"] == 200  # nothing pushing: fine
            # the server goes away: StreamsPushing follows
            sub = next(pub for pub in server.publishes if pub.name.startswith("sub"))
            assert sub.writer is not None
            sub.writer.close()
            await until(lambda: agent.status()["StreamsPushing"] == 0)
            # arguments it cannot use, an unreachable server, services for later
            r = await call("StartPushStreaming", {"PushUrl": "http://x/live/a", "StreamType": 0})
            assert r["code"] == 460
            r = await call("StartPushStreaming", {"PushUrl": main_url, "StreamType": 0, "EncryptType": 0,
                                                  "Key": key, "Iv": iv})
            assert r["code"] == 460 and "EncryptType" in r["message"]
            port = server.port
        r = await call("StartPushStreaming", {"PushUrl": f"rtmp://127.0.0.1:{port}/live/x?token=t0ken",
                                              "StreamType": 1})
        assert r["code"] == 500 and "cannot connect" in r["message"] and "t0ken" not in r["message"]
        r = await call("StartVod", {"FileName": "a.mp4", "PushUrl": main_url})
        assert r["code"] == 501 and "live push only" in r["message"]
        assert agent.status()["StreamsPushing"] == 0
        await agent.stop()

    run(go(), timeout=30)
