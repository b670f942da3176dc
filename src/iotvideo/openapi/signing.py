"""Signature V1 (HMAC-SHA1) and V3 (ACS3-HMAC-SHA256) of the cloud API, as pure functions.

What the official Python SDKs send for an RPC call (checked against
aliyun-python-sdk-core 2.16, alibabacloud-tea-openapi 0.4.6 / -openapi-util 0.2.4):

* Old SDK (aliyunsdkcore, V1): ``POST /?…`` (GET if asked), every API parameter *and*
  ``Action, Version, Format=JSON, RegionId, Timestamp, SignatureMethod=HMAC-SHA1,
  SignatureType= (empty), SignatureVersion=1.0, SignatureNonce, AccessKeyId,
  Signature`` in the query, ``%20`` for spaces; empty body. It also sends the headers
  ``x-acs-action``/``x-acs-version`` (unsigned), so their presence does not mean V3.
  Form-body parameters, if any, are signed together with the query.
* New SDK, default (V3): ``POST /?<API params only>`` (``+`` for spaces, as
  ``urlencode`` does); ``Action``/``Version``/time/nonce travel only in the headers
  ``x-acs-action, x-acs-version, x-acs-date, x-acs-signature-nonce``, plus ``host``
  (with port), ``user-agent``, ``accept: application/json``,
  ``x-acs-content-sha256`` (hex sha256 of the body; empty body here) and
  ``x-acs-credentials-provider: static_ak``. It signs *every* header it set itself
  (sorted, lower-case): ``accept;host;user-agent;x-acs-action;x-acs-content-sha256;
  x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version`` (+
  ``content-type`` with a body, ``x-acs-retry-*`` on retries); not ``accept-encoding``.
  Path ``/``. Canonical query: raw keys sorted by code point, keys NOT encoded,
  ``key=pct(value)`` (empty value gives ``key=``); canonical header values ``strip()``ed.
* New SDK with ``signature_algorithm='v2'`` (V1): like the old SDK but ``Format=json``
  (lower case), no ``SignatureType``, no ``RegionId``; body form parameters signed too.

Both V1 implementations sort the *raw* (decoded) keys and percent-encode keys and values
exactly as :func:`percent_encode` does ('+', '*' and '%7E' fix-ups included).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote_from_bytes

from iotvideo.errors import GatewayError

V3_ALGORITHM = "ACS3-HMAC-SHA256"

# Headers a V3 request must sign, or Action/replay protection would not be covered.
V3_REQUIRED_SIGNED_HEADERS = frozenset(
    {"x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"}
)

_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_MAX_AUTHORIZATION = 8192


_ALREADY_SAFE = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


_ENCODED: dict[str, str] = {}  # strings that needed encoding lately -> their encoding
_MAX_ENCODED = 4096


def percent_encode(s: str) -> str:
    """RFC 3986 percent-encoding of UTF-8; only ``A-Za-z0-9-_.~`` stay as they are."""
    if _ALREADY_SAFE(s) is not None:  # most keys and values: nothing to encode
        return s
    # The rest recur (a Timestamp is shared by every request of its second): remembered,
    # a bounded number of them.
    e = _ENCODED.get(s)
    if e is None:
        e = quote_from_bytes(s.encode("utf-8", "surrogatepass"), safe="")
        if len(_ENCODED) >= _MAX_ENCODED:
            _ENCODED.clear()
        _ENCODED[s] = e
    return e


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256, as in ``x-acs-content-sha256`` and the last canonical-request line."""
    return hashlib.sha256(data).hexdigest()


def _sorted_pairs(params: Mapping[str, str], exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
    skip = set(exclude)
    return sorted((k, v) for k, v in params.items() if k not in skip)


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&pct(k1=v1&k2=v2…)`` over every parameter but ``Signature``."""
    joined = "&".join([f"{k}={v}" if _ALREADY_SAFE(k + v) is not None else f"{percent_encode(k)}={percent_encode(v)}"
                       for k, v in sorted(params.items()) if k != "Signature"])
    # percent_encode(joined), cheaply: joined holds only unreserved characters and the
    # '%' of its escapes, '=' and '&', so encoding it again changes just those three.
    return f"{method}&%2F&{joined.replace('%', '%25').replace('=', '%3D').replace('&', '%26')}"


def v1_signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    """Base64 HMAC-SHA1 of the V1 string to sign, keyed by ``secret + "&"``."""
    return v1_sign(secret, v1_string_to_sign(method, params))


def v1_sign(secret: str, string_to_sign: str) -> str:
    """Base64 HMAC-SHA1 of a V1 string to sign (:func:`v1_string_to_sign`)."""
    key = (secret + "&").encode("utf-8")
    digest = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def v3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: list[str],
    body_sha256_hex: str,
) -> str:
    """The V3 canonical request; ``headers`` has lower-case names, missing ones count as empty."""
    canonical_query = "&".join(f"{k}={percent_encode(v)}" for k, v in _sorted_pairs(query))
    canonical_headers = "".join(f"{name}:{headers.get(name.lower(), '').strip()}\n" for name in signed_headers)
    return "\n".join(
        (method, path or "/", canonical_query, canonical_headers, ";".join(signed_headers), body_sha256_hex)
    )


def v3_signature(secret: str, canonical_request: str) -> str:
    """Hex HMAC-SHA256 (keyed by the raw secret) of ``ACS3-HMAC-SHA256\\n`` + hex sha256(canonical)."""
    string_to_sign = f"{V3_ALGORITHM}\n{sha256_hex(canonical_request.encode('utf-8'))}"
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _incomplete(why: str) -> GatewayError:
    return GatewayError(400, "IncompleteSignature", f"The request signature does not conform to Aliyun standards: {why}")


def parse_v3_authorization(header: str) -> tuple[str, list[str], str]:
    """``ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex`` -> (AK, [a, b], hex)."""
    if len(header) > _MAX_AUTHORIZATION:
        raise _incomplete("Authorization header too long")
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != V3_ALGORITHM:
        raise _incomplete(f"unsupported algorithm {algorithm[:64]!r}, expected {V3_ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq or key not in ("Credential", "SignedHeaders", "Signature") or key in fields:
            raise _incomplete(f"unexpected Authorization element {part.strip()[:64]!r}")
        fields[key] = value.strip()
    if len(fields) != 3:
        raise _incomplete("Authorization needs Credential, SignedHeaders and Signature")
    names = fields["SignedHeaders"].split(";")
    if not fields["Credential"] or not all(_HEADER_NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
        raise _incomplete("empty Credential or malformed SignedHeaders")
    if not _HEX64.fullmatch(fields["Signature"]):
        raise _incomplete("Signature must be 64 hex digits")
    return fields["Credential"], names, fields["Signature"].lower()


def signatures_equal(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass"))
