"""Our V1/V3 signatures equal what the official SDKs compute and send, for arbitrary parameters."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from alibabacloud_openapi_util import client as openapi_util
from alibabacloud_tea_openapi import utils as tea_openapi_utils
from aliyunsdkcore.auth.composer import rpc_signature_composer as old_rpc
from darabonba.core import DaraCore
from darabonba.request import DaraRequest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iotvideo.errors import GatewayError
from iotvideo.openapi.signing import (
    V3_ALGORITHM,
    parse_v3_authorization,
    percent_encode,
    sha256_hex,
    signatures_equal,
    v1_signature,
    v1_string_to_sign,
    v3_canonical_request,
    v3_signature,
)

SECRET = "s3cr&t/é"
SPECIALS = st.sampled_from(list(" *~+/=&%.-_#?;:'\"\\é中😀\t"))
TEXT = st.text(st.one_of(SPECIALS, st.characters(codec="utf-8")), max_size=16)
PARAMS = st.dictionaries(TEXT, TEXT, max_size=8)
METHODS = st.sampled_from(["GET", "POST"])
HEADER_NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUES, min_size=1, max_size=6)
OLD_COMPOSE = getattr(old_rpc, "__compose_string_to_sign")
OLD_SIGN = getattr(old_rpc, "__get_signature")
NEW_SDK_UTILS = [openapi_util.Client, tea_openapi_utils.Utils]

fast = settings(max_examples=200, deadline=None)


def wire_query(url: str) -> dict[str, str]:
    """What a server sees: the URL's query decoded as Starlette does."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def dara_request(method: str, query: dict[str, str], headers: dict[str, str]) -> DaraRequest:
    request = DaraRequest()
    request.method, request.pathname, request.query = method, "/", dict(query)
    request.headers = {"host": "127.0.0.1:8080", **headers}
    return request


# --- fixed vectors -------------------------------------------------------------------

def test_percent_encode_vectors() -> None:
    assert percent_encode("a b+c*d~e/f=g&h%i") == "a%20b%2Bc%2Ad~e%2Ff%3Dg%26h%25i"
    assert percent_encode("AZaz09-_.~") == "AZaz09-_.~"
    assert percent_encode("é中😀") == "%C3%A9%E4%B8%AD%F0%9F%98%80"
    assert percent_encode("") == ""


def test_v1_documented_vector() -> None:
    params = {
        "AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML",
        "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0", "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26",
    }
    assert v1_string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod"
        "%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion"
        "%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    )
    assert v1_signature("testsecret", "GET", params) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    assert v1_signature("testsecret", "GET", {**params, "Signature": "x"}) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_v3_documented_vector() -> None:
    headers = {
        "host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
        "x-acs-version": "2014-05-26", "x-acs-date": "2023-10-26T10:22:32Z",
        "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d", "x-acs-content-sha256": sha256_hex(b""),
    }
    query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
    canonical = v3_canonical_request("POST", "/", query, headers, sorted(headers), sha256_hex(b""))
    assert sha256_hex(canonical.encode()) == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    assert v3_signature("YourAccessKeySecret", canonical) == (
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def test_v3_canonical_query_keeps_keys_raw_and_empty_values() -> None:
    canonical = v3_canonical_request("GET", "/", {"b": "", "a b": "x y*~"}, {}, [], "h")
    assert canonical.split("\n")[2] == "a b=x%20y%2A~&b="


# --- V1 against the old SDK (aliyunsdkcore) ------------------------------------------

@fast
@given(PARAMS, METHODS)
def test_v1_equals_old_sdk_composer(params: dict[str, str], method: str) -> None:
    params.pop("Signature", None)
    string_to_sign = OLD_COMPOSE(method, params)
    assert v1_string_to_sign(method, params) == string_to_sign
    assert v1_signature(SECRET, method, params) == OLD_SIGN(string_to_sign, SECRET)


@fast
@given(PARAMS, PARAMS, METHODS)
def test_v1_verifies_old_sdk_signed_url(query: dict[str, str], body: dict[str, str], method: str) -> None:
    url, _ = old_rpc.get_signed_url(dict(query), "ak", SECRET, "JSON", method, body)
    received = wire_query(url)
    assume(not set(body) & set(received))
    received_body = dict(parse_qsl(urlencode(body), keep_blank_values=True))
    assert v1_signature(SECRET, method, {**received, **received_body}) == received["Signature"]


# --- V1 against the new SDK with signature_algorithm='v2' ------------------------------

@fast
@given(PARAMS, METHODS)
def test_v1_equals_new_sdk_rpc_signature(params: dict[str, str], method: str) -> None:
    params.pop("Signature", None)
    for utils in NEW_SDK_UTILS:
        signature = utils.get_rpcsignature(params, method, SECRET)
        assert v1_signature(SECRET, method, params) == signature
        received = wire_query(DaraCore.compose_url(dara_request(method, {**params, "Signature": signature}, {})))
        assert v1_signature(SECRET, method, received) == received["Signature"]


# --- V3 against the new SDK ----------------------------------------------------------

@fast
@given(PARAMS, HEADERS, METHODS, st.binary(max_size=64))
def test_v3_equals_new_sdk_authorization(
    query: dict[str, str], headers: dict[str, str], method: str, body: bytes
) -> None:
    payload = sha256_hex(body)
    request = dara_request(method, query, headers)
    for utils in NEW_SDK_UTILS:
        authorization = utils.get_authorization(request, V3_ALGORITHM, payload, "my-ak", SECRET)
        ak, names, signature = parse_v3_authorization(authorization)
        assert ak == "my-ak"
        received_query = wire_query(DaraCore.compose_url(request))
        canonical = v3_canonical_request(method, "/", received_query, request.headers, names, payload)
        sdk_headers, sdk_names = openapi_util.get_canonicalized_headers(request.headers)
        sdk_query = openapi_util.get_canonical_query_string(query)
        assert canonical == f"{method}\n/\n{sdk_query}\n{sdk_headers}\n{sdk_names}\n{payload}"
        assert signatures_equal(v3_signature(SECRET, canonical), signature)


# --- tampering -----------------------------------------------------------------------

@fast
@given(PARAMS.filter(bool), TEXT, st.data())
def test_tampered_param_changes_both_signatures(params: dict[str, str], new: str, data: st.DataObject) -> None:
    params.pop("Signature", None)
    assume(params)
    key = data.draw(st.sampled_from(sorted(params)))
    assume(params[key] != new)
    tampered = {**params, key: new}
    assert v1_signature(SECRET, "POST", params) != v1_signature(SECRET, "POST", tampered)
    names = ["x-acs-action"]
    headers = {"x-acs-action": "A"}
    original = v3_signature(SECRET, v3_canonical_request("POST", "/", params, headers, names, "h"))
    assert original != v3_signature(SECRET, v3_canonical_request("POST", "/", tampered, headers, names, "h"))
    assert original != v3_signature(SECRET, v3_canonical_request("POST", "/", params, {"x-acs-action": "B"}, names, "h"))
    assert v1_signature(SECRET, "POST", params) != v1_signature(SECRET + "x", "POST", params)


# --- Authorization header parsing ----------------------------------------------------

def test_parse_v3_authorization() -> None:
    sig = "ab" * 32
    header = f"ACS3-HMAC-SHA256 Credential=AK1,SignedHeaders=host;x-acs-date,Signature={sig.upper()}"
    assert parse_v3_authorization(header) == ("AK1", ["host", "x-acs-date"], sig)


@pytest.mark.parametrize("header", [
    "",
    "ACS3-HMAC-SHA256",
    "ACS3-HMAC-SM3 Credential=a,SignedHeaders=host,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
    "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;;x,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;host,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=xyz",
    "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=" + "0" * 64,
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=" + "0" * 64 + ",Extra=1",
    "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=ho st,Signature=" + "0" * 64,
])
def test_parse_v3_authorization_rejects_malformed(header: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_v3_authorization(header)
    assert (caught.value.status, caught.value.code) == (400, "IncompleteSignature")


@fast
@given(st.text(max_size=200) | st.builds(lambda s: "ACS3-HMAC-SHA256 " + s, st.text(max_size=200)))
def test_parse_v3_authorization_garbage_only_raises_gateway_error(header: str) -> None:
    try:
        parse_v3_authorization(header)
    except GatewayError as error:
        assert error.code == "IncompleteSignature"


def test_signatures_equal() -> None:
    assert signatures_equal("abc", "abc")
    assert not signatures_equal("abc", "abd")
    assert not signatures_equal("abc", "é")


# --- end to end: the real SDK clients against a server that verifies with our code ---

class _Verifier(BaseHTTPRequestHandler):
    """Checks each request's signature the way the gateway must, and records the outcome."""

    outcomes: list[tuple[str, dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        params = {**query, **dict(parse_qsl(body.decode(), keep_blank_values=True))}
        authorization = headers.get("authorization", "")
        if authorization.startswith(V3_ALGORITHM):
            _, names, signature = parse_v3_authorization(authorization)
            assert headers["x-acs-content-sha256"] == sha256_hex(body)
            canonical = v3_canonical_request(self.command, urlsplit(self.path).path, query, headers, names, sha256_hex(body))
            ok = signatures_equal(v3_signature(SECRET, canonical), signature)
            mode = "v3:" + ";".join(names)
        else:
            ok = signatures_equal(v1_signature(SECRET, self.command, params), params.get("Signature", ""))
            mode = "v1"
        self.outcomes.append((mode if ok else "BAD " + mode, params))
        reply = json.dumps({"RequestId": "r", "Success": ok, "Code": "200", "Data": "t1"}).encode()
        self.send_response(200 if ok else 400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = HTTPServer(("127.0.0.1", 0), _Verifier)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Verifier.outcomes = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


NAME = "a b+c*~/é&=%7E"


def test_old_sdk_request_verifies(verifier: int) -> None:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdklinkvisual.request.v20180120.CreateTimeTemplateRequest import CreateTimeTemplateRequest

    request = CreateTimeTemplateRequest()
    request.set_endpoint("127.0.0.1")
    request.set_Name(NAME)
    request.set_AllDay(0)
    request.set_TimeSectionss([{"DayOfWeek": 0, "Begin": 0, "End": 3600}])
    AcsClient("ak", SECRET, "cn-shanghai", port=verifier).do_action_with_exception(request)
    [(mode, params)] = _Verifier.outcomes
    assert mode == "v1"
    assert params["Name"] == NAME and params["TimeSections.1.End"] == "3600" and params["Format"] == "JSON"


@pytest.mark.parametrize("algorithm", [None, "v2"])
def test_new_sdk_request_verifies(verifier: int, algorithm: str | None) -> None:
    from alibabacloud_linkvisual20180120 import models
    from alibabacloud_linkvisual20180120.client import Client
    from alibabacloud_tea_openapi.models import Config

    config = Config(access_key_id="ak", access_key_secret=SECRET, endpoint=f"127.0.0.1:{verifier}",
                    protocol="http", region_id="cn-shanghai", signature_algorithm=algorithm)
    section = models.CreateTimeTemplateRequestTimeSections(begin=0, day_of_week=0, end=3600)
    Client(config).create_time_template(models.CreateTimeTemplateRequest(name=NAME, all_day=0, time_sections=[section]))
    [(mode, params)] = _Verifier.outcomes
    if algorithm is None:
        assert mode == ("v3:accept;host;user-agent;x-acs-action;x-acs-content-sha256;"
                        "x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version")
        assert "Action" not in params
    else:
        assert mode == "v1" and params["Action"] == "CreateTimeTemplate" and params["Format"] == "json"
    assert params["Name"] == NAME and params["TimeSections.1.End"] == "3600"
