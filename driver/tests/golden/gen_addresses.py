#!/usr/bin/env python3
"""Regenerates addresses.jsonl with oslo.messaging 14.9.3's own addresser (run with the
oslo peer venv): .venv-oslo/bin/python driver/tests/golden/gen_addresses.py

Each line: the configuration, the target, and the addresses oslo computes for it
(unicast, multicast, anycast, resolve(target), notify "<topic>.info").
"""
import json
import os

from oslo_messaging import Target
from oslo_messaging._drivers.amqp1_driver.addressing import (
    AddresserFactory, SERVICE_NOTIFY, SERVICE_RPC)

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = dict(legacy_server_prefix="exclusive", legacy_broadcast_prefix="broadcast",
                legacy_group_prefix="unicast", rpc_prefix="openstack.org/om/rpc",
                notify_prefix="openstack.org/om/notify", multicast="multicast",
                unicast="unicast", anycast="anycast", rpc_exchange=None,
                notify_exchange=None)
CUSTOM = dict(legacy_server_prefix="srv", legacy_broadcast_prefix="bcast",
              legacy_group_prefix="grp", rpc_prefix="my.org/rpc",
              notify_prefix="my.org/notify", multicast="all", unicast="one",
              anycast="any", rpc_exchange="rpcx", notify_exchange="notx")
EMPTY_TAGS = dict(DEFAULTS, unicast="", multicast="", anycast="", rpc_prefix="")

TARGETS = [
    dict(topic="mytopic", server="srv1"),
    dict(topic="mytopic"),
    dict(topic="mytopic", fanout=True),
    dict(topic="mytopic", server="srv1", exchange="e1"),
    dict(topic="mytopic", exchange="e2", fanout=True),
    dict(topic="mytopic", server="srv1", fanout=True),
    dict(topic="mytopic", exchange=""),
]


def main():
    out = []
    for product in ["qpid-cpp", "qpid-dispatch-router"]:
        for opts_name, opts in [("defaults", DEFAULTS), ("custom", CUSTOM),
                                ("empty_tags", EMPTY_TAGS)]:
            for control in ["openstack", "nova", ""]:
                for vhost in [None, "vh", "/"]:
                    factory = AddresserFactory(control, "dynamic", **opts)
                    a = factory({"product": product}, vhost)
                    for t in TARGETS:
                        target = Target(**t)
                        ntarget = Target(topic="%s.%s" % (t["topic"], "info"))
                        out.append(dict(
                            kind="legacy" if product == "qpid-cpp" else "routable",
                            options=opts_name, control_exchange=control, vhost=vhost,
                            target=t,
                            unicast=a.unicast_address(target, SERVICE_RPC),
                            multicast=a.multicast_address(target, SERVICE_RPC),
                            anycast=a.anycast_address(target, SERVICE_RPC),
                            resolve=a.resolve(target, SERVICE_RPC),
                            notify=a.resolve(ntarget, SERVICE_NOTIFY)))
    with open(os.path.join(HERE, "addresses.jsonl"), "w") as f:
        for row in out:
            f.write(json.dumps(row, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
