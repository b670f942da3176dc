"""CPU of the G.711 → AAC transcoder (``media/transcode.py``) per second of 8 kHz audio.

    flock /tmp/iotvideo-bench.lock .venv/bin/python bench/transcode.py [--seconds 60] [--runs 5]

Feeds ``--seconds`` of 8 kHz mono A-law (a 440 Hz tone plus noise, 20 ms frames as cameras send
them) through ``G711ToAac`` at each output rate, ``--runs`` times, and prints the median process CPU
(one thread: decode, resample, encode, framing) per second of audio, and the same as a share of one
core. Prints a table, then ONE final JSON line.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import av  # noqa: E402

from iotvideo.media.frames import Codec, MediaFrame  # noqa: E402
from iotvideo.media.transcode import G711ToAac  # noqa: E402


def alaw(seconds: float, rate: int = 8000) -> bytes:
    rnd = random.Random(1)
    pcm = array.array("h", [int(8000 * math.sin(2 * math.pi * 440 * i / rate) + rnd.gauss(0, 1500))
                            for i in range(int(seconds * rate))]).tobytes()
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    enc = av.CodecContext.create("pcm_alaw", "w")
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    enc.open()
    return b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])


def run(data: bytes, out_rate: int) -> tuple[float, int]:
    frames = [MediaFrame(Codec.PCMA, i // 8, i // 8, data[i : i + 160], sample_rate=8000, channels=1)
              for i in range(0, len(data), 160)]
    tc = G711ToAac(sample_rate=out_rate)
    out = 0
    t0 = time.process_time()
    for f in frames:
        out += len(tc.feed(f))
    out += len(tc.flush())
    return time.process_time() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    data = alaw(args.seconds)
    run(data[:16000], 16000)  # warm up (codec tables)
    results = {}
    print(f"G.711 A-law 8 kHz mono, {args.seconds:.0f} s, 20 ms frames, median of {args.runs} runs "
          f"(PyAV {av.__version__})")
    print(f"{'AAC out':>10} {'CPU ms per s':>13} {'% of a core':>12} {'frames out':>11}")
    for rate in (8000, 16000, 48000):
        cpu = []
        frames = 0
        for _ in range(args.runs):
            c, frames = run(data, rate)
            cpu.append(c)
        ms = statistics.median(cpu) / args.seconds * 1000
        results[rate] = round(ms, 2)
        print(f"{rate:>8} Hz {ms:>13.2f} {ms / 10:>11.2f}% {frames:>11}")
    print(json.dumps({"bench": "transcode", "cpu_ms_per_audio_s": results}))


if __name__ == "__main__":
    main()
