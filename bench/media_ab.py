"""A/B of the media server's CPU per stream: two iotvideo builds (and nginx-rtmp) in alternating rounds.

    .venv/bin/python bench/media_ab.py --b /tmp/base/src [--nginx] [--rounds 7]

The streams phase of ``bench/media.py`` (N publishers × 2 Mbit/s, one RTMP player each, a fresh
set per round; servers pinned to the last CPU, this load generator to the others) against server
A, the working tree, and server B, the same command with ``PYTHONPATH`` set to ``--b`` (a copy of
another build's ``src``, its C extension built) and ``--b-env K=V`` on top; with ``--nginx``,
nginx-rtmp too. The servers take turns round by round (nginx-rtmp, A, B, nginx-rtmp, ...), so a
drift of the machine hits all alike: on a shared VM one server's rounds spread by ±30 %, and only
paired rounds tell a change of 10 % apart. Prints every round, then per server the medians of CPU
per stream and of user and system CPU, and each round's ratio to A (B / A, nginx-rtmp / A) with
their median; ends with one JSON line.

``--perf DIR`` records each server (``perf record -g``) over each round's measured window, and
``--strace DIR`` counts its syscalls (``strace -c -f``, 4 s: it slows the server, so that round's
CPU figures are not comparable); both start after the round's connections are made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import media  # noqa: E402
from benchkit import say  # noqa: E402

SETTLE_S = 5.5  # from a round's start to its measured window: connections made, then media's 3 s wait


def watcher(cmd: list[str], delay: float) -> subprocess.Popen[bytes]:
    """``cmd`` started ``delay`` seconds from now, in the background."""
    return subprocess.Popen(["bash", "-c", f'sleep {delay}; exec "$@"', "-", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def watchers(args: argparse.Namespace) -> Callable[[media.Server, int], list[subprocess.Popen[bytes]]]:
    """What observes each round's measured window: ``perf record`` and ``strace -c`` as asked."""
    def watch(srv: media.Server, r: int) -> list[subprocess.Popen[bytes]]:
        out = []
        if args.perf:
            out.append(watcher(["perf", "record", "-F", "2999", "-g", "-p", ",".join(map(str, srv.pids())),
                                "-o", str(Path(args.perf) / f"{srv.name}.{r}.data"),
                                "--", "sleep", str(max(1.0, args.seconds - 1))], SETTLE_S))
        if args.strace and srv.name != "nginx-rtmp":
            out.append(watcher(["timeout", "-s", "INT", "4", "strace", "-c", "-f", "-p", str(srv.proc.pid),
                                "-o", str(Path(args.strace) / f"{srv.name}.{r}.txt")], SETTLE_S))
        return out

    return watch


def summary(res: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per server, its medians over the rounds (``media.combine_rounds``) and, but for A, each
    round's ratio to A's round."""
    a = res["A"]["rounds"]
    out: dict[str, Any] = {}
    for name, c in res.items():
        row: dict[str, Any] = {k: c[k] for k in ("cpu_pct_per_stream", "server_user_pct", "server_sys_pct",
                                                 "players_behind")}
        if name != "A":
            rs = c["rounds"]
            per = [round(r["cpu_pct_per_stream"] / x["cpu_pct_per_stream"], 3) for r, x in zip(rs, a)]
            user = [round(r["server_user_pct"] / x["server_user_pct"], 3) for r, x in zip(rs, a) if x["server_user_pct"]]
            row |= {"ratio_to_A_rounds": per, "ratio_to_A_median": round(statistics.median(per), 3),
                    "user_ratio_to_A_median": round(statistics.median(user), 3) if user else None,
                    "lower_than_A_rounds": sum(1 for x in per if x < 1)}
        out[name] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--b", required=True, help="PYTHONPATH of server B: another build's src directory (C extension built)")
    ap.add_argument("--b-env", action="append", default=[], metavar="K=V", help="more environment for server B")
    ap.add_argument("--nginx", action="store_true", help="nginx-rtmp too (installed as bench/media.py does)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per round")
    ap.add_argument("--perf", metavar="DIR", help="perf record each server's window into DIR")
    ap.add_argument("--strace", metavar="DIR", help="strace -c each iotvideo server for 4 s into DIR")
    args = ap.parse_args()
    if not (Path(args.b) / "iotvideo").is_dir():
        ap.error(f"--b {args.b}: no iotvideo package there")
    for d in (args.perf, args.strace):
        if d:
            Path(d).mkdir(parents=True, exist_ok=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    nginx = media.ensure_nginx_rtmp() if args.nginx else ""
    cache = Path(tempfile.gettempdir()) / "iotvideo-bench-media"
    cache.mkdir(exist_ok=True)
    media.encode_clip(cache / "720p-2m.flv", "1280x720", 2000)
    clip = media.load_clip(cache / "720p-2m.flv")
    b_env = {"PYTHONPATH": str(Path(args.b).resolve())} | dict(kv.split("=", 1) for kv in args.b_env)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-media-ab-") as td:
        tmp = Path(td)
        servers: list[media.Server] = []
        everywhere = os.sched_getaffinity(0)
        try:
            if args.nginx:
                servers.append(media.start_nginx(nginx, tmp))
            servers.append(media.start_iotvideo(tmp, "A"))
            servers.append(media.start_iotvideo(tmp, "B", b_env))
            placed = media.pin(servers)
            say(f"A: {media.ROOT / 'src'}; B: {b_env}; {placed or 'no CPU placement'}")
            res = asyncio.run(media.streams_rounds(servers, clip, args, watchers(args)))
        finally:
            os.sched_setaffinity(0, everywhere)
            for s in servers:
                s.stop()
    out = summary(res)
    for name, row in out.items():
        extra = (f", {row['ratio_to_A_median']}× A (rounds {row['ratio_to_A_rounds']}; lower in "
                 f"{row['lower_than_A_rounds']}/{args.rounds}), user {row['user_ratio_to_A_median']}× A"
                 if name != "A" else "")
        print(f"{name:>10}: CPU per stream {row['cpu_pct_per_stream']} % (user {row['server_user_pct']}, "
              f"system {row['server_sys_pct']}){extra}")
    try:
        mach = media.machine()
    except FileNotFoundError:  # (no nginx installed: its version is what is missing)
        mach = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    print(json.dumps({"bench": "media_ab", "rounds": args.rounds, "streams": args.streams, "b": b_env,
                      "seconds": round(time.time() - t0), "machine": mach, "servers": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
