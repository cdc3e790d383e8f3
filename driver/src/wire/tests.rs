//! Unit tests for the wire codec.
//!
//! The `*.hex` fixtures in `driver/tests/golden/` are proton 0.40's `Message.encode()` of
//! messages built the way oslo.messaging 14.9.3 builds them (see `gen_golden.py`).
use super::*;
use fe2o3_amqp_types::messaging::message::__private::Deserializable;
use serde_json::json;

const MSG_ID: &str = "dcf6b8a5e1f94b0e8c6a2d3f4e5a0502";
const REPLY_TO: &str = "source-7c72e0b4-1f0a-4c3e-9d8b-6a5f4e3d2c1b";

fn golden(text: &str) -> Vec<u8> {
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.trim().chars())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(hex(actual), hex(expected), "{what}: bytes differ");
}

fn obj(v: Value) -> Map {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn ctx() -> Map {
    obj(json!({"user": "u", "project_id": "p1", "roles": ["admin", "reader"], "is_admin": true}))
}

fn decode_bytes(b: &[u8]) -> IncomingMessage {
    let msg: Deserializable<Message<Body<serde_amqp::Value>>> =
        serde_amqp::from_slice(b).expect("decodes");
    let inc = IncomingMessage::from_amqp(&msg.0);
    assert_eq!(IncomingMessage::decode_sections(b).unwrap(), inc);
    inc
}

#[test]
fn decode_sections_refuses_sizes_past_the_end() {
    // Found by fuzzing: an amqp-value str32 declaring 1.8 GB in a 20-byte message made the decoder
    // try to allocate it.
    let bytes = [
        0x00, 0x53, 0x70, 0x45, 0x00, 0x53, 0x77, 0xb1, 0x6c, 0xa1, 0x22, 0x6f, b'a', b'b',
    ];
    assert!(matches!(
        IncomingMessage::decode_sections(&bytes),
        Err(Malformed::Amqp(m)) if m.contains("past the end")
    ));
    // A list32 whose count exceeds its bytes, and a sound message beside them.
    let list = [0x00, 0x53, 0x77, 0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
    assert!(IncomingMessage::decode_sections(&list).is_err());
    // Found by fuzzing: an array8 of size 2 whose one str32 element (and its 2.3 GB size) lies
    // past the array's end.
    let array = [
        0x00, 0x53, 0x77, 0xe0, 0x02, 0x01, 0xb1, 0x8c, 0x2c, 0x73, 0x73, 0x8c, 0x8c,
    ];
    assert!(IncomingMessage::decode_sections(&array).is_err());
    let ok = [
        0x00, 0x53, 0x70, 0x45, 0x00, 0x53, 0x77, 0xa1, 0x02, b'{', b'}',
    ];
    assert!(IncomingMessage::decode_sections(&ok).is_ok());
}

#[test]
fn decode_sections_rejects_garbage() {
    assert!(matches!(
        IncomingMessage::decode_sections(&[0x00, 0x53, 0x73, 0xc0, 0xff]),
        Err(Malformed::Amqp(_))
    ));
}

fn notification() -> Notification {
    Notification {
        message_id: "8e2a3b8c-0d2c-4f5e-9a1b-2c3d4e5f6a7b".into(),
        publisher_id: "compute.host1".into(),
        event_type: "compute.instance.create.end".into(),
        priority: Priority::Info,
        payload: serde_json::from_str(
            r#"{"instance_id": "i-1", "size": 1.0e16, "ratio": 0.1, "tiny": 1.5e-7, "neg": -2,
                "ok": true, "none": null, "name": "\u00fcnic\u00f8de \ud83d\ude80", "list": []}"#,
        )
        .unwrap(),
        timestamp: "2024-01-01 00:00:00.123456".into(),
    }
}

fn failure() -> RemoteError {
    RemoteError {
        class: "ValueError".into(),
        module: "builtins".into(),
        message: "bad v\u{e4}lue \u{20ac} \u{1F600}".into(),
        tb: vec![
            "Traceback (most recent call last):\n".into(),
            "  File \"x.py\", line 1, in f\n    raise ValueError(\"bad\")\n".into(),
            "ValueError: bad v\u{e4}lue\n".into(),
        ],
        args: vec![json!("bad v\u{e4}lue \u{20ac} \u{1F600}")],
        kwargs: Map::new(),
    }
}

// ------------------------------------------------------------------ JSON

#[test]
fn json_matches_python_dumps() {
    let cases = include_str!("../../tests/golden/json_cases.txt");
    let mut n = 0;
    for line in cases.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(to_python_json(&v), line);
        n += 1;
    }
    assert!(n >= 30);
}

#[test]
fn floats_match_python_repr() {
    let cases = include_str!("../../tests/golden/float_cases.txt");
    let mut n = 0;
    for line in cases.lines() {
        // Parse with the standard library (correctly rounded): serde_json without its
        // `float_roundtrip` feature may be 1 ulp off when parsing.
        let f: f64 = line.parse().unwrap();
        assert_eq!(to_python_json(&json!(f)), line, "float {line}");
        n += 1;
    }
    assert_eq!(n, 3000);
}

#[test]
fn random_strings_match_python_dumps() {
    let cases = include_str!("../../tests/golden/string_cases.txt");
    let mut n = 0;
    for line in cases.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(to_python_json(&v), line);
        n += 1;
    }
    assert_eq!(n, 500);
}

#[test]
fn json_strings_escape_like_python() {
    assert_eq!(to_python_json(&json!("a\"b\\c/")), r#""a\"b\\c/""#);
    assert_eq!(to_python_json(&json!("\u{7f}\u{80}")), r#""\u007f\u0080""#);
    assert_eq!(to_python_json(&json!("\u{10FFFF}")), r#""\udbff\udfff""#);
    assert_eq!(
        to_python_json(&json!({"k": [1, {"x": null}], "e": {}})),
        r#"{"k": [1, {"x": null}], "e": {}}"#
    );
}

// ------------------------------------------------------------------ golden bytes

#[test]
fn golden_call() {
    let req = Request {
        method: "echo".into(),
        args: obj(json!({"value": 42})),
        version: Some("1.0".into()),
        namespace: Some("ns".into()),
    };
    let m = OutgoingMessage::call(
        "unicast.openstack.mytopic",
        REPLY_TO,
        MessageId::from(MSG_ID),
        &ctx(),
        &req,
        10_000,
        None,
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/call.hex")),
        "call",
    );
    // reference §2.2 capture: header [null, null, uint 10000]
    assert!(bytes.starts_with(&[
        0x00, 0x53, 0x70, 0xc0, 0x08, 0x03, 0x40, 0x40, 0x70, 0x00, 0x00, 0x27, 0x10
    ]));
    let inc = decode_bytes(&bytes);
    assert_eq!(inc.message_id, Some(MessageId::from(MSG_ID)));
    assert_eq!(inc.reply_to.as_deref(), Some(REPLY_TO));
    assert_eq!(inc.to.as_deref(), Some("unicast.openstack.mytopic"));
    assert_eq!(inc.ttl_ms, Some(10_000));
    let (c, r, cmt) = decode_request(&inc).unwrap();
    assert_eq!(c, ctx());
    assert_eq!(r, req);
    assert_eq!(cmt, None);
}

#[test]
fn golden_call_with_call_monitor() {
    let req = Request::new("sleep", obj(json!({"seconds": 1.5, "name": "caf\u{e9}"})));
    let m = OutgoingMessage::call(
        "exclusive.openstack.mytopic.srv1",
        REPLY_TO,
        MessageId::from(MSG_ID),
        &ctx(),
        &req,
        Some(60_000),
        Some(30),
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/call_monitor.hex")),
        "call_monitor",
    );
    let (_, r, cmt) = decode_request(&decode_bytes(&bytes)).unwrap();
    assert_eq!(r, req);
    assert_eq!(cmt, Some(30));
}

#[test]
fn golden_cast_matches_reference_capture() {
    let req = Request::new("noop", Map::new());
    let m = OutgoingMessage::cast(
        "exclusive.openstack.mytopic.srv1",
        &obj(json!({"user": "u"})),
        &req,
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/cast.hex")),
        "cast",
    );
    // reference §2.3 capture, byte for byte
    let mut expected = vec![
        0x00, 0x53, 0x70, 0x45, 0x00, 0x53, 0x73, 0xc0, 0x25, 0x03, 0x40, 0x40, 0xa1, 0x20,
    ];
    expected.extend_from_slice(b"exclusive.openstack.mytopic.srv1");
    expected.extend_from_slice(&[0x00, 0x53, 0x77, 0xa1, 0x45]);
    expected.extend_from_slice(
        br#"{"request": {"method": "noop", "args": {}}, "context": {"user": "u"}}"#,
    );
    assert_bytes(&bytes, &expected, "cast vs capture");
    let inc = decode_bytes(&bytes);
    assert_eq!(inc.message_id, None);
    assert_eq!(inc.reply_to, None);
    assert_eq!(inc.ttl_ms, None);
    let (c, r, cmt) = decode_request(&inc).unwrap();
    assert_eq!(c, obj(json!({"user": "u"})));
    assert_eq!(r, req);
    assert_eq!(cmt, None);
}

#[test]
fn golden_fanout() {
    let req = Request::new(
        "refresh",
        obj(json!({"ids": [1, 2, 3], "force": false, "x": null})),
    );
    let m = OutgoingMessage::cast("broadcast.openstack.mytopic.all", &ctx(), &req);
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/fanout.hex")),
        "fanout",
    );
    assert_eq!(decode_request(&decode_bytes(&bytes)).unwrap().1, req);
}

#[test]
fn golden_reply_response_matches_reference_capture() {
    let body = ReplyBody::Response(json!({"correlation-id": "c1"}));
    let m = OutgoingMessage::reply(REPLY_TO, MessageId::from(MSG_ID), &body);
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/reply_response.hex")),
        "reply",
    );
    // reference §2.4 capture shape with its 39-byte reply address
    let addr = "source-7c72aaaa-bbbb-cccc-dddd-eeeeeeee"; // 39 bytes
    assert_eq!(addr.len(), 0x27);
    let b = OutgoingMessage::reply(addr, MessageId::from(MSG_ID), &body).encode_sections();
    let mut prefix = vec![
        0x00, 0x53, 0x70, 0x45, 0x00, 0x53, 0x73, 0xc0, 0x50, 0x06, 0x40, 0x40, 0xa1, 0x27,
    ];
    prefix.extend_from_slice(addr.as_bytes());
    prefix.extend_from_slice(&[0x40, 0x40, 0xa1, 0x20]);
    prefix.extend_from_slice(MSG_ID.as_bytes());
    prefix.extend_from_slice(&[0x00, 0x53, 0x77, 0xa1, 0x26]);
    prefix.extend_from_slice(br#"{"response": {"correlation-id": "c1"}}"#);
    assert_bytes(&b, &prefix, "reply vs capture");

    let inc = decode_bytes(&bytes);
    assert_eq!(inc.correlation_id, Some(MessageId::from(MSG_ID)));
    assert_eq!(inc.to.as_deref(), Some(REPLY_TO));
    assert_eq!(decode_reply(&inc).unwrap(), body);
}

#[test]
fn golden_reply_uuid_and_ulong_correlation_ids() {
    let u = uuid::Uuid::parse_str("12345678-9abc-def0-1234-56789abcdef0").unwrap();
    let m = OutgoingMessage::reply(
        REPLY_TO,
        MessageId::Uuid(u),
        &ReplyBody::Response(Value::Null),
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/reply_null_uuid.hex")),
        "uuid",
    );
    let inc = decode_bytes(&bytes);
    assert_eq!(inc.correlation_id, Some(MessageId::Uuid(u)));
    assert_eq!(
        decode_reply(&inc).unwrap(),
        ReplyBody::Response(Value::Null)
    );

    let body = ReplyBody::Response(json!([1, "two"]));
    let m = OutgoingMessage::reply(REPLY_TO, MessageId::Ulong(123_456_789), &body);
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/reply_ulong.hex")),
        "ulong",
    );
    let inc = decode_bytes(&bytes);
    assert_eq!(inc.correlation_id, Some(MessageId::Ulong(123_456_789)));
    assert_eq!(decode_reply(&inc).unwrap(), body);
}

#[test]
fn golden_reply_failure() {
    let body = ReplyBody::Failure(failure());
    let m = OutgoingMessage::reply(REPLY_TO, MessageId::from(MSG_ID), &body);
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/reply_failure.hex")),
        "failure",
    );
    assert_eq!(decode_reply(&decode_bytes(&bytes)).unwrap(), body);
}

#[test]
fn golden_heartbeat_has_no_body_section() {
    let to = "source-7c72e0b4-1f0a-4c3e-9d8";
    let m = OutgoingMessage::heartbeat(to, MessageId::from(MSG_ID), 30_000);
    assert_eq!(m.body, None);
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/heartbeat.hex")),
        "heartbeat",
    );
    // reference §2.5: header [null, null, uint 30000], and no 0x77 section
    assert!(bytes.starts_with(&[
        0x00, 0x53, 0x70, 0xc0, 0x08, 0x03, 0x40, 0x40, 0x70, 0x00, 0x00, 0x75, 0x30
    ]));
    assert!(!bytes.windows(3).any(|w| w == [0x00, 0x53, 0x77]));
    // the capture's 31-byte reply-to gives properties `c0 48 06 40 40 a1 1f`
    let b = OutgoingMessage::heartbeat(
        "source-7c72e0b4-1f0a-4c3e-9d8b6",
        MessageId::from(MSG_ID),
        30_000,
    )
    .encode_sections();
    assert_eq!(&b[13..20], &[0x00, 0x53, 0x73, 0xc0, 0x48, 0x06, 0x40]);
    let inc = decode_bytes(&bytes);
    assert!(inc.is_heartbeat());
    assert_eq!(inc.body, IncomingBody::None);
    assert_eq!(inc.ttl_ms, Some(30_000));
    assert_eq!(inc.correlation_id, Some(MessageId::from(MSG_ID)));
    assert_eq!(decode_reply(&inc), Err(Malformed::NoBody));
}

#[test]
fn golden_notification_v1_and_v2() {
    let n = notification();
    let m = OutgoingMessage::notification(
        "unicast.openstack.notifications.info",
        &ctx(),
        &n,
        NotifyVersion::V1,
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/notify_v1.hex")),
        "notify v1",
    );
    let (c, got, v) = decode_notification(&decode_bytes(&bytes)).unwrap();
    assert_eq!((c, got, v), (ctx(), n.clone(), NotifyVersion::V1));

    let m = OutgoingMessage::notification(
        "openstack.org/om/notify/anycast/openstack/notifications.info",
        &ctx(),
        &n,
        NotifyVersion::V2,
    );
    let bytes = m.encode_sections();
    assert_bytes(
        &bytes,
        &golden(include_str!("../../tests/golden/notify_v2.hex")),
        "notify v2",
    );
    let (c, got, v) = decode_notification(&decode_bytes(&bytes)).unwrap();
    assert_eq!((c, got, v), (ctx(), n, NotifyVersion::V2));
}

#[test]
fn golden_long_address_uses_list32() {
    let to = "a".repeat(254);
    let m = OutgoingMessage::cast(to.clone(), &Map::new(), &Request::new("noop", Map::new()));
    assert_bytes(
        &m.encode_sections(),
        &golden(include_str!("../../tests/golden/cast_long_to.hex")),
        "long to",
    );
}

/// Documented difference: fe2o3 writes a 255-byte property string as str32, proton as str8.
#[test]
fn known_difference_255_byte_property_string() {
    let to = "b".repeat(255);
    let b =
        OutgoingMessage::cast(to, &Map::new(), &Request::new("noop", Map::new())).encode_sections();
    assert!(b.windows(5).any(|w| w == [0xb1, 0x00, 0x00, 0x00, 0xff]));
    // the decoded message is still identical
    assert_eq!(decode_bytes(&b).to.map(|s| s.len()), Some(255));
}

#[test]
fn body_string_encoding_switches_at_256_bytes_like_proton() {
    for (len, code) in [(0usize, 0xa1u8), (255, 0xa1), (256, 0xb1), (70_000, 0xb1)] {
        let s = "x".repeat(len);
        let e = EncodedValue::string(&s);
        assert_eq!(e.as_bytes()[0], code, "len {len}");
        let m = OutgoingMessage {
            to: "t".into(),
            message_id: None,
            reply_to: None,
            correlation_id: None,
            ttl_ms: None,
            body: Some(s.clone()),
        };
        let inc = decode_bytes(&m.encode_sections());
        assert_eq!(inc.body, IncomingBody::Text(s));
    }
}

#[test]
fn into_amqp_matches_encode_sections() {
    let m = OutgoingMessage::heartbeat("x", MessageId::Ulong(1), 5000);
    let amqp = m.clone().into_amqp();
    assert_eq!(amqp.header.as_ref().and_then(|h| h.ttl), Some(5000));
    assert!(amqp.header.as_ref().is_some_and(|h| !h.durable));
    let p = amqp.properties.as_ref().unwrap();
    assert_eq!(p.to.as_deref(), Some("x"));
    assert_eq!(p.absolute_expiry_time, None);
    let wrapped = fe2o3_amqp_types::messaging::message::__private::Serializable(&amqp);
    assert_eq!(serde_amqp::to_vec(&wrapped).unwrap(), m.encode_sections());
}

// ------------------------------------------------------------------ decoding

fn text(s: &str) -> IncomingMessage {
    IncomingMessage {
        to: Some("t".into()),
        message_id: None,
        reply_to: None,
        correlation_id: None,
        ttl_ms: None,
        body: IncomingBody::Text(s.into()),
    }
}

#[test]
fn decode_enveloped_request_and_plain_notification_forms() {
    let inner = r#"{"method": "m", "args": {"a": 1}, "version": "2.1"}"#;
    let body = json!({"request": {"oslo.version": "2.0", "oslo.message": inner}, "context": {}});
    let (_, r, _) = decode_request(&text(&to_python_json(&body))).unwrap();
    assert_eq!(r.method, "m");
    assert_eq!(r.version.as_deref(), Some("2.1"));
    assert_eq!(r.args, obj(json!({"a": 1})));
    // one envelope key only: not an envelope (oslo checks both keys)
    let body = json!({"request": {"oslo.version": "9.0", "method": "m"}});
    let (c, r, _) = decode_request(&text(&body.to_string())).unwrap();
    assert_eq!(r.method, "m");
    assert!(c.is_empty());
}

#[test]
fn decode_envelope_versions() {
    for (ver, ok) in [
        ("2.0", true),
        ("2.0.0", true),
        ("2.-1", true),
        ("2.1", false),
        ("2.0.1", false),
        ("3.0", false),
        ("1.0", false),
        ("2", false),
        ("x", false),
    ] {
        let body = json!({"request": {"oslo.version": ver, "oslo.message": "{\"method\": \"m\"}"}});
        let r = decode_request(&text(&body.to_string()));
        assert_eq!(r.is_ok(), ok, "{ver}: {r:?}");
        if !ok {
            assert_eq!(
                r.unwrap_err(),
                Malformed::UnsupportedEnvelopeVersion(ver.into())
            );
        }
    }
}

#[test]
fn decode_errors_are_typed() {
    let other = IncomingMessage {
        body: IncomingBody::Other("1 data section(s), 3 bytes".into()),
        ..text("")
    };
    assert!(matches!(decode_request(&other), Err(Malformed::NotText(_))));
    assert!(matches!(
        decode_request(&text("not json")),
        Err(Malformed::NotJson(_))
    ));
    assert_eq!(
        decode_request(&text("[1]")),
        Err(Malformed::WrongType {
            key: "body".into(),
            expected: "object",
            found: "array"
        })
    );
    assert_eq!(
        decode_request(&text("{}")),
        Err(Malformed::MissingKey("request".into()))
    );
    assert_eq!(
        decode_request(&text(r#"{"request": {}}"#)),
        Err(Malformed::MissingKey("request.method".into()))
    );
    assert_eq!(
        decode_request(&text(r#"{"request": {"method": 1}}"#)),
        Err(Malformed::WrongType {
            key: "request.method".into(),
            expected: "string",
            found: "number"
        })
    );
    assert_eq!(
        decode_request(&text(r#"{"request": {"method": "m", "args": []}}"#)),
        Err(Malformed::WrongType {
            key: "request.args".into(),
            expected: "object",
            found: "array"
        })
    );
    assert_eq!(
        decode_request(&text(r#"{"request": {"method": "m"}, "context": 3}"#)),
        Err(Malformed::WrongType {
            key: "context".into(),
            expected: "object",
            found: "number"
        })
    );
    assert!(matches!(
        decode_request(&text(
            r#"{"request": {"oslo.version": "2.0", "oslo.message": "{"}}"#
        )),
        Err(Malformed::NotJson(_))
    ));
    assert!(matches!(
        decode_request(&text(
            r#"{"request": {"method": "m"}, "call_monitor_timeout": "5"}"#
        )),
        Err(Malformed::WrongType { .. })
    ));
    assert_eq!(
        decode_notification(&text(
            r#"{"request": {"event_type": "e", "priority": "LOUD"}}"#
        )),
        Err(Malformed::BadPriority("LOUD".into()))
    );
    assert_eq!(
        decode_notification(&text(r#"{"request": {"priority": "INFO"}}"#)),
        Err(Malformed::MissingKey("request.event_type".into()))
    );
    assert!(matches!(
        decode_reply(&text(r#"{"failure": 5}"#)),
        Err(Malformed::WrongType { .. })
    ));
    // error messages are readable
    assert_eq!(
        Malformed::MissingKey("request".into()).to_string(),
        "missing key \"request\""
    );
}

#[test]
fn decode_lenient_forms() {
    // float call_monitor_timeout is truncated like int(); missing args/context are empty
    let (c, r, cmt) = decode_request(&text(
        r#"{"request": {"method": "m"}, "call_monitor_timeout": 2.9}"#,
    ))
    .unwrap();
    assert!(c.is_empty() && r.args.is_empty());
    assert_eq!(cmt, Some(2));
    // missing response is null; failure may be a JSON object too
    assert_eq!(
        decode_reply(&text("{}")).unwrap(),
        ReplyBody::Response(Value::Null)
    );
    let r = decode_reply(&text(
        r#"{"failure": {"class": "E", "module": "m", "message": "x"}}"#,
    ))
    .unwrap();
    assert_eq!(
        r,
        ReplyBody::Failure(RemoteError {
            args: vec![],
            ..RemoteError::new("E", "m", "x")
        })
    );
    // failure null + response => response
    assert_eq!(
        decode_reply(&text(r#"{"failure": null, "response": 3}"#)).unwrap(),
        ReplyBody::Response(json!(3))
    );
}

#[test]
fn incoming_bodies_are_classified() {
    use fe2o3_amqp_types::messaging::Data;
    let mk = |body: Body<serde_amqp::Value>| {
        IncomingMessage::from_amqp(&Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body,
            footer: None,
        })
    };
    assert_eq!(mk(Body::Empty).body, IncomingBody::None);
    assert_eq!(
        mk(Body::Value(AmqpValue(serde_amqp::Value::Null))).body,
        IncomingBody::None
    );
    assert_eq!(
        mk(Body::Value(AmqpValue(serde_amqp::Value::String(
            "{}".into()
        ))))
        .body,
        IncomingBody::Text("{}".into())
    );
    let data = mk(Body::Data(Batch::new(vec![Data(vec![1, 2, 3].into())])));
    assert_eq!(
        data.body,
        IncomingBody::Other("1 data section(s), 3 bytes".into())
    );
    assert!(matches!(decode_request(&data), Err(Malformed::NotText(_))));
    let map = mk(Body::Value(AmqpValue(serde_amqp::Value::Map(
        Default::default(),
    ))));
    assert_eq!(map.body, IncomingBody::Other("amqp-value map".into()));
    assert_eq!(map.to, None);
    assert_eq!(map.ttl_ms, None);
}

// ------------------------------------------------------------------ payload types

#[test]
fn remote_error_strips_remote_suffix_only_when_both_have_it() {
    let e = RemoteError::new("Boom_Remote", "mymod_Remote", "m");
    assert!(e
        .to_failure_json()
        .starts_with(r#"{"class": "Boom", "module": "mymod", "message": "m""#));
    let e = RemoteError::new("Boom_Remote", "mymod", "m");
    assert!(e
        .to_failure_json()
        .starts_with(r#"{"class": "Boom_Remote", "module": "mymod""#));
    let e = RemoteError::new("ValueError", "builtins", "bad");
    assert_eq!(
        e.to_failure_json(),
        r#"{"class": "ValueError", "module": "builtins", "message": "bad", "tb": [], "args": ["bad"], "kwargs": {}}"#
    );
    assert_eq!(
        RemoteError::from_failure_json(&e.to_failure_json()).unwrap(),
        e
    );
    assert_eq!(e.to_string(), "builtins.ValueError: bad");
    assert!(matches!(
        RemoteError::from_failure_json("nope"),
        Err(Malformed::NotJson(_))
    ));
}

#[test]
fn priorities() {
    for p in Priority::ALL {
        assert_eq!(p.as_lower().parse::<Priority>().unwrap(), p);
        assert_eq!(p.as_upper().parse::<Priority>().unwrap(), p);
        assert_eq!(p.as_upper().to_ascii_lowercase(), p.as_lower());
    }
    assert_eq!("warning".parse::<Priority>().unwrap(), Priority::Warn);
    assert_eq!("WARNING".parse::<Priority>().unwrap(), Priority::Warn);
    assert!("loud".parse::<Priority>().is_err());
}

#[test]
fn message_ids() {
    let MessageId::String(s) = MessageId::random() else {
        panic!("random ids are strings")
    };
    assert_eq!(s.len(), 32);
    assert!(s
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    for id in [
        MessageId::from("x"),
        MessageId::Ulong(7),
        MessageId::Binary(vec![1, 2]),
        MessageId::Uuid(uuid::Uuid::new_v4()),
    ] {
        assert_eq!(MessageId::from_amqp(&id.to_amqp()), id);
    }
    assert_eq!(MessageId::Binary(vec![0xab, 1]).to_string(), "ab01");
}

#[test]
fn python_timestamps() {
    use std::time::{Duration, UNIX_EPOCH};
    assert_eq!(python_utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00");
    let t = UNIX_EPOCH + Duration::from_micros(1_704_067_200_123_456);
    assert_eq!(python_utc_timestamp(t), "2024-01-01 00:00:00.123456");
    let t = UNIX_EPOCH + Duration::from_secs(951_825_599) + Duration::from_micros(5);
    assert_eq!(python_utc_timestamp(t), "2000-02-29 11:59:59.000005");
    let n = Notification::new("p", "e", Priority::Info, Value::Null);
    assert_eq!(n.message_id.len(), 36);
    assert!(n.timestamp.len() >= 19);
}

/// Peer input must never panic: truncated and bit-flipped payloads (deterministic
/// xorshift mutations of every golden message) decode to a value or a typed error.
#[test]
fn mutated_payloads_never_panic() {
    let fixtures = [
        include_str!("../../tests/golden/call.hex"),
        include_str!("../../tests/golden/call_monitor.hex"),
        include_str!("../../tests/golden/cast.hex"),
        include_str!("../../tests/golden/reply_failure.hex"),
        include_str!("../../tests/golden/reply_null_uuid.hex"),
        include_str!("../../tests/golden/heartbeat.hex"),
        include_str!("../../tests/golden/notify_v2.hex"),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0usize, 0usize);
    for f in fixtures {
        let base = golden(f);
        for cut in 0..base.len() {
            let _ = IncomingMessage::decode_sections(&base[..cut]);
        }
        for _ in 0..2000 {
            let mut b = base.clone();
            for _ in 0..(1 + next() % 4) {
                let i = usize::try_from(next() % b.len() as u64).unwrap_or(0);
                b[i] = u8::try_from(next() & 0xff).unwrap_or(0);
            }
            match IncomingMessage::decode_sections(&b) {
                Ok(m) => {
                    ok += 1;
                    let _ = decode_request(&m);
                    let _ = decode_reply(&m);
                    let _ = decode_notification(&m);
                }
                Err(e) => {
                    err += 1;
                    assert!(matches!(e, Malformed::Amqp(_)));
                }
            }
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok} err {err}");
}
