#!/usr/bin/env python3
"""amqp1-rig Python peer: the real oslo.messaging 14.9.3 AMQP 1.0 driver, driven by the harness.

The harness starts this program with the interpreter of the pinned venv (harness/peers/setup.sh) and talks to
it over a line-based JSON control channel. One peer process hosts any number of named *services*: RPC servers,
RPC clients, notifiers and notification listeners. Each service has its own oslo transport (its own AMQP
connection), as separate OpenStack processes would.

Control channel
===============

* stdin: one JSON object per line (a *request*). stdout: one JSON object per line (a *reply* or an *event*).
  Everything else the process prints (logs, proton's frame trace with the ``trace`` option, warnings) goes to
  stderr: file descriptor 1 is redirected to 2 at start-up, so stdout carries protocol lines only.
* Every request has an ``"id"`` (any JSON scalar, usually an integer) and an ``"op"``. Every request gets exactly
  one reply carrying the same id: ``{"id": ID, "ok": true, ...}`` or ``{"id": ID, "ok": false, "error": ERROR}``.
  Requests run concurrently (calls, server start-up and notifications each run on their own thread), so replies
  can come back in a different order than the requests.
* Events are unsolicited and carry no ``"id"``: ``{"event": NAME, "service": NAME, ...}``.
* A line that is not JSON, not an object, or lacks ``id``/``op`` gets ``{"id": <id or null>, "ok": false,
  "error": {"kind": "protocol", "message": ...}}``; the peer never crashes on bad input.
* EOF on stdin, a ``stop`` request without ``service``, or SIGTERM: every service is stopped (bounded to 10 s) and
  the process exits 0. The peer never outlives its stdin.

ERROR objects: ``{"kind": KIND, "class": str|null, "module": str|null, "message": str, ...}`` where KIND is

* ``remote``: the remote endpoint raised. ``class``/``module``/``message`` are exactly what the failure on the
  wire said; ``raised`` is what oslo.messaging raised in Python (``builtins.ValueError`` for builtin classes it
  rebuilds, ``oslo_messaging.rpc.client.RemoteError`` for classes outside ``allowed_remote_exmods``), ``tb`` the
  number of remote traceback lines.
* ``timeout`` (``MessagingTimeout``), ``delivery`` (``MessageDeliveryFailure``), ``invalid_target``
  (``InvalidTarget``), ``messaging`` (any other oslo ``MessagingException``), ``config`` (bad option or URL),
  ``not_ready`` (links did not attach in time), ``unknown_service``, ``bad_request`` (missing or wrong field),
  ``protocol`` (unreadable line), ``internal`` (anything else; ``class``/``module`` name the Python type).

Common request fields
---------------------

``service``: name of the service (unique within the peer). ``url``: transport URL, e.g.
``amqp://127.0.0.1:5672/``. ``config``: oslo options, ``{"SECTION": {"option": value}}``, written to a generated
config file; ``amqp`` is a shorthand for ``config.oslo_messaging_amqp`` (e.g. ``{"addressing_mode": "legacy"}``).
Booleans become ``true``/``false``; a list is written as repeated lines for ``pre_settled`` and comma-joined
otherwise. Unknown option names are rejected (kind ``config``). ``target``: ``{"topic", "server", "exchange",
"fanout", "version", "namespace"}`` (all optional except where oslo needs them). ``ctxt``: request context dict.

Ops
---

``hello`` -> ``{"versions": {"oslo.messaging", "pyngus", "python-qpid-proton", "python"}, "pid"}``

``rpc_server`` {service, url, target{topic, server?, exchange?}, endpoints, endpoint_target?{namespace?,
version?}, config?, ready_timeout? (s, default 20)} -> ``{"event": "ready", "addressing": "legacy"|"routable",
"addresses": [...]}`` once all its receiver links are attached (server defaults to the service name).
ENDPOINTS is a list; an item is a behaviour name (the method has the same name) or
``{"method": M, "behaviour": B, ...}``:

* ``echo``: returns the call's ``args`` object unchanged.
* ``value``: returns ``value`` (default null).
* ``raise`` (alias ``fail``): raises ``class`` (default ``ValueError``) of ``module`` (default ``builtins``) with
  message ``args.message``, else ``message``, else ``"failure requested"``. Builtin and importable classes are
  raised as themselves, others as a synthesised ``Exception`` subclass with that name and module.
* ``sleep`` (alias ``long_running_task``): sleeps ``args.seconds``, else ``seconds`` (default 1), returns ``args``.
* ``count``: returns how many times this method has been called, this call included.
* ``state``: oslo functional tests' TestServerEndpoint, the operation chosen by ``op`` or by the method name:
  ``add`` (ival += args.increment, returns ival), ``subtract`` (ValueError when ival would go negative),
  ``append`` (sval += args.text, returns sval), ``get`` (returns ``{"ival", "sval"}``).
  Shorthands ``add``, ``subtract``, ``append``, ``get_state`` are accepted as items.
An item may instead be in the harness scenario format, which mirrors the Rust services exactly:
``{"namespace"?, "version"? (default "1.0"), "methods": {NAME: BEHAVIOUR}}`` where BEHAVIOUR is an object with
optional ``sleep`` (duration: seconds or "50ms"/"2s"), then the first of ``raise`` ({class, module? (builtins),
message? ("<method> failed")}), ``return`` (value), ``whoami`` (returns the service name), ``state``
(``append``: append args.value, return the list; ``add``: add args.value, return the sum; ``count``: number of
state calls so far; ``get``: the list; one state per service), else the call's ``args`` (echo).
Each invocation emits ``{"event": "call", "service", "server", "method", "args", "ctxt"[, "namespace",
"version"]}`` before it runs.

``rpc_client`` {service, url, target, timeout?, call_monitor_timeout?, retry?, config?} -> ``{}``.
``call`` {service, method, args?, ctxt?, target? (overrides), timeout?, call_monitor_timeout?, retry?}
-> ``{"result": VALUE}``. ``cast`` and ``fanout`` {same, no reply expected} -> ``{}``; ``fanout`` forces
``target.fanout``. Without ``service`` but with ``url``, an implicit client per (url, config) is used.

``notifier`` {service, url, publisher_id?, driver? ("messagingv2" default | "messaging", also "v2"/"v1"),
topics? (["notifications"]), retry?, config?} -> ``{}``.
``notify`` {service, priority (audit|debug|info|warn|warning|error|critical|sample), event_type, payload?, ctxt?}
-> ``{}``, or ``ok: false`` with the send error (oslo's Notifier only logs it; the peer reports it).

``listener`` {service, url, targets [{topic, exchange?}] (default [{"topic": "notifications"}]), priorities?
(default all), action? ("ack" default | "requeue" | "requeue_once": requeue the first delivery of each
message_id, ack redeliveries), requeue? (N: requeue the first N deliveries, then ack), pool?, config?,
ready_timeout?} -> ``{"event": "ready", "addressing", "addresses"}``. Each delivery emits ``{"event":
"notification", "service", "priority", "publisher_id", "event_type", "payload", "metadata", "ctxt", "version":
"1.0"|"2.0" (plain or oslo.version envelope on the wire), "action": "ack"|"requeue"}``.

``stats`` {service?} -> ``{"services": {NAME: {...}}}``: per service its kind and counters: servers ``calls``
per method and ``state``; clients ``calls``/``casts``/``ok``/``errors`` per kind; notifiers ``sent``/``errors``;
listeners ``received`` per priority, ``acked``, ``requeued``.

Benchmark ops (``harness bench --compare python``; no per-message events, counts stay in the peer):
``bench_server`` {service, url, topic, server?, config?} -> ready as ``rpc_server`` plus ``ready_ms`` (transport to
links attached); methods ``echo`` (returns the args) and ``count`` (counts arrivals). ``bench_listener`` {service,
url, topic, config?} acknowledges and counts ``<topic>.info``. ``bench_counts`` {services: [NAME]} -> ``{"count",
"last"}`` (arrivals and the latest arrival's time.monotonic()). ``bench_loop`` {url, kind (call|cast|fanout|notify),
topic, server?, count? | duration?, workers?, payload_bytes?, warmup?, config?} -> ``{"n", "errors", "error",
"start", "end", "seconds", "latencies_us"}`` (start/end: time.monotonic(); latencies for calls only).

``stop`` {service} stops that service -> ``{"stopped": [NAME]}``; ``stop`` without service stops everything,
replies ``{"stopped": [...]}`` and exits 0.
"""

import builtins
import importlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback

# --- stdout belongs to the control channel -------------------------------------------------------------------
# Keep a private handle on the real stdout, then point fd 1 (and sys.stdout) at stderr so that nothing else
# (proton's frame trace, stray prints, C libraries) can corrupt the JSON lines.
_CHANNEL = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

_LOG_LEVEL = os.environ.get("OSLO_PEER_LOG_LEVEL", "WARNING").upper()
logging.basicConfig(stream=sys.stderr, level=getattr(logging, _LOG_LEVEL, logging.WARNING),
                    format="oslo-peer %(levelname)s %(name)s: %(message)s")
import warnings  # noqa: E402

warnings.filterwarnings("ignore")  # eventlet/oslo deprecation noise

LOG = logging.getLogger("oslo_peer")

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_messaging._drivers import common as _om_common  # noqa: E402
from oslo_messaging._metrics import client as _om_metrics  # noqa: E402

warnings.filterwarnings("ignore")  # the imports above re-enable deprecation warnings
warnings.showwarning = lambda *args, **kwargs: None  # ...and the driver classes warn on every use

_OUT_LOCK = threading.Lock()
_SHUTTING_DOWN = threading.Event()


def _json_default(value):
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def emit(obj):
    """Write one protocol line; exit quietly if the harness has gone away."""
    line = json.dumps(obj, default=_json_default, ensure_ascii=False)
    with _OUT_LOCK:
        try:
            _CHANNEL.write(line + "\n")
            _CHANNEL.flush()
        except (BrokenPipeError, ValueError, OSError):
            os._exit(0)


# --- remote failures: keep exactly what was on the wire --------------------------------------------------------
_orig_deserialize = _om_common.deserialize_remote_exception


def _deserialize_and_remember(data, allowed_remote_exmods):
    exc = _orig_deserialize(data, allowed_remote_exmods)
    try:
        failure = json.loads(str(data))
    except ValueError:
        failure = {"message": str(data)}
    try:
        exc._peer_wire_failure = failure
    except (AttributeError, TypeError):
        pass
    return exc


_om_common.deserialize_remote_exception = _deserialize_and_remember

# --- notification envelopes: remember which format (v1 plain / v2 oslo.version envelope) each one came in ------
from oslo_messaging._drivers import impl_amqp1 as _om_amqp1  # noqa: E402

_orig_unmarshal_request = _om_amqp1.unmarshal_request
_ENVELOPES = {}
_ENVELOPES_LOCK = threading.Lock()


def _unmarshal_and_note(message):
    out = _orig_unmarshal_request(message)
    try:
        request = json.loads(message.body).get("request")
        msg = out[0]
        if isinstance(msg, dict) and "event_type" in msg and "message_id" in msg:
            version = "2.0" if isinstance(request, dict) and "oslo.version" in request else "1.0"
            with _ENVELOPES_LOCK:
                if len(_ENVELOPES) > 100000:
                    _ENVELOPES.clear()
                _ENVELOPES[msg["message_id"]] = version
    except Exception:  # noqa: BLE001 - only bookkeeping
        pass
    return out


_om_amqp1.unmarshal_request = _unmarshal_and_note


def _strip_remote(name):
    if isinstance(name, str) and name.endswith("_Remote"):
        return name[: -len("_Remote")]
    return name


def error_of(exc):
    """Map an exception raised by an oslo call to the protocol's ERROR object."""
    wire = getattr(exc, "_peer_wire_failure", None)
    typ = type(exc)
    raised = "%s.%s" % (_strip_remote(typ.__module__), _strip_remote(typ.__name__))
    if isinstance(wire, dict):
        return {"kind": "remote", "class": wire.get("class"), "module": wire.get("module"),
                "message": wire.get("message", ""), "raised": raised, "tb": len(wire.get("tb") or [])}
    if isinstance(exc, oslo_messaging.RemoteError):
        return {"kind": "remote", "class": exc.exc_type, "module": None, "message": exc.value or "",
                "raised": raised, "tb": 0}
    if isinstance(exc, oslo_messaging.MessagingTimeout):
        kind = "timeout"
    elif isinstance(exc, oslo_messaging.MessageDeliveryFailure):
        kind = "delivery"
    elif isinstance(exc, oslo_messaging.InvalidTarget):
        kind = "invalid_target"
    elif isinstance(exc, (cfg.Error, oslo_messaging.InvalidTransportURL, oslo_messaging.DriverLoadFailure)):
        kind = "config"
    elif isinstance(exc, oslo_messaging.MessagingException):
        kind = "messaging"
    elif isinstance(exc, PeerError):
        return {"kind": exc.kind, "class": None, "module": None, "message": str(exc)}
    else:
        kind = "internal"
    return {"kind": kind, "class": typ.__name__, "module": typ.__module__, "message": str(exc)}


class PeerError(Exception):
    """An error with a protocol kind, raised by the peer itself."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


# --- configuration -------------------------------------------------------------------------------------------
_MULTI_OPTS = {"pre_settled"}
_TMPDIR = tempfile.mkdtemp(prefix="oslo-peer-")


def _ini_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def build_conf(req, name):
    """Write the request's options to a generated config file and load it into a fresh ConfigOpts."""
    sections = {}
    config = req.get("config") or {}
    if not isinstance(config, dict):
        raise PeerError("bad_request", "config must be an object of sections")
    for section, opts in config.items():
        if not isinstance(opts, dict):
            raise PeerError("bad_request", "config.%s must be an object of options" % section)
        sections.setdefault(section, {}).update(opts)
    amqp = req.get("amqp") or {}
    if not isinstance(amqp, dict):
        raise PeerError("bad_request", "amqp must be an object of options")
    sections.setdefault("oslo_messaging_amqp", {}).update(amqp)
    lines = []
    for section, opts in sections.items():
        lines.append("[%s]" % section)
        for key, value in opts.items():
            if isinstance(value, list):
                if key in _MULTI_OPTS:
                    lines.extend("%s = %s" % (key, _ini_value(v)) for v in value)
                else:
                    lines.append("%s = %s" % (key, ",".join(_ini_value(v) for v in value)))
            else:
                lines.append("%s = %s" % (key, _ini_value(value)))
        lines.append("")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    path = os.path.join(_TMPDIR, "%s-%d.conf" % (safe, threading.get_ident()))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    conf = cfg.ConfigOpts()
    # oslo.messaging registers the metrics options on the global CONF only, but RPCClient reads them from
    # the ConfigOpts it was given.
    conf.register_opts(_om_metrics.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf(args=[], project="oslo-peer", default_config_files=[path])
    return conf, sections


def check_options(conf, sections):
    """Reject option names that no registered option matches (oslo.config ignores them silently)."""
    for section, opts in sections.items():
        for key in opts:
            try:
                if section == "DEFAULT":
                    conf[key]
                else:
                    conf[section][key]
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                raise PeerError("config", "unknown oslo option [%s] %s" % (section, key))


def make_target(spec, **extra):
    spec = dict(spec or {})
    spec.update({k: v for k, v in extra.items() if v is not None})
    allowed = {"topic", "server", "exchange", "fanout", "version", "namespace"}
    unknown = set(spec) - allowed
    if unknown:
        raise PeerError("bad_request", "unknown target field(s): %s" % ", ".join(sorted(unknown)))
    return oslo_messaging.Target(**spec)


def _need(req, key, typ=str):
    value = req.get(key)
    if value is None:
        raise PeerError("bad_request", "missing field %r" % key)
    if not isinstance(value, typ):
        raise PeerError("bad_request", "field %r has the wrong type" % key)
    return value


def _links_of(transport):
    """(addressing, addresses, all_active) of the receiver links of this transport's driver."""
    ctrl = getattr(transport._driver, "_ctrl", None)
    if ctrl is None:
        return None, [], False
    addresses, active = [], True
    for servers in list(getattr(ctrl, "_servers", {}).values()):
        for server in list(servers.values()):
            receivers = list(getattr(server, "_receivers", []))
            if not receivers:
                active = False
            for r in receivers:
                addresses.append(r.source_address)
                active = active and bool(r.active)
    addresser = getattr(ctrl, "addresser", None)
    addressing = None
    if addresser is not None:
        cls = type(addresser).__name__.lower()
        addressing = "legacy" if "legacy" in cls else "routable" if "routable" in cls else cls
    return addressing, addresses, active and bool(addresses)


def wait_ready(transport, timeout, url):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addressing, addresses, active = _links_of(transport)
        if active:
            return {"event": "ready", "addressing": addressing, "addresses": sorted(addresses)}
        time.sleep(0.02)
    _, addresses, _ = _links_of(transport)
    raise PeerError("not_ready", "receiver links not attached within %ss (addresses: %s); is the broker at %s "
                    "running? (the peer's stderr has the driver's log)"
                    % (timeout, ", ".join(addresses) or "none", url))


# --- services --------------------------------------------------------------------------------------------------
class Service:
    kind = "service"

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.transport = None

    def checked(self, conf, sections):
        """check_options, releasing the transport when an option name is unknown."""
        try:
            check_options(conf, sections)
        except BaseException:
            self.stop()
            raise

    def stats(self):
        return {"kind": self.kind}

    def stop(self):
        if self.transport is not None:
            self.transport.cleanup()
            self.transport = None


_ALIASES = {
    "echo": ("echo", {}), "value": ("value", {}), "raise": ("raise", {}), "fail": ("raise", {}),
    "sleep": ("sleep", {}), "long_running_task": ("sleep", {}), "count": ("count", {}),
    "add": ("state", {"op": "add"}), "subtract": ("state", {"op": "subtract"}),
    "append": ("state", {"op": "append"}), "get_state": ("state", {"op": "get"}),
}
_STATE_OPS = {"add", "subtract", "append", "get"}


def _exception_class(class_name, module):
    if module in ("builtins", "exceptions"):
        cls = getattr(builtins, class_name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    else:
        try:
            cls = getattr(importlib.import_module(module), class_name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls
        except Exception:  # noqa: BLE001 - any import problem means "synthesise"
            pass
    cls = type(class_name, (Exception,), {})
    cls.__module__ = module
    return cls


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "m": 60.0,
          "min": 60.0, "mins": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_duration(value):
    """Seconds from a number or a duration string such as ``50ms``, ``2s``, ``1m 30s``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise PeerError("bad_request", "a duration is a number of seconds or a string like 50ms, got %r" % (value,))
    import re
    parts = re.findall(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zµ]+)\s*", value)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", value):
        raise PeerError("bad_request", "cannot read duration %r (e.g. 50ms, 2s, 1m 30s)" % (value,))
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            raise PeerError("bad_request", "unknown unit %r in duration %r" % (unit, value))
        total += float(number) * _UNITS[unit]
    return total


_BEHAVIOUR_KEYS = {"sleep", "echo", "return", "raise", "state", "whoami"}


def _check_behaviour(method, b):
    if not isinstance(b, dict):
        raise PeerError("bad_request", "behaviour of %s must be an object" % method)
    unknown = set(b) - _BEHAVIOUR_KEYS
    if unknown:
        raise PeerError("bad_request", "unknown behaviour key(s) for %s: %s (known: %s)"
                        % (method, ", ".join(sorted(unknown)), ", ".join(sorted(_BEHAVIOUR_KEYS))))
    if b.get("sleep") is not None:
        parse_duration(b["sleep"])
    if b.get("raise") is not None and not (isinstance(b["raise"], dict) and isinstance(b["raise"].get("class"), str)):
        raise PeerError("bad_request", "raise of %s needs a class" % method)
    if b.get("state") is not None and b["state"] not in ("append", "add", "count", "get"):
        raise PeerError("bad_request", "state of %s must be append, add, count or get" % method)


class RpcServerService(Service):
    kind = "rpc_server"

    def __init__(self, name, req):
        super().__init__(name)
        self.calls = {}
        self.ival = 0
        self.sval = ""
        self.server = None
        self.methods = {}
        endpoints = req.get("endpoints") or ["echo"]
        if not isinstance(endpoints, list):
            raise PeerError("bad_request", "endpoints must be a list")
        self.groups = []  # harness-format endpoints: (namespace, version, {method: behaviour})
        self.state = {"list": [], "sum": 0, "count": 0}
        for item in endpoints:
            if isinstance(item, dict) and "methods" in item:
                methods = item.get("methods")
                if not isinstance(methods, dict):
                    raise PeerError("bad_request", "endpoint methods must be an object of behaviours")
                for method, behaviour in methods.items():
                    _check_behaviour(method, behaviour)
                self.groups.append((item.get("namespace"), item.get("version"), methods))
                continue
            if isinstance(item, str):
                if item not in _ALIASES:
                    raise PeerError("bad_request", "unknown endpoint behaviour %r (known: %s)"
                                    % (item, ", ".join(sorted(_ALIASES))))
                behaviour, params = _ALIASES[item]
                spec = dict(params, method=item, behaviour=behaviour)
            elif isinstance(item, dict):
                spec = dict(item)
                method = spec.get("method") or spec.get("name")
                behaviour = spec.get("behaviour") or spec.get("behavior") or method
                if not isinstance(method, str) or not method:
                    raise PeerError("bad_request", "endpoint without a method name: %r" % (item,))
                if behaviour not in _ALIASES:
                    raise PeerError("bad_request", "unknown endpoint behaviour %r (known: %s)"
                                    % (behaviour, ", ".join(sorted(_ALIASES))))
                base, params = _ALIASES[behaviour]
                spec = dict(params, **spec)
                spec["method"], spec["behaviour"] = method, base
            else:
                raise PeerError("bad_request", "endpoint items are names or objects, got %r" % (item,))
            if spec["behaviour"] == "state":
                spec.setdefault("op", spec["method"])
                if spec["op"] not in _STATE_OPS:
                    raise PeerError("bad_request", "state op %r is not one of %s"
                                    % (spec["op"], ", ".join(sorted(_STATE_OPS))))
            self.methods[spec["method"]] = spec

        conf, sections = build_conf(req, name)
        target = make_target(req.get("target"))
        if not target.topic:
            raise PeerError("bad_request", "rpc_server target needs a topic")
        if not target.server:
            target = make_target(req.get("target"), server=name)
        self.target = target
        self.url = _need(req, "url")
        self.transport = oslo_messaging.get_rpc_transport(conf, url=self.url)
        endpoints = [self._harness_endpoint(ns, ver, methods) for ns, ver, methods in self.groups]
        if self.methods or not endpoints:
            endpoints.insert(0, self._endpoint(req.get("endpoint_target")))
        self.server = oslo_messaging.get_rpc_server(
            self.transport, target, endpoints, executor="threading",
            access_policy=oslo_messaging.DefaultRPCAccessPolicy)
        self.checked(conf, sections)

    def _endpoint(self, endpoint_target):
        service = self
        attrs = {}
        if endpoint_target:
            attrs["target"] = oslo_messaging.Target(**endpoint_target)
        for method in self.methods:
            attrs[method] = (lambda m: lambda _self, ctxt, **kwargs: service.invoke(m, ctxt, kwargs))(method)
        return type("PeerEndpoint", (object,), attrs)()

    def _harness_endpoint(self, namespace, version, methods):
        service = self
        attrs = {"target": oslo_messaging.Target(namespace=namespace, version=version or "1.0")}
        for method, behaviour in methods.items():
            attrs[method] = (lambda m, b: lambda _self, ctxt, **kwargs:
                             service.behave(m, b, ctxt, kwargs, namespace, version))(method, behaviour)
        return type("PeerHarnessEndpoint", (object,), attrs)()

    def behave(self, method, b, ctxt, args, namespace, version):
        """A method in the harness scenario format; mirrors the Rust runner's behaviour_handler."""
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
        emit({"event": "call", "service": self.name, "server": self.target.server, "method": method,
              "args": args, "ctxt": ctxt, "namespace": namespace, "version": version})
        if b.get("sleep") is not None:
            time.sleep(parse_duration(b["sleep"]))
        if b.get("raise") is not None:
            r = b["raise"]
            cls = _exception_class(r.get("class") or "ValueError", r.get("module") or "builtins")
            raise cls(r.get("message") if r.get("message") is not None else "%s failed" % method)
        if "return" in b:
            return b["return"]
        if b.get("whoami"):
            return self.name
        op = b.get("state")
        if op is not None:
            with self.lock:
                st = self.state
                st["count"] += 1
                value = args.get("value")
                if op == "append":
                    st["list"].append(value)
                    return list(st["list"])
                if op == "add":
                    st["sum"] += value if isinstance(value, int) and not isinstance(value, bool) else 0
                    return st["sum"]
                if op == "count":
                    return st["count"]
                return list(st["list"])
        return args

    def invoke(self, method, ctxt, args):
        spec = self.methods[method]
        with self.lock:
            n = self.calls.get(method, 0) + 1
            self.calls[method] = n
        emit({"event": "call", "service": self.name, "server": self.target.server, "method": method,
              "args": args, "ctxt": ctxt})
        behaviour = spec["behaviour"]
        if behaviour == "echo":
            return args
        if behaviour == "value":
            return spec.get("value")
        if behaviour == "raise":
            cls = _exception_class(spec.get("class") or "ValueError", spec.get("module") or "builtins")
            message = args.get("message", spec.get("message", "failure requested"))
            raise cls(message)
        if behaviour == "sleep":
            seconds = args.get("seconds", spec.get("seconds", 1))
            time.sleep(float(seconds))
            return args
        if behaviour == "count":
            return n
        op = spec["op"]
        with self.lock:
            if op == "add":
                self.ival += args.get("increment", 1)
                return self.ival
            if op == "subtract":
                increment = args.get("increment", 1)
                if self.ival < increment:
                    raise ValueError("ival can't go negative!")
                self.ival -= increment
                return self.ival
            if op == "append":
                self.sval += str(args.get("text", ""))
                return self.sval
            return {"ival": self.ival, "sval": self.sval}

    def start(self, ready_timeout):
        self.server.start()
        return wait_ready(self.transport, ready_timeout, self.url)

    def stats(self):
        with self.lock:
            return {"kind": self.kind, "server": self.target.server, "calls": dict(self.calls),
                    "state": {"ival": self.ival, "sval": self.sval, **json.loads(json.dumps(self.state))}}

    def stop(self):
        if self.server is not None:
            try:
                self.server.stop()
                self.server.wait()
            except Exception:  # noqa: BLE001
                LOG.exception("stopping rpc server %s", self.name)
            self.server = None
        super().stop()


class RpcClientService(Service):
    kind = "rpc_client"

    def __init__(self, name, req):
        super().__init__(name)
        self.counts = {"calls": 0, "casts": 0, "ok": 0, "errors": {}}
        conf, sections = build_conf(req, name)
        self.transport = oslo_messaging.get_rpc_transport(conf, url=_need(req, "url"))
        kwargs = {}
        for key in ("timeout", "call_monitor_timeout", "retry"):
            if req.get(key) is not None:
                kwargs[key] = req[key]
        target = make_target(req.get("target") or {"topic": "unset"})
        self.client = oslo_messaging.get_rpc_client(self.transport, target, **kwargs)
        self.checked(conf, sections)

    def _prepared(self, req, fanout=False):
        kwargs = dict(req.get("target") or {})
        if fanout:
            kwargs["fanout"] = True
        for key in ("timeout", "call_monitor_timeout", "retry"):
            if req.get(key) is not None:
                kwargs[key] = req[key]
        allowed = {"topic", "server", "exchange", "fanout", "version", "namespace",
                   "timeout", "call_monitor_timeout", "retry"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise PeerError("bad_request", "unknown target field(s): %s" % ", ".join(sorted(unknown)))
        return self.client.prepare(**kwargs) if kwargs else self.client

    def send(self, op, req):
        method = _need(req, "method")
        args = req.get("args") or {}
        if not isinstance(args, dict):
            raise PeerError("bad_request", "args must be an object")
        ctxt = req.get("ctxt") or {}
        client = self._prepared(req, fanout=(op == "fanout"))
        with self.lock:
            self.counts["calls" if op == "call" else "casts"] += 1
        try:
            if op == "call":
                out = {"result": client.call(ctxt, method, **args)}
            else:
                client.cast(ctxt, method, **args)
                out = {}
        except Exception as exc:  # noqa: BLE001 - every outcome is reported
            err = error_of(exc)
            with self.lock:
                self.counts["errors"][err["kind"]] = self.counts["errors"].get(err["kind"], 0) + 1
            raise _Reported(err)
        with self.lock:
            self.counts["ok"] += 1
        return out

    def stats(self):
        with self.lock:
            return {"kind": self.kind, **json.loads(json.dumps(self.counts))}


_PRIORITIES = ["audit", "debug", "info", "warn", "error", "critical", "sample"]


class NotifierService(Service):
    kind = "notifier"

    def __init__(self, name, req):
        super().__init__(name)
        self.sent, self.errors = 0, 0
        conf, sections = build_conf(req, name)
        driver = {"v1": "messaging", "v2": "messagingv2"}.get(req.get("driver"), req.get("driver") or "messagingv2")
        if driver not in ("messaging", "messagingv2"):
            raise PeerError("bad_request", "driver must be messaging (v1) or messagingv2 (v2), got %r" % driver)
        self.driver = driver
        self.transport = oslo_messaging.get_notification_transport(conf, url=_need(req, "url"))
        self._failures = threading.local()
        original = self.transport._send_notification

        def send_and_record(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            except Exception as exc:
                getattr(self._failures, "list", []).append(exc)
                raise

        self.transport._send_notification = send_and_record
        topics = req.get("topics") or ["notifications"]
        self.notifier = oslo_messaging.Notifier(self.transport, publisher_id=req.get("publisher_id") or name,
                                                driver=driver, topics=topics, retry=req.get("retry"))
        self.checked(conf, sections)

    def notify(self, req):
        priority = str(_need(req, "priority")).lower()
        if priority not in _PRIORITIES + ["warning"]:
            raise PeerError("bad_request", "unknown priority %r (known: %s)" % (priority, ", ".join(_PRIORITIES)))
        event_type = _need(req, "event_type")
        self._failures.list = []
        getattr(self.notifier, priority)(req.get("ctxt") or {}, event_type, req.get("payload"))
        failures, self._failures.list = self._failures.list, []
        with self.lock:
            if failures:
                self.errors += 1
            else:
                self.sent += 1
        if failures:
            raise _Reported(error_of(failures[0]))
        return {}

    def stats(self):
        with self.lock:
            return {"kind": self.kind, "driver": self.driver, "sent": self.sent, "errors": self.errors}


class ListenerService(Service):
    kind = "listener"

    def __init__(self, name, req):
        super().__init__(name)
        self.received, self.acked, self.requeued = {}, 0, 0
        self.seen = set()
        self.listener = None
        action = req.get("action") or "ack"
        if action not in ("ack", "requeue", "requeue_once"):
            raise PeerError("bad_request", "action must be ack, requeue or requeue_once, got %r" % action)
        self.action = action
        self.requeue_first = req.get("requeue") or 0
        if not isinstance(self.requeue_first, int) or self.requeue_first < 0:
            raise PeerError("bad_request", "requeue must be a count of deliveries to requeue")
        priorities = req.get("priorities") or _PRIORITIES
        bad = [p for p in priorities if p not in _PRIORITIES]
        if bad:
            raise PeerError("bad_request", "unknown priorities %s (known: %s)" % (bad, ", ".join(_PRIORITIES)))
        conf, sections = build_conf(req, name)
        self.url = _need(req, "url")
        self.transport = oslo_messaging.get_notification_transport(conf, url=self.url)
        targets = [make_target(t) for t in (req.get("targets") or [{"topic": "notifications"}])]
        service = self
        attrs = {p: (lambda prio: lambda _self, ctxt, publisher_id, event_type, payload, metadata:
                     service.deliver(prio, ctxt, publisher_id, event_type, payload, metadata))(p)
                 for p in priorities}
        endpoint = type("PeerNotificationEndpoint", (object,), attrs)()
        self.listener = oslo_messaging.get_notification_listener(
            self.transport, targets, [endpoint], executor="threading", allow_requeue=True,
            pool=req.get("pool"))
        self.checked(conf, sections)

    def deliver(self, priority, ctxt, publisher_id, event_type, payload, metadata):
        with self.lock:
            message_id = (metadata or {}).get("message_id")
            requeue = self.action == "requeue" or (self.action == "requeue_once" and message_id not in self.seen)
            if self.requeued < self.requeue_first:
                requeue = True
            self.seen.add(message_id)
            self.received[priority] = self.received.get(priority, 0) + 1
            if requeue:
                self.requeued += 1
            else:
                self.acked += 1
        with _ENVELOPES_LOCK:
            version = _ENVELOPES.pop((metadata or {}).get("message_id"), None)
        emit({"event": "notification", "service": self.name, "priority": priority, "publisher_id": publisher_id,
              "event_type": event_type, "payload": payload, "metadata": metadata, "ctxt": ctxt,
              "version": version, "action": "requeue" if requeue else "ack"})
        if requeue:
            return oslo_messaging.NotificationResult.REQUEUE
        return oslo_messaging.NotificationResult.HANDLED

    def start(self, ready_timeout):
        self.listener.start()
        return wait_ready(self.transport, ready_timeout, self.url)

    def stats(self):
        with self.lock:
            return {"kind": self.kind, "received": dict(self.received), "acked": self.acked,
                    "requeued": self.requeued}

    def stop(self):
        if self.listener is not None:
            try:
                self.listener.stop()
                self.listener.wait()
            except Exception:  # noqa: BLE001
                LOG.exception("stopping listener %s", self.name)
            self.listener = None
        super().stop()


# --- benchmark services and loop (harness bench --compare python) ---------------------------------------------
# The bench counts at the server and in the loop itself, and reports on the control channel only: nothing of
# the bench's control traffic travels on the broker under test, and no per-message events are emitted.
class _BenchCounter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0
        self.last = 0.0

    def hit(self):
        now = time.monotonic()
        with self.lock:
            self.n += 1
            if now > self.last:
                self.last = now

    def read(self):
        with self.lock:
            return self.n, self.last


class BenchServerService(Service):
    """An RPC server with ``echo`` (returns its arguments) and ``count`` (counts arrivals), no events."""
    kind = "bench_server"

    def __init__(self, name, req):
        super().__init__(name)
        self.counter = _BenchCounter()
        self.server = None
        t0 = time.monotonic()
        conf, sections = build_conf(req, name)
        self.url = _need(req, "url")
        self.transport = oslo_messaging.get_rpc_transport(conf, url=self.url)
        target = make_target({"topic": _need(req, "topic"), "server": req.get("server") or name})
        counter = self.counter

        class Endpoint(object):
            def echo(self, ctxt, **kwargs):
                return kwargs

            def count(self, ctxt, **kwargs):
                counter.hit()

        self.server = oslo_messaging.get_rpc_server(self.transport, target, [Endpoint()], executor="threading",
                                                    access_policy=oslo_messaging.DefaultRPCAccessPolicy)
        self.checked(conf, sections)
        self.t0 = t0

    def start(self, ready_timeout):
        self.server.start()
        ready = wait_ready(self.transport, ready_timeout, self.url)
        ready["ready_ms"] = (time.monotonic() - self.t0) * 1000.0
        return ready

    def stats(self):
        n, last = self.counter.read()
        return {"kind": self.kind, "count": n, "last": last}

    def stop(self):
        if self.server is not None:
            try:
                self.server.stop()
                self.server.wait()
            except Exception:  # noqa: BLE001
                LOG.exception("stopping bench server %s", self.name)
            self.server = None
        try:
            self.transport.cleanup()
        except Exception:  # noqa: BLE001
            pass
        super().stop()


class BenchListenerService(Service):
    """A notification listener on ``<topic>.info`` that acknowledges and counts, no events."""
    kind = "bench_listener"

    def __init__(self, name, req):
        super().__init__(name)
        self.counter = _BenchCounter()
        self.listener = None
        conf, sections = build_conf(req, name)
        self.url = _need(req, "url")
        self.transport = oslo_messaging.get_notification_transport(conf, url=self.url)
        counter = self.counter

        class Endpoint(object):
            def info(self, ctxt, publisher_id, event_type, payload, metadata):
                counter.hit()
                return oslo_messaging.NotificationResult.HANDLED

        self.listener = oslo_messaging.get_notification_listener(
            self.transport, [oslo_messaging.Target(topic=_need(req, "topic"))], [Endpoint()], executor="threading")
        self.checked(conf, sections)

    def start(self, ready_timeout):
        self.listener.start()
        return wait_ready(self.transport, ready_timeout, self.url)

    def stats(self):
        n, last = self.counter.read()
        return {"kind": self.kind, "count": n, "last": last}

    def stop(self):
        if self.listener is not None:
            try:
                self.listener.stop()
                self.listener.wait()
            except Exception:  # noqa: BLE001
                LOG.exception("stopping bench listener %s", self.name)
            self.listener = None
        try:
            self.transport.cleanup()
        except Exception:  # noqa: BLE001
            pass
        super().stop()


_BENCH_KINDS = ("call", "cast", "fanout", "notify")


class BenchClients:
    """Transports, RPC clients and notifiers of ``bench_loop``, made once per (url, config) and reused."""

    def __init__(self):
        self.lock = threading.Lock()
        self.made = {}

    def get(self, req, kind):
        url = _need(req, "url")
        key = (url, kind == "notify", json.dumps(req.get("config") or {}, sort_keys=True),
               json.dumps(req.get("amqp") or {}, sort_keys=True))
        with self.lock:
            if key in self.made:
                return self.made[key]
            conf, _sections = build_conf(req, "bench-%s" % ("notifier" if kind == "notify" else "client"))
            if kind == "notify":
                transport = oslo_messaging.get_notification_transport(conf, url=url)
                made = (transport, oslo_messaging.Notifier(transport, publisher_id="bench", driver="messagingv2",
                                                           topics=[_need(req, "topic")]))
            else:
                transport = oslo_messaging.get_rpc_transport(conf, url=url)
                made = (transport, oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="bench"),
                                                                 timeout=30))
            self.made[key] = made
            return made

    def cleanup(self):
        with self.lock:
            made, self.made = list(self.made.values()), {}
        for transport, _ in made:
            try:
                transport.cleanup()
            except Exception:  # noqa: BLE001
                pass


def bench_loop(clients, req):
    """Runs one timed loop: ``count`` operations (or for ``duration`` seconds) by ``workers`` threads.

    -> ``{"n", "errors", "error", "start", "end", "seconds", "latencies_us"}``; start/end are time.monotonic()
    (CLOCK_MONOTONIC, comparable with the server's ``last`` arrival of ``bench_counts``).
    """
    kind = _need(req, "kind")
    if kind not in _BENCH_KINDS:
        raise PeerError("bad_request", "kind must be one of %s" % ", ".join(_BENCH_KINDS))
    count = req.get("count")
    duration = float(req.get("duration") or 5.0)
    workers = int(req.get("workers") or 1)
    if workers < 1 or workers > 1024:
        raise PeerError("bad_request", "workers must be 1..1024")
    topic = _need(req, "topic")
    args = {"data": "x" * int(req.get("payload_bytes") or 0)}
    _transport, client = clients.get(req, kind)
    if kind == "notify":
        def op():
            client.info({}, "bench.event", args)
    else:
        prepared = client.prepare(topic=topic, server=req.get("server"), fanout=(kind == "fanout"))
        if kind == "call":
            def op():
                prepared.call({}, "echo", **args)
        else:
            def op():
                prepared.cast({}, "count", **args)
    if req.get("warmup"):
        for _ in range(int(req["warmup"])):
            op()
    lock = threading.Lock()
    state = {"claimed": 0, "n": 0, "errors": 0, "error": None}
    lat = []
    cap = 120.0 if count is not None else duration
    start = time.monotonic()

    def worker():
        mine = []
        while True:
            with lock:
                if count is not None and state["claimed"] >= count:
                    break
                if time.monotonic() - start >= cap:
                    break
                state["claimed"] += 1
            s = time.monotonic()
            try:
                op()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    state["errors"] += 1
                    if state["error"] is None:
                        state["error"] = error_of(exc)
                continue
            mine.append(int((time.monotonic() - s) * 1e6))
        with lock:
            state["n"] += len(mine)
            if kind == "call":
                lat.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    return {"n": state["n"], "errors": state["errors"], "error": state["error"], "start": start, "end": end,
            "seconds": end - start, "latencies_us": lat}


class _Reported(Exception):
    """Carries an already-built ERROR object to the reply."""

    def __init__(self, error):
        super().__init__(error.get("message", ""))
        self.error = error


# --- the peer --------------------------------------------------------------------------------------------------
class Peer:
    def __init__(self):
        self.services = {}
        self.lock = threading.Lock()

    def _get(self, name, kind=None):
        with self.lock:
            svc = self.services.get(name)
        if svc is None:
            with self.lock:
                starting = name in self.services
            raise PeerError("unknown_service", "service %r is still starting" % (name,) if starting
                            else "no service named %r" % (name,))
        if kind is not None and not isinstance(svc, kind):
            raise PeerError("bad_request", "service %r is a %s" % (name, svc.kind))
        return svc

    def _add(self, name, factory):
        with self.lock:
            if name in self.services:
                raise PeerError("bad_request", "service %r already exists" % (name,))
            self.services[name] = None  # reserve the name while it is built
        try:
            svc = factory()
        except BaseException:
            with self.lock:
                self.services.pop(name, None)
            raise
        with self.lock:
            self.services[name] = svc
        return svc

    def _drop(self, name):
        with self.lock:
            svc = self.services.pop(name, None)
        if svc is not None:
            svc.stop()

    def _start(self, name, factory, req):
        ready_timeout = float(req.get("ready_timeout", 20))
        svc = self._add(name, factory)
        try:
            return svc.start(ready_timeout)
        except BaseException:
            self._drop(name)
            raise

    def op_hello(self, req):
        from importlib.metadata import version
        return {"versions": {"oslo.messaging": version("oslo.messaging"), "pyngus": version("pyngus"),
                             "python-qpid-proton": version("python-qpid-proton"),
                             "python": sys.version.split()[0]},
                "pid": os.getpid()}

    def op_rpc_server(self, req):
        name = _need(req, "service")
        return self._start(name, lambda: RpcServerService(name, req), req)

    def op_listener(self, req):
        name = _need(req, "service")
        return self._start(name, lambda: ListenerService(name, req), req)

    def op_rpc_client(self, req):
        name = _need(req, "service")
        self._add(name, lambda: RpcClientService(name, req))
        return {}

    def op_notifier(self, req):
        name = _need(req, "service")
        self._add(name, lambda: NotifierService(name, req))
        return {}

    def _client_for(self, req):
        name = req.get("service")
        if name is None:
            url = _need(req, "url")
            name = "client:%s:%s" % (url, json.dumps(req.get("config") or {}, sort_keys=True)
                                     + json.dumps(req.get("amqp") or {}, sort_keys=True))
            with self.lock:
                exists = name in self.services
            if not exists:
                try:
                    self._add(name, lambda: RpcClientService(name, {"url": url, "config": req.get("config"),
                                                                    "amqp": req.get("amqp")}))
                except PeerError as exc:
                    if "already exists" not in str(exc):
                        raise
        svc = None
        for _ in range(3000):  # a concurrent request may still be building it
            with self.lock:
                present, svc = name in self.services, self.services.get(name)
            if svc is not None or not present:
                break
            time.sleep(0.01)
        if svc is None:
            raise PeerError("unknown_service", "no service named %r" % (name,))
        if not isinstance(svc, RpcClientService):
            raise PeerError("bad_request", "service %r is not an rpc_client" % (name,))
        return svc

    def op_call(self, req):
        return self._client_for(req).send("call", req)

    def op_cast(self, req):
        return self._client_for(req).send("cast", req)

    def op_fanout(self, req):
        return self._client_for(req).send("fanout", req)

    def op_notify(self, req):
        return self._get(_need(req, "service"), NotifierService).notify(req)

    def op_bench_server(self, req):
        name = _need(req, "service")
        return self._start(name, lambda: BenchServerService(name, req), req)

    def op_bench_listener(self, req):
        name = _need(req, "service")
        return self._start(name, lambda: BenchListenerService(name, req), req)

    def op_bench_counts(self, req):
        """{services: [NAME...]} -> {"count": total arrivals, "last": latest arrival (time.monotonic())}."""
        names = req.get("services")
        if not isinstance(names, list):
            raise PeerError("bad_request", "services must be a list of names")
        total, last = 0, 0.0
        for name in names:
            svc = self._get(name)
            if not isinstance(svc, (BenchServerService, BenchListenerService)):
                raise PeerError("bad_request", "service %r is not a bench service" % (name,))
            n, t = svc.counter.read()
            total, last = total + n, max(last, t)
        return {"count": total, "last": last}

    def op_bench_loop(self, req):
        with self.lock:
            if getattr(self, "bench_clients", None) is None:
                self.bench_clients = BenchClients()
        return bench_loop(self.bench_clients, req)

    def op_stats(self, req):
        with self.lock:
            items = list(self.services.items())
        name = req.get("service")
        if name is not None:
            items = [(n, s) for n, s in items if n == name]
            if not items:
                raise PeerError("unknown_service", "no service named %r" % (name,))
        return {"services": {n: s.stats() for n, s in items if s is not None}}

    def op_stop(self, req):
        name = req.get("service")
        if name is not None:
            self._get(name)
            self._drop(name)
            return {"stopped": [name]}
        return {"stopped": self.stop_all()}

    def stop_all(self, timeout=10.0):
        with self.lock:
            names = [n for n, s in self.services.items() if s is not None]
            clients, self.bench_clients = getattr(self, "bench_clients", None), None
        if clients is not None:
            clients.cleanup()
        threads = [threading.Thread(target=self._drop, args=(n,), daemon=True) for n in names]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return sorted(names)

    def handle(self, req):
        rid = req.get("id")
        op = req.get("op")
        try:
            handler = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
            if handler is None:
                raise PeerError("bad_request", "unknown op %r (known: %s)" % (op, ", ".join(
                    sorted(n[3:] for n in dir(self) if n.startswith("op_")))))
            reply = {"id": rid, "ok": True}
            reply.update(handler(req) or {})
        except _Reported as exc:
            reply = {"id": rid, "ok": False, "error": exc.error}
        except Exception as exc:  # noqa: BLE001 - the peer reports, never crashes
            if not isinstance(exc, PeerError):
                LOG.warning("op %s failed: %s", op, traceback.format_exc())
            reply = {"id": rid, "ok": False, "error": error_of(exc)}
        emit(reply)


_SYNC_OPS = {"hello", "stats", "bench_counts"}


def main():
    peer = Peer()

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    stdin = sys.stdin.buffer
    code = 0
    try:
        while True:
            raw = stdin.readline()
            if not raw:
                break
            if not raw.strip():
                continue
            try:
                req = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                emit({"id": None, "ok": False, "error": {"kind": "protocol", "class": None, "module": None,
                                                        "message": "not a JSON line: %s" % exc}})
                continue
            if not isinstance(req, dict) or "id" not in req or "op" not in req:
                rid = req.get("id") if isinstance(req, dict) else None
                emit({"id": rid, "ok": False, "error": {"kind": "protocol", "class": None, "module": None,
                                                       "message": "a request is an object with \"id\" and \"op\""}})
                continue
            if req.get("op") == "stop" and req.get("service") is None:
                stopped = peer.stop_all()
                emit({"id": req.get("id"), "ok": True, "stopped": stopped})
                break
            if req.get("op") in _SYNC_OPS:
                peer.handle(req)
            else:
                threading.Thread(target=peer.handle, args=(req,), daemon=True).start()
    except (SystemExit, KeyboardInterrupt):
        pass
    except Exception:  # noqa: BLE001
        LOG.error("control loop failed: %s", traceback.format_exc())
        code = 1
    _SHUTTING_DOWN.set()
    peer.stop_all()
    try:
        for f in os.listdir(_TMPDIR):
            os.unlink(os.path.join(_TMPDIR, f))
        os.rmdir(_TMPDIR)
    except OSError:
        pass
    with _OUT_LOCK:
        try:
            _CHANNEL.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
