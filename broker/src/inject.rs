//! Messages the broker puts on an address itself ([`crate::Faults::inject`]): malformed or
//! unusual ones, to see how peers handle them.

use std::time::Duration;

use fe2o3_amqp_types::messaging::{
    AmqpSequence, AmqpValue, ApplicationProperties, Batch, Body, Data, Header, Message, MessageId,
    Properties,
};
use fe2o3_amqp_types::primitives::{Binary, OrderedMap, SimpleValue, Value};

use crate::node::Msg;

/// The body of an injected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectBody {
    /// An amqp-value string (oslo's encoding; a non-JSON text tests the peer's decoder).
    Text(String),
    /// One `data` section with these bytes (oslo peers expect amqp-value).
    Data(Vec<u8>),
    /// An amqp-value binary.
    Binary(Vec<u8>),
    /// An amqp-value map of strings.
    Map(Vec<(String, String)>),
    /// One amqp-sequence section of strings.
    Sequence(Vec<String>),
    /// "No body": fe2o3 encodes it as an amqp-value `null` section, which is also what the
    /// embedded broker forwards for a message sent without a body section (oslo's
    /// call-monitor heartbeats); proton reads either as `body is None`.
    Empty,
}

/// A message to inject: a body and the properties that matter to oslo peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedMessage {
    /// The body.
    pub body: InjectBody,
    /// `message-id` (a string).
    pub message_id: Option<String>,
    /// `correlation-id` (a string).
    pub correlation_id: Option<String>,
    /// `reply-to`.
    pub reply_to: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// Header `ttl`.
    pub ttl: Option<Duration>,
    /// String application properties.
    pub application_properties: Vec<(String, String)>,
    /// Delivered as if the producer had sent it pre-settled.
    pub presettled: bool,
}

impl InjectedMessage {
    /// A message with this body and nothing else.
    pub fn new(body: InjectBody) -> Self {
        InjectedMessage {
            body,
            message_id: None,
            correlation_id: None,
            reply_to: None,
            subject: None,
            ttl: None,
            application_properties: Vec::new(),
            presettled: false,
        }
    }

    /// An amqp-value string body.
    pub fn text(body: impl Into<String>) -> Self {
        InjectedMessage::new(InjectBody::Text(body.into()))
    }

    /// A `data` section body.
    pub fn data(bytes: impl Into<Vec<u8>>) -> Self {
        InjectedMessage::new(InjectBody::Data(bytes.into()))
    }

    /// Sets `correlation-id`.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets `message-id`.
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets `reply-to`.
    pub fn with_reply_to(mut self, address: impl Into<String>) -> Self {
        self.reply_to = Some(address.into());
        self
    }

    /// Adds a string application property.
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.application_properties.push((key.into(), value.into()));
        self
    }

    /// Builds the AMQP message, `to` = `address`.
    pub(crate) fn into_message(self, address: &str) -> Msg {
        let body = match self.body {
            InjectBody::Text(s) => Body::Value(AmqpValue(Value::String(s))),
            InjectBody::Binary(b) => Body::Value(AmqpValue(Value::Binary(b.into()))),
            InjectBody::Data(b) => Body::Data(Batch::new(vec![Data(Binary::from(b))])),
            InjectBody::Map(entries) => {
                let mut m = OrderedMap::new();
                for (k, v) in entries {
                    m.insert(Value::String(k), Value::String(v));
                }
                Body::Value(AmqpValue(Value::Map(m)))
            }
            InjectBody::Sequence(items) => {
                let seq = AmqpSequence(items.into_iter().map(Value::String).collect());
                Body::Sequence(Batch::new(vec![seq]))
            }
            InjectBody::Empty => Body::Empty,
        };
        let application_properties = (!self.application_properties.is_empty()).then(|| {
            let mut m = OrderedMap::new();
            for (k, v) in self.application_properties {
                m.insert(k, SimpleValue::String(v));
            }
            ApplicationProperties(m)
        });
        Message {
            header: Some(Header {
                ttl: self
                    .ttl
                    .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                ..Header::default()
            }),
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                message_id: self.message_id.map(MessageId::String),
                to: Some(address.to_string()),
                subject: self.subject,
                reply_to: self.reply_to,
                correlation_id: self.correlation_id.map(MessageId::String),
                ..Properties::default()
            }),
            application_properties,
            body,
            footer: None,
        }
    }
}

/// Why a message could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The broker refuses the address (the words it would send a producer).
    #[error("address refused: {condition}: {description}")]
    Refused {
        /// The AMQP error condition.
        condition: String,
        /// Its description.
        description: String,
    },
    /// The address exists but nothing can take the message now (a router address with no
    /// consumer).
    #[error("no route for the message (no consumer)")]
    NoRoute,
    /// The broker has stopped.
    #[error("the broker has stopped")]
    Stopped,
}
