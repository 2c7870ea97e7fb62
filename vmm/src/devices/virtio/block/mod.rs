//! virtio-blk backed by a host file (synchronous I/O on the event loop).

pub mod device;
pub mod event_handler;
pub mod request;

pub use device::{Block, BlockError};
