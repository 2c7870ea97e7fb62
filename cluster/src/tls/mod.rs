//! Mutually authenticated TLS 1.3 for the links between frontend and worker hosts.
//!
//! # Protocol
//!
//! TLS 1.3 only, one cipher suite (`TLS13_AES_256_GCM_SHA384`, [`provider`]), ALPN `h2`,
//! no session resumption (every connection runs the full verification, so revocation
//! applies to the next connection). Both ends present a certificate from the cluster CA.
//!
//! # Identity
//!
//! A host's identity is in its certificate's URI SAN, `lambda-cluster://<role>/<id>`:
//! role `frontend` or `worker`, id `[A-Za-z0-9._-]{1,64}` ([`Identity`]). Each end checks
//! that the peer's certificate chains to the cluster CA, is valid now, is not on the CRL,
//! and names the role it expects. Host names and IP addresses are not checked, so a
//! certificate works whatever address the peer dialled.
//!
//! # Files
//!
//! [`ca`] keeps a CA directory (`ca.pem`, `ca.key`, `issued.json`, `crl.pem`) and writes
//! `<role>-<id>.pem` / `<role>-<id>.key`; [`TlsFiles::in_dir`] names that layout. A
//! running process re-reads its certificate and key and the CRL when they change (looked
//! at on handshakes, at most every [`RELOAD_CHECK_INTERVAL`]); a file that fails to load
//! leaves the previous version in use, with a warning (at start, in [`server_config`] /
//! [`client_config`], it is an error). A CRL file that does not exist yet means nothing
//! is revoked. Established connections are unaffected by either.
//!
//! # API
//!
//! ```text
//! pub enum Role { Frontend, Worker }                          // Display / FromStr "frontend" | "worker"
//! pub struct Identity { pub role: Role, pub id: String }
//! pub struct TlsFiles { pub ca_cert, pub cert, pub key: PathBuf, pub crl: Option<PathBuf> }
//! impl TlsFiles { pub fn in_dir(dir: &Path, role: Role, id: &str) -> Self }
//! pub fn provider() -> Arc<CryptoProvider>
//! pub fn server_config(&TlsFiles, peer: Role, Arc<LinkStats>) -> Result<Arc<ServerConfig>, TlsError>
//! pub fn client_config(&TlsFiles, peer: Role, Arc<LinkStats>) -> Result<Arc<ClientConfig>, TlsError>
//! pub fn peer_identity(&rustls::CommonState) -> Option<Identity>
//! pub async fn accept(&TlsAcceptor, TcpStream, &LinkStats)
//!     -> Result<(server::TlsStream<TcpStream>, Identity), Refusal>
//! pub async fn connect(&TlsConnector, TcpStream, &LinkStats)
//!     -> Result<(client::TlsStream<TcpStream>, Identity), Refusal>
//! pub struct Refusal { pub reason: RefusalReason, pub source: io::Error }
//! pub enum RefusalReason { NoCertificate, UnknownCa, Expired, Revoked, WrongRole,
//!                          BadIdentity, BadRecord, Other }   // as_str(): snake_case
//! pub struct LinkStats                                        // refusals(reason), render(prefix), ...
//! pub struct Counted<S>                                       // AsyncRead + AsyncWrite, counts bytes and bad records
//! pub mod ca { init, issue, issue_with_validity, revoke, issued, IssuedPaths, IssuedCert }
//! pub const DEFAULT_CERT_LIFETIME: Duration                   // 12 h
//! ```
//!
//! # Counting
//!
//! Each failed handshake is counted once in the [`LinkStats`] of the side where it
//! failed: refusals of the peer's certificate by the verifier (unknown CA, expired,
//! revoked, wrong role, bad identity) are counted in the verifier, everything else in
//! [`accept`] / [`connect`] (no certificate, received alerts by their description, I/O
//! errors). A refused client learns of it by alert on its first read (TLS 1.3 completes
//! the client side first). A record failing to decrypt on an established link is
//! counted by [`Counted`] as [`RefusalReason::BadRecord`].
//!
//! # Use
//!
//! ```no_run
//! # async fn f(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cluster::tls::{self, LinkStats, Role, TlsFiles};
//! let stats = Arc::new(LinkStats::new());
//! let files = TlsFiles::in_dir("/etc/lambda/tls".as_ref(), Role::Worker, "w1");
//! let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&files, Role::Frontend, stats.clone())?);
//! let (tcp, _) = listener.accept().await?;
//! let (stream, peer) = tls::accept(&acceptor, tcp, &stats).await?;
//! let link = tls::Counted::new(stream, stats.clone());
//! # let _ = (link, peer); Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod ca;
mod config;
mod counted;
mod files;
mod identity;
mod issued;
mod link;
mod reload;
mod stats;
mod verify;

#[cfg(test)]
mod tests;

pub use config::{client_config, provider, server_config, ALPN_H2};
pub use counted::Counted;
pub use identity::{check_id, peer_identity, Identity, Role, IDENTITY_SCHEME, MAX_ID_LEN};
pub use link::{accept, connect, Refusal};
pub use reload::RELOAD_CHECK_INTERVAL;
pub use stats::{LinkStats, RefusalReason};

/// Lifetime of certificates [`ca::issue`] is normally asked for: 12 h, shorter than the
/// default 14 h worker lease, so a host that stops renewing drops out of the cluster.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Where a host finds its TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate (the only trust anchor).
    pub ca_cert: PathBuf,
    /// This host's certificate (chain), PEM.
    pub cert: PathBuf,
    /// This host's private key, PEM.
    pub key: PathBuf,
    /// The CA's revocation list, PEM; may not exist yet (nothing revoked).
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The layout [`ca::init`], [`ca::issue`] and [`ca::revoke`] write when the output
    /// directory is the CA directory (or a copy of its public files): `dir/ca.pem`,
    /// `dir/<role>-<id>.pem`, `dir/<role>-<id>.key`, `dir/crl.pem`.
    pub fn in_dir(dir: &Path, role: Role, id: &str) -> Self {
        let (cert, key) = ca::cert_file_names(role, id);
        Self {
            ca_cert: dir.join(ca::CA_CERT_FILE),
            cert: dir.join(cert),
            key: dir.join(key),
            crl: Some(dir.join(ca::CRL_FILE)),
        }
    }
}

/// Errors setting up TLS material and configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A PEM file without the expected content.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A CA certificate rustls cannot use as a trust anchor.
    #[error("{path}: not a usable CA certificate: {source}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rustls::Error,
    },
    /// A certificate and key that cannot be used together.
    #[error("{cert} with {key}: {source}")]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The error.
        #[source]
        source: rustls::Error,
    },
    /// Building a certificate verifier (typically a bad CRL).
    #[error("certificate verifier (CRL {crl:?}): {source}")]
    Verifier {
        /// The CRL file, if any.
        crl: Option<PathBuf>,
        /// The error.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// The CA's record of issued certificates.
    #[error("{path}: {source}")]
    Issued {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// `ca::init` on a directory that has a CA already.
    #[error("{0}: a cluster CA exists already")]
    CaExists(PathBuf),
    /// Generating or signing certificates or CRLs.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// A role, id or certificate identity that is not valid.
    #[error("bad identity: {0}")]
    BadIdentity(String),
}
