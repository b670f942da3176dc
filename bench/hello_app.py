"""The baseline of bench/api.py: a bare hello-world ASGI app on the same uvicorn stack.

It is served exactly as ``iotvideo serve`` serves the real server (``uvicorn.run`` with
the same arguments: one worker, ``loop="auto"`` and ``http="auto"``, which pick uvloop
and httptools when installed, no access log, lifespan on), so the difference between
its rate and the API's is the cost of the API itself, not of the HTTP stack.

    .venv/bin/python bench/hello_app.py --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                loop = type(asyncio.get_running_loop())
                print(f"hello_app: loop={loop.__module__}.{loop.__name__}", file=sys.stderr, flush=True)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:  # drain the request body, as the gateway does
        msg = await receive()
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    a = ap.parse_args()
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    print(f"hello_app: http={http}", file=sys.stderr, flush=True)
    # The same call as iotvideo.cli.serve, so both run on the same loop and HTTP parser.
    uvicorn.run(app, host=a.host, port=a.port, log_config=None, access_log=False,
                loop="auto", http="auto", lifespan="on", timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
