"""G.711 → AAC for HLS: the transcoder on its own (PyAV decodes what it makes back and finds the tone),
its timeline under gaps, jumps, drift and rate changes, garbage and random input (hypothesis), the
``HlsSink`` in front of the packager, and FFmpeg publishing H.264 + G.711 over RTMP: HLS plays AAC
while RTMP and HTTP-FLV players still get G.711.
"""

from __future__ import annotations

import array
import concurrent.futures
import math
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.hls import HlsConfig
from iotvideo.media.hub import HlsSink
from iotvideo.media.transcode import G711ToAac, aac_config

from conftest import ServerInfo, start_server, stop_server

av = pytest.importorskip("av")

LAWS = {Codec.PCMA: "pcm_alaw", Codec.PCMU: "pcm_mulaw"}


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: int = 10000) -> bytes:
    """Signed 16-bit mono PCM."""
    n = int(rate * seconds)
    return array.array("h", [int(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]).tobytes()


def g711(codec: Codec, pcm: bytes, rate: int = 8000) -> bytes:
    """PCM encoded by FFmpeg's G.711 encoder (one byte per sample)."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    enc = av.CodecContext.create(LAWS[codec], "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    enc.open()
    return b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])


def packets(codec: Codec, data: bytes, start_ms: int = 0, packet_ms: int = 20, rate: int = 8000) -> list[MediaFrame]:
    """G.711 bytes cut into RTMP-like frames with millisecond timestamps."""
    step = rate * packet_ms // 1000
    return [
        MediaFrame(codec, start_ms + i * 1000 // rate, start_ms + i * 1000 // rate, data[i : i + step],
                   sample_rate=rate, channels=1)
        for i in range(0, len(data), step)
    ]


def run(tc: G711ToAac, frames: list[MediaFrame], flush: bool = True) -> list[MediaFrame]:
    out = [aac for f in frames for aac in tc.feed(f)]
    return out + (tc.flush() if flush else [])


def decode_aac(frames: list[MediaFrame]) -> tuple[list[float], int]:
    """PyAV decodes the AAC frames (config first); returns mono float samples and the sample rate."""
    config = frames[0]
    assert config.is_config
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = config.data
    samples: list[float] = []
    for f in frames[1:]:
        assert not f.is_config
        for decoded in dec.decode(av.Packet(f.data)):
            samples.extend(array.array("f", bytes(decoded.planes[0]))[: decoded.samples])
    return samples, dec.sample_rate


def dominant_frequency(samples: list[float], rate: int, lo: int = 100, hi: int = 4000, step: int = 25) -> int:
    """The strongest frequency (Goertzel over a grid) in a window from the middle of ``samples``."""
    n = 2048
    mid = len(samples) // 2
    window = samples[mid - n // 2 : mid + n // 2]
    best, best_power = 0, -1.0
    for freq in range(lo, hi + 1, step):
        coeff = 2 * math.cos(2 * math.pi * freq / rate)
        s1 = s2 = 0.0
        for x in window:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        if power > best_power:
            best, best_power = freq, power
    return best


def times(frames: list[MediaFrame]) -> list[int]:
    return [f.dts for f in frames if not f.is_config]


# --- the transcoder ---------------------------------------------------------------------------------


def test_aac_config_is_an_aac_lc_audio_specific_config() -> None:
    from iotvideo.media.codecs import parse_aac_config

    cfg = parse_aac_config(aac_config(16000, 1))
    assert (cfg.object_type, cfg.sample_rate, cfg.channels, cfg.codec_string) == (2, 16000, 1, "mp4a.40.2")
    with pytest.raises(ValueError):
        aac_config(12345, 1)


@pytest.mark.parametrize("codec", [Codec.PCMA, Codec.PCMU])
def test_a_tone_survives_the_transcoding(codec: Codec) -> None:
    frames = packets(codec, g711(codec, tone(1000, 3.0)), start_ms=5000)
    tc = G711ToAac()
    out = run(tc, frames)
    assert out[0].is_config and out[0].codec is Codec.AAC and out[0].data == aac_config(16000, 1)
    assert all(f.codec is Codec.AAC for f in out) and sum(f.is_config for f in out) == 1
    samples, rate = decode_aac(out)
    assert rate == 16000
    assert len(samples) >= 3.0 * rate  # every input sample is in the output (plus the encoder's tail)
    assert abs(dominant_frequency(samples, rate) - 1000) <= 25
    # the timeline: 1024 samples a frame = 64 ms, starting where the input starts, ending where it ends
    t = times(out)
    assert t[0] == 5000 and all(b - a == 64 for a, b in zip(t, t[1:]))
    assert 5000 + 3000 - 64 <= t[-1] <= 5000 + 3000 + 64
    assert tc.stats.dropped == 0 and tc.stats.frames_in == len(frames) and tc.stats.frames_out == len(t)


def test_another_tone_and_a_sample_rate_change_keep_the_timeline() -> None:
    first = packets(Codec.PCMU, g711(Codec.PCMU, tone(440, 2.0)), start_ms=0)
    second = packets(Codec.PCMU, g711(Codec.PCMU, tone(440, 2.0, rate=22050), rate=22050), start_ms=2000,
                     rate=22050)
    tc = G711ToAac()
    out = run(tc, first + second)
    t = times(out)
    assert all(b - a == 64 for a, b in zip(t, t[1:])) and 4000 - 64 <= t[-1] <= 4000 + 64
    assert tc.stats.restarts == 0 and tc.stats.filled_ms == 0
    samples, rate = decode_aac(out)
    assert abs(dominant_frequency(samples[: 2 * rate], rate) - 440) <= 25
    assert abs(dominant_frequency(samples[2 * rate :], rate) - 440) <= 25


def test_gaps_are_filled_and_jumps_start_a_new_run() -> None:
    data = g711(Codec.PCMA, tone(1000, 1.0))
    tc = G711ToAac()
    # 1 s, a 400 ms hole, 1 s: filled with silence, one continuous run
    out = run(tc, packets(Codec.PCMA, data, 0) + packets(Codec.PCMA, data, 1400), flush=False)
    t = times(out)
    assert all(b - a == 64 for a, b in zip(t, t[1:]))
    assert tc.stats.filled_ms == pytest.approx(400, abs=1) and tc.stats.restarts == 0
    # a jump ahead beyond max_gap_ms: the run is drained and a new one starts at the new time
    out2 = run(tc, packets(Codec.PCMA, data, 60_000))
    t2 = times(out2)
    assert tc.stats.restarts == 1
    assert t2[0] > t[-1] and any(x == 60_000 for x in t2) and all(b > a for a, b in zip(t2, t2[1:]))
    before_jump = [x for x in t2 if x < 60_000]
    assert all(x <= 2400 + 128 for x in before_jump)  # the old run's tail, at its own times


def test_a_timestamp_jump_back_follows_the_input() -> None:
    """A camera restarting its clock: the video jumps back too, so the audio must follow (the packager
    turns both into one continuous output timeline)."""
    data = g711(Codec.PCMA, tone(1000, 1.0))
    tc = G711ToAac()
    out = run(tc, packets(Codec.PCMA, data, 100_000) + packets(Codec.PCMA, data, 0))
    t = times(out)
    assert tc.stats.restarts == 1
    old, new = [x for x in t if x >= 100_000], [x for x in t if x < 100_000]
    assert t == old + new and new[0] == 0 and all(b > a for a, b in zip(new, new[1:]))


@pytest.mark.parametrize("skew", [0.97, 1.03])
def test_a_drifting_camera_clock_does_not_drift_the_output(skew: float) -> None:
    """Timestamps running 3 % slower or faster than the sample count: gaps get silence, overlaps
    are trimmed, and every output frame stays within the tolerance of the input timeline."""
    data = g711(Codec.PCMA, tone(1000, 20.0))
    frames = [MediaFrame(Codec.PCMA, round(f.dts * skew), round(f.dts * skew), f.data, sample_rate=8000, channels=1)
              for f in packets(Codec.PCMA, data, 0)]
    tc = G711ToAac()
    out = run(tc, frames)
    t = times(out)
    assert all(b > a for a, b in zip(t, t[1:]))
    end_in = frames[-1].dts + 20
    assert abs(t[-1] + 64 - end_in) <= tc.tolerance_ms + 2 * 64
    assert (tc.stats.filled_ms > 0) == (skew > 1) and (tc.stats.trimmed_ms > 0) == (skew < 1)
    assert tc.stats.restarts == 0


def test_garbage_is_dropped_and_counted_never_raised() -> None:
    tc = G711ToAac()
    good = MediaFrame(Codec.PCMA, 0, 0, b"\xd5" * 160, sample_rate=8000, channels=1)
    bad = [
        MediaFrame(Codec.PCMA, 20, 20, b""),  # empty
        MediaFrame(Codec.PCMA, 20, 20, b"\xd5" * 160, sample_rate=100),  # no such rate
        MediaFrame(Codec.PCMA, 20, 20, b"\xd5" * 160, sample_rate=8000, channels=3),
        MediaFrame(Codec.PCMU, 20, 20, b"\xd5" * 161, sample_rate=8000, channels=2),  # half a sample pair
        MediaFrame(Codec.PCMA, 20, 20, b"\xd5" * 80_000, sample_rate=8000),  # 10 s in one frame
        MediaFrame(Codec.PCMA, 1 << 60, 1 << 60, b"\xd5" * 160),  # not a time
        MediaFrame(Codec.AAC, 20, 20, b"\x21\x00"),  # not G.711
        MediaFrame(Codec.H264, 20, 20, b"\x00\x00\x00\x01\x65"),
        MediaFrame(Codec.PCMA, 20, 20, b"\x14\x08", is_config=True),
    ]
    out = tc.feed(good)
    for f in bad:
        assert tc.feed(f) == []
    assert tc.stats.dropped == len(bad) and tc.stats.frames_in == len(bad) + 1
    # the stream goes on as if nothing happened; a missing rate means G.711's 8 kHz
    for i in range(1, 40):
        out += tc.feed(MediaFrame(Codec.PCMA, i * 20, i * 20, b"\xd5" * 160))
    out += tc.flush()
    assert out[0].is_config and len(times(out)) >= 12 and tc.stats.restarts == 0
    decode_aac(out)  # decodable


@st.composite
def g711_stream(draw: st.DrawFn, monotonic: bool) -> list[MediaFrame]:
    frames = []
    t = draw(st.integers(-10_000, 10_000))
    for _ in range(draw(st.integers(1, 60))):
        codec = draw(st.sampled_from([Codec.PCMA, Codec.PCMU, Codec.PCMA, Codec.AAC]))
        rate = draw(st.sampled_from([8000, 8000, 8000, 0, 11025, 22050, 44100, 7, 1_000_000]))
        channels = draw(st.sampled_from([1, 1, 0, 2, 5]))
        data = draw(st.binary(min_size=0, max_size=900))
        if monotonic:
            t += draw(st.one_of(st.integers(0, 80), st.integers(0, 5000), st.just(10**7)))
        else:
            t = draw(st.integers(-(1 << 62), 1 << 62))
        frames.append(MediaFrame(codec, t, t, data, sample_rate=rate, channels=channels))
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g711_stream(monotonic=True))
def test_random_input_with_rising_timestamps_gives_rising_output(frames: list[MediaFrame]) -> None:
    tc = G711ToAac()
    out = run(tc, frames)
    t = times(out)
    assert all(b > a for a, b in zip(t, t[1:]))
    assert all(f.codec is Codec.AAC for f in out) and sum(f.is_config for f in out) <= 1
    if t:
        decode_aac(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g711_stream(monotonic=False))
def test_random_input_never_raises(frames: list[MediaFrame]) -> None:
    tc = G711ToAac()
    out = run(tc, frames)
    assert all(f.codec is Codec.AAC for f in out)
    assert tc.stats.frames_in == len(frames)


# --- in front of the HLS packager -----------------------------------------------------------------


def video_frames(seconds: float) -> list[MediaFrame]:
    from test_fmp4_hls import encode_video

    return encode_video(av, Codec.H264, frames=int(25 * seconds))


def interleave(video: list[MediaFrame], audio: list[MediaFrame]) -> list[MediaFrame]:
    """As a publisher sends them: configs first, then by time (video first on a tie)."""
    configs = [f for f in video if f.is_config]
    media = sorted([f for f in video if not f.is_config] + audio, key=lambda f: (f.dts, not f.is_video))
    return configs + media


@pytest.mark.parametrize("codec", [Codec.PCMA, Codec.PCMU])
def test_hls_sink_transcodes_g711_and_lists_aac(codec: Codec) -> None:
    sink = HlsSink(HlsConfig(segment_target=1.0), wall_clock=lambda: 1.7e9)
    video = video_frames(3.0)
    start = next(f.dts for f in video if not f.is_config)
    audio = packets(codec, g711(codec, tone(1000, 3.0)), start_ms=start)
    for f in interleave(video, audio):
        sink(f)
    sink.end()
    p = sink.packager
    assert p.codecs.startswith("avc1.") and p.codecs.endswith(",mp4a.40.2")
    assert len(p.segments) >= 2 and all(s.generation == 0 for s in p.segments)  # audio from the very start
    assert sink.transcoder is not None and sink.transcoder.stats.dropped == 0
    # FFmpeg reads what the packager made: H.264 + AAC, audio decodes, its timestamps rise
    data = p.init() + b"".join(s.data for s in p.segments)  # type: ignore[operator]
    import io

    with av.open(io.BytesIO(data), format="mp4") as c:
        assert {s.type: s.codec_context.name for s in c.streams} == {"video": "h264", "audio": "aac"}
        audio_stream = c.streams.audio[0]
        pts = [float(fr.time) for pk in c.demux(audio_stream) for fr in pk.decode() if fr.pts is not None]
    assert len(pts) >= 40 and all(b > a for a, b in zip(pts, pts[1:]))


def test_hls_sink_leaves_aac_and_video_only_streams_alone() -> None:
    sink = HlsSink(HlsConfig(segment_target=1.0))
    for f in video_frames(2.0):
        sink(f)
    assert sink.transcoder is None and sink.packager.codecs.startswith("avc1.") and "mp4a" not in sink.packager.codecs
    assert sink.packager.segments  # the video held back at the start was released


def test_hls_sink_packages_an_audio_only_g711_stream() -> None:
    sink = HlsSink(HlsConfig(segment_target=1.0))
    for f in packets(Codec.PCMU, g711(Codec.PCMU, tone(1000, 3.0)), start_ms=40_000):
        sink(f)
    sink.end()
    p = sink.packager
    assert p.codecs == "mp4a.40.2" and len(p.segments) >= 2
    assert all(s.independent for s in p.segments)


def test_hls_sink_starts_each_publisher_with_the_aac_config() -> None:
    sink = HlsSink(HlsConfig(segment_target=1.0))
    stream = interleave(video_frames(2.0), packets(Codec.PCMA, g711(Codec.PCMA, tone(1000, 2.0))))
    for _ in range(2):
        for f in stream:
            sink(f)
        sink.end()
        assert sink.packager.ended and "mp4a.40.2" in sink.packager.codecs


# --- the virtual camera's G.711 tone -----------------------------------------------------------------


@pytest.mark.parametrize(("audio", "codec"), [("g711a", Codec.PCMA), ("g711u", Codec.PCMU)])
def test_virtual_camera_beeps_in_g711(audio: str, codec: Codec) -> None:
    import asyncio

    from iotvideo.agent.sources import VirtualSource

    async def go() -> tuple[list[MediaFrame], object]:
        src = VirtualSource(64, 64, 15, gop_s=1.0, audio=audio)
        await src.start()
        got: list[MediaFrame] = []
        async for f in src.frames():
            if f.is_audio:
                got.append(f)
                if len(got) == 50:  # one second
                    break
        await src.close()
        return got, src.info

    frames, info = asyncio.run(go())
    assert info.audio is codec and info.sample_rate == 8000 and info.channels == 1  # type: ignore[attr-defined]
    assert all(f.codec is codec and not f.is_config and len(f.data) == 160 and f.sample_rate == 8000 for f in frames)
    assert [f.dts for f in frames] == [20 * i for i in range(50)]
    samples, rate = decode_aac(run(G711ToAac(), frames))
    assert abs(dominant_frequency(samples[: rate // 4], rate) - 1000) <= 25  # the beep's first quarter second
    with pytest.raises(ValueError):
        VirtualSource(64, 64, 15, audio="opus")
    # what ``iotvideo camera --audio --audio-codec g711a|g711u`` builds
    from iotvideo.agent.media import LiveMedia

    made = LiveMedia("virtual", audio=audio).make_source(0)
    assert isinstance(made, VirtualSource) and made.audio_codec is codec


# --- interop: FFmpeg publishes H.264 + G.711 to a real ``iotvideo serve`` ------------------------------


@dataclass
class Heard:
    """What FFmpeg (PyAV) got from one output."""

    kind: str
    video_frames: int = 0
    audio_codec: str = ""
    audio_pts: list[float] = field(default_factory=list)
    audio_samples: int = 0
    pcm: list[float] = field(default_factory=list)  # the first seconds of decoded float audio
    audio_rate: int = 0
    error: str = ""


def listen(kind: str, url: str, max_s: float = 30) -> Heard:
    heard = Heard(kind)
    t0 = time.monotonic()
    try:
        with av.open(url, timeout=15, options={"analyzeduration": "1000000"}) as c:
            streams = [s for s in c.streams if s.type in ("video", "audio")]
            for packet in c.demux(*streams):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        heard.video_frames += 1
                    elif frame.pts is not None:
                        heard.audio_codec = packet.stream.codec_context.name
                        heard.audio_pts.append(float(frame.time))
                        heard.audio_samples += frame.samples
                        heard.audio_rate = frame.sample_rate
                        if frame.format.name == "fltp" and len(heard.pcm) < 4 * frame.sample_rate:
                            heard.pcm.extend(array.array("f", bytes(frame.planes[0]))[: frame.samples])
                if time.monotonic() - t0 > max_s:
                    break
    except Exception as e:  # reported by the assertions
        heard.error = repr(e)
    return heard


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    info = start_server("sqlite", tmp_path_factory.mktemp("g711"))
    yield info
    stop_server(info)


def ffmpeg_g711(push_url: str, seconds: float) -> subprocess.Popen[bytes]:
    """Debian's ffmpeg, in real time: H.264 test pattern + a 1 kHz tone as G.711 A-law 8 kHz mono, FLV over RTMP."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        if os.environ.get("CI"):
            pytest.fail("no ffmpeg binary (scripts/setup.sh installs it)")
        pytest.skip("no ffmpeg binary")
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
           "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000",
           "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", "-preset", "ultrafast",
           "-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1", "-f", "flv", push_url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class G711Stream:
    """A stream name on the real server, with tokens signed by the server's own key."""

    server: ServerInfo
    iot_id: str = field(default_factory=lambda: "g711cam" + secrets.token_hex(3))

    def __post_init__(self) -> None:
        from iotvideo.config import Settings
        from iotvideo.domain.live import media_token_signer

        self.signer = media_token_signer(Settings(data_dir=self.server.data_dir))

    @property
    def name(self) -> str:
        return f"{self.iot_id}_0"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def push_url(self) -> str:
        token = self.signer.issue("push", f"{self.iot_id}/0", 60)
        return f"rtmp://127.0.0.1:{self.server.rtmp_port}/live/{self.name}?token={token}"

    def play_url(self, kind: str) -> str:
        token = self.signer.issue("play", self.name, 60)
        if kind == "rtmp":
            return f"rtmp://127.0.0.1:{self.server.rtmp_port}/live/{self.name}?token={token}"
        if kind == "flv":
            return f"{self.base}/live/{self.name}.flv?token={token}"
        return f"{self.base}/hls/{self.name}/index.m3u8?token={token}"

    def hls_codecs(self, timeout: float = 20) -> str:
        """The CODECS of the multivariant playlist once it names audio (or what it says at the timeout)."""
        codecs = ""
        deadline = time.monotonic() + timeout
        while "mp4a" not in codecs and time.monotonic() < deadline:
            r = httpx.get(self.play_url("hls"), timeout=20)
            assert r.status_code == 200, r.text
            m = re.search(r'CODECS="([^"]*)"', r.text)
            codecs = m.group(1) if m else ""
            if "mp4a" not in codecs:
                time.sleep(0.2)
        return codecs


def test_ffmpeg_g711_publisher_hls_plays_aac_rtmp_and_flv_keep_g711(real_server: ServerInfo) -> None:
    stream = G711Stream(real_server)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        publisher = ffmpeg_g711(stream.push_url(), 8)
        try:
            codecs = stream.hls_codecs()  # the multivariant playlist names the transcoded audio once live
            players = {k: pool.submit(listen, k, stream.play_url(k)) for k in ("rtmp", "flv", "hls")}
            _, err = publisher.communicate(timeout=60)
            assert publisher.returncode == 0, err.decode(errors="replace")
        finally:
            if publisher.poll() is None:
                publisher.kill()
        heard = {k: f.result(90) for k, f in players.items()}
    for h in heard.values():
        print(f"g711 {h.kind}: {h.video_frames} video frames, {len(h.audio_pts)} {h.audio_codec} audio frames")
    assert codecs.startswith("avc1.") and codecs.endswith("mp4a.40.2"), codecs
    hls = heard["hls"]
    assert not hls.error, hls.error
    assert hls.audio_codec == "aac" and hls.video_frames >= 50
    assert hls.audio_samples >= 3 * 16000 and len(hls.audio_pts) >= 40
    assert all(b > a for a, b in zip(hls.audio_pts, hls.audio_pts[1:])), "HLS audio timestamps not increasing"
    assert hls.audio_rate == 16000 and abs(dominant_frequency(hls.pcm, hls.audio_rate) - 1000) <= 25
    for kind in ("rtmp", "flv"):
        h = heard[kind]
        assert not h.error, f"{kind}: {h.error}"
        assert h.audio_codec == "pcm_alaw" and h.video_frames >= 50 and h.audio_samples >= 3 * 8000, h
        assert all(b >= a for a, b in zip(h.audio_pts, h.audio_pts[1:])), f"{kind}: audio timestamps go back"


# --- Chromium: hls.js plays the transcoded audio ---------------------------------------------------

HLS_JS = Path(__file__).resolve().parents[1] / "src/iotvideo/console/static/vendor/hls.min.js"


def test_chromium_hls_js_plays_g711_stream_with_audio(real_server: ServerInfo) -> None:
    from test_console_browser import CHROMIUM_FLAGS, chromium_or_skip

    exe = chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api")
    stream = G711Stream(real_server)
    publisher = ffmpeg_g711(stream.push_url(), 20)
    try:
        assert "mp4a.40.2" in stream.hls_codecs()
        url = stream.play_url("hls")
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(stream.base + "/healthz")  # the server's origin
                page.set_content('<video id="video" muted autoplay playsinline></video>')
                page.add_script_tag(path=str(HLS_JS))
                page.evaluate("""url => {
                    window.buffers = {}; window.errors = [];
                    const hls = new Hls({ lowLatencyMode: true, liveSyncDurationCount: 2 });
                    hls.on(Hls.Events.BUFFER_CREATED, (_e, d) => {
                        for (const [type, t] of Object.entries(d.tracks)) window.buffers[type] = t.codec;
                    });
                    hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.errors.push(d.details); });
                    hls.loadSource(url);
                    hls.attachMedia(document.getElementById('video'));
                }""", url)
                page.wait_for_function(
                    "() => { const v = document.getElementById('video');"
                    " return window.errors.length > 0 || (v.currentTime > 2 && v.webkitAudioDecodedByteCount > 0); }",
                    timeout=30_000)
                errors = page.evaluate("window.errors")
                buffers = page.evaluate("window.buffers")
                decoded = page.evaluate("document.getElementById('video').webkitAudioDecodedByteCount")
                played = page.evaluate("document.getElementById('video').currentTime")
            finally:
                browser.close()
    finally:
        publisher.kill()
        publisher.wait(10)
    print(f"g711 in Chromium (hls.js): buffers {buffers}, {decoded} audio bytes decoded, currentTime {played:.1f} s")
    assert errors == []
    assert any("mp4a.40.2" in (codec or "") for codec in buffers.values()), buffers
    assert decoded > 0 and played > 2
