"""The server's HTTP/1.1 protocol: uvicorn's httptools protocol plus a direct route for hot endpoints.

A request whose path a :data:`FastRoute` claims (the API gateway's ``/``) skips the ASGI
layering: no scope dict, ``RequestResponseCycle``, ``receive``/``send`` messages or
per-header validation; its body is collected by the parser callbacks, the handler gets
``(method, path, raw_query, headers, body)`` and returns ``(status, content type, body)``,
and the whole response (status line, uvicorn's ``date``/``server`` headers, content type
and length, body) leaves in ONE ``transport.write`` (uvicorn writes headers and body
apart: two syscalls, two wake-ups of the client). Everything else — other paths,
methods other than GET/POST, upgrades, pipelined requests behind a pending one, a client
that does not read its answers (the transport's writes are paused), a concurrency limit —
is uvicorn's ASGI path unchanged. A direct request is started eagerly on uvloop
(``create_task(eager_start=True)``): when the handler never waits (SQLite reads) it is
answered from within ``data_received``. Keep-alive, ``Expect:
100-continue``, ``Connection: close``, graceful shutdown (the request task is one of the
server's tasks) and the keep-alive timeout behave as in uvicorn.

:func:`run` serves an ASGI app with this protocol exactly as ``iotvideo serve`` does;
bench/hello_app.py uses it too, so that the baseline runs on the same stack.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

Headers = list[tuple[bytes, bytes]]
# (method, path, raw query, headers with lower-case names, body or None when it was over
# MAX_FAST_BODY) -> (status, content type, body)
Handler = Callable[[str, str, bytes, Headers, "bytes | None"], Awaitable[tuple[int, bytes, bytes]]]
# path -> the handler of that path, or None for the ASGI app
FastRoute = Callable[[str], "Handler | None"]

MAX_FAST_BODY = 1 << 20  # a larger body is not kept: the handler gets None
log = logging.getLogger("iotvideo.http")


class _FastCycle:
    """One request on the direct route: the attributes uvicorn's protocol reads of its
    ``RequestResponseCycle`` (``response_complete``, ``keep_alive``, ``disconnected``,
    ``message_event``) and what the handler needs."""

    __slots__ = ("handler", "method", "path", "query", "headers", "body", "too_large", "keep_alive",
                 "response_complete", "disconnected", "message_event")

    def __init__(self, handler: Handler, method: str, path: str, query: bytes, headers: Headers,
                 keep_alive: bool) -> None:
        self.handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = bytearray()
        self.too_large = False
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NoEvent


class _NoEventType:
    """Stands in for the cycle's ``asyncio.Event``: nobody waits on a direct request."""

    def set(self) -> None:
        pass


_NoEvent = _NoEventType()


class FastHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with the direct route (module docstring). Make the
    class for a server with :func:`protocol_class`."""

    fast_route: FastRoute = staticmethod(lambda path: None)  # type: ignore[assignment]

    # Per request the scope is built only for the ASGI path (uvicorn builds it in
    # on_message_begin, before the path is known).
    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]

    def _asgi_scope(self) -> None:
        url, expect, headers = self.url, self.expect_100_continue, self.headers
        super().on_message_begin()
        self.url, self.expect_100_continue, self.headers = url, expect, headers
        self.scope["headers"] = headers
        # a streaming response may write its body chunks itself (media/http_play.py, HTTP-FLV)
        self.scope["extensions"] = {"iotvideo.transport": self.transport}  # type: ignore[typeddict-unknown-key]

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        # Not behind a request still running, nor while the client does not read what it
        # is sent (uvicorn's path then stops reading and waits: memory stays bounded).
        if (method == b"POST" or method == b"GET") and not parser.should_upgrade() and self.limit_concurrency is None \
                and (self.cycle is None or self.cycle.response_complete) and not self.flow.write_paused:
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path
            if b"%" not in raw_path and not self.root_path:
                path = raw_path.decode("ascii")
                handler = self.fast_route(path)
                if handler is not None:
                    keep_alive = parser.get_http_version() == "1.1" and parser.should_keep_alive()
                    self.cycle = _FastCycle(handler, method.decode("ascii"), path, parsed.query or b"",  # type: ignore[assignment]
                                            self.headers, keep_alive)
                    if self.expect_100_continue:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    return
        self._asgi_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is not _FastCycle:
            super().on_body(body)
            return
        if cycle.too_large:
            return
        cycle.body += body
        if len(cycle.body) > MAX_FAST_BODY:
            cycle.too_large = True
            cycle.body = bytearray()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not _FastCycle:
            super().on_message_complete()
            return
        # Started at once where the loop can (uvloop's eager_start): a request whose handler
        # never waits (SQLite reads) is answered before this returns, without a trip
        # through the loop's ready queue; one that waits goes on as an ordinary task.
        coro = self._serve(cycle)
        loop = self.loop
        if _eager.get(type(loop), True):
            try:
                task = loop.create_task(coro, eager_start=True)  # type: ignore[call-arg]
            except TypeError:  # a loop without eager tasks (asyncio's own before Python 3.12)
                _eager[type(loop)] = False
                task = loop.create_task(coro)
        else:
            task = loop.create_task(coro)
        if not task.done():
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)

    async def _serve(self, cycle: _FastCycle) -> None:
        try:
            body = None if cycle.too_large else bytes(cycle.body)
            status, ctype, payload = await cycle.handler(cycle.method, cycle.path, cycle.query, cycle.headers, body)
        except Exception as e:  # a bug: as uvicorn does, a bare 500, and the connection closed
            log.error("exception on the direct route %s", cycle.path, exc_info=e)
            status, ctype, payload = 500, b"text/plain; charset=utf-8", b"Internal Server Error"
            cycle.keep_alive = False
        if cycle.disconnected:
            return
        transport = self.transport
        transport.write(b"".join((STATUS_LINE[status], _default_headers(self.server_state.default_headers),
                                  b"content-type: ", ctype, b"\r\ncontent-length: ", str(len(payload)).encode(),
                                  b"\r\n\r\n" if cycle.keep_alive else b"\r\nconnection: close\r\n\r\n",
                                  payload)))
        cycle.response_complete = True
        if not cycle.keep_alive:
            transport.close()
        self.on_response_complete()

    def shutdown(self) -> None:
        cycle = self.cycle
        if type(cycle) is _FastCycle and not cycle.response_complete:
            cycle.keep_alive = False
            return
        super().shutdown()


_eager: dict[type, bool] = {}  # loop types that refused create_task(eager_start=True): False
_dh_list: list[tuple[bytes, bytes]] | None = None
_dh_bytes = b""


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (``date``, ``server``) as bytes; uvicorn replaces the list
    once a second, so it is joined once a second."""
    global _dh_list, _dh_bytes
    if headers is not _dh_list:
        _dh_bytes = b"".join(b"%s: %s\r\n" % (k, v) for k, v in headers)
        _dh_list = headers
    return _dh_bytes


def protocol_class(route: FastRoute) -> type[FastHttpProtocol]:
    """The protocol class uvicorn is given (``http=``) for a server whose direct routes ``route`` gives."""
    return type("IotvideoHttpProtocol", (FastHttpProtocol,), {"fast_route": staticmethod(route)})


def run(app: Any, host: str, port: int, route: FastRoute | None = None) -> None:
    """Serves ``app`` (ASGI) and the direct routes ``route`` gives (if any) on one uvicorn
    worker, uvloop, httptools; no access log (the app logs), lifespan on."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, loop="auto",
                http=protocol_class(route or (lambda path: None)), lifespan="on", timeout_graceful_shutdown=10)
