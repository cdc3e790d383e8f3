//! Attaching links on the current connection: the reply link and the
//! receiver links of subscriptions (RPC servers, notification listeners).

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::Session;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::command::{Internal, ListenAddr, SubDone, SubFail, SubRefusal};
use super::connector::connect_timeout;
use super::links::{self, ReceiverLink};
use super::management::Decl;
use super::reply::{self, ReplySpec};
use super::{Conn, Engine, ReplyState};
use crate::address::AddressingKind;
use crate::options::ReplyMode;

/// Begins a session on `conn`, bounded by `connect_timeout`; the error says
/// what the session was for.
pub(super) async fn begin_session(
    engine_cfg: &crate::options::Config,
    conn: &mut Conn,
    what: &str,
) -> Result<SessionHandle<()>, String> {
    let timeout = connect_timeout(engine_cfg);
    match tokio::time::timeout(timeout, Session::begin(&mut conn.handle)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("session for {what}: {e}")),
        Err(_) => Err(format!("session for {what} timed out")),
    }
}

impl Engine {
    fn reply_spec(mode: ReplyMode, kind: AddressingKind) -> ReplySpec {
        match mode {
            // `auto` is resolved per connection; should it reach here, it is oslo's mode.
            ReplyMode::Auto | ReplyMode::Dynamic => ReplySpec::Dynamic {
                capability: None,
                settled: false,
                expiry_link_detach: false,
            },
            ReplyMode::RabbitmqDirectReply => ReplySpec::Dynamic {
                capability: Some("rabbitmq:volatile-queue"),
                settled: true,
                expiry_link_detach: true,
            },
            ReplyMode::TemporaryQueue => ReplySpec::Dynamic {
                capability: Some("temporary-queue"),
                settled: false,
                expiry_link_detach: false,
            },
            ReplyMode::Named => {
                let name = format!("reply.{}", uuid::Uuid::new_v4().simple());
                ReplySpec::Named(crate::address::named_reply_address(kind, &name))
            }
        }
    }

    /// Attaches the reply link of `conn` (own session) and spawns its task.
    pub(super) async fn attach_reply(&mut self, conn: &mut Conn) {
        let spec = Self::reply_spec(conn.reply_mode, conn.addresser.kind());
        tracing::debug!(reply_mode = %conn.reply_mode, "attaching the reply link");
        if let ReplySpec::Named(address) = &spec {
            if conn.declares() {
                // A v2 named reply queue must exist; it expires once unused.
                let decls: Vec<Decl> = match crate::address::parse_v2(address) {
                    Some(crate::address::V2Node::Queue(name)) => {
                        vec![Decl::Queue {
                            name,
                            expires: true,
                        }]
                    }
                    _ => Vec::new(),
                };
                if let Err(m) = conn
                    .ensure(&self.config, &decls, connect_timeout(&self.config))
                    .await
                {
                    conn.reply = ReplyState::Management(m);
                    return;
                }
            }
        }
        let mut session = match begin_session(&self.config, conn, "the reply link").await {
            Ok(s) => s,
            Err(why) => {
                conn.reply = ReplyState::Refused(None, why);
                return;
            }
        };
        let timeout = connect_timeout(&self.config);
        let credit = self.config.amqp.reply_link_credit;
        let res =
            tokio::time::timeout(timeout, reply::attach_reply(&mut session, &spec, credit)).await;
        match res {
            Ok(Ok((receiver, address))) => {
                tracing::debug!(%address, "reply link attached");
                conn.reply = ReplyState::Ready(address);
                let stop = CancellationToken::new();
                conn.reply_stop = stop.clone();
                let internal = self.internal_tx.clone();
                let gen = conn.gen;
                let task = tokio::spawn(reply::reply_task(
                    session,
                    receiver,
                    credit,
                    self.shared.calls.clone(),
                    stop,
                    move |condition| {
                        let _ = internal.send(Internal::ReplyDown {
                            conn_gen: gen,
                            condition,
                        });
                    },
                ));
                conn.track(task);
            }
            Ok(Err(e)) => {
                let cond = links::receiver_attach_condition(&e);
                tracing::warn!(error = %e, condition = ?cond, "reply link refused");
                conn.reply = ReplyState::Refused(cond, e.to_string());
            }
            Err(_) => {
                conn.reply = ReplyState::Refused(None, "reply link attach timed out".into());
            }
        }
    }

    /// Attaches the links of subscription `id` on the current connection and
    /// answers `done` (if given) once all are attached or one is refused.
    /// Long because every link of a subscription is attached, checked and registered in the same
    /// pass, so that one refused link answers `done` once with the broker's words.
    pub(super) async fn attach_sub(&mut self, id: u64, done: Option<SubDone>) {
        let Some(conn) = self.conn.as_mut() else {
            if let Some(d) = done {
                // Will be attached on reconnect.
                let _ = d.send(Ok(id));
            }
            return;
        };
        let Some(spec) = self.subs.get(&id) else {
            return;
        };
        if let Some(old) = conn.sub_stops.remove(&id) {
            old.cancel();
        }
        let stop = CancellationToken::new();
        conn.sub_stops.insert(id, stop.clone());
        let mut addresses = Vec::new();
        for a in &spec.addrs {
            match a {
                ListenAddr::Rpc(t) => addresses.extend(conn.addresser.rpc_listener_addresses(t)),
                ListenAddr::Notify { topic, priority } => {
                    addresses.push(conn.addresser.notify(topic, priority))
                }
            }
        }
        let mut readies = Vec::new();
        let mut failed: Option<SubFail> = None;
        for address in addresses {
            let address = if conn.declares() {
                let own = match crate::address::parse_v2(&address) {
                    Some(crate::address::V2Node::Exchange { name, .. }) => self
                        .fanout_queues
                        .entry((id, name.clone()))
                        .or_insert_with(|| {
                            let u = uuid::Uuid::new_v4().simple().to_string();
                            format!("{name}.{}", &u[..12])
                        })
                        .clone(),
                    _ => String::new(),
                };
                let (source, decls) = Conn::receiver_source(&address, &own);
                if let Err(m) = conn
                    .ensure(&self.config, &decls, connect_timeout(&self.config))
                    .await
                {
                    failed = Some(SubFail::Management(m));
                    break;
                }
                source
            } else {
                address
            };
            let session = match begin_session(&self.config, conn, &address).await {
                Ok(s) => s,
                Err(why) => {
                    failed = Some(SubFail::Refused((None, why)));
                    break;
                }
            };
            let (ready, rrx) = oneshot::channel();
            readies.push(rrx);
            let internal = self.internal_tx.clone();
            let gen = conn.gen;
            let task = tokio::spawn(links::receiver_task(ReceiverLink {
                session,
                address,
                credit: spec.credit,
                sink: spec.sink.clone(),
                stop: stop.clone(),
                ready,
                on_down: Box::new(move || {
                    let _ = internal.send(Internal::ReceiverDown {
                        sub: id,
                        conn_gen: gen,
                    });
                }),
                attach_timeout: connect_timeout(&self.config),
            }));
            conn.track(task);
        }
        if let Some(d) = done {
            answer_subscription(id, d, stop, readies, failed);
        }
    }
}

/// Answers a subscription once every link reported its attach (or at the
/// first refusal, which stops the others).
fn answer_subscription(
    id: u64,
    done: SubDone,
    stop: CancellationToken,
    readies: Vec<oneshot::Receiver<Result<(), SubRefusal>>>,
    failed: Option<SubFail>,
) {
    if let Some(f) = failed {
        stop.cancel();
        let _ = done.send(Err(f));
        return;
    }
    tokio::spawn(async move {
        for r in readies {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    stop.cancel();
                    let _ = done.send(Err(SubFail::Refused(e)));
                    return;
                }
                Err(_) => {
                    let _ = done.send(Err(SubFail::Refused((
                        None,
                        "listener stopped while attaching".into(),
                    ))));
                    return;
                }
            }
        }
        let _ = done.send(Ok(id));
    });
}
