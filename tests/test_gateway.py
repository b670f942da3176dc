"""Negative and edge cases of the API gateway, against the real server (both backends).

Every rejected request must answer the documented HTTP status and ``Code``, carry a
fresh ``RequestId``, and change nothing: the probes below use ``CreateProduct`` (a
write) and then count the tenant's products with a good request.

Requests are crafted by hand with httpx and ``iotvideo.openapi.signing`` so that each
can be broken in exactly one way; the official SDKs are used where their own handling
of an error matters (the old SDK's ``SignatureDoesNotMatch`` check).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Key, ServerInfo, start_server, stop_server
from iotvideo.domain.tenants import Tenants
from iotvideo.openapi import signing
from iotvideo.openapi.actions import ACTIONS_LOADED  # noqa: F401  (registers the handlers)
from iotvideo.openapi.registry import ACTIONS

VERSION = "2018-01-20"
FORM = "application/x-www-form-urlencoded"
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
SEEN_REQUEST_IDS: set[str] = set()

http = httpx.Client(timeout=10)


# --- request crafting ----------------------------------------------------------------

def utc(offset_s: float = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def v1_query(key: Key, action: str | None, params: dict[str, str] | None = None, *, method: str = "POST",
             form: dict[str, str] | None = None, secret: str | None = None, timestamp: str | None = None,
             nonce: str | None = None, fmt: str = "JSON", drop: tuple[str, ...] = ()) -> dict[str, str]:
    """A V1-signed query (the old SDK's shape); ``drop`` removes fields after signing."""
    q = {"AccessKeyId": key.access_key_id, "Version": VERSION, "Format": fmt, "SignatureMethod": "HMAC-SHA1",
         "SignatureVersion": "1.0", "SignatureType": "", "SignatureNonce": nonce or uuid.uuid4().hex,
         "Timestamp": timestamp or utc(), **(params or {})}
    if action is not None:
        q["Action"] = action
    q["Signature"] = signing.v1_signature(secret or key.secret, method, {**(form or {}), **q})
    for name in drop:
        q.pop(name, None)
    return q


def v1(server: ServerInfo, key: Key, action: str | None, params: dict[str, str] | None = None, *,
       method: str = "POST", form: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    q = v1_query(key, action, params, method=method, form=form, **kw)
    if form is not None:
        return http.request(method, server.url, params=q, data=form)
    return http.request(method, server.url, params=q)


def v3_request(server: ServerInfo, key: Key, action: str, query: dict[str, str] | None = None,
               form: dict[str, str] | None = None, *, secret: str | None = None, date: str | None = None,
               nonce: str | None = None, content_sha256: str | None = None, unsigned: tuple[str, ...] = (),
               key_id: str | None = None, method: str = "POST") -> httpx.Request:
    """A V3-signed request (the new SDK's shape); ``unsigned`` headers are sent but left out of SignedHeaders."""
    query = dict(query or {})
    body = httpx.QueryParams(form).__str__().encode() if form else b""
    headers = {"host": server.endpoint, "accept": "application/json", "x-acs-action": action,
               "x-acs-version": VERSION, "x-acs-date": date or utc(),
               "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
               "x-acs-content-sha256": content_sha256 or signing.sha256_hex(body)}
    if form:
        headers["content-type"] = FORM
    names = sorted(h for h in headers if h not in unsigned)
    canonical = signing.v3_canonical_request(method, "/", query, headers, names, signing.sha256_hex(body))
    sig = signing.v3_signature(secret or key.secret, canonical)
    headers["authorization"] = (f"{signing.V3_ALGORITHM} Credential={key_id or key.access_key_id},"
                                f"SignedHeaders={';'.join(names)},Signature={sig}")
    return http.build_request(method, server.url, params=query, headers=headers, content=body)


def v3(server: ServerInfo, key: Key, action: str, query: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    return http.send(v3_request(server, key, action, query, **kw))


# --- assertions ----------------------------------------------------------------------

def fresh_request_id(rid: str) -> str:
    assert REQUEST_ID.fullmatch(rid), rid
    assert rid not in SEEN_REQUEST_IDS, f"RequestId {rid} answered twice"
    SEEN_REQUEST_IDS.add(rid)
    return rid


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["Success"] is True, body
    fresh_request_id(body["RequestId"])
    return body


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A gateway error: the status, the JSON error shape and the code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}, body
    assert body["Code"] == code, body
    assert body["Message"]
    fresh_request_id(body["RequestId"])
    return body


def products(server: ServerInfo, key: Key) -> list[dict[str, Any]]:
    body = ok(v1(server, key, "QueryProductList", {"PageSize": "50"}))
    return list(body["Data"]["List"]["ProductInfo"])


def create_product(server: ServerInfo, key: Key, params: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    return v1(server, key, "CreateProduct", {"ProductName": "cam-" + secrets.token_hex(3), **(params or {})}, **kw)


# --- success paths the edge cases are measured against ---------------------------------

def test_get_and_post_both_work(server: ServerInfo, key: Key) -> None:
    a = ok(create_product(server, key, method="GET"))
    b = ok(create_product(server, key, method="POST"))
    c = ok(v3(server, key, "CreateProduct", {"ProductName": "v3 cam"}))
    d = ok(v3(server, key, "CreateProduct", {"ProductName": "v3 get"}, method="GET"))
    keys = {p["ProductKey"] for p in products(server, key)}
    assert keys == {a["ProductKey"], b["ProductKey"], c["ProductKey"], d["ProductKey"]}
    # The method is signed: a request signed for GET and sent as POST is refused.
    req = v3_request(server, key, "CreateProduct", {"ProductName": "x"}, method="GET")
    error(http.post(server.url, params=req.url.params, headers=req.headers), 400, "SignatureDoesNotMatch")
    q = v1_query(key, "CreateProduct", {"ProductName": "x"}, method="GET")
    error(http.post(server.url, params=q), 400, "SignatureDoesNotMatch")
    assert len(products(server, key)) == 4


def test_form_body_params_are_merged_with_query(server: ServerInfo, key: Key) -> None:
    # V1: part of the API parameters (and some of the signature fields) in the body.
    q = v1_query(key, "CreateProduct", {"Description": "from query"}, form={"ProductName": "from form"})
    form = {"ProductName": "from form", "Timestamp": q.pop("Timestamp"), "SignatureNonce": q.pop("SignatureNonce")}
    data = ok(http.post(server.url, params=q, data=form))["Data"]
    assert (data["ProductName"], data["Description"]) == ("from form", "from query")
    # V3: the body is covered by x-acs-content-sha256.
    data = ok(v3(server, key, "CreateProduct", {"Description": "q3"}, form={"ProductName": "f3"}))["Data"]
    assert (data["ProductName"], data["Description"]) == ("f3", "q3")
    # GET with a form body works as well.
    data = ok(v1(server, key, "CreateProduct", {}, method="GET", form={"ProductName": "get form"}))["Data"]
    assert data["ProductName"] == "get form"
    assert len(products(server, key)) == 3


# --- authentication --------------------------------------------------------------------

def test_wrong_secret(server: ServerInfo, key: Key) -> None:
    for method in ("GET", "POST"):
        body = error(create_product(server, key, method=method, secret="not-the-secret"), 400, "SignatureDoesNotMatch")
        # The old SDK takes the server's string to sign from after the first ':'.
        assert ":" in body["Message"]
        assert key.secret not in body["Message"]
    error(v3(server, key, "CreateProduct", {"ProductName": "x"}, secret="not-the-secret"), 400, "SignatureDoesNotMatch")
    # A parameter changed after signing is a wrong signature too.
    q = v1_query(key, "CreateProduct", {"ProductName": "signed"})
    q["ProductName"] = "tampered"
    error(http.post(server.url, params=q), 400, "SignatureDoesNotMatch")
    assert products(server, key) == []


def test_old_sdk_recognises_wrong_secret(server: ServerInfo, key: Key) -> None:
    """The old SDK compares the server's string to sign (after ':') with its own."""
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdklinkvisual.request.v20180120.CreateTimeTemplateRequest import CreateTimeTemplateRequest

    from conftest import OldSdk

    sdk = OldSdk(server, Key(key.access_key_id, "wrong-secret", key.tenant))
    req = CreateTimeTemplateRequest()
    req.set_Name("never")
    req.set_AllDay(1)
    with pytest.raises(ServerException) as e:
        sdk.call(req)  # (a CommonRequest keeps no string to sign, so the SDK cannot compare)
    assert e.value.get_http_status() == 400
    assert e.value.get_error_code() == "InvalidAccessKeySecret"  # the SDK's own code: the strings matched
    fresh_request_id(e.value.get_request_id())
    assert products(server, key) == []


def test_unknown_access_key_id(server: ServerInfo, key: Key) -> None:
    ghost = Key("LTAI" + secrets.token_hex(10), key.secret, key.tenant)
    error(create_product(server, ghost), 404, "InvalidAccessKeyId.NotFound")
    error(v3(server, ghost, "CreateProduct", {"ProductName": "x"}), 404, "InvalidAccessKeyId.NotFound")
    assert products(server, key) == []


def _set_enabled(server: ServerInfo, key: Key, enabled: bool) -> None:
    async def go(sv):  # type: ignore[no-untyped-def]
        assert await sv.tenants.set_access_key_enabled(key.access_key_id, enabled)

    server.run(go)


def test_disabled_key_never_used(server: ServerInfo, key: Key) -> None:
    owner = server.new_key(key.tenant)  # same tenant, to count its products
    _set_enabled(server, key, False)
    error(create_product(server, key), 400, "InvalidAccessKeyId.Inactive")
    error(v3(server, key, "CreateProduct", {"ProductName": "x"}), 400, "InvalidAccessKeyId.Inactive")
    assert products(server, owner) == []


def test_disabled_key_can_be_enabled_again(server: ServerInfo, key: Key) -> None:
    _set_enabled(server, key, False)
    _set_enabled(server, key, True)
    ok(create_product(server, key))


def test_disabled_key_stops_within_cache_time(server: ServerInfo, key: Key) -> None:
    """A key in use stops working at most KEY_CACHE_S after it is disabled (the server caches keys)."""
    if server.backend != "sqlite":
        pytest.skip("the key cache does not depend on the backend; waited for once, on SQLite")
    ok(v1(server, key, "QueryProductList", {}))
    _set_enabled(server, key, False)
    t0 = time.monotonic()
    while (r := v1(server, key, "QueryProductList", {})).status_code == 200:
        assert time.monotonic() - t0 < Tenants.KEY_CACHE_S + 1, "a disabled key kept working"
        time.sleep(0.2)
    error(r, 400, "InvalidAccessKeyId.Inactive")
    error(create_product(server, key), 400, "InvalidAccessKeyId.Inactive")


@pytest.mark.parametrize("drop, code", [
    ("Signature", "MissingSignature"),
    ("AccessKeyId", "MissingAccessKeyId"),
    ("SignatureNonce", "MissingSignatureNonce"),
    ("Timestamp", "MissingTimestamp"),
])
def test_missing_signature_fields(server: ServerInfo, key: Key, drop: str, code: str) -> None:
    error(create_product(server, key, drop=(drop,)), 400, code)
    assert products(server, key) == []


def test_empty_request(server: ServerInfo) -> None:
    for method in ("GET", "POST"):
        error(http.request(method, server.url), 400, "MissingAccessKeyId")


def test_v1_action_must_be_signed(server: ServerInfo, key: Key) -> None:
    """The old SDK's unsigned x-acs-action header cannot choose the action of a V1 request."""
    q = v1_query(key, None, {"ProductName": "x"})
    error(http.post(server.url, params=q, headers={"x-acs-action": "CreateProduct"}), 400, "MissingParameter")
    q = v1_query(key, "QueryProductList", {"ProductName": "x"})
    body = ok(http.post(server.url, params=q, headers={"x-acs-action": "CreateProduct", "x-acs-version": VERSION}))
    assert "ProductKey" not in body
    assert products(server, key) == []


def test_wrong_version_and_method(server: ServerInfo, key: Key) -> None:
    error(create_product(server, key, params={"Version": "2099-01-01"}), 400, "InvalidVersion")
    error(create_product(server, key, params={"SignatureMethod": "HMAC-SHA256"}), 400, "InvalidSignatureMethod")
    assert products(server, key) == []


@pytest.mark.parametrize("offset_s", [-16 * 60, 16 * 60, -86400 * 365])
def test_stale_timestamp(server: ServerInfo, key: Key, offset_s: int) -> None:
    error(create_product(server, key, timestamp=utc(offset_s)), 400, "InvalidTimeStamp.Expired")
    error(v3(server, key, "CreateProduct", {"ProductName": "x"}, date=utc(offset_s)), 400, "InvalidTimeStamp.Expired")
    assert products(server, key) == []


def test_timestamp_inside_window_is_accepted(server: ServerInfo, key: Key) -> None:
    ok(create_product(server, key, timestamp=utc(-14 * 60)))
    ok(create_product(server, key, timestamp=utc(14 * 60)))
    ok(v3(server, key, "CreateProduct", {"ProductName": "x"}, date=utc(-14 * 60)))
    assert len(products(server, key)) == 3


@pytest.mark.parametrize("stamp", ["yesterday", "2024-01-01 00:00:00", "2024-13-01T00:00:00Z", "1700000000"])
def test_malformed_timestamp(server: ServerInfo, key: Key, stamp: str) -> None:
    error(create_product(server, key, timestamp=stamp), 400, "InvalidTimeStamp.Format")
    error(v3(server, key, "CreateProduct", {"ProductName": "x"}, date=stamp), 400, "InvalidTimeStamp.Format")
    assert products(server, key) == []


def test_replayed_nonce_v1(server: ServerInfo, key: Key) -> None:
    q = v1_query(key, "CreateProduct", {"ProductName": "once"})
    ok(http.post(server.url, params=q))
    error(http.post(server.url, params=q), 400, "SignatureNonceUsed")
    # Same nonce, newly signed (another timestamp): still used.
    error(create_product(server, key, nonce=q["SignatureNonce"], timestamp=utc(-5)), 400, "SignatureNonceUsed")
    assert len(products(server, key)) == 1


def test_replayed_nonce_v3(server: ServerInfo, key: Key) -> None:
    req = v3_request(server, key, "CreateProduct", {"ProductName": "once"})
    ok(http.send(req))
    error(http.send(req), 400, "SignatureNonceUsed")
    assert len(products(server, key)) == 1


def test_nonce_is_per_access_key(server: ServerInfo, key: Key) -> None:
    other = server.new_key(key.tenant)
    nonce = uuid.uuid4().hex
    ok(create_product(server, key, nonce=nonce))
    ok(create_product(server, other, nonce=nonce))


def test_unknown_action(server: ServerInfo, key: Key) -> None:
    for action in ("NoSuchAction", "createproduct", "CreateProduct2", "../CreateProduct"):
        error(v1(server, key, action, {"ProductName": "x"}), 404, "InvalidAction.NotFound")
        error(v3(server, key, action, {"ProductName": "x"}), 404, "InvalidAction.NotFound")
    assert products(server, key) == []


def test_v3_body_hash_mismatch(server: ServerInfo, key: Key) -> None:
    form = {"ProductName": "body"}
    wrong = signing.sha256_hex(b"something else")
    error(v3(server, key, "CreateProduct", form=form, content_sha256=wrong), 400, "InvalidContentSha256")
    # Body replaced after signing: the header names the original body.
    req = v3_request(server, key, "CreateProduct", form=form)
    tampered = http.build_request("POST", req.url, headers={**req.headers, "content-length": "20"},
                                  content=b"ProductName=tampered")
    error(http.send(tampered), 400, "InvalidContentSha256")
    assert products(server, key) == []


@pytest.mark.parametrize("header", ["x-acs-date", "x-acs-signature-nonce", "x-acs-action", "x-acs-content-sha256"])
def test_v3_required_header_not_signed(server: ServerInfo, key: Key, header: str) -> None:
    body = error(v3(server, key, "CreateProduct", {"ProductName": "x"}, unsigned=(header,)), 400, "IncompleteSignature")
    assert header in body["Message"]
    assert products(server, key) == []


@pytest.mark.parametrize("authorization", [
    "ACS3-HMAC-SHA256",
    "ACS3-HMAC-SHA256 Credential=,SignedHeaders=x-acs-date,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;;b,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host,Signature=zz",
    "ACS3-HMAC-SHA256 Credential=AK,Credential=AK,SignedHeaders=host,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 " + "x" * 10000,
])
def test_v3_malformed_authorization(server: ServerInfo, authorization: str) -> None:
    error(http.post(server.url, headers={"authorization": authorization}), 400, "IncompleteSignature")


def test_v3_signed_header_absent(server: ServerInfo, key: Key) -> None:
    req = v3_request(server, key, "CreateProduct", {"ProductName": "x"})
    auth = req.headers["authorization"].replace("SignedHeaders=", "SignedHeaders=x-custom;")
    error(http.post(server.url, params=req.url.params, headers={**req.headers, "authorization": auth}),
          400, "IncompleteSignature")
    assert products(server, key) == []


# --- formats -------------------------------------------------------------------------

def xml_of(r: httpx.Response, status: int, root: str) -> ET.Element:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/xml")
    doc = ET.fromstring(r.content)
    assert doc.tag == root
    fresh_request_id(doc.findtext("RequestId") or "")
    return doc


def test_xml_success(server: ServerInfo, key: Key) -> None:
    doc = xml_of(v1(server, key, "CreateProduct", {"ProductName": "<x&y>", "Description": "a\x01b"}, fmt="XML"),
                 200, "CreateProductResponse")
    assert doc.findtext("Success") == "true"
    pk = doc.findtext("ProductKey")
    assert pk and doc.findtext("Data/ProductKey") == pk
    assert doc.findtext("Data/ProductName") == "<x&y>"
    assert doc.findtext("Data/NodeType") == "0"
    # Lists repeat their element; the format name is case-insensitive.
    ok(create_product(server, key))
    doc = xml_of(v1(server, key, "QueryProductList", {}, fmt="xml"), 200, "QueryProductListResponse")
    assert len(doc.findall("Data/List/ProductInfo")) == 2
    assert doc.findtext("Data/Total") == "2"
    # V3 clients ask for it in the query too.
    xml_of(v3(server, key, "QueryProductList", {"Format": "XML"}), 200, "QueryProductListResponse")


def test_xml_business_error(server: ServerInfo, key: Key) -> None:
    doc = xml_of(v1(server, key, "QueryDeviceDetail", {"IotId": "nope"}, fmt="XML"), 200, "QueryDeviceDetailResponse")
    assert doc.findtext("Success") == "false"
    assert doc.findtext("Code") == "403"
    assert doc.findtext("ErrorMessage") == "tenant auth error"


def test_xml_gateway_errors(server: ServerInfo, key: Key) -> None:
    cases = [
        (v1(server, key, "NoSuchAction", {}, fmt="XML"), 404, "InvalidAction.NotFound"),
        (v1(server, key, "CreateProduct", {"ProductName": "x"}, fmt="XML", secret="bad"), 400, "SignatureDoesNotMatch"),
        (v1(server, key, "CreateProduct", {"ProductName": "x"}, fmt="XML", drop=("Signature",)), 400, "MissingSignature"),
        (v1(server, key, "CreateProduct", {}, fmt="XML"), 400, "MissingParameter"),
    ]
    for r, status, code in cases:
        doc = xml_of(r, status, "Error")
        assert doc.findtext("Code") == code
        assert doc.findtext("Message") and doc.findtext("HostId")
    assert products(server, key) == []


@pytest.mark.parametrize("word, value", [("true", True), ("True", True), ("TRUE", True), ("tRuE", True),
                                         ("false", False), ("False", False), ("FALSE", False)])
def test_booleans_any_case(server: ServerInfo, key: Key, word: str, value: bool) -> None:
    data = ok(create_product(server, key, params={"ProductName": "b", "Id2": word, "PublishAuto": word}))["Data"]
    assert data["Id2"] is value


def test_bad_boolean_changes_nothing(server: ServerInfo, key: Key) -> None:
    for word in ("yes", "T", "truee", " true"):
        error(create_product(server, key, params={"ProductName": "b", "Id2": word}), 400, "InvalidParameter")
    assert products(server, key) == []


# --- rate limit ------------------------------------------------------------------------

def test_rate_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    burst, per_s = 3, 0.5
    srv = start_server("sqlite", tmp_path, {"IOTVIDEO_RATE_LIMIT_PER_S": str(per_s),
                                            "IOTVIDEO_RATE_LIMIT_BURST": str(burst)})
    try:
        key = srv.new_key()
        other = srv.new_key(key.tenant)  # same tenant, own bucket
        for _ in range(burst):
            ok(create_product(srv, key))
        body = error(create_product(srv, key), 429, "Throttling.User")
        assert body["Message"] == "request too frequently."
        error(v3(srv, key, "CreateProduct", {"ProductName": "x"}), 429, "Throttling.User")
        assert len(products(srv, other)) == burst  # the limit is per AccessKey; throttled calls changed nothing
        # Requests that fail authentication are refused as such, not throttled as the key.
        error(create_product(srv, key, secret="bad"), 400, "SignatureDoesNotMatch")
        time.sleep(1 / per_s + 0.1)
        ok(create_product(srv, key))
        assert len(products(srv, other)) == burst + 1
    finally:
        stop_server(srv)


# --- garbage -------------------------------------------------------------------------

def raw_http(server: ServerInfo, request: bytes) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one raw HTTP/1.1 exchange."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


GARBAGE_QUERIES = [
    b"a=%ff", b"%zz=%%%&&&==;", b"Action=%C0%AF", b"Action=Create%00Product", b"AccessKeyId=%ED%A0%80",
    b"&&&", b"=", b"==&=", b"a" * 5000, b"a=" + b"%41" * 20000, b"Action.1.2.3=%5B%5B%5B", b"x=%F0%9F%98", b"%",
    b"AccessKeyId=a&AccessKeyId=b&Signature=&Signature=%20",
]


@pytest.mark.parametrize("query", GARBAGE_QUERIES)
def test_garbage_query_is_4xx_with_request_id(server: ServerInfo, query: bytes) -> None:
    for method in (b"GET", b"POST"):
        status, head, body = raw_http(server, method + b" /?" + query + b" HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        assert 400 <= status < 500, body
        answer = httpx.Response(status, content=body).json()
        assert answer["Code"] and answer["Message"]
        fresh_request_id(answer["RequestId"])


def test_garbage_bodies_and_headers(server: ServerInfo, key: Key) -> None:
    cases = [
        (http.post(server.url, content=b"a=\xff\xfe", headers={"content-type": FORM}), "InvalidParameter"),
        (http.post(server.url, content=b"ProductName=a%00b", headers={"content-type": FORM}), "InvalidParameter"),
        (http.post(server.url, content=b"\x00" * 1000, headers={"content-type": FORM}), "InvalidParameter"),
        (http.post(server.url, content=b"{not json", headers={"content-type": "application/json"}),
         "MissingAccessKeyId"),
        (http.post(server.url, headers={"authorization": b"ACS3-HMAC-SHA256 Credential=\xff\xfe,SignedHeaders=\xff"}),
         "IncompleteSignature"),
        (http.post(server.url, params={"ProductName": "a\x00b"}), "InvalidParameter"),
        # NUL can be neither stored (PostgreSQL) nor rendered (XML): refused even when signed.
        (v1(server, key, "CreateProduct", {"ProductName": "nul\x00inside"}), "InvalidParameter"),
        (v3(server, key, "CreateProduct", form={"ProductName": "nul\x00inside"}), "InvalidParameter"),
    ]
    for r, code in cases:
        error(r, 400, code)
    assert products(server, key) == []


def test_huge_body(server: ServerInfo, key: Key) -> None:
    q = v1_query(key, "CreateProduct", {"ProductName": "x"})
    error(http.post(server.url, params=q, content=b"x" * (2 << 20), headers={"content-type": FORM}),
          413, "RequestEntityTooLarge")
    error(http.post(server.url, content=b"a" * (2 << 20)), 413, "RequestEntityTooLarge")
    assert products(server, key) == []


def test_huge_query_and_raw_garbage_are_4xx(server: ServerInfo) -> None:
    """Refused by the HTTP layer (uvicorn: URL over 64 KiB, bytes that are not HTTP) before the
    gateway sees them, so these answers are plain text without a RequestId; still never a 5xx."""
    for request in [
        b"GET /?" + b"a=b&" * 17000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /?a=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\nX-Bad: \xff\xfe\r\n\r\nab=cd",
        b"BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]:
        status, _, _ = raw_http(server, request)
        assert 400 <= status < 500, request[:60]


# --- the log -------------------------------------------------------------------------

def test_log_line_per_call_never_a_secret(server: ServerInfo, key: Key) -> None:
    created = ok(create_product(server, key))
    registered = ok(v1(server, key, "RegisterDevice", {"ProductKey": created["ProductKey"], "DeviceName": "log-cam"}))
    device = registered["Data"]
    detail = ok(v3(server, key, "QueryDeviceDetail", {"IotId": device["IotId"]}))
    bad = error(create_product(server, key, secret="bad"), 400, "SignatureDoesNotMatch")
    time.sleep(0.2)  # the log is written by the server process
    log = server.log()
    for body, action in [(created, "CreateProduct"), (registered, "RegisterDevice"), (detail, "QueryDeviceDetail"),
                         (bad, "CreateProduct")]:
        lines = [ln for ln in log.splitlines() if f"request_id={body['RequestId']}" in ln]
        assert len(lines) == 1, body
        line = lines[0]
        assert " api " in line and f"action={action}" in line
        assert f"access_key_id={key.access_key_id}" in line
        assert re.search(r"latency_ms=\d+\.\d+", line) and re.search(r"status=\d{3}", line)
    for secret in (key.secret, device["DeviceSecret"], created["Data"]["ProductSecret"]):
        assert secret not in log


# --- fuzz ------------------------------------------------------------------------------

PARAM_NAMES = [
    "IotId", "ProductKey", "DeviceName", "Nickname", "ProductName", "NodeType", "DataFormat", "Description",
    "AuthType", "Id2", "Name", "AllDay", "TemplateId", "PlanId", "StreamType", "Day", "CurrentPage", "PageSize",
    "EventTypes", "PreRecordDuration", "RecordDuration", "TimeSections.1.DayOfWeek", "TimeSections.1.Begin",
    "TimeSections.1.End", "DeviceList.1",
]
ODD_NAMES = ["TimeSections", "TimeSections.2.Begin", "TimeSections.1", "DeviceList", "DeviceList.0",
             "DeviceList.99999999999", "Format", "IotInstanceId", "PageSize"]
SPECIAL_VALUES = ["", "0", "1", "-1", "2", "6", "7", "10", "50", "51", "86399", "86400", "3650", "3651", "true",
                  "False", "XML", "[]", "[{}]", '[{"DayOfWeek": 1, "Begin": 0, "End": 3600}]', '[{"Begin": 1e999}]',
                  "[" * 50, "null", "9" * 30, "1.5", " 1", "\t", "[1,2]", "\U0001F600" * 80, "cam-0001", "1,2"]


def fuzz_values(ids: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ids + SPECIAL_VALUES),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
        st.integers(-(2**70), 2**70).map(str),
    )


def mostly(usual: st.SearchStrategy[str], rare: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``usual`` nine times in ten, else ``rare``."""
    return st.tuples(st.integers(0, 9), usual, rare).map(lambda t: t[2] if t[0] == 0 else t[1])


def test_random_params_never_5xx(server: ServerInfo) -> None:
    """Random flat parameters, signed V1 or V3, in the query or the body, at every action: never a 5xx."""
    key = server.new_key()
    product = ok(create_product(server, key))["ProductKey"]
    device = ok(v1(server, key, "RegisterDevice", {"ProductKey": product, "DeviceName": "cam-0001"}))["Data"]
    template = ok(v1(server, key, "CreateTimeTemplate", {"Name": "t", "AllDay": "1"}))["Data"]
    plan = ok(v1(server, key, "CreateRecordPlan", {"Name": "p", "TemplateId": template}))["Data"]
    ids = [product, device["IotId"], device["DeviceName"], template, plan]
    values = fuzz_values(ids)
    odd_names = st.one_of(st.sampled_from(ODD_NAMES),
                          st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12))
    params_strategy = st.builds(lambda usual, odd: {**usual, **odd},
                                st.fixed_dictionaries({}, optional={n: values for n in PARAM_NAMES}),
                                st.dictionaries(odd_names, values, max_size=2))
    actions = mostly(st.sampled_from(sorted(ACTIONS)), st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,15}", fullmatch=True))
    statuses: list[int] = []

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(action=actions, params=params_strategy, v3_sig=st.booleans(), in_body=st.booleans(),
           method=st.sampled_from(["GET", "POST"]))
    def fire(action: str, params: dict[str, str], v3_sig: bool, in_body: bool, method: str) -> None:
        if v3_sig:
            r = v3(server, key, action, {} if in_body else params, form=params if in_body else None)
        elif in_body:
            r = v1(server, key, action, {}, method=method, form=params)
        else:
            r = v1(server, key, action, params, method=method)
        statuses.append(r.status_code)
        assert r.status_code < 500, (action, params, r.text)
        if r.headers["content-type"].startswith("application/json"):
            fresh_request_id(r.json()["RequestId"])
        else:
            fresh_request_id(ET.fromstring(r.content).findtext("RequestId") or "")

    fire()
    assert statuses.count(200) >= 5  # the fuzzer reached the handlers, not only the gateway
