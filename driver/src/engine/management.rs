//! RabbitMQ 4.x's management node: HTTP over AMQP on `/management` (a sender and a receiver
//! link with the same name and the `paired` property, both pre-settled; each request carries
//! `subject` = method, `to` = path, `reply-to` = `$me`; the answer's `correlation-id` is the
//! request's `message-id`, its `subject` the status code, its amqp-value body a map or a
//! description), as RabbitMQ's own AMQP 1.0 clients use it.
//!
//! v2 addresses (`/queues/<q>`, `/exchanges/<x>`) name nodes that must exist, so the engine
//! declares what oslo's targets need before it attaches a link ([`Decl`]): the server and group
//! queues and the notification queues (durable, shared), a fanout exchange per target, and per
//! RPC server an exclusive queue bound to it (gone with the connection; declared again after a
//! reconnect). Declarations are idempotent on the broker and remembered per connection.

use std::time::Duration;

use fe2o3_amqp::frames::amqp::{FrameBody, FrameDecoder};
use fe2o3_amqp::types::definitions::{Fields, Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp::types::messaging::{
    Body, Message, MessageId, Properties, Source, Target as AmqpTarget, TargetArchetype,
};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Flow, MaxFrameSize, Open, Transfer,
};
use fe2o3_amqp::types::primitives::{OrderedMap, Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::connector::{dial, open_hostname, sasl_choice, SaslChoice};
use super::stream::MaybeTls;
use super::Conn;
use crate::address::{parse_v2, percent_encode, v2_queue, AddressingKind, V2Node};
use crate::error::ManagementError;
use crate::options::Config;
use crate::url::HostSpec;

/// The management node's address.
const NODE: &str = "/management";

/// How long a per-connection queue outlives its last consumer (`x-expires`, milliseconds).
pub(crate) const QUEUE_EXPIRY_MS: i64 = 5 * 60 * 1000;

/// Something a v2 address needs to exist.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Decl {
    /// A durable queue; `expires` for a queue of one connection (a server's fanout queue, a named
    /// reply queue), which the broker deletes after [`QUEUE_EXPIRY_MS`] without consumers.
    Queue { name: String, expires: bool },
    /// A durable fanout exchange.
    FanoutExchange { name: String },
    /// A binding of `queue` to `exchange` with an empty key.
    Binding { exchange: String, queue: String },
}

impl Decl {
    /// The request: method, path and body.
    fn request(&self) -> (&'static str, String, Value) {
        let b = |pairs: Vec<(&str, Value)>| {
            let mut m = OrderedMap::new();
            for (k, v) in pairs {
                m.insert(Value::String(k.to_string()), v);
            }
            Value::Map(m)
        };
        let empty = || Value::Map(OrderedMap::new());
        match self {
            Decl::Queue { name, expires } => {
                let mut args = OrderedMap::new();
                if *expires {
                    args.insert(
                        Value::String("x-expires".into()),
                        Value::Long(QUEUE_EXPIRY_MS),
                    );
                }
                (
                    "PUT",
                    format!("/queues/{}", percent_encode(name)),
                    b(vec![
                        ("durable", Value::Bool(true)),
                        ("exclusive", Value::Bool(false)),
                        ("auto_delete", Value::Bool(false)),
                        ("arguments", Value::Map(args)),
                    ]),
                )
            }
            Decl::FanoutExchange { name } => (
                "PUT",
                format!("/exchanges/{}", percent_encode(name)),
                b(vec![
                    ("type", Value::String("fanout".into())),
                    ("durable", Value::Bool(true)),
                    ("auto_delete", Value::Bool(false)),
                    ("internal", Value::Bool(false)),
                    ("arguments", empty()),
                ]),
            ),
            Decl::Binding { exchange, queue } => (
                "POST",
                "/bindings".to_string(),
                b(vec![
                    ("source", Value::String(exchange.clone())),
                    ("destination_queue", Value::String(queue.clone())),
                    ("binding_key", Value::String(String::new())),
                    ("arguments", empty()),
                ]),
            ),
        }
    }

    /// `METHOD path` (bindings name their ends), for errors and logs.
    pub(crate) fn request_line(&self) -> String {
        let (method, path, _) = self.request();
        match self {
            Decl::Binding { exchange, queue } => {
                format!("{method} {path} (exchange {exchange} -> queue {queue})")
            }
            _ => format!("{method} {path}"),
        }
    }
}

/// A management session: its own short connection to the broker, one session and the link pair.
///
/// fe2o3 keys a session's links by name alone, so it cannot attach the two links of a pair (same
/// name, opposite roles) that RabbitMQ wants; this companion connection speaks the few frames it
/// needs itself (SASL, open, begin, two attaches, flow, pre-settled transfers) with fe2o3's own
/// frame types. Because declarations are made on another connection, the per-connection queues
/// (a server's fanout queue, a named reply queue) are durable with an expiry instead of exclusive.
pub(crate) struct Management {
    io: MaybeTls,
    buf: BytesMut,
    /// The broker's handle of the link it sends answers on.
    answers: Option<u32>,
    /// Credit the broker gave our request link.
    credit: u32,
    next_delivery: u32,
    next_incoming_id: u32,
    next_id: u64,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

fn failed(request: &str, description: impl Into<String>) -> ManagementError {
    ManagementError {
        request: request.to_string(),
        status: None,
        description: description.into(),
    }
}

/// Our handles for the request (sender) and answer (receiver) links.
const REQUESTS: u32 = 0;
const ANSWERS: u32 = 1;
/// Session windows and answer credit: far more than a batch of declarations needs.
const WINDOW: u32 = 65_536;
const CREDIT: u32 = 1_000;
const MAX_FRAME: usize = 1 << 20;

fn frame(ftype: u8, body: &[u8], payload: &[u8]) -> Vec<u8> {
    let size = (8 + body.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&[2, ftype, 0, 0]);
    out.extend_from_slice(body);
    out.extend_from_slice(payload);
    out
}

impl Management {
    /// Opens the companion connection to `host` and attaches the link pair, within `timeout`.
    pub(crate) async fn connect(
        cfg: &Config,
        host: &HostSpec,
        timeout: Duration,
    ) -> Result<Management, ManagementError> {
        let what = "attach /management";
        match tokio::time::timeout(timeout, Self::handshake(cfg, host)).await {
            Ok(r) => r.map_err(|e| failed(what, e)),
            Err(_) => Err(failed(what, "timed out")),
        }
    }

    /// Header, Open, Begin and the attach of the request/response link pair on the companion
    /// connection, each awaited with the same deadline: one exchange with the broker, kept in order.
    async fn handshake(cfg: &Config, host: &HostSpec) -> Result<Management, String> {
        let io = dial(cfg, host).await.map_err(|e| e.to_string())?;
        let mut m = Management {
            io,
            buf: BytesMut::new(),
            answers: None,
            credit: 0,
            next_delivery: 0,
            next_incoming_id: 0,
            next_id: 1,
        };
        if let Some(choice) = sasl_choice(cfg, host) {
            m.io.write_all(b"AMQP\x03\x01\x00\x00")
                .await
                .map_err(io_err)?;
            m.expect_header(3).await?;
            let _mechs: SaslMechanisms = m.read_sasl().await?;
            let init = match choice {
                SaslChoice::Plain { username } => {
                    let pass = host
                        .password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default();
                    let mut resp = vec![0u8];
                    resp.extend_from_slice(username.as_bytes());
                    resp.push(0);
                    resp.extend_from_slice(pass.as_bytes());
                    SaslInit {
                        mechanism: Symbol::from("PLAIN"),
                        initial_response: Some(resp.into()),
                        hostname: None,
                    }
                }
                SaslChoice::Anonymous => SaslInit {
                    mechanism: Symbol::from("ANONYMOUS"),
                    initial_response: None,
                    hostname: None,
                },
            };
            m.write(1, &to_vec(&init)?, &[]).await?;
            let outcome: SaslOutcome = m.read_sasl().await?;
            if outcome.code != SaslCode::Ok {
                return Err(format!("SASL refused: {:?}", outcome.code));
            }
        }
        m.io.write_all(b"AMQP\x00\x01\x00\x00")
            .await
            .map_err(io_err)?;
        m.expect_header(0).await?;
        let open = Open {
            container_id: format!("amqp1-rig-management-{}", uuid::Uuid::new_v4().simple()),
            hostname: open_hostname(cfg).map(str::to_string),
            max_frame_size: MaxFrameSize(MAX_FRAME as u32),
            channel_max: ChannelMax(0),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        m.write(0, &to_vec(&open)?, &[]).await?;
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: WINDOW,
            outgoing_window: WINDOW,
            handle_max: Handle(u32::MAX),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        m.write(0, &to_vec(&begin)?, &[]).await?;
        let name = format!("amqp1-rig-management-{}", uuid::Uuid::new_v4().simple());
        let mut props = Fields::new();
        props.insert(Symbol::from("paired"), Value::Bool(true));
        let attach = |handle: u32, role: Role| Attach {
            name: name.clone(),
            handle: Handle(handle),
            role: role.clone(),
            snd_settle_mode: SenderSettleMode::Settled,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(match &role {
                Role::Receiver => Source::builder().address(NODE).build(),
                Role::Sender => Source::builder().build(),
            })),
            target: Some(Box::new(TargetArchetype::Target(match &role {
                Role::Sender => AmqpTarget::builder().address(NODE).build(),
                Role::Receiver => AmqpTarget::builder().build(),
            }))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: match &role {
                Role::Sender => Some(0),
                Role::Receiver => None,
            },
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(props.clone()),
        };
        m.write(0, &to_vec(&attach(REQUESTS, Role::Sender))?, &[])
            .await?;
        m.write(0, &to_vec(&attach(ANSWERS, Role::Receiver))?, &[])
            .await?;
        // Open, Begin and both attaches answered (and credit for the request link).
        let (mut opened, mut begun, mut attached) = (false, false, 0);
        while !(opened && begun && attached == 2 && m.credit > 0) {
            match m.read_frame().await? {
                FrameBody::Open(_) => opened = true,
                FrameBody::Begin(b) => {
                    begun = true;
                    m.next_incoming_id = b.next_outgoing_id;
                }
                FrameBody::Attach(a) => {
                    let refused = match a.role {
                        Role::Sender => a.source.is_none(),
                        Role::Receiver => a.target.is_none(),
                    };
                    if refused {
                        // A refusal is followed by a detach that says why.
                        continue;
                    }
                    if a.role == Role::Sender {
                        m.answers = Some(a.handle.0);
                    }
                    attached += 1;
                    if attached == 2 {
                        m.grant().await?;
                    }
                }
                FrameBody::Flow(f) => m.on_flow(&f),
                other => m.refusal(other)?,
            }
        }
        Ok(m)
    }

    fn on_flow(&mut self, f: &Flow) {
        if f.handle == Some(Handle(REQUESTS)) {
            let count = f.delivery_count.unwrap_or(0);
            self.credit = count
                .wrapping_add(f.link_credit.unwrap_or(0))
                .wrapping_sub(self.next_delivery);
        }
    }

    /// Detach, End or Close with the broker's words; anything else is ignored.
    fn refusal(&self, f: FrameBody) -> Result<(), String> {
        let why = |e: Option<&fe2o3_amqp::types::definitions::Error>| {
            e.map(|e| crate::error::Condition::from(e).to_string())
                .unwrap_or_else(|| "no error given".into())
        };
        match f {
            FrameBody::Detach(d) => Err(format!("link detached: {}", why(d.error.as_ref()))),
            FrameBody::End(e) => Err(format!("session ended: {}", why(e.error.as_ref()))),
            FrameBody::Close(c) => Err(format!("connection closed: {}", why(c.error.as_ref()))),
            _ => Ok(()),
        }
    }

    /// Gives the answer link credit (and the session window) again.
    async fn grant(&mut self) -> Result<(), String> {
        let flow = Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: WINDOW,
            next_outgoing_id: self.next_delivery,
            outgoing_window: WINDOW,
            handle: Some(Handle(ANSWERS)),
            delivery_count: None,
            link_credit: Some(CREDIT),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        self.write(0, &to_vec(&flow)?, &[]).await
    }

    async fn write(&mut self, ftype: u8, body: &[u8], payload: &[u8]) -> Result<(), String> {
        self.io
            .write_all(&frame(ftype, body, payload))
            .await
            .map_err(io_err)?;
        self.io.flush().await.map_err(io_err)
    }

    async fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            let got = self.io.read(&mut chunk).await.map_err(io_err)?;
            if got == 0 {
                return Err("connection closed by the broker".into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    async fn expect_header(&mut self, protocol: u8) -> Result<(), String> {
        self.fill(8).await?;
        let h = self.buf.split_to(8);
        if &h[..4] != b"AMQP" || h[4] != protocol {
            return Err(format!("unexpected protocol header {:?}", &h[..]));
        }
        Ok(())
    }

    /// The next frame: its body without the 8-byte header (and the frame type).
    async fn read_raw(&mut self) -> Result<(u8, BytesMut), String> {
        self.fill(8).await?;
        let size =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if !(8..=MAX_FRAME).contains(&size) {
            return Err(format!("bad frame size {size}"));
        }
        self.fill(size).await?;
        let mut f = self.buf.split_to(size);
        let doff = f[4] as usize * 4;
        let ftype = f[5];
        if doff < 8 || doff > size {
            return Err("bad frame header".into());
        }
        let _ = f.split_to(4);
        Ok((ftype, f))
    }

    async fn read_sasl<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        let (ftype, f) = self.read_raw().await?;
        if ftype != 1 {
            return Err("expected a SASL frame".into());
        }
        let doff = f[0] as usize * 4;
        serde_amqp::from_slice(&f[doff - 4..]).map_err(|e| format!("SASL frame: {e}"))
    }

    async fn read_frame(&mut self) -> Result<FrameBody, String> {
        loop {
            let (ftype, mut f) = self.read_raw().await?;
            if ftype != 0 {
                return Err("unexpected frame type".into());
            }
            if f.len() <= (f[0] as usize * 4) - 4 {
                continue; // heartbeat
            }
            let mut decoder = FrameDecoder {};
            match decoder.decode(&mut f) {
                Ok(Some(fr)) => return Ok(fr.body),
                Ok(None) => continue,
                Err(e) => return Err(format!("frame: {e}")),
            }
        }
    }

    /// Sends `decl` and waits (within `timeout`) for its answer; 2xx is success.
    pub(crate) async fn declare(
        &mut self,
        decl: &Decl,
        timeout: Duration,
    ) -> Result<(), ManagementError> {
        let line = decl.request_line();
        match tokio::time::timeout(timeout, self.exchange(decl, &line)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(failed(&line, e)),
            Err(_) => Err(failed(&line, "no answer in time")),
        }
    }

    async fn exchange(
        &mut self,
        decl: &Decl,
        line: &str,
    ) -> Result<Result<(), ManagementError>, String> {
        let (method, path, body) = decl.request();
        let id = format!("amqp1-rig-{}", self.next_id);
        self.next_id += 1;
        let props = Properties::builder()
            .message_id(MessageId::String(id.clone()))
            .to(path)
            .subject(method)
            .reply_to("$me")
            .build();
        let msg = Message::builder().properties(props).value(body).build();
        let payload = to_vec(&Serializable(msg))?;
        while self.credit == 0 {
            match self.read_frame().await? {
                FrameBody::Flow(f) => self.on_flow(&f),
                other => self.refusal(other)?,
            }
        }
        let n = self.next_delivery;
        let transfer = Transfer {
            handle: Handle(REQUESTS),
            delivery_id: Some(n),
            delivery_tag: Some(n.to_be_bytes().to_vec().into()),
            message_format: Some(0),
            settled: Some(true),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        self.write(0, &to_vec(&transfer)?, &payload).await?;
        self.next_delivery = n.wrapping_add(1);
        self.credit -= 1;
        let mut partial: Vec<u8> = Vec::new();
        loop {
            match self.read_frame().await? {
                FrameBody::Transfer {
                    performative,
                    payload,
                } => {
                    self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
                    if Some(performative.handle.0) != self.answers {
                        continue;
                    }
                    partial.extend_from_slice(&payload);
                    if performative.more {
                        continue;
                    }
                    let bytes = std::mem::take(&mut partial);
                    self.grant().await?;
                    let Deserializable(m): Deserializable<Message<Body<Value>>> =
                        serde_amqp::from_slice(&bytes).map_err(|e| format!("answer: {e}"))?;
                    let p = m.properties.as_ref();
                    let corr = p.and_then(|p| p.correlation_id.as_ref());
                    if corr != Some(&MessageId::String(id.clone())) {
                        tracing::debug!(?corr, "management answer for another request ignored");
                        continue;
                    }
                    let status = p.and_then(|p| p.subject.as_deref()).unwrap_or("");
                    let code: Option<u16> = status.trim().parse().ok();
                    return Ok(match code {
                        Some(c) if (200..300).contains(&c) => Ok(()),
                        _ => Err(ManagementError {
                            request: line.to_string(),
                            status: code,
                            description: describe(&m.body, status),
                        }),
                    });
                }
                FrameBody::Flow(f) => self.on_flow(&f),
                other => self.refusal(other)?,
            }
        }
    }

    /// Closes the companion connection.
    pub(crate) async fn close(mut self) {
        let close = Close { error: None };
        if let Ok(body) = to_vec(&close) {
            let _ = self.write(0, &body, &[]).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match self.read_frame().await {
                    Ok(FrameBody::Close(_)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = self.io.shutdown().await;
    }
}

fn io_err(e: std::io::Error) -> String {
    e.to_string()
}

fn to_vec<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_amqp::to_vec(v).map_err(|e| format!("encode: {e}"))
}

/// What a sender to `address` needs (nothing unless it is a v2 address).
pub(crate) fn for_sender(address: &str) -> Vec<Decl> {
    match parse_v2(address) {
        Some(V2Node::Queue(name)) => vec![Decl::Queue {
            name,
            expires: false,
        }],
        Some(V2Node::Exchange { name, .. }) => vec![Decl::FanoutExchange { name }],
        None => Vec::new(),
    }
}

impl Conn {
    /// Whether addresses on this connection name nodes that must be declared.
    pub(super) fn declares(&self) -> bool {
        self.addresser.kind() == AddressingKind::Rabbitmq4
    }

    /// What a receiver on `address` consumes from, and what that needs: a queue address as it is;
    /// for a fanout exchange, `own_queue` (the subscription's queue) bound to it.
    pub(super) fn receiver_source(address: &str, own_queue: &str) -> (String, Vec<Decl>) {
        match parse_v2(address) {
            Some(V2Node::Queue(name)) => (
                address.to_string(),
                vec![Decl::Queue {
                    name,
                    expires: false,
                }],
            ),
            Some(V2Node::Exchange { name, .. }) => {
                let decls = vec![
                    Decl::FanoutExchange { name: name.clone() },
                    Decl::Queue {
                        name: own_queue.to_string(),
                        expires: true,
                    },
                    Decl::Binding {
                        exchange: name,
                        queue: own_queue.to_string(),
                    },
                ];
                (v2_queue(own_queue), decls)
            }
            None => (address.to_string(), Vec::new()),
        }
    }

    /// Declares every one of `decls` not yet answered on this connection, on a management
    /// connection of its own (opened for the batch, closed after); stops at the first failure.
    pub(super) async fn ensure(
        &mut self,
        cfg: &Config,
        decls: &[Decl],
        timeout: Duration,
    ) -> Result<(), ManagementError> {
        let todo: Vec<&Decl> = decls
            .iter()
            .filter(|d| !self.declared.contains(*d))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut m = match Management::connect(cfg, &self.host_spec, timeout).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "management node unreachable");
                return Err(e);
            }
        };
        let mut result = Ok(());
        for d in todo {
            match m.declare(d, timeout).await {
                Ok(()) => {
                    tracing::debug!(request = %d.request_line(), "declared");
                    self.declared.insert(d.clone());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "management request failed");
                    result = Err(e);
                    break;
                }
            }
        }
        m.close().await;
        result
    }
}

/// The description an error answer carries (an amqp-value string), clipped.
fn describe(body: &Body<Value>, status: &str) -> String {
    let text = match body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => format!("{other:?}"),
        },
        _ => String::new(),
    };
    let text = if text.is_empty() {
        format!("status {status:?} without description")
    } else {
        text
    };
    if text.chars().count() <= DESCRIPTION_CHARS {
        return text;
    }
    let mut out: String = text.chars().take(DESCRIPTION_CHARS).collect();
    out.push_str("...");
    out
}

/// At most this many characters of the node's description are kept.
const DESCRIPTION_CHARS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_management_protocol() {
        let q = Decl::Queue {
            name: "exclusive.openstack.t.s 1".into(),
            expires: false,
        };
        let (m, p, body) = q.request();
        assert_eq!(
            (m, p.as_str()),
            ("PUT", "/queues/exclusive.openstack.t.s%201")
        );
        let Value::Map(map) = body else {
            panic!("map body")
        };
        assert_eq!(
            map.get(&Value::String("durable".into())),
            Some(&Value::Bool(true))
        );
        let x = Decl::FanoutExchange {
            name: "broadcast.openstack.t.all".into(),
        };
        assert_eq!(x.request_line(), "PUT /exchanges/broadcast.openstack.t.all");
        let b = Decl::Binding {
            exchange: "x".into(),
            queue: "q".into(),
        };
        assert_eq!(b.request_line(), "POST /bindings (exchange x -> queue q)");
        let own = Decl::Queue {
            name: "r".into(),
            expires: true,
        };
        let Value::Map(map) = own.request().2 else {
            panic!("map body")
        };
        let Some(Value::Map(args)) = map.get(&Value::String("arguments".into())) else {
            panic!("arguments")
        };
        assert_eq!(
            args.get(&Value::String("x-expires".into())),
            Some(&Value::Long(QUEUE_EXPIRY_MS))
        );
    }
}
