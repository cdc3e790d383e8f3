//! Driver integration tests over real TCP against the embedded broker.

mod common;
mod notify;
mod rpc;
