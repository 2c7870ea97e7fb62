//! Pieces of the bench binaries: a bare loopback HTTP/1.1 echo baseline, latency stats
//! and the shared JSON reporting `main`.

pub mod http_echo;
pub mod report;
pub mod stats;
