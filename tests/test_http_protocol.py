"""The server's HTTP protocol (iotvideo/http_protocol.py): the direct route and its fall-backs
to uvicorn's ASGI path, on a transport that records what is written, and through a real
``iotvideo serve``."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from iotvideo.http_protocol import MAX_FAST_BODY, protocol_class
from conftest import ServerInfo


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    payload = f"asgi {scope['method']} {scope['path']} {len(body)}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    """On asyncio's loop the request is a task; on uvloop (the server's) it starts eagerly."""
    return str(request.param)


def exchange(loop_kind: str, *chunks: bytes, paused: bool = False) -> tuple[list[bytes], list[tuple[Any, ...]], Transport]:
    """Feeds ``chunks`` to a protocol whose direct route is ``/``; (writes, handler calls, transport)."""
    calls: list[tuple[Any, ...]] = []

    async def direct(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                     body: bytes | None) -> tuple[int, bytes, bytes]:
        calls.append((method, path, query, dict(headers), body))
        await asyncio.sleep(0)  # a handler that awaits, like the gateway on PostgreSQL
        return 200, b"application/json", b'{"ok":true}'

    async def go() -> Transport:
        config = uvicorn.Config(asgi_app, log_config=None, lifespan="off")
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", b"Thu, 26 Nov 2026 09:00:00 GMT"), (b"server", b"uvicorn")]
        proto = protocol_class(lambda path: direct if path == "/" else None)(config, state, {},
                                                                            _loop=asyncio.get_running_loop())
        t = Transport()
        proto.connection_made(t)
        if paused:  # the client does not read: the transport paused our writes
            proto.pause_writing()
        for c in chunks:
            proto.data_received(c)
            for _ in range(5):
                await asyncio.sleep(0)
        if paused:
            proto.resume_writing()
        while state.tasks:
            await asyncio.sleep(0.01)
        proto._unset_keepalive_if_required()
        return t

    if loop_kind == "uvloop":
        import uvloop

        t = uvloop.run(go())
    else:
        t = asyncio.run(go())
    return t.writes, calls, t


def test_direct_route_answers_in_one_write(loop_kind: str) -> None:
    writes, calls, t = exchange(loop_kind, b"POST /?Action=X&b=%20 HTTP/1.1\r\nHost: h\r\nX-Acs-Date: d\r\n"
                                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=1")
    assert calls == [("POST", "/", b"Action=X&b=%20", {b"host": b"h", b"x-acs-date": b"d",
                      b"content-type": b"application/x-www-form-urlencoded", b"content-length": b"3"}, b"a=1")]
    assert len(writes) == 1
    head, _, body = writes[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b'{"ok":true}'
    names = [ln.split(b":")[0] for ln in lines[1:]]
    assert names == [b"date", b"server", b"content-type", b"content-length"]
    assert b"content-length: 11" in lines and not t.closed


def test_pipelined_requests_and_other_paths_keep_their_order(loop_kind: str) -> None:
    """A request pipelined behind one still on uvicorn's ASGI path waits in uvicorn's queue
    and is served through ASGI too (the app serves every path): answers stay in order."""
    writes, calls, _ = exchange(loop_kind, b"GET /?n=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                                b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
                                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nxy")
    joined = b"".join(writes)
    assert joined.index(b'{"ok":true}') < joined.index(b"asgi GET /healthz 0") < joined.index(b"asgi POST / 2")
    assert [c[:3] for c in calls] == [("GET", "/", b"n=1")]
    # Behind a direct request that is still running, the next one waits for it as well.
    writes, calls, _ = exchange(loop_kind, b"POST /?n=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
                                b"POST /?n=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    joined = b"".join(writes)
    assert joined.count(b"HTTP/1.1 200 OK") == 2 and joined.index(b'{"ok":true}') < joined.index(b"asgi POST / 0")


def test_body_in_pieces_too_large_body_and_connection_close(loop_kind: str) -> None:
    writes, calls, t = exchange(loop_kind, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc", b"def")
    assert calls[0][4] == b"abcdef" and len(writes) == 1
    big = MAX_FAST_BODY + 10
    writes, calls, t = exchange(loop_kind, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % big,
                                b"x" * big)
    assert calls[0][4] is None  # the handler answers 413
    assert writes[-1].split(b"\r\n")[0] == b"HTTP/1.1 200 OK" and b"\r\nconnection: close\r\n" in writes[-1]
    assert t.closed


def test_head_upgrade_http10_and_expect_continue(loop_kind: str) -> None:
    writes, calls, _ = exchange(loop_kind, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert calls == [] and writes[0].startswith(b"HTTP/1.1 200 OK") and b"asgi" not in b"".join(writes)
    writes, calls, t = exchange(loop_kind, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
    assert calls and b"connection: close" in writes[-1] and t.closed
    writes, calls, _ = exchange(loop_kind, b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                                b"ok")
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n" and calls[0][4] == b"ok"


def complete(data: bytes) -> int:
    """How many whole responses (with Content-Length) ``data`` holds."""
    n = 0
    while b"\r\n\r\n" in data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))
        if len(rest) < length:
            break
        n, data = n + 1, rest[length:]
    return n


def test_a_client_that_does_not_read_gets_uvicorns_flow_control(loop_kind: str) -> None:
    writes, calls, _ = exchange(loop_kind, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", paused=True)
    assert calls == [] and writes[-1] == b"asgi POST / 0"  # written once writing resumed


def raw(server: ServerInfo, data: bytes, expect_responses: int) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while complete(got) < expect_responses:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_real_server_pipelined_api_calls(server: ServerInfo) -> None:
    """Two unsigned calls pipelined on one keep-alive connection: two answers, in order,
    each with its own RequestId (the gateway refuses them: no AccessKeyId)."""
    req = b"POST /?Action=DescribeRegions HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    got = raw(server, req + req, 2)
    assert got.count(b"HTTP/1.1 400 Bad Request") == 2, got
    assert got.count(b'"RequestId"') == 2 and got.count(b"MissingAccessKeyId") == 2


@pytest.mark.parametrize("path", [b"/healthz"])
def test_real_server_other_paths_go_through_asgi(server: ServerInfo, path: bytes) -> None:
    got = raw(server, b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 1)
    assert got.startswith(b"HTTP/1.1 200 OK") and b'"status":"ok"' in got
