//! The multi-host data plane: frontends and worker hosts joined by mutually
//! authenticated TLS 1.3 links (AES-256-GCM only).

pub mod daemon;
pub mod frontend;
pub mod link;
pub mod placement;
pub mod tls;
