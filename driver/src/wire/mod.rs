//! Encoding and decoding of oslo.messaging AMQP 1.0 messages (reference §2).
//!
//! * Bodies are one `amqp-value` section holding a **string** of JSON formatted exactly like
//!   Python's `json.dumps` (see [`to_python_json`]).
//! * The header section is always present: empty (`0x45`) or `[null, null, uint ttl]`.
//! * The properties section carries only `message-id`, `to`, `reply-to` and `correlation-id`.
//! * A call-monitor heartbeat has **no body section at all**.
//!
//! [`OutgoingMessage::into_amqp`] gives a fe2o3 [`Message`] ready for `Sender::send`;
//! [`OutgoingMessage::encode_sections`] gives the exact transfer payload bytes. Both produce
//! the bytes proton 0.40 produces for the Python driver (checked against fixtures generated
//! with proton in `driver/tests/golden/`), with these documented differences:
//!
//! * `absolute-expiry-time` is never sent. oslo sends `ceil(monotonic()+timeout)` seconds as a
//!   timestamp, a value no receiver uses (the Python receiver ignores it; reference §11.2).
//! * fe2o3 writes a string of exactly 255 bytes in the *properties* (`to`, `reply-to`, ids) as
//!   `str32` where proton writes `str8`. Both decode identically. Body strings are written
//!   by this module and match proton for every length.
//!
//! JSON values received from Python are re-encoded identically, with three limits of
//! `serde_json` (as configured in this workspace): integers beyond the u64/i64 range become
//! floats, a lone UTF-16 surrogate escape (`"\ud800"`, legal for Python) fails to parse
//! (reported as [`Malformed::NotJson`]), and without serde_json's `float_roundtrip` feature a
//! parsed float can be 1 ulp off (so an echoed float may differ in its last digit).
//!
//! Incoming messages are converted with [`IncomingMessage::from_amqp`] and decoded with
//! [`decode_request`], [`decode_reply`] and [`decode_notification`], which accept both the
//! plain and the `oslo.version`/`oslo.message` enveloped forms, as oslo's `deserialize_msg`.
//!
//! The module is split by concern: [`json`] (the Python-compatible formatter), the oslo
//! message types (`message`) and the AMQP codec (`codec`); everything is re-exported here.

mod codec;
pub mod json;
mod message;

pub use codec::{
    decode_notification, decode_reply, decode_request, AmqpMessage, EncodedValue, IncomingBody,
    IncomingMessage, OutgoingMessage,
};
pub use json::{to_python_json, Map, Value};
pub use message::{
    python_utc_timestamp, Malformed, MessageId, Notification, NotifyVersion, Priority, RemoteError,
    ReplyBody, Request, ENVELOPE_MESSAGE_KEY, ENVELOPE_VERSION, ENVELOPE_VERSION_KEY,
};

// In scope for the unit tests (`use super::*`).
#[cfg(test)]
use fe2o3_amqp_types::messaging::{AmqpValue, Batch, Body, Message};

#[cfg(test)]
mod tests;
