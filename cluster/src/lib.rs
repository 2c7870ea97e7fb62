//! The multi-host data plane: frontends and worker hosts joined by mutually
//! authenticated TLS 1.3 links (AES-256-GCM only).

pub mod placement;
pub mod tls;
