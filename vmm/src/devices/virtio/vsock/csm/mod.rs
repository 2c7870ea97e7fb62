//! Connection state machine: one guest<->host stream connection and its flow control.

mod connection;
pub(crate) mod sys;
mod txbuf;

pub use connection::{ConnError, ConnKey, VsockConnection};
