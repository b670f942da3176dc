"""The cloud API gateway: one ASGI endpoint that authenticates, decodes, dispatches
and renders every action (docs/api.md).

Pipeline of a call: read query + form body → pick the signature version (V3 when an
``Authorization: ACS3-HMAC-SHA256`` header is present, else V1 query signing) → look up
the AccessKey → verify the signature → anti-replay (time window + nonce) → per-key rate
limit → find the action → run its handler → render JSON or XML. Every response carries
a fresh ``RequestId``; one log line per call says who did what, how long it took and
how it ended — never a secret.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from iotvideo import ids
from iotvideo.errors import BusinessError, GatewayError, invalid_parameter, missing_parameter
from iotvideo.logs import HotLog
from iotvideo.openapi import render, signing
from iotvideo.openapi.actions import ACTIONS_LOADED  # noqa: F401  (registers handlers)
from iotvideo.openapi.params import Params
from iotvideo.openapi.ratelimit import RateLimiter
from iotvideo.openapi.registry import ACTIONS, INT_CODE_ACTIONS, Call
from iotvideo.openapi.replay import ReplayGuard
from iotvideo.services import Services

log = logging.getLogger("iotvideo.api")

API_VERSION = "2018-01-20"
MAX_BODY = 1 << 20
MAX_QUERY = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(slots=True)
class Incoming:
    """The parts of an HTTP request the gateway looks at."""

    method: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    path: str = "/"


@dataclass(slots=True)
class Authenticated:
    access_key_id: str
    tenant_id: str
    action: str
    params: dict[str, str]
    fmt: str


class Gateway:
    def __init__(self, services: Services) -> None:
        self.services = services
        s = services.settings
        self.replay = ReplayGuard(s.replay_window_s)
        self.limiter = RateLimiter(s.rate_limit_per_s, s.rate_limit_burst)
        self.host_id = s.host_id

    async def authenticate(self, req: Incoming) -> Authenticated:
        auth = req.headers.get("authorization", "")
        if auth.startswith(signing.V3_ALGORITHM):
            return await self._v3(req, auth)
        return await self._v1(req)

    async def _key(self, key_id: str) -> tuple[str, str]:
        key = await self.services.tenants.lookup(key_id)
        if key is None:
            raise GatewayError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not key.enabled:
            raise GatewayError(400, "InvalidAccessKeyId.Inactive", "Specified access key is disabled.")
        return key.secret, key.tenant_id

    async def _v1(self, req: Incoming) -> Authenticated:
        params = {**req.form, **req.query}
        for name in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise GatewayError(400, f"Missing{name}", f"{name} is mandatory for this action.")
        method = params.get("SignatureMethod", "HMAC-SHA1")
        if method != "HMAC-SHA1":
            raise GatewayError(400, "InvalidSignatureMethod", "Specified signature method is not supported: use HMAC-SHA1.")
        key_id = params["AccessKeyId"]
        secret, tenant_id = await self._key(key_id)
        sts = signing.v1_string_to_sign(req.method, params)  # once: signed, and quoted in the error
        expected = signing.v1_sign(secret, sts)
        if not signing.signatures_equal(expected, params["Signature"]):
            raise GatewayError(400, "SignatureDoesNotMatch",
                               f"Specified signature is not matched with our calculation. server string to sign is:{sts}")
        self.replay.check(key_id, params["SignatureNonce"], params["Timestamp"])
        # Action and Version must be covered by the signature: the unsigned x-acs-*
        # headers the old SDK also sends are not trusted for a V1 request.
        action = params.get("Action", "")
        if not action:
            raise missing_parameter("Action")
        self._check_version(params.get("Version", ""))
        return Authenticated(key_id, tenant_id, action, params, params.get("Format", "JSON"))

    async def _v3(self, req: Incoming, auth: str) -> Authenticated:
        key_id, signed, given = signing.parse_v3_authorization(auth)
        missing = signing.V3_REQUIRED_SIGNED_HEADERS - set(signed)
        if missing:
            raise GatewayError(400, "IncompleteSignature", f"These headers must be signed: {', '.join(sorted(missing))}.")
        for h in signed:
            if h not in req.headers:
                raise GatewayError(400, "IncompleteSignature", f"The signed header {h} is missing.")
        body_hash = signing.sha256_hex(req.body)
        if req.headers["x-acs-content-sha256"] != body_hash:
            raise GatewayError(400, "InvalidContentSha256", "x-acs-content-sha256 does not match the request body.")
        secret, tenant_id = await self._key(key_id)
        canonical = signing.v3_canonical_request(req.method, req.path, req.query, req.headers, signed, body_hash)
        if not signing.signatures_equal(signing.v3_signature(secret, canonical), given):
            raise GatewayError(400, "SignatureDoesNotMatch",
                               f"Specified signature is not matched with our calculation. server canonical request is:{canonical}")
        self.replay.check(key_id, req.headers["x-acs-signature-nonce"], req.headers["x-acs-date"])
        self._check_version(req.headers["x-acs-version"])
        params = {**req.form, **req.query}
        return Authenticated(key_id, tenant_id, req.headers["x-acs-action"], params, params.get("Format", "JSON"))

    @staticmethod
    def _check_version(version: str) -> None:
        if version and version != API_VERSION:
            raise GatewayError(400, "InvalidVersion", f"Specified parameter Version is not valid: use {API_VERSION}.")

    async def handle(self, req: Incoming) -> tuple[int, bytes, bytes]:
        """(status, content-type, body) for one request; never raises."""
        t0 = time.perf_counter()
        rid = request_id()
        # Until the request is authenticated these are what it claims (for the log and
        # for answering errors in the format asked for).
        key_id = req.query.get("AccessKeyId") or req.form.get("AccessKeyId") or _v3_credential(req) or "-"
        action = req.query.get("Action") or req.form.get("Action") or req.headers.get("x-acs-action", "-")
        fmt = req.query.get("Format") or req.form.get("Format") or "JSON"
        xml_root = "Error" if fmt.upper() == "XML" else None
        outcome = "OK"
        try:
            a = await self.authenticate(req)
            key_id, action = a.access_key_id, a.action
            xml_root = None
            if a.fmt.upper() == "XML":
                xml_root = f"{action}Response" if _XML_NAME.fullmatch(action) else "Response"
            self.limiter.take(key_id)
            handler = ACTIONS.get(action)
            if handler is None:
                raise GatewayError(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")
            data = await handler(Call(action, Params(a.params), a.tenant_id, key_id, self.services))
            status, body = 200, render.success_body(rid, data)
        except BusinessError as e:
            status, body, outcome = 200, render.business_error_body(rid, e, action in INT_CODE_ACTIONS), f"{e.code} {e.message}"
        except GatewayError as e:
            status, body, outcome = e.status, render.gateway_error_body(rid, self.host_id, e), e.code
            xml_root = "Error" if xml_root else None
        except Exception:  # a bug: answer 500 without details, log the trace
            log.exception("unhandled error in %s (RequestId %s)", _safe(action), rid)
            err = GatewayError(500, "InternalError", "The request processing has failed due to some unknown error.")
            status, body, outcome = 500, render.gateway_error_body(rid, self.host_id, err), "InternalError"
            xml_root = "Error" if xml_root else None
        ctype, payload = render.encode(body, xml_root)
        _log_call(rid, action, key_id, status, outcome, t0)
        return status, ctype, payload

    def reject(self, err: GatewayError, t0: float) -> tuple[int, bytes, bytes]:
        """The answer to a request too malformed to be parsed (always JSON), logged like any call."""
        rid = request_id()
        ctype, payload = render.encode(render.gateway_error_body(rid, self.host_id, err), None)
        _log_call(rid, "-", "-", err.status, err.code, t0)
        return err.status, ctype, payload


def request_id() -> str:
    """A RequestId, unique to this call: ``XXXXXXXX-XXXX-XXXX-XXXX-`` drawn at random (80
    bits, once per process) then a 48-bit counter, in the UUID-like shape of the cloud's
    RequestIds. Cheaper than 128 random bits per call (≈ 0.3 µs against 1 µs); unique
    across processes and nodes as long as their random prefixes differ."""
    n = next(_rid_counter)
    if n > 0xFFFF_FFFF_FFFF:
        _new_request_ids()
        n = next(_rid_counter)
    return f"{_rid_prefix}{n:012X}"


def _new_request_ids() -> None:
    global _rid_prefix, _rid_counter
    _rid_prefix = ids.request_id()[:24]  # "XXXXXXXX-XXXX-XXXX-XXXX-" from the OS's random source
    _rid_counter = itertools.count()


_rid_prefix = ""
_rid_counter = itertools.count()
_new_request_ids()
os.register_at_fork(after_in_child=_new_request_ids)  # a forked child must not repeat the parent's


def _log_call(rid: str, action: str, key_id: str, status: int, outcome: str, t0: float) -> None:
    """The one ``api`` log line of a call: who did what, how it ended, how long it took; never a secret.
    Written without the logging record machinery when logging is set up as usual (logs.HotLog)."""
    if _hot.enabled():
        _hot.info(f"api request_id={rid} action={_safe(action)} access_key_id={_safe(key_id)} status={status} "
                  f"outcome={outcome!r} latency_ms={(time.perf_counter() - t0) * 1000:.2f}")


_hot = HotLog("iotvideo.api")


_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_CREDENTIAL = re.compile(r"Credential=([^,\s]{1,128})")


def _v3_credential(req: Incoming) -> str:
    """The AccessKeyId a V3 Authorization header claims, for the log ("" if none)."""
    m = _CREDENTIAL.search(req.headers.get("authorization", "")[:512])
    return m.group(1) if m else ""


def _no_nul(params: dict[str, str], where: str) -> dict[str, str]:
    """NUL cannot be stored (PostgreSQL text) nor rendered (XML): refuse it up front."""
    for k, v in params.items():
        if "\x00" in k or "\x00" in v:
            raise invalid_parameter(_safe(k), f"NUL characters are not allowed in the {where}")
    return params


def _safe(s: str) -> str:
    """A caller-chosen string made safe for one log line."""
    if not s:
        return "-"
    s = s[:80]
    if s.isascii() and s.isprintable() and "\\" not in s:  # what unicode_escape leaves as it is
        return s
    return s.encode("unicode_escape").decode()


def parse_form(s: str) -> dict[str, str]:
    """``dict(parse_qsl(s, keep_blank_values=True, errors="strict"))`` (the last of a
    repeated name wins), without its per-pair overhead: most names and values have
    nothing to decode. Raises UnicodeDecodeError for escapes that are not UTF-8."""
    out: dict[str, str] = {}
    if not s:
        return out
    for pair in s.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name, errors="strict")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value, errors="strict")
        out[name] = value
    return out


def _parse_no_nul(s: str, where: str) -> dict[str, str]:
    params = parse_form(s)
    if "%00" in s or "\x00" in s:  # else no name or value can hold a NUL
        _no_nul(params, where)
    return params


def parse_incoming(method: str, path: str, raw_query: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Incoming:
    if len(raw_query) > MAX_QUERY:
        raise GatewayError(414, "RequestURITooLong", "The query string is too long.")
    try:
        query = _parse_no_nul(raw_query.decode("utf-8"), "query")
    except (UnicodeDecodeError, ValueError):
        raise GatewayError(400, "InvalidParameter", "The query string is not valid UTF-8 URL encoding.") from None
    hdrs = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    form: dict[str, str] = {}
    if body and hdrs.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE:
        try:
            form = _parse_no_nul(body.decode("utf-8"), "form body")
        except (UnicodeDecodeError, ValueError):
            raise GatewayError(400, "InvalidParameter", "The form body is not valid UTF-8 URL encoding.") from None
    return Incoming(method, query, form, hdrs, body, path)


class GatewayASGI:
    """The gateway as a bare ASGI app (no framework on the hot path), and as a direct
    handler of the server's HTTP protocol (:meth:`direct`, iotvideo/http_protocol.py)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def direct(self, method: str, path: str, raw_query: bytes, headers: list[tuple[bytes, bytes]],
                     body: bytes | None) -> tuple[int, bytes, bytes]:
        """(status, content type, body) of one request; ``body`` None: it was over MAX_BODY."""
        t0 = time.perf_counter()
        try:
            if body is None:
                raise GatewayError(413, "RequestEntityTooLarge", "The request body is too large.")
            req = parse_incoming(method, path, raw_query, headers, body)
        except GatewayError as e:
            return self.gateway.reject(e, t0)
        return await self.gateway.handle(req)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        t0 = time.perf_counter()
        body = bytearray()
        try:
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if len(body) > MAX_BODY:
                    raise GatewayError(413, "RequestEntityTooLarge", "The request body is too large.")
                if not msg.get("more_body"):
                    break
            req = parse_incoming(scope["method"], scope["path"], scope.get("query_string", b""), scope["headers"],
                                 bytes(body))
        except GatewayError as e:
            status, ctype, payload = self.gateway.reject(e, t0)
        else:
            status, ctype, payload = await self.gateway.handle(req)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
