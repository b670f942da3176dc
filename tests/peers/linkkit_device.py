"""A camera built on the official device SDK (aliyun-iot-linkkit), driven by a test.

Runs under the isolated interpreter of .venv-linkkit (the SDK needs paho-mqtt<2).
Prints one JSON object per line on stdout for everything that happens; reads commands
(one JSON object per line) on stdin: {"cmd": "post_property", "params": {...}},
{"cmd": "event", "identifier": "...", "value": {...}}, {"cmd": "quit"}.
Service calls are answered with code 200 and data {"Echo": <the params>} unless the
service is "GetDeviceStatus" (sync/RRPC), answered with {"Status": "ok"}.
"""

import argparse
import json
import sys
import threading
import time

from linkkit import linkkit


def emit(kind, **kw):
    sys.stdout.write(json.dumps({"kind": kind, **kw}) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--product-key", required=True)
    ap.add_argument("--device-name", required=True)
    ap.add_argument("--device-secret", required=True)
    ap.add_argument("--tsl", required=True, help="path of the thing model JSON")
    a = ap.parse_args()

    lk = linkkit.LinkKit(host_name=a.host, product_key=a.product_key, device_name=a.device_name,
                         device_secret=a.device_secret)
    lk.config_mqtt(port=a.port, secure="", keep_alive=60, auto_reconnect_min_sec=1, auto_reconnect_max_sec=2)
    lk.thing_setup(a.tsl)

    def on_connect(session_flag, rc, userdata):
        emit("connect", rc=rc)

    def on_disconnect(rc, userdata):
        emit("disconnect", rc=rc)

    def on_thing_call_service(identifier, request_id, params, userdata):
        emit("service", identifier=identifier, request_id=str(request_id), params=params)
        lk.thing_answer_service(identifier, request_id, 200, {"Echo": params} if identifier != "GetDeviceStatus" else {"Status": "ok"})

    def on_thing_prop_changed(params, userdata):
        emit("property_set", params=params)

    def on_thing_prop_post(request_id, code, data, message, userdata):
        emit("property_post_reply", code=code, message=message)

    def on_thing_event_post(event, request_id, code, data, message, userdata):
        emit("event_post_reply", event=event, code=code, message=message)

    def on_thing_enable(userdata):
        emit("thing_enable")

    lk.on_connect = on_connect
    lk.on_disconnect = on_disconnect
    lk.on_thing_call_service = on_thing_call_service
    lk.on_thing_prop_changed = on_thing_prop_changed
    lk.on_thing_prop_post = on_thing_prop_post
    lk.on_thing_event_post = on_thing_event_post
    lk.on_thing_enable = on_thing_enable
    lk.connect_async()

    for line in sys.stdin:
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        if cmd.get("cmd") == "post_property":
            rc, mid = lk.thing_post_property(cmd["params"])
            emit("sent", what="property", rc=rc)
        elif cmd.get("cmd") == "event":
            rc, mid = lk.thing_trigger_event((cmd["identifier"], cmd["value"]))
            emit("sent", what="event", rc=rc)
        elif cmd.get("cmd") == "quit":
            break
    lk.disconnect()
    time.sleep(0.5)
    emit("exit")


if __name__ == "__main__":
    main()
