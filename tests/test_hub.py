"""The stream hub: fan-out order, late joiners, lagging subscribers, pre-roll, end of
stream, idle detection on an injected clock, the LL-HLS sink, and the registry.

Frames are synthetic (helpers from test_fmp4_hls); the HLS sink is also fed a real
libx264 clip when PyAV is importable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.hls import HlsConfig
from iotvideo.media.hub import (
    FrameMemo,
    HubClosed,
    HubConfig,
    HubRegistry,
    PublisherConflict,
    StreamHub,
    StreamKey,
    Subscription,
)
from test_fmp4_hls import audio_config, audio_frame, encode_video, video_config, video_frame

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def gop(start_ms: int, frames: int = 25, step: int = 40, size: int = 100) -> list[MediaFrame]:
    return [video_frame(start_ms + i * step, key=(i == 0), size=size) for i in range(frames)]


def drain(sub: Subscription) -> list[MediaFrame]:
    out = []
    while (f := sub.get_nowait()) is not None:
        out.append(f)
    return out


def make_hub(**kw: Any) -> tuple[StreamHub, FakeClock]:
    clock = FakeClock()
    return StreamHub(StreamKey("dev1", 0), HubConfig(**kw), clock=clock, wall_clock=lambda: 1_700_000_000.0), clock


# --- fan-out ------------------------------------------------------------------------------


def test_subscriber_gets_every_frame_in_order() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    sub = hub.subscribe()
    frames = [video_config(), audio_config(), *gop(0, 10), *gop(400, 10)]

    async def main() -> list[MediaFrame]:
        got: list[MediaFrame] = []

        async def consume() -> None:
            async for f in sub:
                got.append(f)

        task = asyncio.create_task(consume())
        for f in frames:
            pub.publish(f)
            await asyncio.sleep(0)
        pub.close()
        await task
        return got

    got = run(main())
    # joined before the first key frame: the configurations come just before it
    assert got == frames
    assert sub.ended and hub.subscribers == 0


def test_late_joiner_starts_with_configs_and_current_gop() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    for f in [video_config(), audio_config(), *gop(0, 25), *gop(1000, 10)]:
        pub.publish(f)
    sub = hub.subscribe()
    got = drain(sub)
    assert [f.is_config for f in got[:2]] == [True, True]
    assert got[2].keyframe and got[2].dts == 1000
    assert [f.dts for f in got[2:]] == [1000 + 40 * i for i in range(10)]
    pub.publish(video_frame(1400, key=False))
    assert drain(sub)[0].dts == 1400


def test_joiner_before_any_key_frame_waits_for_one() -> None:
    hub, _ = make_hub()
    sub = hub.subscribe()  # before the publisher even arrives
    pub = hub.attach_publisher()
    pub.publish(video_config())
    pub.publish(video_frame(0, key=False))  # a stray delta frame: undecodable, skipped
    assert drain(sub) == []
    pub.publish(video_frame(40, key=True))
    got = drain(sub)
    assert got[0].is_config and got[1].keyframe and sub.dropped_frames == 0


def test_identical_configs_are_not_repeated() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    sub = hub.subscribe()
    pub.publish(video_config())
    pub.publish(video_frame(0, key=True))
    pub.publish(video_config())  # some encoders repeat their headers
    pub.publish(video_frame(40, key=False))
    assert [f.is_config for f in drain(sub)] == [True, False, False]


def test_slow_subscriber_drops_to_next_key_frame_without_affecting_fast_one() -> None:
    hub, _ = make_hub(queue_max_bytes=10_000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    pub.publish(audio_config())

    slow = hub.subscribe()  # never reads
    fast = hub.subscribe()

    async def main() -> list[MediaFrame]:
        got: list[MediaFrame] = []

        async def consume() -> None:
            async for f in fast:
                got.append(f)

        task = asyncio.create_task(consume())
        published = 0
        # 5 GOPs of 25 frames x ~1 kB (far over the slow one's 10 kB bound), then a short one
        frames = [f for g in range(5) for f in gop(g * 1000, 25, size=1000)] + gop(5000, 4, size=1000)
        for i, f in enumerate(frames):
            pub.publish(f)  # synchronous: returns without waiting for any subscriber
            published += 1
            if i % 5 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert published == 129
        pub.close()
        await task
        return got

    got = run(main())
    media = [f for f in got if not f.is_config]
    assert len(media) == 129 and [f.dts for f in media] == sorted(f.dts for f in media)
    assert fast.dropped_frames == 0 and fast.lag_count == 0
    # the slow one holds at most its bound, resumed at the last key frame with the
    # configurations first, and counted every frame it lost
    rest = drain(slow)
    assert slow.lag_count >= 5 and not slow.lagging
    assert [f.is_config for f in rest] == [True, True, False, False, False, False]
    assert rest[2].keyframe and rest[2].dts == 5000
    assert slow.dropped_frames + 4 == 129


def test_lagging_subscriber_resumes_with_new_configs_only_if_changed() -> None:
    hub, _ = make_hub(queue_max_bytes=3_000)
    pub = hub.attach_publisher()
    sub = hub.subscribe()
    pub.publish(video_config())
    for f in gop(0, 5, size=100):
        pub.publish(f)
    assert drain(sub)[0].is_config  # the consumer has taken the configuration
    for f in gop(200, 40, size=200):  # overflows: lagging until the next key frame
        pub.publish(f)
    assert sub.lagging and drain(sub) == []
    pub.publish(video_frame(2000, key=True))
    got = drain(sub)
    assert not sub.lagging and got[0].keyframe  # same configuration: not re-sent
    # the stream's configuration changes while the consumer lags: it is re-sent
    for f in gop(2040, 40, size=200):
        pub.publish(f)
    assert sub.lagging
    new_config = MediaFrame(Codec.H265, 3000, 3000, b"\x01" * 30, keyframe=True, is_config=True)
    pub.publish(new_config)
    pub.publish(video_frame(3000, key=True, codec=Codec.H265))
    got = drain(sub)
    assert got[0] is new_config and got[1].keyframe


def test_max_queue_ms_bounds_latency() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    pub.publish(video_config())
    sub = hub.subscribe(max_queue_ms=500)
    for f in gop(0, 50):  # 2 s with no reader
        pub.publish(f)
    assert sub.lagging and sub.lag_count == 1 and sub.queued_frames == 0


# --- cache and pre-roll -------------------------------------------------------------------


def test_preroll_starts_on_a_key_frame_and_covers_the_request() -> None:
    hub, _ = make_hub(preroll_ms=5_000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    pub.publish(audio_config())
    k = 0
    for g in range(10):  # key frames every 2 s, audio interleaved
        for f in gop(g * 2000, 50):
            pub.publish(f)
            while round(k * 1024 * 1000 / 44100) <= f.dts:
                pub.publish(audio_frame(k))
                k += 1
    last = 19_960
    got = hub.preroll(3.0)
    assert [f.is_config for f in got[:2]] == [True, True]
    first = got[2]
    assert first.is_video and first.keyframe and first.dts <= last - 3000
    assert first.dts == 16_000
    assert got[-1].dts >= last - 40
    longer = hub.preroll(5.0)
    assert longer[2].dts == 14_000  # 5 s back reaches the GOP at 14 s
    assert hub.preroll(60.0)[2].dts <= 14_000  # as far back as kept
    assert hub.preroll(0)[2].dts == 18_000
    # a subscriber can start with the pre-roll, then continues live without a gap
    sub = hub.subscribe(max_queue_bytes=1 << 20, preroll_s=3.0)
    assert drain(sub)[2].dts == 16_000
    pub.publish(video_frame(20_000, key=True))
    assert drain(sub)[0].dts == 20_000


def test_keep_history_for_cache_duration_starts_players_behind_the_live_edge() -> None:
    """CacheDuration: a player asking N ms starts on the latest key frame at least N ms behind the
    live edge; the first such player (or the URL issued for it) makes the hub keep that much."""
    hub, _ = make_hub()  # no pre-roll configured: only the current GOP
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for g in range(3):
        for f in gop(g * 1000):
            pub.publish(f)
    sub = hub.subscribe(preroll_s=2.5)  # as far as the cache reaches: the current GOP
    assert drain(sub)[1].dts == 2000
    assert hub.preroll_ms == 2500  # ...and from now on the hub keeps 2.5 s
    for g in range(3, 8):
        for f in gop(g * 1000):
            pub.publish(f)
    last = 7960
    for cache_ms, start in ((0, 7000), (1000, 6000), (2500, 5000), (10_000, 4000)):  # 4 s: as far as kept
        got = drain(hub.subscribe(preroll_s=cache_ms / 1000))
        assert got[0].is_config and got[1].keyframe and got[1].dts == start, cache_ms
        assert got[-1].dts == last and len(got) == 1 + (8000 - start) // 40
    hub.keep_history(1000)  # never lowered by a smaller request
    assert hub.preroll_ms == 10_000


def test_keep_history_is_bounded_by_the_cache_size() -> None:
    hub, _ = make_hub(cache_max_bytes=6_000)
    hub.keep_history(10_000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for g in range(10):
        for f in gop(g * 1000):  # 2.5 kB a GOP
            pub.publish(f)
    assert hub.stats().cache_bytes <= 6_000 + 2_500
    assert drain(hub.subscribe(preroll_s=10))[1].dts >= 8000


def test_direct_delivery_while_nothing_is_queued_then_the_queue_when_refused() -> None:
    hub, _ = make_hub(queue_max_bytes=1_000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for f in gop(0, 5):
        pub.publish(f)
    sub = hub.subscribe()
    taken: list[MediaFrame] = []
    accept = True
    sub.deliver_to(lambda f: accept and (taken.append(f) or True))
    pub.publish(video_frame(200, key=False))
    assert taken == [] and sub.queued_frames == 7  # the starting burst is queued: it is drained first
    drain(sub)
    pub.publish(video_frame(240, key=False))
    assert [f.dts for f in taken] == [240] and sub.queued_frames == 0  # straight through
    accept = False  # the consumer's socket is full: frames queue, and the queue's bound applies
    for f in gop(280, 20)[1:]:
        pub.publish(f)
    assert sub.lagging and sub.dropped_frames > 0 and len(taken) == 1
    accept = True
    pub.publish(video_frame(2000, key=True))  # resumes at the key frame (configurations unchanged: direct)
    assert drain(sub) == [] and [f.dts for f in taken[-1:]] == [2000] and not sub.lagging
    pub.publish(video_frame(2040, key=False))
    assert taken[-1].dts == 2040

    def broken(f: MediaFrame) -> bool:
        raise RuntimeError("consumer bug")

    sub.deliver_to(broken)
    pub.publish(video_frame(2080, key=False))  # never reaches the publisher: the frame is queued instead
    assert [f.dts for f in drain(sub)] == [2080]


def test_frame_memo_builds_once_per_frame_and_forgets_old_frames() -> None:
    built: list[int] = []
    memo = FrameMemo(lambda f: built.append(f.dts) or f.dts * 2, size=3)
    frames = gop(0, 5)
    assert [memo(f) for f in frames[:3]] == [0, 80, 160]
    assert [memo(f) for f in frames[:3]] == [0, 80, 160] and built == [0, 40, 80]
    memo(frames[3])  # the oldest is forgotten
    assert len(memo) == 3
    memo(frames[0])
    assert built == [0, 40, 80, 120, 0]
    equal_but_not_same = video_frame(40, key=False)
    assert equal_but_not_same == frames[1]
    memo(equal_but_not_same)  # keyed by identity: another object is built again
    assert built[-1] == 40


def test_current_gop_only_without_preroll_and_bounded() -> None:
    hub, _ = make_hub(gop_max_bytes=5_000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for f in gop(0, 25) + gop(1000, 25):
        pub.publish(f)
    assert hub.stats().gop_frames == 25 and hub.preroll(10)[1].dts == 1000
    for f in gop(2000, 60):  # 6 kB: over the GOP bound, so not cached
        pub.publish(f)
    assert hub.gop() == [] and hub.stats().cache_bytes == 0
    sub = hub.subscribe()
    assert drain(sub) == []
    pub.publish(video_frame(4400, key=True))
    got = drain(sub)
    assert got[0].is_config and got[1].dts == 4400


def test_gop_longer_than_max_duration_is_not_cached() -> None:
    hub, _ = make_hub(gop_max_ms=1000)
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for f in gop(0, 30):  # 1.2 s without a key frame
        pub.publish(f)
    assert hub.gop() == []


# --- publishers, end of stream, idle --------------------------------------------------------


def test_second_publisher_refused_or_replacing() -> None:
    hub, _ = make_hub()
    first = hub.attach_publisher()
    with pytest.raises(PublisherConflict):
        hub.attach_publisher()
    evicted: list[str] = []
    sub = hub.subscribe()
    first.publish(video_config())
    first.publish(video_frame(0, key=True))
    drain(sub)
    second = hub.attach_publisher(replace=True, on_evicted=lambda: evicted.append("second"))
    assert not first.active and second.active and hub.publisher is second
    assert first.publish(video_frame(40, key=False)) is False
    second.publish(video_config())
    second.publish(video_frame(5, key=False))  # waits for the new source's key frame
    second.publish(video_frame(45, key=True))
    got = drain(sub)
    assert [f.dts for f in got if not f.is_config] == [45]
    third_hub = StreamHub("x/1", HubConfig(replace_publisher=True))
    third_hub.attach_publisher(on_evicted=lambda: evicted.append("a"))
    third_hub.attach_publisher()
    assert evicted == ["a"]


def test_close_ends_iterators_after_draining() -> None:
    hub, clock = make_hub()
    pub = hub.attach_publisher()
    gone: list[StreamHub] = []
    hub.on_publisher_gone = gone.append
    subs = [hub.subscribe() for _ in range(3)]
    pub.publish(video_config())
    pub.publish(video_frame(0, key=True))

    async def main() -> list[int]:
        async def count(sub: Subscription) -> int:
            return len([f async for f in sub])

        tasks = [asyncio.create_task(count(s)) for s in subs]
        await asyncio.sleep(0.01)
        clock.t += 5
        pub.close()
        return await asyncio.gather(*tasks)

    assert run(main()) == [2, 2, 2]
    assert gone == [hub] and not hub.publishing and hub.subscribers == 0
    assert hub.idle_since == 1005.0
    assert run(subs[0].get()) is None and run(subs[0].batch()) == []
    # a new publisher can take the hub again
    pub2 = hub.attach_publisher()
    sub = hub.subscribe()
    pub2.publish(video_config())
    pub2.publish(video_frame(0, key=True))
    assert len(drain(sub)) == 2


def test_batch_returns_all_queued() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    sub = hub.subscribe()

    async def main() -> list[MediaFrame]:
        async def later() -> None:
            await asyncio.sleep(0.01)
            for f in [video_config(), *gop(0, 3)]:
                pub.publish(f)

        task = asyncio.create_task(later())
        out = await sub.batch()
        await task
        return out

    assert len(run(main())) == 4


def test_last_player_left_and_idle_with_injected_clock() -> None:
    clock = FakeClock(100.0)
    idle: list[str] = []
    left: list[tuple[str, float]] = []
    reg = HubRegistry(
        idle_after_s=10, clock=clock, on_idle=lambda h: idle.append(h.path),
        on_last_player_left=lambda h, t: left.append((h.path, t)),
    )
    hub = reg.get_or_create(StreamKey("cam", 1))
    assert reg.get("cam/1") is hub and "cam/1" in reg and StreamKey("cam", 1) in reg
    pub = reg.publish("cam/1")
    pub.publish(video_config())
    clock.t = 109.9
    assert reg.check_idle() == []  # never watched: idle since creation, not long enough
    clock.t = 110.0
    assert reg.check_idle() == [hub] and idle == ["cam/1"]
    assert reg.check_idle() == []  # once per idle period
    a, b = hub.subscribe(), hub.subscribe()
    clock.t = 200.0
    assert reg.check_idle() == [] and hub.idle_for() == 0.0
    a.close()
    assert left == []
    clock.t = 205.0
    b.close()
    b.close()  # twice is harmless
    assert left == [("cam/1", 205.0)] and hub.idle_since == 205.0
    clock.t = 214.0
    assert reg.check_idle() == []
    hub.touch()  # an HLS player fetched a playlist
    clock.t = 223.0
    assert reg.check_idle() == []
    clock.t = 224.0
    assert reg.check_idle() == [hub] and idle == ["cam/1", "cam/1"]
    assert hub.idle_for() == pytest.approx(10.0)
    # removing the hub evicts its publisher and refuses newcomers
    evicted: list[bool] = []
    pub.on_evicted = lambda: evicted.append(True)
    assert reg.remove("cam/1") is hub and len(reg) == 0 and evicted == [True]
    with pytest.raises(HubClosed):
        hub.subscribe()
    assert reg.remove("cam/1") is None


def test_registry_run_task_checks_periodically() -> None:
    idle: list[StreamHub] = []
    reg = HubRegistry(idle_after_s=0.0, on_idle=idle.append)
    reg.get_or_create("a/0")

    async def main() -> None:
        task = asyncio.create_task(reg.run(0.01))
        await asyncio.sleep(0.05)
        task.cancel()

    run(main())
    assert len(idle) == 1


def test_callback_failures_never_reach_the_publisher() -> None:
    hub, _ = make_hub()
    hub.on_publisher_gone = lambda h: 1 / 0
    pub = hub.attach_publisher()

    def bad_sink(frame: MediaFrame) -> None:
        raise RuntimeError("boom")

    seen: list[MediaFrame] = []
    hub.add_sink(bad_sink, on_end=lambda: 1 / 0)
    hub.add_sink(seen.append)
    sub = hub.subscribe()
    pub.publish(video_config())
    pub.publish(video_frame(0, key=True))
    pub.close()
    assert len(seen) == 2 and len(drain(sub)) == 2


def test_stats() -> None:
    hub, clock = make_hub()
    assert hub.stats().publishing is False
    pub = hub.attach_publisher()
    pub.publish(video_config())
    pub.publish(audio_config())
    for i, f in enumerate(gop(0, 50, size=1000)):
        clock.t = 1000.0 + i * 0.04
        pub.publish(f)
    s = hub.stats()
    assert s.publishing and s.video_codec is Codec.H264 and s.audio_codec is Codec.AAC
    assert (s.width, s.height) == (320, 240) and (s.sample_rate, s.channels) == (44100, 2)
    assert s.codecs[0].startswith("avc1.") and s.codecs[1] == "mp4a.40.2"
    assert s.frames_in == 52 and s.bytes_in > 50 * 1000
    assert 150_000 < s.bitrate_bps < 300_000  # 25 kB/s
    assert s.started_at == 1_700_000_000.0 and s.last_frame_at == pytest.approx(1_700_000_001.96)


# --- sinks and HLS ------------------------------------------------------------------------


def test_sink_added_mid_stream_is_primed_with_configs_and_gop() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    pub.publish(video_config())
    for f in gop(0, 10):
        pub.publish(f)
    seen: list[MediaFrame] = []
    ended: list[bool] = []
    remove = hub.add_sink(seen.append, on_end=lambda: ended.append(True))
    assert seen[0].is_config and seen[1].keyframe and len(seen) == 11
    pub.publish(video_frame(400, key=False))
    assert len(seen) == 12 and hub.stats().sinks == 1
    assert hub.subscribers == 0  # a sink is not a player
    remove()
    pub.publish(video_frame(440, key=False))
    assert len(seen) == 12
    hub.add_sink(seen.append, on_end=lambda: ended.append(True))
    pub.close()
    assert ended == [True]


def hls_frames() -> list[MediaFrame]:
    """3 s of libx264 video (key frame every second) when PyAV works, else synthetic frames."""
    try:
        import av

        return encode_video(av, Codec.H264, frames=75)
    except Exception:
        return [video_config(), *gop(1000, 25), *gop(2000, 25), *gop(3000, 25)]


def test_hls_sink_makes_a_shared_live_playlist() -> None:
    reg = HubRegistry(hls=HlsConfig(segment_target=1.0), hls_eager=True)
    hub = reg.get_or_create(StreamKey("cam", 0))
    assert hub.hls is not None and hub.enable_hls() is hub.hls
    frames = hls_frames()
    pub = reg.publish("cam/0")

    async def main() -> int:
        hls = hub.hls
        assert hls is not None
        wakes = 0

        async def wait_for_segments() -> None:
            nonlocal wakes
            while not hls.packager.segments:
                await hls.changed()
                wakes += 1

        task = asyncio.create_task(wait_for_segments())
        await asyncio.sleep(0)
        for f in frames:
            pub.publish(f)
        await task
        return wakes

    assert run(main()) >= 1
    hls = hub.hls
    packager = hls.packager
    assert len(packager.segments) >= 2
    playlist = packager.media_playlist()
    assert "#EXT-X-PART:" in playlist and "seg0.m4s" in playlist
    assert packager.init() is not None and packager.resource("seg0.m4s") is not None
    pub.close()
    assert packager.ended and packager.media_playlist().endswith("#EXT-X-ENDLIST\n")
    # the next publisher gets a fresh packager
    pub = reg.publish("cam/0")
    for f in frames[:30]:
        pub.publish(f)
    assert hls.packager is not packager and not hls.packager.ended and hls.packager.init() is not None


def test_hls_enabled_late_starts_from_the_cached_gop() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    for f in hls_frames()[:40]:
        pub.publish(f)
    hls = hub.enable_hls(HlsConfig(segment_target=1.0))
    assert hls.packager.init() is not None  # the init segment exists before any new frame
    assert "#EXT-X-PART:" in hls.packager.media_playlist()


def test_publish_cost_is_linear_and_small() -> None:
    hub, _ = make_hub()
    pub = hub.attach_publisher()
    pub.publish(video_config())
    subs = [hub.subscribe(max_queue_bytes=64 * 1024) for _ in range(100)]
    frames = gop(0, 250, size=2000)
    t0 = time.perf_counter()
    for f in frames:
        pub.publish(f)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0  # 25,000 deliveries; typically ~20 ms
    assert all(s.queued_bytes <= 64 * 1024 + 2000 for s in subs)


def test_stream_key() -> None:
    assert str(StreamKey("a/b", 1)) == "a/b/1"
    assert StreamKey.parse("a/b/1") == StreamKey("a/b", 1)
    for bad in ("", "abc", "a/", "/1", "a/x"):
        with pytest.raises(ValueError):
            StreamKey.parse(bad)
