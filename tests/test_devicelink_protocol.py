"""Device protocol pieces: CONNECT authentication, topic ACL, Alink codec, and the camera thing model."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.devicelink import alink, auth, topics_acl, tsl
from test_devicelink_sdk import LINKKIT_PY
from iotvideo.devicelink.mqtt import topic_matches, valid_topic_filter, valid_topic_name

PK, DN, SECRET = "a1TestPk001", "cam0001", "s3cr3t"
OTHER_PK, OTHER_DN = "a1OtherPk02", "cam0002"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- authentication ---------------------------------------------------------------------------------

def linkkit_password(pk: str, dn: str, secret: str, timestamp: str | None, digest=hashlib.sha1) -> str:
    """Oracle copied from aliyun-iot-linkkit 1.2.13, linkkit/linkkit.py, LinkKit.__config_mqtt_client_internal:

        sign_content = "clientId%sdeviceName%sproductKey%stimestamp%s" % (
            self.__product_key + "&" + self.__device_name, self.__device_name, self.__product_key, timestamp)
        password = hmac.new(self.__device_secret.encode("utf-8"), sign_content.encode("utf-8"),
                            hashlib.sha1).hexdigest()

    generalised to the other sign methods and to an absent timestamp (the key is then left out).
    """
    sign_content = "clientId%sdeviceName%sproductKey%s" % (pk + "&" + dn, dn, pk)
    if timestamp is not None:
        sign_content += "timestamp%s" % timestamp
    return hmac.new(secret.encode("utf-8"), sign_content.encode("utf-8"), digest).hexdigest()


def linkkit_client_id(pk: str, dn: str, timestamp: str | None, signmethod: str = "hmacsha1") -> str:
    ts = f",timestamp={timestamp}" if timestamp is not None else ""
    return f"{pk}&{dn}|securemode=3,signmethod={signmethod},ext=1,_ss=1,lan=Python,_v=1.2.13{ts}|"


def secrets_of(table: dict[tuple[str, str], str]):
    return lambda pk, dn: table.get((pk, dn))


def test_known_answer_captured_from_the_official_sdk():
    # Produced by aliyun-iot-linkkit 1.2.13 (LinkKit(...).config_mqtt(port=1883, secure="") then its
    # __config_mqtt_client_internal) for pk a1TestPk001, dn cam0001, secret s3cr3t.
    cid = ("a1TestPk001&cam0001|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,"
           "_v=1.2.13,timestamp=1795675238|")
    ident = auth.verify_connect(cid, "cam0001&a1TestPk001", b"c48ebd146c7646b17c6fe6f12d060b309749dc64",
                                secrets_of({(PK, DN): SECRET}))
    assert (ident.product_key, ident.device_name, ident.signmethod, ident.securemode) == (PK, DN, "hmacsha1", 3)
    assert ident.client_id == "a1TestPk001&cam0001" and ident.timestamp == "1795675238"
    assert ident.params["lan"] == "Python"


@pytest.mark.skipif(not LINKKIT_PY.exists() and not os.environ.get("CI"),
                    reason="the official device SDK's interpreter .venv-linkkit is missing (scripts/setup.sh)")
def test_against_the_installed_official_sdk(tmp_path):
    """The real aliyun-iot-linkkit (its own interpreter, .venv-linkkit) signs a CONNECT we accept and
    loads our TSL in thing_setup."""
    tsl_file = tmp_path / "tsl.json"
    tsl_file.write_text(tsl.tsl_json(PK))
    script = (
        "from linkkit import linkkit\n"
        "lk = linkkit.LinkKit(host_name='127.0.0.1', product_key='a1TestPk001', device_name='cam0001',"
        " device_secret='s3cr3t')\n"
        "lk.config_mqtt(port=1883, secure='')\n"
        f"assert lk.thing_setup({str(tsl_file)!r}) == 0\n"
        "lk._LinkKit__config_mqtt_client_internal()\n"
        "c = lk._LinkKit__mqtt_client\n"
        "print(c._client_id.decode()); print(c._username.decode()); print(c._password.decode())\n"
        "print(','.join(sorted(lk._LinkKit__thing_services))); print(','.join(sorted(lk._LinkKit__thing_events)))\n"
    )
    out = subprocess.run([str(LINKKIT_PY), "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"the official SDK failed: {out.stderr[-2000:]}"
    cid, user, password, services, events = out.stdout.split()
    ident = auth.verify_connect(cid, user, password.encode(), secrets_of({(PK, DN): SECRET}))
    assert (ident.product_key, ident.device_name) == (PK, DN)
    assert set(services.split(",")) == set(tsl.SERVICES)
    assert set(events.split(",")) == set(tsl.EVENTS)


@pytest.mark.parametrize("signmethod,digest", [("hmacsha1", hashlib.sha1), ("hmacsha256", hashlib.sha256),
                                               ("hmacmd5", hashlib.md5), ("HmacSHA256", hashlib.sha256)])
@pytest.mark.parametrize("timestamp", ["1700000000", "1700000000123", None])
def test_password_matches_the_sdk_formula(signmethod, digest, timestamp):
    want = linkkit_password(PK, DN, SECRET, timestamp, digest)
    assert auth.expected_password(SECRET, f"{PK}&{DN}", PK, DN, timestamp, signmethod) == want
    cid = linkkit_client_id(PK, DN, timestamp, signmethod)
    ident = auth.verify_connect(cid, f"{DN}&{PK}", want.encode(), secrets_of({(PK, DN): SECRET}))
    assert ident.signmethod == signmethod.lower()
    # upper-case hex is accepted too
    auth.verify_connect(cid, f"{DN}&{PK}", want.upper().encode(), secrets_of({(PK, DN): SECRET}))


def test_sign_content_order():
    assert auth.sign_content("c", "p", "d", "1") == "clientIdcdeviceNamedproductKeyptimestamp1"
    assert auth.sign_content("c", "p", "d", None) == "clientIdcdeviceNamedproductKeyp"


def test_arbitrary_client_id_without_parameters():
    pw = hmac.new(SECRET.encode(), f"clientIdmy-mac-00:11deviceName{DN}productKey{PK}".encode(),
                  hashlib.sha1).hexdigest()
    ident = auth.verify_connect("my-mac-00:11", f"{DN}&{PK}", pw.encode(), secrets_of({(PK, DN): SECRET}))
    assert ident.params == {} and ident.signmethod == "hmacsha1" and ident.securemode is None


def test_split_flow_for_async_lookup():
    cid = linkkit_client_id(PK, DN, "42")
    ident = auth.identity_from_connect(cid, f"{DN}&{PK}")
    assert (ident.product_key, ident.device_name) == (PK, DN)
    assert auth.check_password(SECRET, ident, linkkit_password(PK, DN, SECRET, "42").encode())
    assert not auth.check_password("other", ident, linkkit_password(PK, DN, SECRET, "42").encode())
    assert not auth.check_password(SECRET, ident, None)
    assert not auth.check_password(SECRET, ident, b"\xff\xfe")


def _code(fn) -> int:
    with pytest.raises(auth.DeviceAuthError) as exc:
        fn()
    return exc.value.connack_code


def test_refusals_carry_the_connack_code():
    table = secrets_of({(PK, DN): SECRET, (OTHER_PK, OTHER_DN): "x"})
    cid, user = linkkit_client_id(PK, DN, "7"), f"{DN}&{PK}"
    good = linkkit_password(PK, DN, SECRET, "7").encode()
    assert auth.verify_connect(cid, user, good, table).device_name == DN
    # wrong secret / tampered password / no password -> 4
    assert _code(lambda: auth.verify_connect(cid, user, linkkit_password(PK, DN, "bad", "7").encode(), table)) == 4
    assert _code(lambda: auth.verify_connect(cid, user, good[:-1] + b"0" if good[-1:] != b"0" else good[:-1] + b"1",
                                             table)) == 4
    assert _code(lambda: auth.verify_connect(cid, user, None, table)) == 4
    # timestamp changed after signing -> 4
    assert _code(lambda: auth.verify_connect(linkkit_client_id(PK, DN, "8"), user, good, table)) == 4
    # malformed or missing username -> 4
    for bad_user in (None, "", DN, f"{PK}", f"{DN}&", f"&{PK}", f"{DN}&{PK}&x", f"a/b+&{PK}", f"{DN}&p/k"):
        assert _code(lambda: auth.verify_connect(cid, bad_user, good, table)) == 4
    # clientId names another device than the username -> 4
    other_cid = linkkit_client_id(OTHER_PK, DN, "7")
    assert _code(lambda: auth.verify_connect(other_cid, user, good, table)) == 4
    # another device's secret cannot log in as this one, and vice versa
    theirs = linkkit_password(OTHER_PK, OTHER_DN, "x", "7").encode()
    assert _code(lambda: auth.verify_connect(cid, user, theirs, table)) == 4
    # unsupported signmethod -> 4
    assert _code(lambda: auth.verify_connect(linkkit_client_id(PK, DN, "7", "hmacsha512"), user, good, table)) == 4
    # unknown (or disabled) device -> 5
    assert _code(lambda: auth.verify_connect(cid, user, good, secrets_of({}))) == 5
    # malformed clientId parameters -> 2
    for bad_cid in (f"{PK}&{DN}|securemode|", f"{PK}&{DN}|=3|", f"{PK}&{DN}|a=1,a=2|", f"{PK}&{DN}|a=1|junk"):
        assert _code(lambda: auth.verify_connect(bad_cid, user, good, table)) == 2


def test_parse_client_id():
    info = auth.parse_client_id("a&b|securemode=2,signmethod=hmacsha256,timestamp=1,sii=x y,|")
    assert info.client_id == "a&b" and info.claimed_identity == ("a", "b")
    assert info.params == {"securemode": "2", "signmethod": "hmacsha256", "timestamp": "1", "sii": "x y"}
    assert auth.parse_client_id("plain").params == {}
    assert auth.parse_client_id("plain").claimed_identity is None
    assert auth.parse_client_id("a|x=1").params == {"x": "1"}  # a missing closing bar is tolerated
    assert auth.parse_username("cam0001&a1TestPk001") == ("cam0001", "a1TestPk001")


@FAST
@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=60)), st.one_of(st.none(), st.binary(max_size=60)))
def test_verify_connect_fuzz_only_auth_errors(client_id, username, password):
    try:
        auth.verify_connect(client_id, username, password, lambda pk, dn: SECRET)
    except auth.DeviceAuthError as exc:
        assert exc.connack_code in (2, 4, 5)


@FAST
@given(secret=st.text(min_size=1, max_size=40),
       dn=st.from_regex(r"[A-Za-z0-9_\-@.:]{4,32}", fullmatch=True),
       ts=st.one_of(st.none(), st.integers(0, 2**45).map(str)),
       method=st.sampled_from(["hmacsha1", "hmacsha256", "hmacmd5"]))
def test_password_roundtrip_and_one_character_change_refused(secret, dn, ts, method):
    digest = {"hmacsha1": hashlib.sha1, "hmacsha256": hashlib.sha256, "hmacmd5": hashlib.md5}[method]
    pw = linkkit_password(PK, dn, secret, ts, digest)
    cid, user = linkkit_client_id(PK, dn, ts, method), f"{dn}&{PK}"
    auth.verify_connect(cid, user, pw.encode(), lambda pk, d: secret)
    flipped = pw[:5] + ("0" if pw[5] != "0" else "1") + pw[6:]
    assert _code(lambda: auth.verify_connect(cid, user, flipped.encode(), lambda pk, d: secret)) == 4


# --- topic ACL --------------------------------------------------------------------------------------

OWN_PUBLISH = [
    f"/sys/{PK}/{DN}/thing/event/property/post",
    f"/sys/{PK}/{DN}/thing/event/AlarmEvent/post",
    f"/sys/{PK}/{DN}/thing/service/StartPushStreaming_reply",
    f"/sys/{PK}/{DN}/thing/service/property/set_reply",
    f"/sys/{PK}/{DN}/thing/deviceinfo/update",
    f"/sys/{PK}/{DN}/thing/model/up_raw",
    f"/sys/{PK}/{DN}/thing/model/down_raw_reply",
    f"/ext/rrpc/1234567/sys/{PK}/{DN}/thing/service/GetDeviceStatus",
    f"/ext/rrpc/1234567/{PK}/{DN}/user/ping",
    f"/{PK}/{DN}/user/update",
    f"/ext/session/{PK}/{DN}/combine/batch_login",
    f"/ota/device/inform/{PK}/{DN}",
    f"/ota/device/progress/{PK}/{DN}",
    f"/shadow/update/{PK}/{DN}",
    f"/ext/ntp/{PK}/{DN}/request",
]
CLOUD_ONLY = [
    f"/sys/{PK}/{DN}/thing/service/StartPushStreaming",
    f"/sys/{PK}/{DN}/thing/service/property/set",
    f"/sys/{PK}/{DN}/thing/model/down_raw",
    f"/ota/device/upgrade/{PK}/{DN}",
    f"/shadow/get/{PK}/{DN}",
    f"/ext/ntp/{PK}/{DN}/response",
]
FOREIGN = [
    f"/sys/{OTHER_PK}/{DN}/thing/event/property/post",
    f"/sys/{PK}/{OTHER_DN}/thing/event/property/post",
    f"/ext/rrpc/1/sys/{PK}/{OTHER_DN}/thing/service/X",
    f"/{PK}/{OTHER_DN}/user/update",
    f"/ota/device/inform/{PK}/{OTHER_DN}",
    f"/ota/device/other/{PK}/{DN}",
    f"/shadow/update/{OTHER_PK}/{DN}",
    f"/sys/{PK}", "/sys", "/", "sys/{PK}/{DN}/x", f"sys/{PK}/{DN}/thing", "$SYS/broker",
    f"/{PK}/{DN}/other/x", f"/ext/session/{PK}", f"/sys/{PK}/{DN}x/thing",
]


@pytest.mark.parametrize("topic", OWN_PUBLISH)
def test_own_topics_publishable(topic):
    assert topics_acl.device_may_publish(PK, DN, topic)
    assert not topics_acl.device_may_publish(OTHER_PK, OTHER_DN, topic)


@pytest.mark.parametrize("topic", CLOUD_ONLY)
def test_cloud_requests_not_publishable_but_receivable(topic):
    assert not topics_acl.device_may_publish(PK, DN, topic)
    assert topics_acl.device_may_subscribe(PK, DN, topic)
    assert topics_acl.in_namespace(PK, DN, topic)


@pytest.mark.parametrize("topic", FOREIGN)
def test_foreign_topics_refused(topic):
    assert not topics_acl.device_may_publish(PK, DN, topic)
    assert not topics_acl.device_may_subscribe(PK, DN, topic)


@pytest.mark.parametrize("filt,ok", [
    (f"/sys/{PK}/{DN}/#", True), (f"/sys/{PK}/{DN}/thing/service/+", True),
    (f"/ext/rrpc/+/sys/{PK}/{DN}/#", True), (f"/ext/rrpc/+/{PK}/{DN}/user/get", True),
    (f"/{PK}/{DN}/user/#", True), (f"/ota/device/upgrade/{PK}/{DN}", True),
    ("#", False), ("+", False), ("/#", False), ("/+/#", False), (f"/sys/{PK}/#", False),
    (f"/sys/{PK}/+/#", False), (f"/sys/+/{DN}/#", False), ("/sys/#", False), ("/ext/rrpc/#", False),
    (f"/ext/rrpc/+/+/{PK}/{DN}/#", False), (f"/ext/rrpc/+/sys/{PK}/+/#", False), (f"/+/{DN}/user/#", False),
    (f"/ota/device/+/{PK}/{DN}", False), (f"/shadow/+/{PK}/{DN}", False), (f"/{PK}/{DN}/+/x", False),
    (f"/{PK}/{DN}/user/#/x", False), (f"/sys/{PK}/{DN}/a+", False), (f"/ext/ntp/{PK}/{DN}/+", False),
])
def test_subscribe_filters(filt, ok):
    assert topics_acl.device_may_subscribe(PK, DN, filt) is ok


def test_implicit_topics_cover_every_downlink_and_are_own():
    filters = topics_acl.implicit_topics(PK, DN)
    assert all(valid_topic_filter(f) and topics_acl.device_may_subscribe(PK, DN, f) for f in filters)
    downlinks = [
        f"/sys/{PK}/{DN}/thing/service/StartVod",
        f"/sys/{PK}/{DN}/thing/service/property/set",
        f"/sys/{PK}/{DN}/thing/event/property/post_reply",
        f"/sys/{PK}/{DN}/thing/event/AlarmEvent/post_reply",
        f"/sys/{PK}/{DN}/thing/deviceinfo/update_reply",
        f"/ext/rrpc/99/sys/{PK}/{DN}/thing/service/GetDeviceStatus",
        f"/ota/device/upgrade/{PK}/{DN}",
        f"/shadow/get/{PK}/{DN}",
    ]
    for topic in downlinks:
        assert any(topic_matches(f, topic) for f in filters), topic
    for topic in FOREIGN:
        if valid_topic_name(topic):
            assert not any(topic_matches(f, topic) for f in filters), topic


def test_invalid_identities_never_get_access():
    for pk, dn in [("", DN), (PK, ""), ("a/b", DN), (PK, "ca+m1"), (PK, "c#m01"), ("p k", DN)]:
        assert not topics_acl.device_may_publish(pk, dn, f"/sys/{pk}/{dn}/thing/event/property/post")
        assert not topics_acl.device_may_subscribe(pk, dn, f"/sys/{pk}/{dn}/#")


_NAMESPACE = [  # an independent statement of the namespace, as regular expressions
    r"/sys/{pk}/{dn}(/.*)?",
    r"/ext/rrpc/[^/]*/sys/{pk}/{dn}(/.*)?",
    r"/ext/rrpc/[^/]*/{pk}/{dn}/user(/.*)?",
    r"/{pk}/{dn}/user(/.*)?",
    r"/ext/session/{pk}/{dn}(/.*)?",
    r"/ext/ntp/{pk}/{dn}/(request|response)",
    r"/ota/device/(inform|upgrade|progress|request)/{pk}/{dn}",
    r"/shadow/(get|update)/{pk}/{dn}",
]


def oracle_in_namespace(pk: str, dn: str, topic: str) -> bool:
    return any(re.fullmatch(p.format(pk=re.escape(pk), dn=re.escape(dn)), topic, re.S) for p in _NAMESPACE)


_LEVELS = st.sampled_from(["", "sys", "ext", "rrpc", "ota", "device", "upgrade", "inform", "shadow", "get",
                           "update", "user", "session", "ntp", "request", "thing", "service", "x",
                           PK, DN, OTHER_PK, OTHER_DN, "a1TestPk00", "cam000", "+x", "$SYS"])
_TOPIC_NAMES = st.one_of(
    st.lists(_LEVELS, min_size=1, max_size=9).map("/".join),
    st.text(alphabet="/+#$ab" + PK[:3], max_size=30),
)


@settings(max_examples=600, deadline=None)
@given(_TOPIC_NAMES)
def test_nothing_outside_the_namespace_is_ever_allowed(topic):
    if topics_acl.device_may_publish(PK, DN, topic) or topics_acl.in_namespace(PK, DN, topic):
        assert oracle_in_namespace(PK, DN, topic), topic
    if valid_topic_name(topic) and oracle_in_namespace(PK, DN, topic):
        assert topics_acl.in_namespace(PK, DN, topic)


_FILTER_LEVELS = st.one_of(_LEVELS, st.just("+"), st.just("#"))


@st.composite
def _filter_and_expansions(draw):
    levels = draw(st.lists(_FILTER_LEVELS, min_size=1, max_size=9))
    filt = "/".join(levels)
    expansions = []
    for _ in range(4):
        out: list[str] = []
        for lv in levels:
            if lv == "+":
                out.append(draw(_LEVELS))
            elif lv == "#":
                out.extend(draw(st.lists(_LEVELS, max_size=3)))
                break
            else:
                out.append(lv)
        expansions.append("/".join(out))
    return filt, expansions


@settings(max_examples=800, deadline=None)
@given(_filter_and_expansions())
def test_allowed_filters_match_only_own_topics(case):
    filt, expansions = case
    if not topics_acl.device_may_subscribe(PK, DN, filt):
        return
    assert valid_topic_filter(filt)
    for topic in expansions:
        if valid_topic_name(topic) and topic_matches(filt, topic):
            assert oracle_in_namespace(PK, DN, topic), (filt, topic)
    # the parent topic a trailing '#' also matches
    if filt.endswith("/#"):
        assert oracle_in_namespace(PK, DN, filt[:-2]), filt


@FAST
@given(st.text(max_size=40))
def test_acl_never_raises(text):
    topics_acl.device_may_publish(PK, DN, text)
    topics_acl.device_may_subscribe(PK, DN, text)
    topics_acl.in_namespace(PK, DN, text)


# --- Alink codec ------------------------------------------------------------------------------------

@pytest.mark.parametrize("topic,kind", [
    (f"/sys/{PK}/{DN}/thing/event/property/post", alink.PropertyPost()),
    (f"/sys/{PK}/{DN}/thing/event/AlarmEvent/post", alink.EventPost("AlarmEvent")),
    (f"/sys/{PK}/{DN}/thing/service/StartVod_reply", alink.ServiceReply("StartVod")),
    (f"/sys/{PK}/{DN}/thing/service/property/set_reply", alink.PropertySetReply()),
    (f"/sys/{PK}/{DN}/thing/deviceinfo/update", alink.DeviceInfoUpdate()),
    (f"/ext/rrpc/123/sys/{PK}/{DN}/thing/service/GetDeviceStatus", alink.RrpcReply("123", "GetDeviceStatus")),
    (f"/ota/device/inform/{PK}/{DN}", alink.OtaInform()),
])
def test_classify(topic, kind):
    assert alink.classify(PK, DN, topic) == kind


@pytest.mark.parametrize("topic", [
    f"/sys/{OTHER_PK}/{DN}/thing/event/property/post", f"/sys/{PK}/{DN}/thing/event/property/post/x",
    f"/sys/{PK}/{DN}/thing/event/bad-id/post", f"/sys/{PK}/{DN}/thing/service/StartVod",
    f"/sys/{PK}/{DN}/thing/service/_reply", f"/ext/rrpc/1/sys/{PK}/{OTHER_DN}/thing/service/X",
    f"/ext/rrpc//sys/{PK}/{DN}/thing/service/X", f"/{PK}/{DN}/user/x", "", "/",
])
def test_classify_other(topic):
    assert isinstance(alink.classify(PK, DN, topic), alink.Other)


def _alink_code(kind, payload: bytes, **kw) -> int:
    with pytest.raises(alink.AlinkError) as exc:
        alink.parse_uplink(kind, payload, **kw)
    return exc.value.code


def test_parse_property_post_and_event():
    msg = alink.parse_uplink(alink.PropertyPost(), json.dumps(
        {"id": "12", "version": "1.0", "params": {"AlarmSwitch": 1}, "method": "thing.event.property.post"}).encode())
    assert msg == alink.PropertyPostMsg("12", {"AlarmSwitch": 1})
    ev = alink.parse_uplink(alink.EventPost("AlarmEvent"), json.dumps(
        {"id": 7, "params": {"value": {"AlarmType": 1}, "time": 1700000000000}}).encode())
    assert ev == alink.EventPostMsg("7", "AlarmEvent", {"AlarmType": 1}, 1700000000000)


def test_parse_replies_info_and_ota():
    r = alink.parse_uplink(alink.ServiceReply("StartVod"), b'{"id":"3","code":200,"data":{"x":1}}')
    assert r == alink.ReplyMsg("3", 200, {"x": 1}, None, "StartVod", None)
    r = alink.parse_uplink(alink.RrpcReply("9", "GetDeviceStatus"), b'{"id":"9","code":"501","message":"no"}')
    assert (r.code, r.rrpc_id, r.identifier, r.message, r.data) == (501, "9", "GetDeviceStatus", "no", {})
    r = alink.parse_uplink(alink.PropertySetReply(), b'{"id":"4","code":200,"data":{}}')
    assert r.identifier is None and r.code == 200
    info = alink.parse_uplink(alink.DeviceInfoUpdate(), json.dumps({"id": "1", "method": "thing.deviceinfo.update",
        "params": [{"domain": "SYSTEM", "attrKey": "SYS_LP_SDK_VERSION", "attrValue": "1.2.13"},
                   {"attrKey": "N", "attrValue": 5}, {"attrKey": "E", "attrValue": None}]}).encode())
    assert info.attrs == {"SYS_LP_SDK_VERSION": "1.2.13", "N": "5", "E": ""}
    ota = alink.parse_uplink(alink.OtaInform(), b'{"id":"2","params":{"version":"1.0.3"}}')
    assert ota == alink.OtaInformMsg("2", "1.0.3", None)


@pytest.mark.parametrize("payload,code", [
    (b"", 6207), (b"{", 6207), (b"\xff\xfe{}", 6207), (b'{"id":"1","params":{"a":"\xc3\x28"}}', 6207),
    (b"[1,2]", 6207), (b'"id"', 6207), (b"null", 6207), (b'{"id":"1","params":{"a":NaN}}', 6207),
    (b'{"id":"1","params":{"a":1e999}}', 6207),
    (b'{"params":{}}', 460), (b'{"id":null,"params":{}}', 460), (b'{"id":true,"params":{}}', 460),
    (b'{"id":1.5,"params":{}}', 460), (b'{"id":[],"params":{}}', 460), (b'{"id":"","params":{}}', 460),
    (b'{"id":"' + b"1" * 65 + b'","params":{}}', 460), (b'{"id":-1,"params":{}}', 460),
    (b'{"id":"a\\u0000b","params":{}}', 460), (b'{"id":' + b"9" * 40 + b',"params":{}}', 460), (b'{"id":' + b"9" * 400 + b',"params":{}}', 6207),
    (b'{"id":"1"}', 460), (b'{"id":"1","params":[]}', 460), (b'{"id":"1","params":"x"}', 460),
    (b'{"id":"1","params":{},"method":"thing.service.x"}', 6300),
    (b'{"id":"1","params":' + b'{"a":' * 20 + b"1" + b"}" * 20 + b"}", 460),
    (b"[" * 5000 + b"]" * 5000, 6207),
])
def test_parse_uplink_refusals(payload, code):
    assert _alink_code(alink.PropertyPost(), payload) == code


def test_parse_limits():
    big = json.dumps({"id": "1", "params": {"FirmwareVersion": "x" * 70_000}}).encode()
    assert _alink_code(alink.PropertyPost(), big) == 460
    assert _alink_code(alink.PropertyPost(), b'{"id":"1","params":{}}', max_size=10) == 460
    many = json.dumps({"id": "1", "params": {f"p{i}": i for i in range(201)}}).encode()
    assert _alink_code(alink.PropertyPost(), many) == 6106
    assert _alink_code(alink.EventPost("AlarmEvent"), b'{"id":"1","params":{"value":[]}}') == 460
    assert _alink_code(alink.EventPost("AlarmEvent"), b'{"id":"1","params":{"value":{},"time":"x"}}') == 460
    assert _alink_code(alink.ServiceReply("X"), b'{"id":"1","code":"abc"}') == 460
    assert _alink_code(alink.ServiceReply("X"), b'{"id":"1","code":true}') == 460
    assert _alink_code(alink.ServiceReply("X"), b'{"id":"1","code":200,"message":5}') == 460
    assert _alink_code(alink.DeviceInfoUpdate(), b'{"id":"1","params":[{"attrKey":1}]}') == 460
    assert _alink_code(alink.OtaInform(), b'{"id":"1","params":{"version":3}}') == 460
    assert _alink_code(alink.Other("/x"), b'{"id":"1"}') == 6203
    err = pytest.raises(alink.AlinkError, alink.parse_uplink, alink.PropertyPost(), b'{"id":"5","params":1}')
    assert err.value.msg_id == "5"  # known id: the broker can still send a _reply


_KINDS = [alink.PropertyPost(), alink.EventPost("AlarmEvent"), alink.ServiceReply("StartVod"),
          alink.RrpcReply("1", "GetDeviceStatus"), alink.PropertySetReply(), alink.DeviceInfoUpdate(),
          alink.OtaInform(), alink.Other("/x")]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
_ENVELOPE = st.fixed_dictionaries(
    {}, optional={"id": _JSON | st.text(max_size=70) | st.integers(), "params": _JSON, "code": _JSON,
                  "data": _JSON, "message": _JSON, "method": _JSON | st.just("thing.event.property.post"),
                  "version": _JSON})


def _parse_only_alink_errors(kind, payload: bytes) -> None:
    try:
        alink.parse_uplink(kind, payload)
    except alink.AlinkError as exc:
        assert isinstance(exc.code, int) and exc.message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_KINDS), st.binary(max_size=200))
def test_fuzz_random_bytes(kind, payload):
    _parse_only_alink_errors(kind, payload)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_KINDS), _ENVELOPE)
def test_fuzz_structured_payloads(kind, body):
    _parse_only_alink_errors(kind, json.dumps(body).encode())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_KINDS), _ENVELOPE, st.integers(0, 60), st.binary(min_size=1, max_size=3))
def test_fuzz_corrupted_json(kind, body, cut, junk):
    raw = json.dumps(body).encode()
    _parse_only_alink_errors(kind, raw[:cut] + junk + raw[cut:])


@FAST
@given(st.text(max_size=60), st.binary(max_size=80))
def test_fuzz_classify_and_downlink(topic, payload):
    alink.classify(PK, DN, topic)
    try:
        alink.parse_downlink(PK, DN, topic, payload)
    except alink.AlinkError:
        pass


_IDENTS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True).filter(lambda s: not s.endswith("_reply"))
_WIRE_JSON = st.recursive(  # what survives a JSON round trip exactly: 64-bit ints, finite floats
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
_PARAMS = st.dictionaries(st.text(max_size=8), _WIRE_JSON, max_size=5)


@FAST
@given(_IDENTS, _PARAMS, st.integers(0, 2**40))
def test_builders_roundtrip(identifier, params, n):
    msg_id = str(n)
    topic, payload = alink.service_call(PK, DN, msg_id, identifier, params)
    assert alink.parse_downlink(PK, DN, topic, payload) == alink.ServiceCall(msg_id, identifier, params, None)
    topic, payload = alink.rrpc_call(PK, DN, msg_id, identifier, params)
    assert alink.parse_downlink(PK, DN, topic, payload) == alink.ServiceCall(msg_id, identifier, params, msg_id)
    topic, payload = alink.property_set(PK, DN, n, params)
    assert alink.parse_downlink(PK, DN, topic, payload) == alink.PropertySet(msg_id, params)

    # device -> cloud, through the ACL and the classifier
    topic, payload = alink.service_reply(PK, DN, msg_id, identifier, 200, params)
    assert topics_acl.device_may_publish(PK, DN, topic)
    assert alink.parse_uplink(alink.classify(PK, DN, topic), payload) == alink.ReplyMsg(
        msg_id, 200, params, "success", identifier, None)
    topic, payload = alink.service_reply(PK, DN, msg_id, identifier, 501, rrpc_id="77")
    assert topics_acl.device_may_publish(PK, DN, topic)
    assert alink.parse_uplink(alink.classify(PK, DN, topic), payload) == alink.ReplyMsg(
        msg_id, 501, {}, "service not supported", identifier, "77")
    topic, payload = alink.property_post(PK, DN, msg_id, params)
    assert topics_acl.device_may_publish(PK, DN, topic)
    assert alink.parse_uplink(alink.classify(PK, DN, topic), payload) == alink.PropertyPostMsg(msg_id, params)
    if identifier != "property":
        topic, payload = alink.event_post(PK, DN, msg_id, identifier, params, n)
        assert topics_acl.device_may_publish(PK, DN, topic)
        assert alink.parse_uplink(alink.classify(PK, DN, topic), payload) == alink.EventPostMsg(
            msg_id, identifier, params, n)

    # cloud acknowledgement of that post, as the device sees it
    post_topic = f"/sys/{PK}/{DN}/thing/event/property/post"
    topic, payload = alink.reply(post_topic, msg_id, 460, {"x": 1}, "bad")
    assert topic == post_topic + "_reply"
    assert alink.parse_downlink(PK, DN, topic, payload) == alink.AlinkReply(topic, msg_id, 460, {"x": 1}, "bad")


def test_reply_shape_is_what_the_sdk_reads():
    # linkkit reads payload["id"], ["code"], ["data"], ["message"] on every *_reply (KeyError otherwise)
    topic, payload = alink.reply(f"/sys/{PK}/{DN}/thing/event/AlarmEvent/post", "12")
    body = json.loads(payload)
    assert topic.endswith("/thing/event/AlarmEvent/post_reply")
    assert body == {"id": "12", "code": 200, "data": {}, "message": "success", "version": "1.0"}
    # an RRPC request is answered on the same topic
    rr = f"/ext/rrpc/5/sys/{PK}/{DN}/thing/service/GetDeviceStatus"
    assert alink.reply(rr, "5")[0] == rr
    # the SDK concatenates 'alink_' + id: ids on the wire are strings
    assert isinstance(json.loads(alink.service_call(PK, DN, 5, "StartVod", {})[1])["id"], str)


def test_builders_refuse_bad_identifiers():
    for bad in ("", "a/b", "+", "#", "x y", "a" * 51):
        with pytest.raises(ValueError):
            alink.service_call(PK, DN, "1", bad, {})
    with pytest.raises(ValueError):
        alink.rrpc_call(PK, DN, "a/b", "X", {})
    with pytest.raises(ValueError):
        alink.service_call(PK, DN, "1", "X", {"big": 2**64})


# --- thing model ------------------------------------------------------------------------------------

_TYPES = {"int", "float", "double", "text", "bool", "enum", "date", "struct", "array"}


def _check_data_type(dt: dict) -> None:
    assert dt["type"] in _TYPES
    specs = dt.get("specs", {})
    if dt["type"] in ("int", "float", "double"):
        assert float(specs["min"]) <= float(specs["max"])
    elif dt["type"] == "text":
        assert 0 < int(specs["length"]) <= 10240
    elif dt["type"] in ("bool", "enum"):
        assert specs and all(k.lstrip("-").isdigit() for k in specs)
    elif dt["type"] == "struct":
        assert len({m["identifier"] for m in specs}) == len(specs)
        for m in specs:
            _check_data_type(m["dataType"])
    elif dt["type"] == "array":
        assert int(specs["size"]) > 0
        _check_data_type(specs["item"])


def test_tsl_json_is_valid_and_unique():
    doc = json.loads(tsl.tsl_json("a1TestPk001"))
    assert set(doc) == {"schema", "profile", "properties", "events", "services"}
    assert doc["profile"]["productKey"] == "a1TestPk001"
    features = [f["identifier"] for part in ("properties", "events", "services") for f in doc[part]]
    assert len(features) == len(set(features)), "feature identifiers must be unique across the model"
    assert all(alink.valid_identifier(f) for f in features)
    for p in doc["properties"]:
        assert p["accessMode"] in ("r", "rw")
        _check_data_type(p["dataType"])
    for item in doc["events"] + doc["services"]:
        params = [p for p in item.get("inputData", []) + item["outputData"] if isinstance(p, dict)]
        for group in ("inputData", "outputData"):
            ids = [p["identifier"] if isinstance(p, dict) else p for p in item.get(group, [])]
            assert len(ids) == len(set(ids)), (item["identifier"], group)
        for p in params:
            _check_data_type(p["dataType"])
    # what the official SDK's thing_setup reads: post.outputData = properties, set.inputData = writable ones
    events = {e["identifier"]: e for e in doc["events"]}
    services = {s["identifier"]: s for s in doc["services"]}
    assert {p["identifier"] for p in events["post"]["outputData"]} == {p["identifier"] for p in doc["properties"]}
    assert {p["identifier"] for p in services["set"]["inputData"]} == {
        p["identifier"] for p in doc["properties"] if p["accessMode"] == "rw"}
    assert events["AlarmEvent"]["type"] == "alert"
    assert services["GetDeviceStatus"]["callType"] == "sync" and tsl.call_type("GetDeviceStatus") == "sync"
    assert tsl.call_type("StartPushStreaming") == "async" and tsl.call_type("Nope") is None
    for name in ("StartPushStreaming", "StopPushStreaming", "ForceIFrame", "TriggerPicCapture",
                 "StartTriggerRecord", "StopTriggerRecord", "QueryRecordList", "QueryMonthRecord", "StartVod",
                 "StartVodByTime", "StopVod", "GetDeviceStatus"):
        assert name in services
    assert tsl.thing_model("x")["profile"]["productKey"] == "x"
    assert tsl.THING_MODEL["profile"]["productKey"] == ""  # the shared model is not mutated


KEY = "AAECAwQFBgcICQoLDA0ODw=="
GOOD_INPUTS = {
    "StartPushStreaming": {"PushUrl": "rtmp://h/live/x?t=1", "StreamType": 0, "EncryptType": 1, "Key": KEY,
                           "Iv": KEY, "PreRecordSeconds": 5, "ForceIFrame": 1},
    "StopPushStreaming": {"StreamType": 1},
    "ForceIFrame": {"StreamType": 0},
    "TriggerPicCapture": {"UploadUrl": "http://h/p", "CaptureId": "c1"},
    "StartTriggerRecord": {"RecordId": "r", "StreamType": 0, "PreRecordSeconds": 0, "RecordSeconds": 30,
                           "PushUrl": "rtmp://h/r"},
    "StopTriggerRecord": {"RecordId": "r"},
    "QueryRecordList": {"BeginTime": 1700000000, "EndTime": 1700086400, "Type": 99, "QuerySize": 128},
    "QueryMonthRecord": {"Month": "202402"},
    "StartVod": {"FileName": "20240201_000000.mp4", "PushUrl": "rtmp://h/v", "SeekTime": 10},
    "StartVodByTime": {"BeginTime": 1, "EndTime": 2, "PushUrl": "rtmp://h/v", "EncryptType": 0},
    "StopVod": {},
    "GetDeviceStatus": {},
}


def test_good_values_accepted():
    assert set(GOOD_INPUTS) == set(tsl.SERVICES)
    for name, args in GOOD_INPUTS.items():
        assert tsl.validate_service_input(name, args) == [], name
    assert tsl.validate_properties({"FirmwareVersion": "1.0.0", "StorageStatus": 1, "StorageTotalCapacity": 30000,
                                    "StorageRemainCapacity": 12.5, "AlarmSwitch": True, "StatusLight": 0,
                                    "MotionDetectSensitivity": 5, "DayNightMode": 2}) == []
    assert tsl.validate_properties({"AlarmSwitch": 1, "StreamVideoQuality": 2}, writable_only=True) == []
    assert tsl.validate_event("AlarmEvent", {"AlarmType": 1, "AlarmPicId": "p", "Data": "{}",
                                             "AlarmTime": 1700000000}) == []
    assert tsl.validate_event("StorageError", {"StorageStatus": 5, "ErrorMessage": "I/O error"}) == []
    rec = tsl.SERVICES["QueryRecordList"]["outputData"][0]["dataType"]
    assert tsl.validate_value(rec, [{"FileName": "a", "BeginTime": 1, "EndTime": 2, "Size": 3, "Type": 1}]) == []
    assert tsl.validate_value({"type": "date", "specs": {}}, "1700000000000") == []


def _one(errors, code=460, path=None):
    assert len(errors) == 1, errors
    assert errors[0].code == code
    if path is not None:
        assert errors[0].path == path
    assert str(errors[0])
    return errors[0]


def test_each_kind_of_bad_value_rejected():
    vp = tsl.validate_properties
    _one(vp({"MotionDetectSensitivity": "3"}), path="MotionDetectSensitivity")          # wrong type
    _one(vp({"MotionDetectSensitivity": 6}))                                               # enum not member
    _one(vp({"MotionDetectSensitivity": True}))                                            # bool for enum
    _one(vp({"AlarmSwitch": 2}))                                                           # bool not 0/1
    _one(vp({"AlarmSwitch": 1.0}))
    _one(vp({"StorageTotalCapacity": -1}))                                                 # below min
    _one(vp({"StorageTotalCapacity": float("nan")}))                                       # not finite
    _one(vp({"StorageTotalCapacity": "1"}))
    _one(vp({"FirmwareVersion": "x" * 65}))                                                # text too long
    _one(vp({"FirmwareVersion": "é" * 33}))                                                # 66 UTF-8 bytes
    _one(vp({"FirmwareVersion": 1}))
    assert "not defined" in _one(vp({"Nope": 1}), code=6321).message                       # unknown property
    assert "read-only" in _one(vp({"StorageStatus": 1}, writable_only=True)).message
    _one(vp([1]), path="")
    assert len(vp({"Nope": 1, "AlarmSwitch": 3, "StatusLight": 1})) == 2                  # all errors reported

    vs = tsl.validate_service_input
    assert "not defined" in _one(vs("Reboot", {}), code=6321).message                      # unknown service
    _one(vs("set", {}))
    _one(vs("StopVod", [1]))
    assert "required" in _one(vs("StopTriggerRecord", {}), path="StopTriggerRecord.RecordId").message
    assert "no parameter" in _one(vs("StopVod", {"X": 1})).message                         # unknown input
    _one(vs("StartTriggerRecord", {**GOOD_INPUTS["StartTriggerRecord"], "RecordSeconds": 0}))   # int range
    _one(vs("StartTriggerRecord", {**GOOD_INPUTS["StartTriggerRecord"], "RecordSeconds": 3.0}))  # float for int
    _one(vs("StartTriggerRecord", {**GOOD_INPUTS["StartTriggerRecord"], "StreamType": 2}))
    _one(vs("StartPushStreaming", {**GOOD_INPUTS["StartPushStreaming"], "Key": "c2hvcnQ="}),
         path="StartPushStreaming.Key")                                                    # not 16 bytes
    _one(vs("StartPushStreaming", {**GOOD_INPUTS["StartPushStreaming"], "Iv": "!" * 24}))
    _one(vs("StartPushStreaming", {k: v for k, v in GOOD_INPUTS["StartPushStreaming"].items() if k != "Iv"}))
    _one(vs("StartPushStreaming", {**GOOD_INPUTS["StartPushStreaming"], "PushUrl": "x" * 2049}))
    _one(vs("QueryMonthRecord", {"Month": "202413"}))
    _one(vs("QueryMonthRecord", {"Month": "2024-1"}))
    _one(vs("QueryRecordList", {"BeginTime": 5, "EndTime": 4}), path="QueryRecordList.EndTime")
    _one(vs("QueryRecordList", {"BeginTime": -5, "EndTime": 4}))

    ve = tsl.validate_event
    _one(ve("post", {}), code=6321)
    _one(ve("Nope", {}), code=6321)
    _one(ve("AlarmEvent", {}), path="AlarmEvent.AlarmType")
    _one(ve("AlarmEvent", {"AlarmType": 0}))
    _one(ve("AlarmEvent", {"AlarmType": 1, "AlarmTime": 2**31}))
    _one(ve("AlarmEvent", {"AlarmType": 1, "Extra": 1}))
    _one(ve("AlarmEvent", "x"))

    rec = tsl.SERVICES["QueryRecordList"]["outputData"][0]["dataType"]
    item = {"FileName": "a", "BeginTime": 1, "EndTime": 2, "Size": 3, "Type": 1}
    _one(tsl.validate_value(rec, [item] * 129))                                            # array too long
    _one(tsl.validate_value(rec, {"a": 1}))
    _one(tsl.validate_value(rec, [{**item, "X": 1}]), path="[0].X")                        # struct member
    _one(tsl.validate_value(rec, [{k: v for k, v in item.items() if k != "Size"}]), path="[0].Size")
    _one(tsl.validate_value({"type": "date", "specs": {}}, "yesterday"))


@FAST
@given(st.sampled_from(sorted(tsl.SERVICES) + ["set", "x"]), _JSON)
def test_validators_never_raise(name, value):
    for errors in (tsl.validate_service_input(name, value), tsl.validate_event(name, value),
                   tsl.validate_properties(value), tsl.validate_properties({name: value}, writable_only=True),
                   tsl.validate_service_input(name, {"PushUrl": value, "Month": value, "Key": value,
                                                     "EncryptType": 1, "BeginTime": value, "EndTime": 3})):
        assert all(isinstance(e, tsl.TslError) for e in errors)


@FAST
@given(st.sampled_from(sorted(tsl.PROPERTIES)), _JSON)
def test_property_values_either_valid_or_one_error(name, value):
    assert len(tsl.validate_properties({name: value})) <= 1
