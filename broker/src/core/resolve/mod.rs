//! Address resolution: which node an attach or an anonymous-relay message goes to.
//!
//! The flavour-independent part (dynamic terminus, anonymous relay, refusal faults) is here;
//! each flavour's naming rules are in its own module.

mod qpidd;
mod rabbitmq;
mod router;

pub(crate) use router::distribution as router_distribution;

use std::sync::Arc;

use fe2o3_amqp::types::definitions::{self, Role};
use fe2o3_amqp::types::messaging::{Target, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;

use super::Core;
use crate::config::Flavour;
use crate::node::Node;
use crate::util::amqp_error;

/// Why an attach is refused.
#[derive(Debug)]
pub(crate) enum Refuse {
    /// Attach (with a null terminus) then detach with this error.
    Detach(definitions::Error),
    /// End the whole session with this error (RabbitMQ).
    EndSession(definitions::Error),
}

impl Refuse {
    /// The error, whatever the level.
    pub(crate) fn into_error(self) -> definitions::Error {
        match self {
            Refuse::Detach(e) | Refuse::EndSession(e) => e,
        }
    }
}

/// Where an accepted attach goes.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// `None`: anonymous relay (routed per message by its `to`).
    pub node: Option<Arc<Node>>,
    /// The address to echo in the terminus of a dynamic link.
    pub dynamic_address: Option<String>,
}

/// The address and `dynamic` flag of the terminus on the broker's side of the link.
struct Terminus {
    consumer: bool,
    address: Option<String>,
    dynamic: bool,
}

#[allow(irrefutable_let_patterns)]
pub(crate) fn target_of(attach: &Attach) -> Option<&Target> {
    match attach.target.as_deref()? {
        TargetArchetype::Target(t) => Some(t),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

#[allow(irrefutable_let_patterns)]
pub(crate) fn target_of_mut(attach: &mut Attach) -> Option<&mut Target> {
    match attach.target.as_deref_mut()? {
        TargetArchetype::Target(t) => Some(t),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn terminus(attach: &Attach) -> Terminus {
    let consumer = attach.role == Role::Receiver;
    let (address, dynamic) = if consumer {
        match attach.source.as_deref() {
            Some(s) => (s.address.clone(), s.dynamic),
            None => (None, false),
        }
    } else {
        match target_of(attach) {
            Some(t) => (t.address.clone(), t.dynamic),
            None => (None, false),
        }
    };
    Terminus {
        consumer,
        address,
        dynamic,
    }
}

impl Core {
    /// Finds or creates the node for a non-dynamic address.
    pub(crate) fn lookup(&self, address: &str) -> Result<Arc<Node>, Refuse> {
        if let Some(n) = self.node(address) {
            return Ok(n);
        }
        match self.flavour {
            Flavour::Qpidd => qpidd::lookup(self, address),
            Flavour::Router => Ok(router::lookup(self, address)),
            Flavour::Rabbitmq3 => rabbitmq::lookup(self, address),
        }
    }

    /// Refusal at the level this flavour uses.
    fn refuse(&self, error: definitions::Error) -> Refuse {
        match self.flavour {
            Flavour::Rabbitmq3 => Refuse::EndSession(error),
            _ => Refuse::Detach(error),
        }
    }

    pub(crate) fn resolve(&self, attach: &Attach, conn_tag: &str) -> Result<Resolved, Refuse> {
        let t = terminus(attach);
        if t.dynamic {
            let node = match self.flavour {
                Flavour::Qpidd => qpidd::dynamic_node(self, conn_tag, &attach.name),
                Flavour::Router => router::dynamic_node(self),
                Flavour::Rabbitmq3 => return Err(rabbitmq::refuse_dynamic(t.consumer)),
            };
            let node = self.insert_node(node);
            return Ok(Resolved {
                dynamic_address: Some(node.name.clone()),
                node: Some(node),
            });
        }
        let Some(address) = t.address else {
            return self.resolve_null_address(t.consumer);
        };
        if let Some(err) = self.faults.refusal(&address) {
            return Err(self.refuse(err));
        }
        Ok(Resolved {
            node: Some(self.lookup(&address)?),
            dynamic_address: None,
        })
    }

    /// A terminus without an address: the anonymous relay for senders (where offered).
    fn resolve_null_address(&self, consumer: bool) -> Result<Resolved, Refuse> {
        if !consumer && self.flavour != Flavour::Rabbitmq3 {
            return Ok(Resolved {
                node: None,
                dynamic_address: None,
            });
        }
        let err = if consumer {
            amqp_error("amqp:invalid-field", "Attach rejected: no source address")
        } else {
            amqp_error(
                "amqp:invalid-field",
                "Attach rejected: {address_not_utf8_string,undefined}",
            )
        };
        Err(self.refuse(err))
    }

    /// The node a message sent on the anonymous relay goes to (by its `to`).
    pub(crate) fn relay_target(&self, to: Option<&str>) -> Result<Arc<Node>, definitions::Error> {
        let Some(to) = to else {
            return Err(amqp_error(
                "amqp:invalid-field",
                "message has no `to` address for the anonymous relay",
            ));
        };
        if let Some(e) = self.faults.refusal(to) {
            return Err(e);
        }
        self.lookup(to).map_err(Refuse::into_error)
    }
}
