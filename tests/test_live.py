"""Live sessions end to end, both backends: QueryLiveStreaming / StopLiveStreaming through the
official SDK, an in-process virtual camera (``CameraAgent`` + ``LiveMedia``) pushing real video to
the real server, and FFmpeg (PyAV) playing what the returned URLs give.

The server is started here (not the shared ``server`` fixture) with a short media idle time, so
the idle stop can be observed; everything else is the same as ``conftest.start_server``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import business_error
from conftest import BACKENDS, Key, OldSdk, ServerInfo, new_config, pg_available, start_server, stop_server
from llhls_check import check_media_playlist
from test_agent import make_camera, running_agent, status_is, wait_until
from test_media_servers import RtmpPeer

av = pytest.importorskip("av")

from alibabacloud_linkvisual20180120 import models as lv  # noqa: E402
from alibabacloud_linkvisual20180120.client import Client  # noqa: E402

from iotvideo.agent.media import LiveMedia, StreamProfile  # noqa: E402
from iotvideo.config import Settings  # noqa: E402
from iotvideo.domain.live import media_token_signer  # noqa: E402
from iotvideo.media.decrypt import WrongKey, decrypt_flv  # noqa: E402

IDLE_S = 3


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    if request.param == "postgres" and not pg_available():
        pytest.skip("PostgreSQL not reachable")
    info = start_server(request.param, tmp_path_factory.mktemp("live-" + request.param),
                        extra_env={"IOTVIDEO_MEDIA_IDLE_S": str(IDLE_S)})
    yield info
    stop_server(info)


@pytest.fixture()
def lvc(server: ServerInfo, key: Key) -> Client:
    return Client(new_config(server, key, None))


def camera_media() -> LiveMedia:
    return LiveMedia("virtual", main=StreamProfile(192, 108, 15.0, 150_000), sub=StreamProfile(160, 90, 15.0, 100_000),
                     gop_s=1.0)


def query(client: Client, cam: dict[str, str], **kw: Any) -> Any:
    return client.query_live_streaming(lv.QueryLiveStreamingRequest(iot_id=cam["IotId"], **kw)).body


def stop(client: Client, cam: dict[str, str], stream_type: int = 0) -> Any:
    body = client.stop_live_streaming(lv.StopLiveStreamingRequest(iot_id=cam["IotId"], stream_type=stream_type)).body
    assert body.success, body
    return body


@dataclass
class Played:
    url: str
    t0: float
    first_frame_s: float | None = None
    pts: list[float] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    eof: bool = False
    error: str = ""


def play(url: str, t0: float, frames: int = 20, max_s: float = 20.0, stop: threading.Event | None = None) -> Played:
    """Decode video from ``url`` until ``frames`` frames (0: until EOF), ``max_s`` or ``stop``."""
    p = Played(url, t0)
    try:
        with av.open(url, timeout=10, options={"analyzeduration": "500000", "probesize": "65536"}) as c:
            vs = c.streams.video[0]
            for packet in c.demux(vs):
                if packet.size == 0 and packet.pts is None:
                    continue
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    if p.first_frame_s is None:
                        p.first_frame_s = time.perf_counter() - t0
                        p.size = (frame.width, frame.height)
                    p.pts.append(float(frame.time))
                if frames and len(p.pts) >= frames or time.perf_counter() - t0 > max_s:
                    return p
                if stop is not None and stop.is_set():
                    return p
            p.eof = True
    except Exception as e:
        p.error = repr(e)
    return p


def start_camera(server: ServerInfo, old_sdk: OldSdk, cam: dict[str, str]) -> Any:
    return running_agent(server, cam, media=camera_media())


def pushes(agent: Any) -> int:
    return int(agent.media.streams_pushing())


def start_push_calls(agent: Any) -> int:
    return sum(1 for a in list(agent.replies) if a.identifier == "StartPushStreaming")


def test_query_live_streaming_every_scheme_plays(server: ServerInfo, old_sdk: OldSdk, lvc: Client) -> None:
    cam = make_camera(old_sdk)
    figures: dict[str, float] = {}
    with start_camera(server, old_sdk, cam) as runner:
        agent = runner.agent
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        for scheme in ("rtmp", "flv", "hls"):
            assert pushes(agent) == 0
            t0 = time.perf_counter()
            body = query(lvc, cam, scheme=scheme, stream_type=0)
            api_ms = (time.perf_counter() - t0) * 1000
            assert body.success, body
            data = body.data
            assert data.relay_decrypt_key in (None, "") and data.stun_info in (None, "")
            url = data.path
            assert url.startswith({"rtmp": "rtmp://", "flv": "http://", "hls": "http://"}[scheme]), url
            assert "token=" in url and f"{cam['IotId']}_0" in url
            # answered at once: not after the device started pushing
            assert api_ms < 1000, api_ms
            p = play(url, t0, frames=20, max_s=25 if scheme == "hls" else 15)
            assert not p.error, (scheme, p.error)
            assert len(p.pts) >= 20, (scheme, len(p.pts))
            assert p.size == (192, 108), p.size
            assert p.pts[-1] > p.pts[0], "video time does not advance"
            assert all(b > a for a, b in zip(p.pts, p.pts[1:])), "timestamps not increasing"
            assert p.first_frame_s is not None
            figures[scheme] = p.first_frame_s * 1000
            print(f"idle camera, {scheme}: API answered in {api_ms:.0f} ms, first decoded frame "
                  f"{p.first_frame_s * 1000:.0f} ms after the API call ({server.backend})")
            assert pushes(agent) == 1

            # the same URL a second time: single use, refused
            if scheme == "rtmp":
                again = play(url, time.perf_counter(), frames=1, max_s=8)
                assert again.error and not again.pts, again
            else:
                r = httpx.get(url, timeout=10)
                assert r.status_code == 403 and "used" in r.text, (r.status_code, r.text)

            stop(lvc, cam)
            wait_until(lambda: pushes(agent) == 0, "the camera to stop pushing", timeout=10)
    print("LIVE_FIRST_FRAME_MS", json.dumps({k: round(v) for k, v in figures.items()}), server.backend)


def test_hls_from_an_idle_camera_stays_valid_ll_hls(server: ServerInfo, old_sdk: OldSdk, lvc: Client) -> None:
    """The live playlists a low-latency player sees from the first request on (blocking reload of
    each next part, as hls.js does) pass the RFC 8216bis checks of ``llhls_check``, with the parts
    they list served and flagged INDEPENDENT exactly when they start with a key frame; the
    target duration never changes and the preload-hinted part is served once it exists."""
    cam = make_camera(old_sdk)
    with start_camera(server, old_sdk, cam), httpx.Client(timeout=15) as http:
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        t0 = time.perf_counter()
        url = query(lvc, cam, scheme="hls", stream_type=0).data.path
        base = url.split("index.m3u8")[0]
        multivariant = http.get(url)
        assert multivariant.status_code == 200 and 'CODECS="avc1.' in multivariant.text, multivariant.text
        media = next(ln for ln in multivariant.text.splitlines() if ln and not ln.startswith("#"))

        def fetch(uri: str) -> bytes | None:
            r = http.get(base + uri)
            return r.content if r.status_code == 200 else None

        first = http.get(base + media)
        first_ms = (time.perf_counter() - t0) * 1000
        pl = check_media_playlist(first.text, fetch)
        assert pl.segments and pl.segments[0].parts[0].independent and not pl.ended
        first_segment_s = pl.segments[0].duration
        # a plain reload (FFmpeg, VLC) by a session that has the last segment waits for the next one
        t1 = time.perf_counter()
        again = check_media_playlist(http.get(base + media).text, fetch)
        assert again.segments[-1].msn == pl.segments[-1].msn + 1, (again.segments, pl.segments)
        held_ms = (time.perf_counter() - t1) * 1000
        targets, msn_seen = {pl.target}, pl.media_sequence
        for _ in range(24):  # about 8 s of parts, one blocking reload each
            msn = pl.media_sequence + len(pl.segments)
            r = http.get(f"{base}{media}&_HLS_msn={msn}&_HLS_part={len(pl.open_parts)}")
            assert r.status_code == 200, r.text
            pl = check_media_playlist(r.text, fetch)
            assert pl.media_sequence >= msn_seen
            msn_seen = pl.media_sequence
            targets.add(pl.target)
        assert targets == {2}, targets
        assert pl.preload_hint is not None
        hinted = http.get(base + pl.preload_hint)  # blocks until the part exists
        assert hinted.status_code == 200 and hinted.content[4:8] == b"moof"
        print(f"idle camera, hls: first media playlist (segment 0: {first_segment_s:.3f} s) "
              f"{first_ms:.0f} ms after the API call; a plain reload held {held_ms:.0f} ms for the next segment; "
              f"24 blocking reloads valid ({server.backend})")
        stop(lvc, cam)


def test_shared_push_unlimited_tokens_stop_ends_players_and_idle_stops_push(
        server: ServerInfo, old_sdk: OldSdk, lvc: Client) -> None:
    cam = make_camera(old_sdk)
    with start_camera(server, old_sdk, cam) as runner:
        agent = runner.agent
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")

        # PlayUnLimited: one URL, two players, one push
        body = query(lvc, cam, scheme="flv", play_un_limited=True, url_valid_duration=60)
        url = body.data.path
        stop_ev = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            t0 = time.perf_counter()
            a = pool.submit(play, url, t0, 0, 60, None)
            b = pool.submit(play, url, t0, 0, 60, None)
            wait_until(lambda: pushes(agent) == 1, "the camera to push")
            time.sleep(2.0)
            # another session on the same stream (rtmp) reuses the push
            calls = start_push_calls(agent)
            body2 = query(lvc, cam, scheme="rtmp", force_iframe=True)
            c = pool.submit(play, body2.data.path, time.perf_counter(), 10, 15, stop_ev)
            pc = c.result(30)
            assert not pc.error and len(pc.pts) >= 10, pc
            assert start_push_calls(agent) == calls and pushes(agent) == 1
            # StopLiveStreaming: every player reaches the end of the stream, the camera stops
            t_stop = time.perf_counter()
            stop(lvc, cam)
            pa, pb = a.result(30), b.result(30)
            ended_s = time.perf_counter() - t_stop
        for p in (pa, pb):
            assert len(p.pts) >= 20, p
            assert p.eof and not p.error, p  # FFmpeg sees the end of the stream (EOF)
        print(f"StopLiveStreaming: players ended {ended_s * 1000:.0f} ms after the call")
        wait_until(lambda: pushes(agent) == 0, "StreamsPushing 0 after StopLiveStreaming", timeout=10)
        status = json.loads(old_sdk.common("InvokeThingService", IotId=cam["IotId"], Identifier="GetDeviceStatus",
                                           Args="{}")["Data"]["Result"])
        assert status["StreamsPushing"] == 0

        # idle: a player that leaves, and after media_idle_s (plus the URL's hold) the push stops
        body = query(lvc, cam, scheme="rtmp", stream_type=1)
        p = play(body.data.path, time.perf_counter(), frames=5, max_s=15)
        assert not p.error and p.size == (160, 90), p
        assert pushes(agent) == 1
        t_left = time.perf_counter()
        wait_until(lambda: pushes(agent) == 0, "the idle push to stop", timeout=30)
        print(f"idle stop: push stopped {time.perf_counter() - t_left:.1f} s after the last player left "
              f"(media_idle_s={IDLE_S}, URL hold 10 s)")


def test_tokens_refused_offline_device_and_parameters(server: ServerInfo, old_sdk: OldSdk, lvc: Client) -> None:
    cam = make_camera(old_sdk)
    # never connected: initial
    business_error(query(lvc, cam), "466", "device status is initial.")
    with start_camera(server, old_sdk, cam) as runner:
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        body = query(lvc, cam, scheme="flv", url_valid_duration=10)
        url = body.data.path
        name = f"{cam['IotId']}_0"
        base = url.split("?")[0]
        # an expired token (the server's own key, issued 100 s ago with a 10 s validity)
        signer = media_token_signer(Settings(data_dir=server.data_dir))
        old = signer.issue("play", name, 10, now=time.time() - 100)
        r = httpx.get(f"{base}?token={old}", timeout=10)
        assert r.status_code == 403 and "expired" in r.text, r.text
        # a token for another stream, a push token, no token, a forged token
        other = signer.issue("play", f"{cam['IotId']}_1", 10)
        push = signer.issue("push", f"{cam['IotId']}/0", 10)
        for t in (other, push, "", "AAAA" + old[4:]):
            r = httpx.get(f"{base}?token={t}", timeout=10)
            assert r.status_code == 403, (t, r.status_code)
        # publishing needs the push token for that very stream (a play token, another stream's
        # push token, a forged one are refused)
        async def publish_refused() -> None:
            for t in (signer.issue("play", name, 10), signer.issue("push", f"{cam['IotId']}/1", 10), "bogus"):
                peer = await RtmpPeer.open(server.rtmp_port)
                _, status = await peer.stream("publish", f"{name}?token={t}")
                assert status.level == "error" and status.code.startswith("NetStream.Publish."), status
                assert await peer.closed_by_server()
        asyncio.run(publish_refused())
        # the URL issued above still plays once
        p = play(url, time.perf_counter(), frames=3, max_s=15)
        assert not p.error and len(p.pts) >= 3, p
        # bad parameters: 400 InvalidParameter
        from api_support import gateway_error
        assert gateway_error(lambda: query(lvc, cam, scheme="rtsp")) == "InvalidParameter"
        assert gateway_error(lambda: query(lvc, cam, url_valid_duration=5)) == "InvalidParameter"
        assert gateway_error(lambda: query(lvc, cam, url_valid_duration=14401)) == "InvalidParameter"
        assert gateway_error(lambda: query(lvc, cam, cache_duration=10001)) == "InvalidParameter"
        assert gateway_error(lambda: query(lvc, cam, stream_type=2)) == "InvalidParameter"
        assert gateway_error(lambda: query(lvc, cam, encrypt_type=1)) == "InvalidParameter"
        stop(lvc, cam)
    wait_until(status_is(old_sdk, cam, "OFFLINE"), "the camera to be OFFLINE")
    business_error(query(lvc, cam), "466", "device status is offline.")
    # the old SDK (seed field names) sees the same error
    body = old_sdk.common("QueryLiveStreaming", product="Linkvisual", IotId=cam["IotId"])
    assert body["Code"] == "466" and body["ErrorMessage"] == "device status is offline.", body


def test_should_encrypt_key_frames_decrypt_with_the_returned_key(
        server: ServerInfo, old_sdk: OldSdk, lvc: Client, tmp_path: Path) -> None:
    cam = make_camera(old_sdk)
    with start_camera(server, old_sdk, cam):
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        body = query(lvc, cam, scheme="flv", stream_type=1, should_encrypt=True, encrypt_type=0)
        assert body.success, body
        info = json.loads(body.data.relay_decrypt_key)
        assert info["Algorithm"] == "AES-128-CBC" and info["EncryptType"] == 0
        import base64
        key, iv = base64.b64decode(info["Key"]), base64.b64decode(info["Iv"])
        assert len(key) == 16 and len(iv) == 16
        # the old SDK sees DecryptKey too
        captured = bytearray()
        with httpx.stream("GET", body.data.path, timeout=15) as r:
            assert r.status_code == 200
            t0 = time.perf_counter()
            for chunk in r.iter_bytes():
                captured += chunk
                if time.perf_counter() - t0 > 4.0:
                    break
        stop(lvc, cam, 1)
    data = bytes(captured)
    clear, stats = decrypt_flv(data, key, iv)
    assert stats.key_frames >= 2 and stats.decrypted_nalus >= 2 and stats.bad_key_frames == 0, stats
    with pytest.raises(WrongKey):
        decrypt_flv(data, secrets.token_bytes(16), iv)
    out = tmp_path / "clear.flv"
    out.write_bytes(clear)
    frames = 0
    with av.open(str(out)) as c:
        for frame in c.decode(video=0):
            frames += 1
            assert (frame.width, frame.height) == (160, 90)
    assert frames >= 15, frames
    print(f"encrypted capture: {stats.key_frames} key frames decrypted, {frames} frames decode")


def test_old_sdk_decrypt_key_field(server: ServerInfo, old_sdk: OldSdk) -> None:
    cam = make_camera(old_sdk)
    with start_camera(server, old_sdk, cam):
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        body = old_sdk.common("QueryLiveStreaming", product="Linkvisual", IotId=cam["IotId"], ShouldEncrypt="true",
                              Scheme="hls")
        assert body["Success"] is True, body
        d = body["Data"]
        assert d["DecryptKey"] == d["RelayDecryptKey"] and json.loads(d["DecryptKey"])["Key"]
        assert "/index.m3u8?token=" in d["Path"] and d["StunInfo"] == ""
        old_sdk.common("StopLiveStreaming", product="Linkvisual", IotId=cam["IotId"])


def test_cache_duration_starts_players_that_far_behind_the_live_edge(
        server: ServerInfo, old_sdk: OldSdk, lvc: Client) -> None:
    """``CacheDuration`` (ms): the URL starts its player on the latest key frame at least that far
    behind the live edge (the hub keeps that much history from the call on), so the player gets
    that much video at once, ahead of the wall clock; without it, at most about a GOP (1 s)."""
    cam = make_camera(old_sdk)
    with start_camera(server, old_sdk, cam) as runner:
        wait_until(status_is(old_sdk, cam, "ONLINE"), "the camera to be ONLINE")
        cached = query(lvc, cam, scheme="flv", cache_duration=3000, url_valid_duration=60).data.path
        wait_until(lambda: pushes(runner.agent) == 1, "the camera to push")
        time.sleep(4.5)  # the stream runs unwatched; the hub keeps 3 s of it
        plain = query(lvc, cam, scheme="rtmp", url_valid_duration=60).data.path
        ahead = {}
        for label, url in (("cached", cached), ("plain", plain)):
            t0 = time.perf_counter()
            p = play(url, t0, frames=0, max_s=2.5)
            assert not p.error and p.first_frame_s is not None and len(p.pts) >= 20, (label, p)
            assert p.pts[0] < 0.1 and all(b > a for a, b in zip(p.pts, p.pts[1:])), (label, p.pts[:5])
            wall = time.perf_counter() - t0 - p.first_frame_s
            ahead[label] = p.pts[-1] - p.pts[0] - wall  # video received beyond what real time explains
        print(f"CacheDuration 3000 ms: the player started {ahead['cached']:.2f} s behind the live edge "
              f"(without: {ahead['plain']:.2f} s)")
        assert ahead["cached"] >= 2.5 and ahead["plain"] <= 1.5, ahead
        stop(lvc, cam)
