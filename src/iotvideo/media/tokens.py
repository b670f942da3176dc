"""Signed, expiring, single-use play and push tokens for media URLs (never log a token).

A token is ``base64url(payload || tag)`` with no padding, where ``tag`` is HMAC-SHA256 of
the payload under the server key, truncated to 16 bytes. The payload is binary::

    version u8 (1) | kind u8 (1 play, 2 push) | flags u8 (bit 0 single use)
    issued_at u32 | expires_at u32 (Unix seconds) | nonce 6 bytes
    subject length u8 | subject UTF-8 | extra length u16 | extra JSON (optional)

A subject of up to 54 bytes with no ``extra`` gives a token of at most 120 characters.
A token must be *first* used before ``expires_at`` (the API's ``UrlValidDuration``).
A single-use token is then spent: its id goes into a ``UsedTokenStore``, an in-memory
``UsedTokens`` here, or a shared SQL/Redis store when several nodes serve media.
A token that is not single-use (``PlayUnLimited``) can be used any number of times until
it expires. Checks run cheapest first and a token is spent only when every other check
passed, so a request with the wrong kind or subject does not burn a good token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import math
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

__all__ = [
    "TokenClaims",
    "TokenError",
    "TokenKind",
    "TokenSigner",
    "UsedTokenStore",
    "UsedTokens",
]

TokenKind = Literal["play", "push"]

VERSION: Final = 1
TAG_BYTES: Final = 16
NONCE_BYTES: Final = 6
MAX_SUBJECT_BYTES: Final = 255
MAX_EXTRA_BYTES: Final = 1024
MAX_TTL_S: Final = 366 * 86400
MAX_TOKEN_CHARS: Final = 2048  # anything longer is refused before decoding
_KINDS: Final[dict[str, int]] = {"play": 1, "push": 2}
_KIND_NAMES: Final[dict[int, TokenKind]] = {1: "play", 2: "push"}
_FLAG_SINGLE_USE: Final = 0x01
_HEAD: Final = struct.Struct(f">BBBII{NONCE_BYTES}sB")
_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")
_DOMAIN: Final = b"iotvideo-media-token\x00"  # keeps these MACs apart from other uses of the key


class TokenError(Exception):
    """A token was refused. ``reason`` is one of the ``TokenError.*`` codes; never the token."""

    MALFORMED: Final = "malformed"
    BAD_SIGNATURE: Final = "bad_signature"
    WRONG_KIND: Final = "wrong_kind"
    WRONG_SUBJECT: Final = "wrong_subject"
    EXPIRED: Final = "expired"
    USED: Final = "used"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says. ``token_id`` is a hash of the tag: safe to log, not to replay."""

    kind: TokenKind
    subject: str
    issued_at: int
    expires_at: int
    single_use: bool
    token_id: str
    extra: Mapping[str, Any] = field(default_factory=dict)


class UsedTokenStore(Protocol):
    """Remembers spent single-use tokens until they expire (a shared store: ``SET NX EX``)."""

    def claim(self, token_id: str, expires_at: float, now: float) -> bool | Awaitable[bool]:
        """Atomically mark ``token_id`` used; True if this was its first use."""
        ...


class UsedTokens:
    """In-memory ``UsedTokenStore`` for one node; expired ids are swept every ``sweep_every_s``."""

    def __init__(self, sweep_every_s: float = 60.0) -> None:
        self._expires: dict[str, float] = {}
        self._sweep_every = sweep_every_s
        self._next_sweep = -math.inf

    def claim(self, token_id: str, expires_at: float, now: float) -> bool:
        if now >= self._next_sweep:
            self.sweep(now)
        if token_id in self._expires:
            return False
        self._expires[token_id] = expires_at
        return True

    def sweep(self, now: float) -> None:
        """Forget ids whose token has expired (it can no longer pass the expiry check)."""
        self._expires = {k: t for k, t in self._expires.items() if t >= now}
        self._next_sweep = now + self._sweep_every

    def __len__(self) -> int:
        return len(self._expires)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if len(text) > MAX_TOKEN_CHARS or len(text) % 4 == 1 or not _ALPHABET.fullmatch(text):
        raise TokenError(TokenError.MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(TokenError.MALFORMED) from None
    if _b64encode(raw) != text:  # non-canonical trailing bits: one token, one spelling
        raise TokenError(TokenError.MALFORMED)
    return raw


class TokenSigner:
    """Issues and verifies tokens under ``key``; ``previous_keys`` still verify (key rotation)."""

    def __init__(
        self,
        key: bytes,
        *,
        previous_keys: Sequence[bytes] = (),
        used: UsedTokenStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < 16:
            raise ValueError("token key must be at least 16 bytes")
        self._keys = (key, *previous_keys)
        self.used: UsedTokenStore = used if used is not None else UsedTokens()
        self._clock = clock

    def _tag(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()[:TAG_BYTES]

    def issue(
        self,
        kind: TokenKind,
        subject: str,
        ttl_s: float,
        single_use: bool = True,
        extra: Mapping[str, Any] | None = None,
        *,
        now: float | None = None,
    ) -> str:
        """A new token for ``subject`` (e.g. ``"{iot_id}/{stream_type}"`` or a session id)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown token kind {kind!r}")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}]")
        subject_bytes = subject.encode("utf-8")
        if len(subject_bytes) > MAX_SUBJECT_BYTES:
            raise ValueError(f"subject longer than {MAX_SUBJECT_BYTES} bytes")
        extra_bytes = json.dumps(dict(extra), separators=(",", ":"), sort_keys=True).encode() if extra else b""
        if len(extra_bytes) > MAX_EXTRA_BYTES:
            raise ValueError(f"extra longer than {MAX_EXTRA_BYTES} bytes as JSON")
        t = self._clock() if now is None else now
        flags = _FLAG_SINGLE_USE if single_use else 0
        payload = (
            _HEAD.pack(VERSION, _KINDS[kind], flags, int(t), math.ceil(t + ttl_s),
                       secrets.token_bytes(NONCE_BYTES), len(subject_bytes))
            + subject_bytes + struct.pack(">H", len(extra_bytes)) + extra_bytes
        )
        return _b64encode(payload + self._tag(self._keys[0], payload))

    def check(self, token: str, kind: TokenKind, subject: str | None = None, now: float | None = None) -> TokenClaims:
        """Every check except single use (for callers with an async shared store): see ``verify``."""
        if not isinstance(token, str):
            raise TokenError(TokenError.MALFORMED)
        raw = _b64decode(token)
        if len(raw) < _HEAD.size + 2 + TAG_BYTES or raw[0] != VERSION:
            raise TokenError(TokenError.MALFORMED)
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not any(hmac.compare_digest(self._tag(k, payload), tag) for k in self._keys):
            raise TokenError(TokenError.BAD_SIGNATURE)
        claims = _parse(payload, tag)
        if claims.kind != kind:
            raise TokenError(TokenError.WRONG_KIND)
        if subject is not None and claims.subject != subject:
            raise TokenError(TokenError.WRONG_SUBJECT)
        t = self._clock() if now is None else now
        if t > claims.expires_at:
            raise TokenError(TokenError.EXPIRED)
        return claims

    def verify(self, token: str, kind: TokenKind, subject: str | None = None, now: float | None = None) -> TokenClaims:
        """The token's claims, spending it if single-use; raises ``TokenError`` otherwise.

        Needs a synchronous ``UsedTokenStore``; use ``verify_async`` with an async one.
        """
        t = self._clock() if now is None else now
        claims = self.check(token, kind, subject, t)
        if claims.single_use:
            first = self.used.claim(claims.token_id, claims.expires_at, t)
            if inspect.isawaitable(first):
                if inspect.iscoroutine(first):
                    first.close()
                raise TypeError("this UsedTokenStore is asynchronous: use verify_async")
            if not first:
                raise TokenError(TokenError.USED)
        return claims

    async def verify_async(
        self, token: str, kind: TokenKind, subject: str | None = None, now: float | None = None
    ) -> TokenClaims:
        """``verify`` for a store whose ``claim`` may be a coroutine (SQL, Redis)."""
        t = self._clock() if now is None else now
        claims = self.check(token, kind, subject, t)
        if claims.single_use:
            first = self.used.claim(claims.token_id, claims.expires_at, t)
            if inspect.isawaitable(first):
                first = await first
            if not first:
                raise TokenError(TokenError.USED)
        return claims


def _parse(payload: bytes, tag: bytes) -> TokenClaims:
    """Decode an authenticated payload (still bounds-checked: an old key's format may differ)."""
    try:
        _, kind, flags, issued, expires, _nonce, n = _HEAD.unpack_from(payload)
        pos = _HEAD.size
        subject = payload[pos : pos + n].decode("utf-8")
        pos += n
        (m,) = struct.unpack_from(">H", payload, pos)
        pos += 2
        if pos + m != len(payload) or kind not in _KIND_NAMES:
            raise TokenError(TokenError.MALFORMED)
        extra = json.loads(payload[pos:]) if m else {}
        if not isinstance(extra, dict):
            raise TokenError(TokenError.MALFORMED)
    except (struct.error, UnicodeDecodeError, ValueError):
        raise TokenError(TokenError.MALFORMED) from None
    token_id = hashlib.sha256(tag).hexdigest()[:32]
    return TokenClaims(_KIND_NAMES[kind], subject, issued, expires, bool(flags & _FLAG_SINGLE_USE), token_id, extra)
