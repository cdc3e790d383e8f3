//! RPC client, server and dispatcher with oslo.messaging semantics.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::address::Target;
use crate::deliver::{deliver, Retry, SendErr};
use crate::engine::links::Inbound;
use crate::engine::{
    CallRegistry, Command, Dest, ListenAddr, ReplyEvent, SendCmd, Shared, SubFail, SubSpec,
};
use crate::error::{
    CallError, CallErrorKind, CastError, CastErrorKind, Condition, ListenError, ListenErrorKind,
};
use crate::limits;
use crate::options::PreSettled;
use crate::wire::{self, Map, MessageId, OutgoingMessage, RemoteError, ReplyBody, Request};
use crate::Transport;

/// A new 32-hex message id (`uuid4().hex`).
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Removes call entries from the reply map when the call ends (any path).
struct CallGuard {
    calls: Arc<CallRegistry>,
    ids: Vec<String>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        for id in &self.ids {
            self.calls.forget(id);
        }
    }
}

/// One call in flight: where it waits and until when.
struct PendingCall {
    shared: Arc<Shared>,
    deadline: Instant,
    guard: CallGuard,
    tx: mpsc::UnboundedSender<ReplyEvent>,
}

/// Client side of RPC: calls (request/reply) and casts (one way) to a [`Target`].
///
/// Cheap to clone; all clones share the transport's connection.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use driver::{Config, RpcClient, Target, Transport};
/// use std::time::Duration;
///
/// let transport = Transport::connect(Config::from_url("amqp://127.0.0.1:5672")?).await?;
/// let client = RpcClient::new(&transport, Target::topic("compute")).timeout(Duration::from_secs(5));
/// let mut args = serde_json::Map::new();
/// args.insert("value".into(), 42.into());
/// let result = client.call(serde_json::Map::new(), "echo", args).await?;
/// println!("{result}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RpcClient {
    transport: Transport,
    target: Target,
    timeout: Option<Duration>,
    call_monitor_timeout: Option<Duration>,
    retry: Option<u32>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("call_monitor_timeout", &self.call_monitor_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl RpcClient {
    /// A client for `target` with the configured defaults: call timeout
    /// `rpc_response_timeout`, no call monitor, infinite retries (oslo's
    /// `retry=None`).
    pub fn new(transport: &Transport, target: Target) -> Self {
        RpcClient {
            transport: transport.clone(),
            target,
            timeout: None,
            call_monitor_timeout: None,
            retry: None,
        }
    }

    /// Overall deadline of a call (send + ack + reply).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Asks the server to send heartbeats every `cm/2`; the call fails with
    /// `TimedOut` when neither a heartbeat nor the reply arrives within `cm`.
    pub fn call_monitor_timeout(mut self, cm: Duration) -> Self {
        self.call_monitor_timeout = Some(cm);
        self
    }

    /// Resends allowed after `released`/`modified` outcomes or link loss:
    /// `None` = infinite, `Some(0)` = none.
    pub fn retry(mut self, retry: Option<u32>) -> Self {
        self.retry = retry;
        self
    }

    /// The target this client sends to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.transport.shared
    }

    /// Calls `method` and waits for its result.
    ///
    /// Errors: `TimedOut` (no reply or heartbeat in time), `Remote` (the
    /// endpoint raised; see [`CallError::remote`]), `DeliveryFailed`,
    /// `Disconnected`, `InvalidTarget` (fanout target), `Refused` (e.g. the
    /// broker does not support the dynamic reply link; see
    /// [`CallError::condition`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(client: driver::RpcClient) {
    /// use driver::CallErrorKind;
    /// match client.call(Default::default(), "fail", Default::default()).await {
    ///     Ok(v) => println!("{v}"),
    ///     Err(e) if e.kind() == CallErrorKind::Remote => {
    ///         let r = e.remote().expect("remote error");
    ///         println!("{}.{}: {}", r.module, r.class, r.message);
    ///     }
    ///     Err(e) => println!("{e}"),
    /// }
    /// # }
    /// ```
    pub async fn call(&self, ctx: Map, method: &str, args: Map) -> Result<Value, CallError> {
        if self.target.fanout {
            return Err(CallError::new(CallErrorKind::InvalidTarget)
                .set_detail("call() cannot be used with a fanout target"));
        }
        if self.target.topic.is_empty() {
            return Err(CallError::new(CallErrorKind::InvalidTarget).set_detail("empty topic"));
        }
        let shared = self.shared().clone();
        let timeout = limits::capped(
            self.timeout
                .unwrap_or_else(|| limits::secs(shared.config.rpc_response_timeout)),
        );
        let base = self.request_message(&ctx, method, args, timeout);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut call = PendingCall {
            deadline: limits::deadline(timeout),
            guard: CallGuard {
                calls: shared.calls.clone(),
                ids: Vec::new(),
            },
            shared,
            tx,
        };
        self.send_request(&mut call, base).await?;
        self.await_reply(rx, call.deadline).await
    }

    /// The request as oslo sends it (ttl = the call timeout, optional
    /// `call_monitor_timeout`); `to`, `reply-to` and the id are set per attempt.
    fn request_message(
        &self,
        ctx: &Map,
        method: &str,
        args: Map,
        timeout: Duration,
    ) -> OutgoingMessage {
        let request = Request {
            method: method.to_string(),
            args,
            version: self.target.version.clone(),
            namespace: self.target.namespace.clone(),
        };
        let cm_secs = self
            .call_monitor_timeout
            .map(|d| limits::capped(d).as_secs().max(1));
        let ttl_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        OutgoingMessage::call(
            String::new(),
            String::new(),
            MessageId::String(String::new()),
            ctx,
            &request,
            ttl_ms,
            cm_secs,
        )
    }

    /// Sends the request (resending as oslo does) until the broker accepts
    /// it; every attempt gets a fresh message-id, registered for replies.
    async fn send_request(
        &self,
        call: &mut PendingCall,
        base: OutgoingMessage,
    ) -> Result<(), CallError> {
        let cfg = &call.shared.config;
        let settled = cfg.amqp.is_pre_settled(PreSettled::RpcCall);
        let retry_delay = limits::secs(cfg.amqp.link_retry_delay.max(1));
        let target = &self.target;
        let (guard, tx) = (&mut call.guard, &call.tx);
        deliver(
            &call.shared,
            call.deadline,
            Retry(self.retry),
            retry_delay,
            |done| {
                let id = new_message_id();
                guard.ids.push(id.clone());
                let mut msg = base.clone();
                msg.message_id = Some(MessageId::String(id.clone()));
                SendCmd {
                    dest: Dest::Rpc(target.clone()),
                    msg,
                    settled,
                    call: Some((id, tx.clone())),
                    done,
                }
            },
        )
        .await
        .map_err(|e| {
            map_send_err(e, CallErrorKind::TimedOut, CallErrorKind::DeliveryFailed).map_kind_call()
        })
    }

    /// Waits for the reply, restarting the call-monitor window on each heartbeat.
    async fn await_reply(
        &self,
        mut rx: mpsc::UnboundedReceiver<ReplyEvent>,
        deadline: Instant,
    ) -> Result<Value, CallError> {
        let cm = self.call_monitor_timeout;
        let mut window_end = cm.map(limits::deadline);
        loop {
            let until = match window_end {
                Some(w) if w < deadline => w,
                _ => deadline,
            };
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => {
                    let detail = if until < deadline {
                        "no heartbeat within call_monitor_timeout"
                    } else {
                        "no reply within the call timeout"
                    };
                    return Err(CallError::new(CallErrorKind::TimedOut).set_detail(detail));
                }
                Ok(None) => return Err(CallError::new(CallErrorKind::Closed)),
                Ok(Some(ReplyEvent::Heartbeat)) => {
                    window_end = cm.map(limits::deadline);
                }
                Ok(Some(ReplyEvent::Disconnected(reason))) => {
                    return Err(CallError::new(CallErrorKind::Disconnected).set_detail(reason));
                }
                Ok(Some(ReplyEvent::Reply(body))) => {
                    return match *body {
                        ReplyBody::Response(v) => Ok(v),
                        ReplyBody::Failure(r) => {
                            Err(CallError::new(CallErrorKind::Remote).set_remote(r))
                        }
                    };
                }
                Ok(Some(ReplyEvent::Malformed(why))) => {
                    return Err(CallError::new(CallErrorKind::MalformedReply).set_detail(why));
                }
            }
        }
    }

    /// Sends `method` one way (no reply). With a fanout target every server
    /// on the topic receives it. Pre-settled by default, so success means
    /// "written to the socket".
    pub async fn cast(&self, ctx: Map, method: &str, args: Map) -> Result<(), CastError> {
        if self.target.topic.is_empty() {
            return Err(CastError::new(CastErrorKind::InvalidTarget).set_detail("empty topic"));
        }
        let shared = self.shared().clone();
        let cfg = &shared.config;
        let timeout = self
            .timeout
            .unwrap_or_else(|| limits::secs(cfg.amqp.default_send_timeout));
        let deadline = limits::deadline(timeout);
        let settled = cfg.amqp.is_pre_settled(PreSettled::RpcCast);
        let request = Request {
            method: method.to_string(),
            args,
            version: self.target.version.clone(),
            namespace: self.target.namespace.clone(),
        };
        let base = OutgoingMessage::cast(String::new(), &ctx, &request);
        let target = self.target.clone();
        let retry_delay = limits::secs(cfg.amqp.link_retry_delay.max(1));
        deliver(&shared, deadline, Retry(self.retry), retry_delay, |done| {
            SendCmd {
                dest: Dest::Rpc(target.clone()),
                msg: base.clone(),
                settled,
                call: None,
                done,
            }
        })
        .await
        .map_err(|e| {
            map_send_err(e, CastErrorKind::TimedOut, CastErrorKind::DeliveryFailed).map_kind_cast()
        })
    }
}

/// Intermediate error used while mapping [`SendErr`] to a public kind.
pub(crate) struct Mapped {
    kind: MappedKind,
    err: crate::error::Error<MappedKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MappedKind {
    TimedOut,
    DeliveryFailed,
    Refused,
    Management,
    Closed,
}

impl fmt::Display for MappedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

pub(crate) fn map_send_err<A, B>(e: SendErr, _timed_out: A, _failed: B) -> Mapped {
    use crate::error::Error;
    let (kind, err) = match e {
        SendErr::TimedOut => (MappedKind::TimedOut, Error::new(MappedKind::TimedOut)),
        SendErr::DeliveryFailed(why) => (
            MappedKind::DeliveryFailed,
            Error::new(MappedKind::DeliveryFailed).set_detail(why),
        ),
        SendErr::Refused {
            address,
            condition,
            reason,
        } => (
            MappedKind::Refused,
            Error::new(MappedKind::Refused)
                .set_detail(address)
                .set_condition(condition.or_else(|| {
                    Some(Condition {
                        condition: "amqp:internal-error".into(),
                        description: Some(reason),
                    })
                })),
        ),
        SendErr::Management(m) => (
            MappedKind::Management,
            Error::new(MappedKind::Management).set_management(m),
        ),
        SendErr::Closed => (MappedKind::Closed, Error::new(MappedKind::Closed)),
    };
    Mapped { kind, err }
}

impl Mapped {
    pub(crate) fn map_kind_call(self) -> CallError {
        let k = match self.kind {
            MappedKind::TimedOut => CallErrorKind::TimedOut,
            MappedKind::DeliveryFailed => CallErrorKind::DeliveryFailed,
            MappedKind::Refused => CallErrorKind::Refused,
            MappedKind::Management => CallErrorKind::Management,
            MappedKind::Closed => CallErrorKind::Closed,
        };
        self.err.map_kind(k)
    }
    pub(crate) fn map_kind_cast(self) -> CastError {
        let k = match self.kind {
            MappedKind::TimedOut => CastErrorKind::TimedOut,
            MappedKind::DeliveryFailed => CastErrorKind::DeliveryFailed,
            MappedKind::Refused => CastErrorKind::Refused,
            MappedKind::Management => CastErrorKind::Management,
            MappedKind::Closed => CastErrorKind::Closed,
        };
        self.err.map_kind(k)
    }
    pub(crate) fn map_kind_notify(self) -> crate::error::NotifyError {
        use crate::error::NotifyErrorKind as K;
        let k = match self.kind {
            MappedKind::TimedOut => K::TimedOut,
            MappedKind::DeliveryFailed => K::DeliveryFailed,
            MappedKind::Refused => K::Refused,
            MappedKind::Management => K::Management,
            MappedKind::Closed => K::Closed,
        };
        self.err.map_kind(k)
    }
}

/// An async RPC method handler: `(context, args) -> result`.
pub type Handler =
    Arc<dyn Fn(Map, Map) -> BoxFuture<'static, Result<Value, RemoteError>> + Send + Sync>;

/// A set of RPC methods sharing one namespace and version (an oslo endpoint).
#[derive(Clone)]
pub struct Endpoint {
    namespace: Option<String>,
    version: String,
    methods: HashMap<String, Handler>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.methods.keys().collect();
        names.sort();
        f.debug_struct("Endpoint")
            .field("namespace", &self.namespace)
            .field("version", &self.version)
            .field("methods", &names)
            .finish()
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::new()
    }
}

impl Endpoint {
    /// An endpoint with no namespace and version `1.0`.
    pub fn new() -> Self {
        Endpoint {
            namespace: None,
            version: "1.0".into(),
            methods: HashMap::new(),
        }
    }

    /// Sets the namespace (requests must carry the same namespace).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Sets the version `X.Y` (requests with the same major and a minor
    /// `<= Y` are accepted).
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = v.into();
        self
    }

    /// Adds a method.
    ///
    /// # Examples
    ///
    /// ```
    /// use driver::{Endpoint, RemoteError};
    /// let ep = Endpoint::new().method("echo", |_ctx, args| async move {
    ///     Ok::<_, RemoteError>(serde_json::Value::Object(args))
    /// });
    /// ```
    pub fn method<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Map, Map) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, RemoteError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let h: Handler = Arc::new(move |ctx, args| {
            let f = f.clone();
            Box::pin(async move { f(ctx, args).await })
        });
        self.methods.insert(name.into(), h);
        self
    }
}

/// `version_is_compatible(imp, requested)` from oslo: same major, requested
/// minor (and revision) not above the implemented one.
pub(crate) fn version_is_compatible(imp: &str, requested: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64, u64)> {
        let mut it = v.trim().split('.');
        let maj = it.next()?.parse().ok()?;
        let min = it.next().unwrap_or("0").parse().ok()?;
        let rev = it.next().unwrap_or("0").parse().ok()?;
        Some((maj, min, rev))
    }
    let (Some(i), Some(r)) = (parts(imp), parts(requested)) else {
        return false;
    };
    if i.0 != r.0 {
        return false;
    }
    if r.1 > i.1 {
        return false;
    }
    !(r.1 == i.1 && r.2 > i.2)
}

/// Routes requests to endpoint methods like oslo's `RPCDispatcher`.
#[derive(Clone, Debug, Default)]
pub struct Dispatcher {
    endpoints: Vec<Endpoint>,
}

impl Dispatcher {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Dispatcher::default()
    }

    /// Adds an endpoint.
    pub fn endpoint(mut self, e: Endpoint) -> Self {
        self.endpoints.push(e);
        self
    }

    /// Dispatches one request. Unknown methods raise `NoSuchMethod`,
    /// incompatible versions `UnsupportedVersion` (module
    /// `oslo_messaging.rpc.dispatcher`), as oslo does.
    pub async fn dispatch(&self, ctx: Map, req: Request) -> Result<Value, RemoteError> {
        let version = req.version.clone().unwrap_or_else(|| "1.0".into());
        let mut found_compatible = false;
        for ep in &self.endpoints {
            if ep.namespace != req.namespace || !version_is_compatible(&ep.version, &version) {
                continue;
            }
            if let Some(h) = ep.methods.get(&req.method) {
                return h(ctx, req.args).await;
            }
            found_compatible = true;
        }
        if found_compatible {
            Err(dispatcher_error(
                "NoSuchMethod",
                format!("Endpoint does not support RPC method {}", req.method),
            ))
        } else {
            Err(dispatcher_error(
                "UnsupportedVersion",
                format!(
                    "Endpoint does not support RPC version {version}. Attempted method: {}",
                    req.method
                ),
            ))
        }
    }
}

fn dispatcher_error(class: &str, message: String) -> RemoteError {
    RemoteError {
        class: class.into(),
        module: "oslo_messaging.rpc.dispatcher".into(),
        message: message.clone(),
        tb: Vec::new(),
        args: vec![Value::String(message)],
        kwargs: Map::new(),
    }
}

/// A running RPC server: 3 receiver links (unicast, multicast, anycast) per
/// target, re-attached after reconnects.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use driver::{Config, Dispatcher, Endpoint, RpcServer, Target, Transport};
/// let transport = Transport::connect(Config::from_url("amqp://127.0.0.1:5672")?).await?;
/// let dispatcher = Dispatcher::new().endpoint(Endpoint::new().method("echo", |_ctx, args| async move {
///     Ok(serde_json::Value::Object(args))
/// }));
/// let server = RpcServer::start(&transport, Target::topic("compute").with_server("node1"), dispatcher).await?;
/// // ... serve ...
/// server.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RpcServer {
    shared: Arc<Shared>,
    id: u64,
    stop: CancellationToken,
}

impl RpcServer {
    /// Attaches the server links and starts dispatching. Returns once every
    /// link is attached (or with the broker's refusal).
    pub async fn start(
        transport: &Transport,
        target: Target,
        dispatcher: Dispatcher,
    ) -> Result<RpcServer, ListenError> {
        if target.topic.is_empty() {
            return Err(ListenError::new(ListenErrorKind::InvalidTarget).set_detail("empty topic"));
        }
        let shared = transport.shared.clone();
        let credit = shared.config.amqp.rpc_server_credit;
        let (sink, rx) = mpsc::channel(sink_capacity(credit, 3));
        let id = subscribe(&shared, vec![ListenAddr::Rpc(target)], credit, sink).await?;
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            shared.clone(),
            rx,
            Arc::new(dispatcher),
            stop.clone(),
        ));
        Ok(RpcServer { shared, id, stop })
    }

    /// Detaches the links and stops dispatching (in-flight requests finish).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.shared.cmd.send(Command::Unsubscribe(self.id)).await;
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        if !self.stop.is_cancelled() {
            self.stop.cancel();
            let _ = self.shared.cmd.try_send(Command::Unsubscribe(self.id));
        }
    }
}

/// Room for every delivery the links' credit allows (bounded: a huge credit
/// option must not size a huge buffer).
pub(crate) fn sink_capacity(credit: u32, links: usize) -> usize {
    const MAX_SINK: usize = 1 << 20;
    usize::try_from(credit)
        .unwrap_or(usize::MAX)
        .saturating_mul(links.max(1))
        .saturating_add(16)
        .min(MAX_SINK)
}

/// Registers a subscription and waits until its links are attached.
pub(crate) async fn subscribe(
    shared: &Arc<Shared>,
    addrs: Vec<ListenAddr>,
    credit: u32,
    sink: mpsc::Sender<Inbound>,
) -> Result<u64, ListenError> {
    let (done, rx) = oneshot::channel();
    let spec = SubSpec {
        addrs,
        credit,
        sink,
    };
    shared
        .cmd
        .send(Command::Subscribe { spec, done })
        .await
        .map_err(|_| ListenError::new(ListenErrorKind::Closed))?;
    let wait = limits::secs(shared.config.amqp.connect_timeout.max(1).saturating_mul(3));
    match tokio::time::timeout(wait, rx).await {
        Err(_) => Err(ListenError::new(ListenErrorKind::TimedOut)),
        Ok(Err(_)) => Err(ListenError::new(ListenErrorKind::Closed)),
        Ok(Ok(Ok(id))) => Ok(id),
        Ok(Ok(Err(SubFail::Refused((cond, reason))))) => {
            Err(ListenError::new(ListenErrorKind::Refused)
                .set_detail(reason)
                .set_condition(cond))
        }
        Ok(Ok(Err(SubFail::Management(m)))) => {
            Err(ListenError::new(ListenErrorKind::Management).set_management(m))
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Inbound>,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
) {
    loop {
        let mut inbound = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let decoded = wire::decode_request(&inbound.msg);
        let (ctx, request, cm) = match decoded {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(reason = %e, "malformed RPC request rejected");
                inbound.settle.reject(&e.to_string()).await;
                continue;
            }
        };
        // oslo acks before dispatch (at-most-once execution).
        inbound.settle.accept().await;
        let reply = match (inbound.msg.reply_to.clone(), inbound.msg.message_id.clone()) {
            (Some(to), Some(correlation)) => Some(ReplyTo { to, correlation }),
            (Some(_), None) => {
                tracing::warn!(
                    method = %request.method,
                    "RPC request has a reply-to but no message-id; it is dispatched, no reply is sent"
                );
                None
            }
            (None, _) => None,
        };
        let job = RequestJob {
            shared: shared.clone(),
            dispatcher: dispatcher.clone(),
            ctx,
            request,
            // A peer's call_monitor_timeout is capped like every duration.
            call_monitor_timeout: cm.map(|c| c.min(limits::MAX_TIMEOUT_SECS)),
            reply,
        };
        tokio::spawn(job.run());
    }
}

/// Where the reply of a call goes.
struct ReplyTo {
    to: String,
    correlation: MessageId,
}

/// One accepted request: dispatch it, send heartbeats meanwhile, reply.
struct RequestJob {
    shared: Arc<Shared>,
    dispatcher: Arc<Dispatcher>,
    ctx: Map,
    request: Request,
    call_monitor_timeout: Option<u64>,
    reply: Option<ReplyTo>,
}

impl RequestJob {
    async fn run(self) {
        let RequestJob {
            shared,
            dispatcher,
            ctx,
            request,
            call_monitor_timeout,
            reply,
        } = self;
        let hb_stop = CancellationToken::new();
        if let (Some(cm), Some(r)) = (call_monitor_timeout, reply.as_ref()) {
            let interval = cm as f64 / 2.0;
            if interval >= 1.0 {
                tokio::spawn(heartbeats(
                    shared.clone(),
                    r.to.clone(),
                    r.correlation.clone(),
                    cm,
                    Duration::from_secs_f64(interval),
                    hb_stop.clone(),
                ));
            } else {
                tracing::warn!(cm, "call_monitor_timeout too small; no heartbeats sent");
            }
        }
        let result = dispatcher.dispatch(ctx, request).await;
        hb_stop.cancel();
        let Some(reply) = reply else {
            return;
        };
        let body = match result {
            Ok(v) => ReplyBody::Response(v),
            Err(e) => ReplyBody::Failure(e),
        };
        send_reply(&shared, reply, &body).await;
    }
}

/// Sends a reply with oslo's reply settlement, deadline and retry.
async fn send_reply(shared: &Arc<Shared>, reply: ReplyTo, body: &ReplyBody) {
    let cfg = &shared.config;
    let base = OutgoingMessage::reply(reply.to.clone(), reply.correlation, body);
    let settled = cfg.amqp.is_pre_settled(PreSettled::RpcReply);
    let deadline = limits::deadline(limits::secs(cfg.amqp.default_reply_timeout));
    let retry = Retry::from_i64(cfg.amqp.default_reply_retry);
    let delay = limits::secs(cfg.amqp.link_retry_delay.max(1));
    let to = reply.to;
    let r = deliver(shared, deadline, retry, delay, |done| SendCmd {
        dest: Dest::Address(to.clone()),
        msg: base.clone(),
        settled,
        call: None,
        done,
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(error = ?e, "failed to send RPC reply");
    }
}

async fn heartbeats(
    shared: Arc<Shared>,
    to: String,
    corr: MessageId,
    cm: u64,
    every: Duration,
    stop: CancellationToken,
) {
    let ttl_ms = u32::try_from(cm.saturating_mul(1000)).unwrap_or(u32::MAX);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (done, written) = oneshot::channel();
        let cmd = SendCmd {
            dest: Dest::Address(to.clone()),
            msg: OutgoingMessage::heartbeat(to.clone(), corr.clone(), ttl_ms),
            settled: true,
            call: None,
            done,
        };
        if shared.cmd.send(Command::Send(cmd)).await.is_err() {
            return;
        }
        // Keep the answer channel open until the engine has written it (pre-settled,
        // best effort: no outcome to wait for).
        if tokio::time::timeout(every, written).await.is_err() {
            tracing::debug!("heartbeat not written within its interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility_table() {
        for (imp, req, ok) in [
            ("1.0", "1.0", true),
            ("1.3", "1.0", true),
            ("1.3", "1.3", true),
            ("1.3", "1.4", false),
            ("2.0", "1.0", false),
            ("1.0", "2.0", false),
            ("1.2.1", "1.2", true),
            ("1.2", "1.2.1", false),
            ("x", "1.0", false),
        ] {
            assert_eq!(version_is_compatible(imp, req), ok, "{imp} vs {req}");
        }
    }

    #[tokio::test]
    async fn dispatcher_errors_like_oslo() {
        let d = Dispatcher::new().endpoint(
            Endpoint::new()
                .version("1.2")
                .method("echo", |_c, a| async move { Ok(Value::Object(a)) }),
        );
        let req = |m: &str, v: Option<&str>, ns: Option<&str>| Request {
            method: m.into(),
            args: Map::new(),
            version: v.map(Into::into),
            namespace: ns.map(Into::into),
        };
        assert!(d
            .dispatch(Map::new(), req("echo", Some("1.1"), None))
            .await
            .is_ok());
        let e = d
            .dispatch(Map::new(), req("nope", None, None))
            .await
            .expect_err("no such method");
        assert_eq!(
            (e.class.as_str(), e.module.as_str()),
            ("NoSuchMethod", "oslo_messaging.rpc.dispatcher")
        );
        let e = d
            .dispatch(Map::new(), req("echo", Some("1.3"), None))
            .await
            .expect_err("version");
        assert_eq!(e.class, "UnsupportedVersion");
        let e = d
            .dispatch(Map::new(), req("echo", None, Some("other")))
            .await
            .expect_err("namespace");
        assert_eq!(e.class, "UnsupportedVersion");
    }
}
