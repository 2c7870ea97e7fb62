//! Handshakes on accepted and dialled TCP connections, with their outcome counted.

use std::io;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::AlertDescription;
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::verify::certificate_reason;
use super::{peer_identity, Identity, LinkStats, RefusalReason};

/// A handshake that did not produce a link.
#[derive(Debug, thiserror::Error)]
#[error("link handshake failed ({reason}): {source}")]
pub struct Refusal {
    /// What went wrong, as counted in [`LinkStats`].
    pub reason: RefusalReason,
    /// The error from the handshake.
    #[source]
    pub source: io::Error,
}

/// Runs the server side of the handshake on an accepted connection.
///
/// On success returns the stream and the client's identity and counts the handshake and
/// its duration; on failure counts the refusal once under its reason (refusals decided by
/// the certificate verifier were counted there, everything else is counted here).
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    stats: &LinkStats,
) -> Result<(server::TlsStream<TcpStream>, Identity), Refusal> {
    let started = Instant::now();
    let result = acceptor.accept(tcp).await;
    finish(result, started, stats, |s| peer_identity(s.get_ref().1))
}

/// Runs the client side of the handshake on a dialled connection; counts like [`accept`].
///
/// The server name given to rustls is the dialled IP address (so no SNI is sent); it is
/// not checked against the certificate.
///
/// TLS 1.3 lets the client finish before the server has looked at the client's
/// certificate: a server refusing it shows on the client as an error on the first read.
pub async fn connect(
    connector: &TlsConnector,
    tcp: TcpStream,
    stats: &LinkStats,
) -> Result<(client::TlsStream<TcpStream>, Identity), Refusal> {
    let started = Instant::now();
    let name = match tcp.peer_addr() {
        Ok(addr) => ServerName::IpAddress(addr.ip().into()),
        Err(source) => return Err(refused(stats, source)),
    };
    let result = connector.connect(name, tcp).await;
    finish(result, started, stats, |s| peer_identity(s.get_ref().1))
}

fn finish<S>(
    result: io::Result<S>,
    started: Instant,
    stats: &LinkStats,
    identity: impl FnOnce(&S) -> Option<Identity>,
) -> Result<(S, Identity), Refusal> {
    let stream = result.map_err(|e| refused(stats, e))?;
    match identity(&stream) {
        Some(id) => {
            stats.record_handshake(started.elapsed());
            Ok((stream, id))
        }
        // The verifiers refuse certificates without an identity; this is a safety net.
        None => {
            stats.record_refusal(RefusalReason::BadIdentity);
            Err(Refusal {
                reason: RefusalReason::BadIdentity,
                source: io::Error::new(io::ErrorKind::InvalidData, "peer has no identity"),
            })
        }
    }
}

/// Classifies a failed handshake and counts it unless the verifier already did.
fn refused(stats: &LinkStats, source: io::Error) -> Refusal {
    let (reason, counted_by_verifier) = classify(&source);
    if !counted_by_verifier {
        stats.record_refusal(reason);
    }
    tracing::debug!(reason = reason.as_str(), error = %source, "link handshake failed");
    Refusal { reason, source }
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Whether a read error means a record from the peer failed to decrypt or parse.
pub(crate) fn is_bad_record(e: &io::Error) -> bool {
    matches!(
        rustls_error(e),
        Some(rustls::Error::DecryptError | rustls::Error::InvalidMessage(_))
    )
}

/// The reason for a handshake error and whether a verifier counted it already.
fn classify(e: &io::Error) -> (RefusalReason, bool) {
    use rustls::Error as E;
    let reason = match rustls_error(e) {
        Some(E::InvalidCertificate(c)) => return (certificate_reason(c), true),
        Some(E::NoCertificatesPresented) => RefusalReason::NoCertificate,
        Some(E::AlertReceived(alert)) => alert_reason(*alert),
        Some(E::DecryptError | E::InvalidMessage(_)) => RefusalReason::BadRecord,
        _ => RefusalReason::Other,
    };
    (reason, false)
}

/// The reason behind an alert the peer sent when it refused us.
fn alert_reason(alert: AlertDescription) -> RefusalReason {
    match alert {
        AlertDescription::CertificateRequired => RefusalReason::NoCertificate,
        AlertDescription::UnknownCA => RefusalReason::UnknownCa,
        AlertDescription::CertificateExpired => RefusalReason::Expired,
        AlertDescription::CertificateRevoked => RefusalReason::Revoked,
        AlertDescription::AccessDenied => RefusalReason::WrongRole,
        AlertDescription::BadRecordMac => RefusalReason::BadRecord,
        _ => RefusalReason::Other,
    }
}
