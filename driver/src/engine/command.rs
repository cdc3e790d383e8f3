//! What travels between the API handles, the connection task and the link
//! tasks: commands with their answer channels, and the link tasks' reports.

use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::messaging::Outcome;
use tokio::sync::{mpsc, oneshot};

use super::links::Sink;
use crate::address::Target;
use crate::error::{Condition, ManagementError};
use crate::wire::{OutgoingMessage, ReplyBody};

/// What a waiting call receives on its reply channel.
#[derive(Debug)]
pub(crate) enum ReplyEvent {
    /// A call-monitor heartbeat (no body).
    Heartbeat,
    /// The reply, decoded.
    Reply(Box<ReplyBody>),
    /// A reply arrived but its body cannot be decoded (the reason).
    Malformed(String),
    /// The reply can no longer arrive (connection or reply link lost,
    /// transport closed); the text says why.
    Disconnected(String),
}

/// A written message: await it for the broker's outcome.
pub(crate) struct SendOk(pub DeliveryFut<Result<Outcome, SendError>>);

/// Why a message could not be written.
#[derive(Clone, Debug)]
pub(crate) enum SendFail {
    /// The broker refused the sender link (or the reply link, for calls).
    Refused {
        address: String,
        condition: Option<Condition>,
        reason: String,
    },
    /// The broker's management node refused a declaration the address needs (RabbitMQ 4.x).
    Management(ManagementError),
    /// The link or connection went away before the message was written; safe to retry.
    NotWritten(String),
    /// The transport is closed.
    Closed,
}

/// The answer channel of one send.
pub(crate) type SendDone = oneshot::Sender<Result<SendOk, SendFail>>;

/// Where a message goes.
#[derive(Clone, Debug)]
pub(crate) enum Dest {
    /// An RPC target (fanout => multicast, server => unicast, else anycast).
    Rpc(Target),
    /// A notification topic and lower-case priority.
    Notify { topic: String, priority: String },
    /// A literal address (reply-to).
    Address(String),
}

/// A message to send.
pub(crate) struct SendCmd {
    pub dest: Dest,
    pub msg: OutgoingMessage,
    pub settled: bool,
    /// For calls: register this message-id for replies and set reply-to.
    pub call: Option<(String, mpsc::UnboundedSender<ReplyEvent>)>,
    pub done: SendDone,
}

/// One address a subscription listens on.
#[derive(Clone, Debug)]
pub(crate) enum ListenAddr {
    /// The three RPC server addresses of a target.
    Rpc(Target),
    /// One notification address.
    Notify { topic: String, priority: String },
}

/// A live subscription (RPC server or listener), replayed after reconnects.
pub(crate) struct SubSpec {
    pub addrs: Vec<ListenAddr>,
    pub credit: u32,
    pub sink: Sink,
}

/// Why a subscription's links could not be attached: the broker's condition
/// (if it sent one) and a description.
pub(crate) type SubRefusal = (Option<Condition>, String);

/// Why a subscription failed.
#[derive(Debug)]
pub(crate) enum SubFail {
    /// A link was refused (or could not be attached).
    Refused(SubRefusal),
    /// The management node refused a declaration (RabbitMQ 4.x).
    Management(ManagementError),
}

/// Answer to a subscription: its id, or why not.
pub(crate) type SubDone = oneshot::Sender<Result<u64, SubFail>>;

/// Commands from API handles to the connection task.
// `Send` is by far the most frequent command; boxing it would cost an
// allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Send(SendCmd),
    Subscribe { spec: SubSpec, done: SubDone },
    Unsubscribe(u64),
    Close(oneshot::Sender<()>),
}

/// Events from link tasks back to the connection task.
#[derive(Debug)]
pub(crate) enum Internal {
    SenderGone {
        address: String,
        gen: u64,
    },
    SenderIdle {
        address: String,
        gen: u64,
    },
    ReceiverDown {
        sub: u64,
        conn_gen: u64,
    },
    Reattach {
        sub: u64,
        conn_gen: u64,
    },
    ReplyDown {
        conn_gen: u64,
        condition: Option<Condition>,
    },
    ReplyReattach {
        conn_gen: u64,
    },
}
