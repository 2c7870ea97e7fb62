//! Pieces of the bench binaries: a bare loopback HTTP/1.1 echo baseline, the invoke
//! topology's floor, latency stats and the shared JSON reporting `main`.

pub mod floor;
pub mod http_echo;
pub mod report;
pub mod stats;
