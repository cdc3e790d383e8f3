#!/usr/bin/env python3
"""Regenerates the golden wire fixtures of driver/src/wire (run with the oslo peer venv):

    .venv-oslo/bin/python driver/tests/golden/gen_golden.py

Each message is built the way oslo.messaging 14.9.3's amqp driver builds it
(impl_amqp1.marshal_request / marshal_response, controller field assignment) and
encoded with proton's Message.encode(), i.e. the bytes of the transfer payload.
Deliberate difference: absolute-expiry-time is not set (the Rust driver omits it;
the Python receiver ignores it, and oslo sends a monotonic-clock value).

Also writes json_cases.txt: one json.dumps() output per line (ensure_ascii, default
separators), used to check to_python_json().
"""
import math
import os
import random
import struct
import uuid

import proton
from oslo_messaging._drivers import common
from oslo_messaging._drivers.impl_amqp1 import marshal_request, marshal_response
from oslo_serialization import jsonutils

HERE = os.path.dirname(os.path.abspath(__file__))
MSG_ID = "dcf6b8a5e1f94b0e8c6a2d3f4e5a0502"
REPLY_TO = "source-7c72e0b4-1f0a-4c3e-9d8b-6a5f4e3d2c1b"
CTX = {"user": "u", "project_id": "p1", "roles": ["admin", "reader"], "is_admin": True}


def out(name, msg, note):
    data = msg.encode()
    with open(os.path.join(HERE, name + ".hex"), "w") as f:
        f.write("# " + note + "\n")
        f.write(data.hex() + "\n")


def request(method, args, namespace=None, version=None):
    msg = dict(method=method)
    msg["args"] = args
    if namespace is not None:
        msg["namespace"] = namespace
    if version is not None:
        msg["version"] = version
    return msg


def main():
    # RPC call: ttl = timeout, message-id = uuid4().hex, reply-to = dynamic address
    m = marshal_request(request("echo", {"value": 42}, "ns", "1.0"), CTX)
    m.address = "unicast.openstack.mytopic"
    m.id = MSG_ID
    m.reply_to = REPLY_TO
    m.ttl = 10
    out("call", m, "rpc call, timeout 10 s, namespace ns, version 1.0")

    m = marshal_request(request("sleep", {"seconds": 1.5, "name": "caf\u00e9"}), CTX,
                        call_monitor_timeout=30)
    m.address = "exclusive.openstack.mytopic.srv1"
    m.id = MSG_ID
    m.reply_to = REPLY_TO
    m.ttl = 60
    out("call_monitor", m, "rpc call, timeout 60 s, call_monitor_timeout 30")

    m = marshal_request(request("noop", {}), {"user": "u"})
    m.address = "exclusive.openstack.mytopic.srv1"
    out("cast", m, "rpc cast to one server (captured body of reference 2.3)")

    m = marshal_request(request("refresh", {"ids": [1, 2, 3], "force": False, "x": None}), CTX)
    m.address = "broadcast.openstack.mytopic.all"
    out("fanout", m, "rpc fanout cast")

    m = marshal_response({"correlation-id": "c1"}, None)
    m.address = REPLY_TO
    m.correlation_id = MSG_ID
    out("reply_response", m, "rpc reply, success (captured body of reference 2.4)")

    m = marshal_response(None, None)
    m.address = REPLY_TO
    m.correlation_id = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    out("reply_null_uuid", m, "rpc reply, response null, uuid correlation-id")

    m = marshal_response([1, "two"], None)
    m.address = REPLY_TO
    m.correlation_id = proton.ulong(123456789)
    out("reply_ulong", m, "rpc reply, ulong correlation-id")

    failure = {
        "class": "ValueError",
        "module": "builtins",
        "message": "bad v\u00e4lue \u20ac \U0001F600",
        "tb": ["Traceback (most recent call last):\n",
               "  File \"x.py\", line 1, in f\n    raise ValueError(\"bad\")\n",
               "ValueError: bad v\u00e4lue\n"],
        "args": ["bad v\u00e4lue \u20ac \U0001F600"],
        "kwargs": {},
    }
    m = proton.Message(inferred=True)
    m.body = jsonutils.dumps({"failure": jsonutils.dumps(failure)})
    m.address = REPLY_TO
    m.correlation_id = MSG_ID
    out("reply_failure", m, "rpc reply, failure (ValueError)")

    m = proton.Message()
    m.correlation_id = MSG_ID
    m.ttl = 30
    m.address = "source-7c72e0b4-1f0a-4c3e-9d8"
    out("heartbeat", m, "call-monitor heartbeat: no body section, ttl 30 s")

    notification = dict(message_id="8e2a3b8c-0d2c-4f5e-9a1b-2c3d4e5f6a7b",
                        publisher_id="compute.host1",
                        event_type="compute.instance.create.end",
                        priority="INFO",
                        payload={"instance_id": "i-1", "size": 1.0e16, "ratio": 0.1,
                                 "tiny": 1.5e-7, "neg": -2, "ok": True, "none": None,
                                 "name": "\u00fcnic\u00f8de \U0001F680", "list": []},
                        timestamp="2024-01-01 00:00:00.123456")
    m = marshal_request(notification, CTX, envelope=False)
    m.address = "unicast.openstack.notifications.info"
    out("notify_v1", m, "notification, messaging driver (1.0, no envelope)")

    m = marshal_request(notification, CTX, envelope=True)
    m.address = "openstack.org/om/notify/anycast/openstack/notifications.info"
    out("notify_v2", m, "notification, messagingv2 driver (2.0 envelope)")

    # long address: list8 -> list32 and str8 -> str32 switch points
    m = marshal_request(request("noop", {}), {})
    m.address = "a" * 254
    out("cast_long_to", m, "cast with a 254-byte address (properties become list32)")

    cases = [
        {}, [], "", "plain", "quote\" backslash\\ slash/ \b\f\n\r\t \x00\x1f\x7f",
        "\u00e9\u20ac\U0001F600\uffff", 0, -1, 2**63 - 1, -2**63, 2**64 - 1,
        0.0, -0.0, 1.0, 1.5, 0.1, 1e16, 1e15, 123456789012345.6, 1e-4, 1e-5, 1.5e-7,
        1e300, 5e-324, 1.7976931348623157e308, 2.5e+20, -3.25e-10, 100.0, 1234.5678,
        True, False, None,
        {"b": 1, "a": [1, 2, {"c": None}], "\u00fc": "x"},
        {"nested": {"empty": {}, "list": [[], {}]}},
    ]
    with open(os.path.join(HERE, "json_cases.txt"), "w") as f:
        for c in cases:
            f.write(jsonutils.dumps(c) + "\n")

    # 3000 random doubles (fixed seed): random bit patterns, decimal-looking values and
    # values around the fixed/scientific switch points.
    rnd = random.Random(20261127)
    floats = []
    while len(floats) < 1000:
        f = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        if math.isfinite(f):
            floats.append(f)
    for _ in range(1000):
        floats.append(round(rnd.uniform(-1e6, 1e6), rnd.randint(0, 8)))
    for _ in range(1000):
        floats.append(rnd.uniform(1, 10) * 10.0 ** rnd.randint(-8, 20))
    with open(os.path.join(HERE, "float_cases.txt"), "w") as f:
        for x in floats:
            f.write(jsonutils.dumps(x) + "\n")

    # 500 random strings over ASCII, C0 controls, DEL, Latin-1, BMP and astral planes
    # (no lone surrogates: they cannot appear in UTF-8 text).
    pools = [(0x20, 0x7e), (0x00, 0x1f), (0x7f, 0xff), (0x100, 0xd7ff),
             (0xe000, 0xffff), (0x10000, 0x10ffff)]
    with open(os.path.join(HERE, "string_cases.txt"), "w") as f:
        for _ in range(500):
            chars = []
            for _ in range(rnd.randint(0, 24)):
                lo, hi = rnd.choice(pools)
                chars.append(chr(rnd.randint(lo, hi)))
            f.write(jsonutils.dumps("".join(chars)) + "\n")


if __name__ == "__main__":
    main()
