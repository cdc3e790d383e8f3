//! Codec benchmark: encode (build + serialize to transfer payload bytes) and decode
//! (payload bytes -> IncomingMessage -> typed request/reply/notification) for every
//! oslo message type. Run with `cargo bench -p driver --bench codec`.
//!
//! The "3k" cases use a ~3.2 KB argument, the mean message size of oslo's
//! `tools/messages_length.yaml` (reference §10).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use driver::wire::{
    decode_notification, decode_reply, decode_request, to_python_json, IncomingMessage, Map,
    MessageId, Notification, NotifyVersion, OutgoingMessage, Priority, RemoteError, ReplyBody,
    Request, Value,
};
use serde_json::json;

const REPLY_TO: &str = "source-7c72e0b4-1f0a-4c3e-9d8b-6a5f4e3d2c1b";

fn obj(v: Value) -> Map {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn ctx() -> Map {
    obj(json!({
        "user": "u", "tenant": "t", "project_id": "p1", "user_id": "u1",
        "roles": ["admin", "reader"], "is_admin": true, "request_id": "req-5f0c8c1e-2a9b-4f6e-8d7c-1b2a3c4d5e6f",
        "read_deleted": "no", "show_deleted": false, "auth_token": null
    }))
}

fn request(size: usize) -> Request {
    let cargo: String = (0..size)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    Request::new(
        "info",
        obj(json!({"message": [7, cargo, 1.7e9, null, null]})),
    )
}

type Build = Box<dyn Fn() -> OutgoingMessage>;
type Decode = fn(&IncomingMessage) -> bool;

/// Every case, one row per oslo message type and size (build, decode). Long
/// because it is one table: splitting it would scatter the rows.
fn cases() -> Vec<(&'static str, Build, Decode)> {
    let id = MessageId::from("dcf6b8a5e1f94b0e8c6a2d3f4e5a0502");
    let small = request(16);
    let big = request(3200);
    let dec_req: Decode = |m| decode_request(m).is_ok();
    let dec_reply: Decode = |m| decode_reply(m).is_ok();
    let dec_notify: Decode = |m| decode_notification(m).is_ok();
    let dec_hb: Decode = |m| m.is_heartbeat();
    let n = Notification {
        message_id: "8e2a3b8c-0d2c-4f5e-9a1b-2c3d4e5f6a7b".into(),
        publisher_id: "compute.host1".into(),
        event_type: "compute.instance.create.end".into(),
        priority: Priority::Info,
        payload: json!({"instance_id": "i-1", "state": "active", "memory_mb": 2048, "vcpus": 2,
                        "display_name": "vm-\u{e9}t\u{e9}", "metadata": {"k": "v"}}),
        timestamp: "2024-01-01 00:00:00.123456".into(),
    };
    let failure = RemoteError {
        tb: vec![
            "Traceback (most recent call last):\n".into(),
            "  File \"server.py\", line 10, in dispatch\n    raise ValueError(\"bad\")\n".into(),
            "ValueError: bad value\n".into(),
        ],
        ..RemoteError::new("ValueError", "builtins", "bad value")
    };
    let (c1, c2, c3, c4) = (ctx(), ctx(), ctx(), ctx());
    let (s1, s2, s3) = (small.clone(), small.clone(), small);
    let (id1, id2, id3, id4, id5) = (id.clone(), id.clone(), id.clone(), id.clone(), id);
    let (n1, n2) = (n.clone(), n);
    vec![
        (
            "call",
            Box::new(move || {
                OutgoingMessage::call(
                    "unicast.openstack.mytopic",
                    REPLY_TO,
                    id1.clone(),
                    &c1,
                    &s1,
                    60_000,
                    None,
                )
            }),
            dec_req,
        ),
        (
            "call_3k",
            Box::new(move || {
                OutgoingMessage::call(
                    "unicast.openstack.mytopic",
                    REPLY_TO,
                    id2.clone(),
                    &c2,
                    &big,
                    60_000,
                    None,
                )
            }),
            dec_req,
        ),
        (
            "call_monitor",
            Box::new(move || {
                OutgoingMessage::call(
                    "unicast.openstack.mytopic",
                    REPLY_TO,
                    id3.clone(),
                    &c3,
                    &s2,
                    60_000,
                    Some(30),
                )
            }),
            dec_req,
        ),
        (
            "cast",
            Box::new(move || OutgoingMessage::cast("exclusive.openstack.mytopic.srv1", &c4, &s3)),
            dec_req,
        ),
        (
            "fanout",
            Box::new(move || {
                OutgoingMessage::cast("broadcast.openstack.mytopic.all", &Map::new(), &request(16))
            }),
            dec_req,
        ),
        (
            "reply_response",
            Box::new(move || {
                OutgoingMessage::reply(
                    REPLY_TO,
                    id4.clone(),
                    &ReplyBody::Response(json!([7, "x", 1.7e9, 1.7e9, null])),
                )
            }),
            dec_reply,
        ),
        (
            "reply_failure",
            Box::new(move || {
                OutgoingMessage::reply(REPLY_TO, id5.clone(), &ReplyBody::Failure(failure.clone()))
            }),
            dec_reply,
        ),
        (
            "heartbeat",
            Box::new(|| OutgoingMessage::heartbeat(REPLY_TO, MessageId::Ulong(1), 30_000)),
            dec_hb,
        ),
        (
            "notify_v1",
            Box::new(move || {
                OutgoingMessage::notification(
                    "unicast.openstack.notifications.info",
                    &ctx(),
                    &n1,
                    NotifyVersion::V1,
                )
            }),
            dec_notify,
        ),
        (
            "notify_v2",
            Box::new(move || {
                OutgoingMessage::notification(
                    "unicast.openstack.notifications.info",
                    &ctx(),
                    &n2,
                    NotifyVersion::V2,
                )
            }),
            dec_notify,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, build, decode) in cases() {
        let bytes = build().encode_sections();
        // Sanity: what we benchmark decodes.
        let inc =
            IncomingMessage::decode_sections(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(decode(&inc), "{name} does not decode");
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("encode", |b| {
            b.iter(|| black_box(build().encode_sections()))
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                let m = IncomingMessage::decode_sections(black_box(&bytes));
                black_box(m.map(|m| decode(&m)))
            })
        });
        g.finish();
    }
    let v: Value = serde_json::from_str(
        include_str!("../tests/golden/json_cases.txt")
            .lines()
            .last()
            .unwrap_or("{}"),
    )
    .unwrap_or(Value::Null);
    c.bench_function("to_python_json/small", |b| {
        b.iter(|| black_box(to_python_json(black_box(&v))))
    });
    let floats: Vec<Value> = include_str!("../tests/golden/float_cases.txt")
        .lines()
        .take(200)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let fv = Value::Array(floats);
    c.bench_function("to_python_json/200_floats", |b| {
        b.iter(|| black_box(to_python_json(black_box(&fv))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
