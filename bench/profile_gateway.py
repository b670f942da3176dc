"""Where one API request's time goes, in-process, without HTTP or load generator noise.

    .venv/bin/python bench/profile_gateway.py [--backend sqlite|postgres] [--devices N]

Seeds a store the way bench/api.py does, then times, one call at a time on uvloop, each
step the gateway takes for a signed V1 ``QueryTimeTemplate`` and
``QueryRecordPlanDeviceByPlan`` (parse, signature, anti-replay, key lookup, render, log
line), the data access through the store (``store/units.py``: a unit of work, the
queries of both actions), and the whole ``Gateway.handle``; then a few reference points
for what is left (the old ``count(*)`` and ``OFFSET`` walk a page no longer does, the
per-request log line).

Each figure is the median over ROUNDS rounds of the mean per call, in µs, twice: ``cpu``
(CPU time of the event-loop thread: robust against other work on the machine) and
``wall`` (includes waiting for PostgreSQL). Prints a table and ONE JSON line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api  # noqa: E402  (bench/api.py: seeding and request signing)

for _v in [k for k in os.environ if k.startswith("IOTVIDEO_") and k != "IOTVIDEO_TEST_PG_ADMIN_URL"]:
    os.environ.pop(_v)
os.environ["IOTVIDEO_RATE_LIMIT_PER_S"] = "1000000000"
os.environ["IOTVIDEO_RATE_LIMIT_BURST"] = "1000000000"

ROUNDS = 7
Timing = tuple[float, float]  # (cpu µs, wall µs) per call


def parse_raw(raw: bytes) -> Any:
    from iotvideo.openapi.gateway import parse_incoming

    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ")
    path, _, query = target.partition(b"?")
    headers = [tuple(h.split(b": ", 1)) for h in lines[1:]]
    return parse_incoming(method.decode(), path.decode(), query, headers, body)  # type: ignore[arg-type]


def _median(res: list[Timing]) -> Timing:
    return statistics.median(r[0] for r in res), statistics.median(r[1] for r in res)


def timed(fn: Callable[[], Any], n: int) -> Timing:
    fn()
    res = []
    for _ in range(ROUNDS):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            fn()
        res.append((1e6 * (time.thread_time() - c0) / n, 1e6 * (time.perf_counter() - w0) / n))
    return _median(res)


async def atimed(fn: Callable[[], Awaitable[Any]], n: int) -> Timing:
    await fn()
    res = []
    for _ in range(ROUNDS):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            await fn()
        res.append((1e6 * (time.thread_time() - c0) / n, 1e6 * (time.perf_counter() - w0) / n))
    return _median(res)


def minus(a: Timing, b: Timing) -> Timing:
    return a[0] - b[0], a[1] - b[1]


async def run(data_dir: Path, db_url: str | None, sd: api.Seed, n: int) -> dict[str, Timing]:
    from sqlalchemy import func, select, text

    from iotvideo import ids
    from iotvideo.config import Settings
    from iotvideo.domain.paging import PageRequest
    from iotvideo.logs import setup_logging
    from iotvideo.openapi import render, signing
    from iotvideo.openapi.gateway import Gateway, request_id
    from iotvideo.openapi.registry import ACTIONS
    from iotvideo.openapi.replay import parse_utc
    from iotvideo.services import Services
    from iotvideo.store.schema import plan_devices

    sv = await Services.open(Settings(data_dir=data_dir, database_url=db_url))
    gw = Gateway(sv)
    host = "127.0.0.1:8080"
    qtt, by_plan = api.API_SCENARIOS[0], api.API_SCENARIOS[1]
    out: dict[str, Timing] = {}
    counter = [0]

    def fresh(sc: api.Scenario) -> bytes:
        counter[0] += 1
        return sc.make(host, sd, counter[0])

    raw = fresh(qtt)
    inc = parse_raw(raw)
    params = {**inc.form, **inc.query}
    # --- the steps of one call -----------------------------------------------------
    out["parse_incoming (query + headers)"] = timed(lambda: parse_raw(raw), n)
    out["signature: v1_string_to_sign"] = timed(lambda: signing.v1_string_to_sign("POST", params), n)
    out["signature: whole (string to sign + HMAC-SHA1 + base64)"] = timed(
        lambda: signing.v1_sign(sd.secret, signing.v1_string_to_sign("POST", params)), n)
    out["anti-replay: parse_utc"] = timed(lambda: parse_utc(params["Timestamp"]), n)
    out["RequestId"] = timed(request_id, n)
    out["RequestId before (secrets.token_hex)"] = timed(ids.request_id, n)
    out["key lookup (cached)"] = await atimed(lambda: sv.tenants.lookup(sd.key_id), n)
    page = {"RequestId": request_id(), "Success": True,
            "Data": {"List": [{"IotId": "x" * 26, "StreamType": 0}] * 50, "Page": 1, "PageSize": 50,
                     "PageCount": 200, "Total": 10000}}
    out["render: orjson 50 items"] = timed(lambda: render.encode(page, None), n)
    setup_logging("info")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # type: ignore[attr-defined]
    from iotvideo.openapi.gateway import _log_call

    t0 = time.perf_counter()
    out["log line at info (gateway: logs.HotLog, buffered)"] = timed(
        lambda: _log_call("R", "QueryTimeTemplate", "LTAIkey", 200, "OK", t0), n)
    log = logging.getLogger("iotvideo.api")
    fmt = "api request_id=%s action=%s access_key_id=%s status=%d outcome=%r latency_ms=%.2f"
    out["log line at info before (a logging record, written)"] = timed(
        lambda: log.info(fmt, "R", "A", "K", 200, "OK", 1.0), n)
    logging.getLogger().setLevel(logging.WARNING)
    out["log line at warning (dropped)"] = timed(lambda: _log_call("R", "QueryTimeTemplate", "LTAIkey", 200, "OK", t0), n)

    # --- data access through the store ---------------------------------------------
    store = sv.store
    out["store: read unit, no statement"] = await atimed(lambda: store.read(lambda c: None), n)
    one = text("SELECT 1")
    out["store: read unit, SELECT 1 through SQLAlchemy"] = await atimed(
        lambda: store.read(lambda c: c.execute(one).scalar()), n // 2)
    out["db: templates.list (PageSize 10)"] = await atimed(
        lambda: sv.templates.list(sd.tenant_id, PageRequest(1, 10)), n // 2)
    pages = max(1, sd.devices // 50)
    pg_i = [0]

    def next_page() -> PageRequest:
        pg_i[0] += 1
        return PageRequest((pg_i[0] * 7919) % pages + 1, 50)

    out["db: record_plans.devices (PageSize 50, pages spread)"] = await atimed(
        lambda: sv.record_plans.devices(sd.tenant_id, sd.record_plan, next_page()), n // 4)
    # What a page cost before the plan's counters and checkpoints (reference points).
    pd = plan_devices.c
    where = (pd.kind == "record", pd.plan_id == sd.record_plan)
    count_all = select(func.count()).select_from(plan_devices).where(*where)
    offset_walk = (select(pd.iot_id, pd.stream_type).where(*where).order_by(pd.created_ms, pd.iot_id, pd.stream_type)
                   .offset(sd.devices // 2).limit(50))
    out["ref: count(*) of the plan's 10k streams (no longer done)"] = await atimed(
        lambda: store.read(lambda c: c.execute(count_all).scalar()), max(20, n // 40))
    out["ref: page at the mean OFFSET, walked (no longer done)"] = await atimed(
        lambda: store.read(lambda c: c.execute(offset_walk).all()), max(20, n // 40))

    # --- whole calls ---------------------------------------------------------------
    async def handle(sc: api.Scenario) -> None:
        status, _, body = await gw.handle(parse_raw(fresh(sc)))
        assert status == 200 and b'"Success":true' in body, body[:300]

    # The floor: the same pipeline with an action that touches no database.
    async def _noop(call: Any) -> dict[str, Any]:
        return {"Data": {"Ok": True}}

    ACTIONS.setdefault("BenchNoop", _noop)
    noop = api.Scenario("noop", "no-DB action", lambda h, s_, i: api.v1_request(h, s_.key_id, s_.secret, "BenchNoop", {}))
    for label, sc, k in (("no-DB action (the floor)", noop, n // 2), ("QueryTimeTemplate", qtt, n // 2),
                         ("QueryRecordPlanDeviceByPlan", by_plan, n // 4)):
        signing_cost = timed(lambda: fresh(sc), k)  # the bench signs each request: not the server's work
        out[f"Gateway.handle {label} (parse + handle, warning)"] = minus(
            await atimed(lambda: handle(sc), k), signing_cost)
    await sv.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--database-url", default=api.DEFAULT_PG, help="PostgreSQL server (a fresh database is made)")
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("-n", type=int, default=2000, help="calls per timing round [2000]")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="iotvideo-prof-"))
    db_url, pg_name = None, None
    try:
        if a.backend == "postgres":
            pg_name = "iotvideo_prof_" + secrets.token_hex(4)
            asyncio.run(api._pg(a.database_url, f'CREATE DATABASE "{pg_name}"'))
            db_url = api.pg_db_url(a.database_url, pg_name)
        sd = api.seed(tmp, db_url, a.devices)
        try:
            import uvloop

            out = uvloop.run(run(tmp, db_url, sd, a.n))
        except ImportError:
            out = asyncio.run(run(tmp, db_url, sd, a.n))
    finally:
        if pg_name:
            asyncio.run(api._pg(a.database_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"backend {a.backend}, {a.devices:,} devices, µs per call (median of {ROUNDS} rounds), one call at a time")
    w = max(len(k) for k in out)
    print(f"  {'':{w}} {'cpu':>8} {'wall':>8}")
    for k, (cpu, wall) in out.items():
        print(f"  {k:{w}} {cpu:8.1f} {wall:8.1f}")
    print(json.dumps({"bench": "profile_gateway", "backend": a.backend, "devices": a.devices,
                      "us_per_call": {k: {"cpu": round(v[0], 1), "wall": round(v[1], 1)} for k, v in out.items()}},
                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
