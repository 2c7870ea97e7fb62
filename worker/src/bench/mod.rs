//! Pieces of `worker-bench`: a bare loopback HTTP/1.1 echo baseline and latency stats.

pub mod http_echo;
pub mod stats;
