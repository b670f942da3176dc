"""The baseline of bench/api.py: a bare hello-world on the same server stack as the API.

It is served exactly as ``iotvideo serve`` serves the real server
(``iotvideo.http_protocol.run``: one uvicorn worker, uvloop, uvicorn's httptools protocol
with the server's direct route), and answers on that direct route as the API gateway
does (a handler returning status, content type and body, written in one piece), so the
difference between its rate and the API's is the cost of the API itself, not of the
HTTP stack. Anything the direct route does not take (other methods) goes to the ASGI app
below, as in the server.

    .venv/bin/python bench/hello_app.py --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

BODY = b"Hello, world!"
CONTENT_TYPE = b"text/plain; charset=utf-8"
HEADERS = [(b"content-type", CONTENT_TYPE), (b"content-length", str(len(BODY)).encode())]


async def hello(method: str, path: str, raw_query: bytes, headers: list[tuple[bytes, bytes]],
                body: bytes | None) -> tuple[int, bytes, bytes]:
    """The direct-route handler: what the gateway's is to the API."""
    return 200, CONTENT_TYPE, BODY


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
    from iotvideo import http_protocol

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    a = ap.parse_args()
    print("hello_app: http=iotvideo.http_protocol (uvicorn httptools + direct route)", file=sys.stderr, flush=True)
    # The same call as iotvideo.cli.serve, so both run on the same loop, HTTP parser and protocol.
    http_protocol.run(app, a.host, a.port, route=lambda path: hello)


if __name__ == "__main__":
    main()
