//! The seam between the engine and the `wire` codec.

use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::types::messaging::{Body, Message};

use crate::wire::{EncodedValue, IncomingMessage, OutgoingMessage};

/// What sender link tasks hand to fe2o3.
pub(crate) type SendMsg = Sendable<Body<EncodedValue>>;

/// What receiver links decode deliveries as.
pub(crate) type RecvBody = Body<serde_amqp::Value>;

/// Converts an outgoing message for fe2o3 with the given settlement.
pub(crate) fn sendable(msg: OutgoingMessage, settled: bool) -> SendMsg {
    Sendable::builder()
        .message(msg.into_amqp())
        .settled(settled)
        .build()
}

/// Decodes a received message.
pub(crate) fn incoming(msg: Message<RecvBody>) -> IncomingMessage {
    IncomingMessage::from_amqp(&msg)
}

/// Sets `to` (always the sender link's address).
pub(crate) fn set_to(msg: &mut OutgoingMessage, address: &str) {
    if msg.to != address {
        msg.to = address.to_string();
    }
}

/// Sets `reply-to` on a call.
pub(crate) fn set_reply_to(msg: &mut OutgoingMessage, reply_to: &str) {
    msg.reply_to = Some(reply_to.to_string());
}
