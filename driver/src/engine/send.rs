//! Sending: resolve a [`Dest`] to an address, register calls for their
//! replies, and hand the message to the cached sender link of that address
//! (attaching one on its own session when there is none).

use tokio::sync::mpsc;

use super::attach::begin_session;
use super::command::{Command, Dest, SendCmd, SendFail};
use super::connector::connect_timeout;
use super::links::{self, LinkJob, SenderLink};
use super::management;
use super::{msg, Conn, Engine, ReplyState, SenderEntry};

/// Jobs a sender link task can hold before the connection task waits.
const SENDER_QUEUE: usize = 1024;

impl Engine {
    pub(super) async fn send(&mut self, mut s: SendCmd) {
        if s.done.is_closed() {
            return; // the caller gave up already
        }
        let Some(conn) = self.conn.as_mut() else {
            self.waiting.push_back(Command::Send(s));
            return;
        };
        let address = match &s.dest {
            Dest::Rpc(t) => conn.addresser.resolve(t),
            Dest::Notify { topic, priority } => conn.addresser.notify(topic, priority),
            Dest::Address(a) => a.clone(),
        };
        if s.call.is_some() && matches!(conn.reply, ReplyState::NotAttached) {
            // The first call of this connection attaches the reply link.
            if let Some(mut c) = self.conn.take() {
                self.attach_reply(&mut c).await;
                self.conn = Some(c);
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            self.waiting.push_back(Command::Send(s));
            return;
        };
        let declare = conn.declares() && !matches!(s.dest, Dest::Address(_));
        if let Some((id, tx)) = s.call.take() {
            match &conn.reply {
                ReplyState::Ready(reply_to) => {
                    msg::set_reply_to(&mut s.msg, reply_to);
                    self.shared.calls.register(id, tx);
                }
                ReplyState::Refused(cond, reason) => {
                    let _ = s.done.send(Err(SendFail::Refused {
                        address: "rpc-response (reply link)".into(),
                        condition: cond.clone(),
                        reason: reason.clone(),
                    }));
                    return;
                }
                ReplyState::Management(m) => {
                    let _ = s.done.send(Err(SendFail::Management(m.clone())));
                    return;
                }
                ReplyState::Down | ReplyState::NotAttached => {
                    let _ = s
                        .done
                        .send(Err(SendFail::NotWritten("reply link is down".into())));
                    return;
                }
            }
        }
        msg::set_to(&mut s.msg, &address);
        let job = LinkJob {
            sendable: msg::sendable(s.msg, s.settled),
            done: s.done,
        };
        let Some(job) = enqueue(conn, &address, job).await else {
            return;
        };
        if declare {
            let decls = management::for_sender(&address);
            if let Err(m) = conn
                .ensure(&self.config, &decls, connect_timeout(&self.config))
                .await
            {
                let _ = job.done.send(Err(SendFail::Management(m)));
                return;
            }
        }
        self.open_sender(address, job).await;
    }

    /// Attaches a new sender link for `address` on its own session, with
    /// `job` as its first message.
    async fn open_sender(&mut self, address: String, job: LinkJob) {
        let Some(conn) = self.conn.as_mut() else {
            let _ = job
                .done
                .send(Err(SendFail::NotWritten("connection lost".into())));
            return;
        };
        let session = match begin_session(&self.config, conn, &address).await {
            Ok(s) => s,
            Err(why) => {
                let _ = job.done.send(Err(SendFail::NotWritten(why)));
                return;
            }
        };
        let (tx, rx) = mpsc::channel(SENDER_QUEUE);
        let gen = self.next_sender_gen;
        self.next_sender_gen += 1;
        let _ = tx.try_send(job);
        conn.senders
            .insert(address.clone(), SenderEntry { tx, gen });
        let idle = crate::limits::secs(self.config.amqp.default_sender_link_timeout.max(1));
        let task = tokio::spawn(links::sender_task(SenderLink {
            session,
            address: Some(address.clone()),
            key: address,
            gen,
            jobs: rx,
            internal: self.internal_tx.clone(),
            closing: self.shared.closed.clone(),
            idle,
            attach_timeout: connect_timeout(&self.config),
        }));
        conn.track(task);
    }
}

/// Queues `job` on the cached link of `address`; gives the job back when
/// there is no (live) link, so that the caller attaches one.
async fn enqueue(conn: &mut Conn, address: &str, job: LinkJob) -> Option<LinkJob> {
    let Some(entry) = conn.senders.get(address) else {
        return Some(job);
    };
    match entry.tx.try_send(job) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(job)) => {
            let tx = entry.tx.clone();
            // Back-pressure: wait for room on this link.
            if let Err(e) = tx.send(job).await {
                let _ =
                    e.0.done
                        .send(Err(SendFail::NotWritten("sender link lost".into())));
            }
            None
        }
        Err(mpsc::error::TrySendError::Closed(job)) => {
            conn.senders.remove(address);
            Some(job)
        }
    }
}
