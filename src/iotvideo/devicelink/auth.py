"""Device authentication for the IoT-platform MQTT CONNECT: clientId parameters, username, HMAC password.

A device connects with (``aliyun-iot-linkkit``, ``linkkit/linkkit.py``, ``__config_mqtt_client_internal``)::

    clientId  {pk}&{dn}|securemode=3,signmethod=hmacsha1,timestamp=1700000000|   (other k=v pairs may appear)
    username  {dn}&{pk}
    password  hex(HMAC_signmethod(deviceSecret, "clientId{cid}deviceName{dn}productKey{pk}timestamp{ts}"))

``cid`` is the clientId part before the first ``|`` (the SDK sends ``{pk}&{dn}``; any client id is allowed);
the ``timestamp{ts}`` part is present only when the clientId carries ``timestamp``.  The keys of the
signed content are in alphabetical order, as the platform's documentation prescribes.

Use :func:`identity_from_connect` (pure, no secret), look the secret up (possibly async), then
:func:`check_password`; or :func:`verify_connect` with a synchronous lookup.  Errors carry the CONNACK
return code: 2 malformed clientId parameters, 4 bad username/password, 5 unknown or disabled device.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "SIGN_METHODS",
    "ClientIdInfo",
    "DeviceAuthError",
    "DeviceIdentity",
    "check_password",
    "expected_password",
    "identity_from_connect",
    "parse_client_id",
    "parse_username",
    "sign_content",
    "valid_device_name",
    "valid_product_key",
    "verify_connect",
]

CONNACK_IDENTIFIER_REJECTED: Final = 2
CONNACK_BAD_USERNAME_OR_PASSWORD: Final = 4
CONNACK_NOT_AUTHORIZED: Final = 5

SIGN_METHODS: Final[dict[str, str]] = {"hmacsha1": "sha1", "hmacsha256": "sha256", "hmacmd5": "md5"}
"""Supported ``signmethod`` values (lower case; matched case-insensitively) and their hashlib names."""

_PRODUCT_KEY = re.compile(r"[A-Za-z0-9]{1,32}")
_DEVICE_NAME = re.compile(r"[A-Za-z0-9_\-@.:]{4,32}")
_MAX_PARAMS = 32


class DeviceAuthError(Exception):
    """A refused CONNECT: ``connack_code`` is the MQTT 3.1.1 return code to send, ``reason`` is for logs."""

    def __init__(self, connack_code: int, reason: str) -> None:
        super().__init__(f"CONNACK {connack_code}: {reason}")
        self.connack_code = connack_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClientIdInfo:
    """A parsed MQTT client id: the raw part before the first ``|`` and the ``k=v`` parameters after it."""

    client_id: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def claimed_identity(self) -> tuple[str, str] | None:
        """``(product_key, device_name)`` when the raw part has the SDK's ``{pk}&{dn}`` form, else None."""
        pk, sep, dn = self.client_id.partition("&")
        if sep and pk and dn and "&" not in dn:
            return pk, dn
        return None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a CONNECT claims to be, and how it signed its password (``signmethod`` is lower case)."""

    product_key: str
    device_name: str
    signmethod: str
    securemode: int | None
    params: dict[str, str]
    client_id: str = ""
    timestamp: str | None = None


def valid_product_key(pk: str) -> bool:
    """1..32 ASCII letters and digits (the platform issues 11); never a topic or separator character."""
    return isinstance(pk, str) and _PRODUCT_KEY.fullmatch(pk) is not None


def valid_device_name(dn: str) -> bool:
    """The platform's rule: 4..32 characters of letters, digits and ``-_@.:``."""
    return isinstance(dn, str) and _DEVICE_NAME.fullmatch(dn) is not None


def parse_client_id(client_id: str) -> ClientIdInfo:
    """Split ``{cid}|k=v,k=v|`` into the raw id and its parameters; an id without ``|`` has none.

    Raises :class:`DeviceAuthError` (code 2) for a parameter without ``=``, an empty or duplicated key,
    text after the closing ``|``, or more than 32 parameters.
    """
    raw, bar, rest = client_id.partition("|")
    if not bar:
        return ClientIdInfo(raw, {})
    body, closing, tail = rest.partition("|")
    if closing and tail:
        raise DeviceAuthError(CONNACK_IDENTIFIER_REJECTED, "unexpected text after the clientId parameters")
    params: dict[str, str] = {}
    for item in body.split(","):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise DeviceAuthError(CONNACK_IDENTIFIER_REJECTED, f"malformed clientId parameter {item[:40]!r}")
        if key in params:
            raise DeviceAuthError(CONNACK_IDENTIFIER_REJECTED, f"duplicated clientId parameter {key[:40]!r}")
        params[key] = value.strip()
        if len(params) > _MAX_PARAMS:
            raise DeviceAuthError(CONNACK_IDENTIFIER_REJECTED, "too many clientId parameters")
    return ClientIdInfo(raw, params)


def parse_username(username: str) -> tuple[str, str]:
    """``{dn}&{pk}`` -> ``(device_name, product_key)``; :class:`DeviceAuthError` (code 4) if malformed."""
    dn, sep, pk = username.partition("&")
    if not sep or not valid_device_name(dn) or not valid_product_key(pk):
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, "username is not {deviceName}&{productKey}")
    return dn, pk


def sign_content(client_id_part: str, product_key: str, device_name: str, timestamp: str | None) -> str:
    """The signed text: ``clientId{cid}deviceName{dn}productKey{pk}`` + ``timestamp{ts}`` if given."""
    content = f"clientId{client_id_part}deviceName{device_name}productKey{product_key}"
    if timestamp is not None:
        content += f"timestamp{timestamp}"
    return content


def expected_password(secret: str, client_id_part: str, product_key: str, device_name: str,
                      timestamp: str | None, signmethod: str) -> str:
    """Lower-case hex HMAC of :func:`sign_content` keyed by the device secret; ValueError on unknown method."""
    digest = SIGN_METHODS.get(signmethod.lower())
    if digest is None:
        raise ValueError(f"unsupported signmethod {signmethod!r}")
    content = sign_content(client_id_part, product_key, device_name, timestamp)
    return hmac.new(secret.encode(), content.encode(), getattr(hashlib, digest)).hexdigest()


def identity_from_connect(client_id: str, username: str | None) -> DeviceIdentity:
    """Who the CONNECT claims to be, before any secret is known; raises :class:`DeviceAuthError`.

    The identity comes from the username; a clientId of the ``{pk}&{dn}`` form must name the same
    device.  ``signmethod`` defaults to ``hmacsha1`` when the clientId has no parameters.
    """
    info = parse_client_id(client_id)
    if not username:
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, "no username")
    dn, pk = parse_username(username)
    claimed = info.claimed_identity
    if claimed is not None and claimed != (pk, dn):
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, "clientId and username name different devices")
    signmethod = info.params.get("signmethod", "hmacsha1").lower()
    if signmethod not in SIGN_METHODS:
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, f"unsupported signmethod {signmethod[:20]!r}")
    mode = info.params.get("securemode")
    securemode = int(mode) if mode is not None and re.fullmatch(r"-?\d{1,3}", mode) else None
    return DeviceIdentity(pk, dn, signmethod, securemode, info.params, info.client_id,
                          info.params.get("timestamp"))


def check_password(secret: str, identity: DeviceIdentity, password: bytes | str | None) -> bool:
    """Constant-time check of the CONNECT password (hex, either case) against the device secret."""
    if password is None:
        return False
    if isinstance(password, bytes):
        try:
            password = password.decode("ascii")
        except UnicodeDecodeError:
            return False
    want = expected_password(secret, identity.client_id, identity.product_key, identity.device_name,
                             identity.timestamp, identity.signmethod)
    return hmac.compare_digest(password.lower().encode("ascii", "replace"), want.encode("ascii"))


def verify_connect(client_id: str, username: str | None, password: bytes | None,
                   lookup_secret: Callable[[str, str], str | None]) -> DeviceIdentity:
    """Authenticate a CONNECT with a synchronous ``lookup_secret(pk, dn)`` (None: unknown or disabled)."""
    identity = identity_from_connect(client_id, username)
    if password is None:
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, "no password")
    secret = lookup_secret(identity.product_key, identity.device_name)
    if secret is None:
        raise DeviceAuthError(CONNACK_NOT_AUTHORIZED, "unknown or disabled device")
    if not check_password(secret, identity, password):
        raise DeviceAuthError(CONNACK_BAD_USERNAME_OR_PASSWORD, "wrong password")
    return identity
