"""Routes of the web console (server-rendered pages, a little vanilla JS, assets served locally).

    GET  /console            -> 302 /console/
    GET  /console/login      sign-in form;  POST /console/login (form: username, password)
    POST /console/logout
    GET  /console/           the tenant's devices with their status
    GET  /console/devices/{iot_id}   live view (hls.js for HLS, mpegts.js for FLV)
    POST /console/api/live/{iot_id}?scheme=hls|flv   -> {"url": "/hls/…/index.m3u8?token=…"}
    GET  /console/static/…   CSS, JS and the vendored players

Every page but the sign-in form needs the session cookie (else 302 to the form; the JSON
endpoint answers 401). A user only ever sees and plays devices of their own tenant. Failed
sign-ins are throttled (``console.throttle``): 5 wrong passwords for a user name within 15 min
(or 50 from one address) lock it out for 60 s, doubling up to 1 h; the form then answers 429
with ``Retry-After`` without checking the password.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from iotvideo.console.sessions import Sessions
from iotvideo.console.throttle import SignInThrottle
from iotvideo.devicelink.link import Target
from iotvideo.domain.devices import DeviceRef
from iotvideo.domain.users import ConsoleUser, Users
from iotvideo.errors import BusinessError
from iotvideo.store.schema import devices, products

if TYPE_CHECKING:
    from iotvideo.services import Services

log = logging.getLogger(__name__)

COOKIE = "iotvideo_console"
STATIC = Path(__file__).parent / "static"
MAX_FORM = 8192
MAX_DEVICES = 500
PLAY_SCHEMES = ("hls", "flv")


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _page(title: str, body: str, user: ConsoleUser | None = None, scripts: tuple[str, ...] = ()) -> HTMLResponse:
    bar = ""
    if user is not None:
        bar = (f'<form method="post" action="/console/logout" class="who">{_e(user.username)} '
               f'<span class="tenant">({_e(user.tenant_name)})</span> <button type="submit">Sign out</button></form>')
    js = "".join(f'<script src="/console/static/{s}"></script>' for s in scripts)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · iotvideo</title><link rel="stylesheet" href="/console/static/console.css"></head>
<body><header><a href="/console/" class="brand">iotvideo</a>{bar}</header>
<main>{body}</main>{js}</body></html>"""
    return HTMLResponse(doc, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                      "Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; "
                                      "worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'"})


class Console:
    def __init__(self, services: Callable[[], "Services | None"]) -> None:
        self._services = services
        self.sessions = Sessions()
        self.throttle = SignInThrottle()

    @property
    def routes(self) -> list[Any]:
        return [
            Route("/console", lambda _r: RedirectResponse("/console/", 302)),
            Route("/console/", self.device_list),
            Route("/console/login", self.login_form, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console/devices/{iot_id}", self.live_page),
            Route("/console/api/live/{iot_id}", self.api_live, methods=["POST"]),
            Mount("/console/static", StaticFiles(directory=STATIC), name="console-static"),
        ]

    # --- helpers -------------------------------------------------------------------------------

    @property
    def sv(self) -> "Services":
        sv = self._services()
        if sv is None:
            raise RuntimeError("the server is starting")
        return sv

    def user(self, request: Request) -> ConsoleUser | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """A state-changing POST must come from our own pages (SameSite=Lax is the first guard)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        return urlsplit(origin).netloc == request.headers.get("host", "")

    @staticmethod
    def _to_login(request: Request) -> RedirectResponse:
        return RedirectResponse("/console/login?next=" + quote(request.url.path), 302)

    # --- sign in / out -------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "", username: str = "",
                         status: int = 200) -> HTMLResponse:
        nxt = request.query_params.get("next", "/console/")
        msg = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
        body = f"""<section class="login"><h1>Sign in</h1>{msg}
<form method="post" action="/console/login">
<input type="hidden" name="next" value="{_e(nxt)}">
<label>User name <input name="username" autocomplete="username" required value="{_e(username)}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></section>"""
        r = _page("Sign in", body)
        r.status_code = status
        return r

    async def login(self, request: Request) -> Response:
        if not self._same_origin(request):
            return Response("cross-origin sign-in refused", 403)
        raw = await request.body()
        if len(raw) > MAX_FORM:
            return Response("form too large", 413)
        form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        username, password = form.get("username", ""), form.get("password", "")
        peer = request.client.host if request.client else "?"
        wait = self.throttle.wait_s(username, peer)
        if wait > 0:
            log.info("console sign-in for %r throttled (%.0f s left)", username[:64], wait)
            r = await self.login_form(request, f"Too many failed sign-ins: try again in {ceil(wait)} s.",
                                      username, status=429)
            r.headers["Retry-After"] = str(ceil(wait))
            return r
        user = await Users(self.sv.store).verify(username, password) if username and password else None
        if user is None:
            self.throttle.failed(username, peer)
            log.info("console sign-in refused for %r", username[:64])
            return await self.login_form(request, "Wrong user name or password.", username, status=401)
        self.throttle.succeeded(username)
        nxt = form.get("next", "/console/")
        if not nxt.startswith("/console/") or nxt.startswith("//"):
            nxt = "/console/"
        r = RedirectResponse(nxt, 303)
        r.set_cookie(COOKIE, self.sessions.create(user), max_age=int(self.sessions.max_s), path="/",
                     httponly=True, samesite="lax", secure=request.url.scheme == "https")
        return r

    async def logout(self, request: Request) -> Response:
        if not self._same_origin(request):
            return Response("cross-origin sign-out refused", 403)
        self.sessions.end(request.cookies.get(COOKIE))
        r = RedirectResponse("/console/login", 303)
        r.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
        return r

    # --- pages ---------------------------------------------------------------------------------

    async def device_list(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return self._to_login(request)
        q = (select(devices.c.iot_id, devices.c.device_name, devices.c.nickname, devices.c.status,
                    devices.c.enabled, products.c.name.label("product_name"))
             .join(products, products.c.product_key == devices.c.product_key)
             .where(devices.c.tenant_id == user.tenant_id)
             .order_by(devices.c.created_ms, devices.c.iot_id).limit(MAX_DEVICES))
        rows = await self.sv.store.read(lambda c: c.execute(q).all())
        if not rows:
            table = '<p class="empty">No devices yet.</p>'
        else:
            trs = "".join(
                f'<tr data-iot-id="{_e(r.iot_id)}"><td><a href="/console/devices/{quote(r.iot_id)}">'
                f'{_e(r.nickname or r.device_name)}</a></td><td>{_e(r.device_name)}</td><td>{_e(r.product_name)}</td>'
                f'<td><span class="status {_e(r.status.lower())}">{_e(r.status if r.enabled else "DISABLE")}</span></td></tr>'
                for r in rows)
            table = (f'<table class="devices"><thead><tr><th>Device</th><th>Name</th><th>Product</th><th>Status</th>'
                     f'</tr></thead><tbody>{trs}</tbody></table>')
        return _page("Devices", f"<h1>Devices</h1>{table}", user)

    async def live_page(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return self._to_login(request)
        iot_id = request.path_params["iot_id"]
        try:
            d = await self.sv.registry.device(user.tenant_id, DeviceRef(iot_id=iot_id))
        except BusinessError:
            return _page("Not found", '<h1>No such device</h1><p><a href="/console/">All devices</a></p>', user)
        body = f"""<p><a href="/console/">&larr; All devices</a></p>
<h1>{_e(d.nickname or d.device_name)} <span class="status {_e(d.status.lower())}">{_e(d.status)}</span></h1>
<div class="player" data-iot-id="{_e(d.iot_id)}">
<video id="video" muted autoplay playsinline controls></video>
<div class="controls"><button type="button" data-scheme="hls">Play HLS</button>
<button type="button" data-scheme="flv">Play FLV</button>
<span id="state" aria-live="polite"></span></div></div>"""
        return _page(d.nickname or d.device_name, body, user,
                     scripts=("vendor/hls.min.js", "vendor/mpegts.min.js", "live.js"))

    # --- JSON ----------------------------------------------------------------------------------

    async def api_live(self, request: Request) -> Response:
        user = self.user(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, 401)
        if not self._same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, 403)
        scheme = request.query_params.get("scheme", "hls")
        if scheme not in PLAY_SCHEMES:
            return JSONResponse({"error": f"scheme must be one of {', '.join(PLAY_SCHEMES)}"}, 400)
        sv = self.sv
        if sv.live is None:
            return JSONResponse({"error": "live video is not available on this server"}, 503)
        try:
            target = Target(*await sv.registry.address(user.tenant_id, DeviceRef(iot_id=request.path_params["iot_id"])))
            started = await sv.live.start(user.tenant_id, target, 0, scheme)
        except BusinessError as e:
            status = 404 if e.code == "403" else 409
            return JSONResponse({"error": e.message, "code": e.code}, status)
        parts = urlsplit(started.path)
        # same origin as the console page: the browser reaches the media routes where it reached us
        return JSONResponse({"scheme": scheme, "url": f"{parts.path}?{parts.query}"},
                            headers={"Cache-Control": "no-store"})
