//! Driver integration tests over real TCP against the embedded broker.

mod close_flush;
mod common;
mod failover;
mod links;
mod malformed;
mod notify;
mod rabbitmq;
mod rabbitmq4;
mod rpc;
mod security;
