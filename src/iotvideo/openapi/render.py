"""Wire format of responses: JSON (default) or XML (``Format=XML``), and error bodies."""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

import orjson

from iotvideo.errors import BusinessError, GatewayError

JSON_TYPE = b"application/json;charset=utf-8"
XML_TYPE = b"application/xml;charset=utf-8"

# Characters XML 1.0 cannot carry at all (not even as references): C0 controls but
# TAB/LF/CR, lone surrogates, U+FFFE/U+FFFF. Shown as U+FFFD so the document parses.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def _xml_value(key: str, value: Any, out: list[str]) -> None:
    if isinstance(value, list):
        # A list is its element repeated: <List>..</List><List>..</List>
        for item in value:
            _xml_value(key, item, out)
        return
    out.append(f"<{key}>")
    if isinstance(value, dict):
        for k, v in value.items():
            _xml_value(k, v, out)
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif value is not None:
        out.append(_text(str(value)))
    out.append(f"</{key}>")


def to_xml(root: str, body: dict[str, Any]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    _xml_value(root, body, out)
    return "".join(out).encode()


def encode(body: dict[str, Any], xml_root: str | None) -> tuple[bytes, bytes]:
    """(content-type, bytes) for a body; XML when xml_root is given."""
    if xml_root:
        return XML_TYPE, to_xml(xml_root, body)
    return JSON_TYPE, orjson.dumps(body)


def success_body(request_id: str, data: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"RequestId": request_id, "Success": True}
    if data:
        body.update(data)
    return body


def business_error_body(request_id: str, err: BusinessError, int_code: bool = False) -> dict[str, Any]:
    """``int_code``: the few actions whose SDK models type ``Code`` as an integer."""
    code: str | int = int(err.code) if int_code and err.code.isdigit() else err.code
    return {"RequestId": request_id, "Success": False, "Code": code, "ErrorMessage": err.message}


def gateway_error_body(request_id: str, host_id: str, err: GatewayError) -> dict[str, Any]:
    return {"RequestId": request_id, "HostId": host_id, "Code": err.code, "Message": err.message,
            "Recommend": err.recommend}
