//! Peer certificate verifiers for both ends of a link: chain to the cluster CA, validity
//! time, revocation (CRL, reloaded when it changes), then the role in the identity URI.
//! Neither side checks a host name or IP address.
//!
//! Counting: a verifier counts every `Error::InvalidCertificate` it returns, and only
//! those; [`super::accept`] / [`super::connect`] count every other handshake failure. No
//! other part of rustls produces `InvalidCertificate`, so each refusal counts once.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use super::files::load_crls;
use super::reload::Reloading;
use super::{Identity, LinkStats, RefusalReason, Role, TlsError};

/// The reason a certificate error is counted under.
pub(crate) fn certificate_reason(error: &CertificateError) -> RefusalReason {
    use CertificateError as E;
    match error {
        E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. } => {
            RefusalReason::Expired
        }
        E::UnknownIssuer => RefusalReason::UnknownCa,
        E::Revoked => RefusalReason::Revoked,
        E::ApplicationVerificationFailure => RefusalReason::WrongRole,
        E::Other(OtherError(inner)) if inner.downcast_ref::<TlsError>().is_some() => {
            RefusalReason::BadIdentity
        }
        _ => RefusalReason::Other,
    }
}

/// A chain that fails on a signature names an issuer like the cluster CA's that did not
/// sign it: an impostor CA, refused as unknown (alert unknown_ca).
fn chain_error(error: Error) -> Error {
    match error {
        Error::InvalidCertificate(CertificateError::BadSignature) => {
            CertificateError::UnknownIssuer.into()
        }
        other => other,
    }
}

/// Counts the certificate error in `result`, if any (see the module comment).
fn counted<T>(result: Result<T, Error>, stats: &LinkStats) -> Result<T, Error> {
    if let Err(Error::InvalidCertificate(e)) = &result {
        let reason = certificate_reason(e);
        tracing::warn!(reason = reason.as_str(), error = %e, "refused peer certificate");
        stats.record_refusal(reason);
    }
    result
}

/// The identity of `end_entity`, which must be of role `expected`.
///
/// A missing or malformed identity is `Other(TlsError::BadIdentity)` (alert
/// certificate_unknown), the wrong role `ApplicationVerificationFailure` (access_denied).
fn check_role(end_entity: &CertificateDer<'_>, expected: Role) -> Result<Identity, Error> {
    let identity = Identity::from_cert_der(end_entity)
        .map_err(|e| CertificateError::Other(OtherError(Arc::new(e))))?;
    if identity.role != expected {
        tracing::warn!(peer = %identity, %expected, "peer certificate has the wrong role");
        return Err(CertificateError::ApplicationVerificationFailure.into());
    }
    Ok(identity)
}

fn crls_of(
    path: &Option<PathBuf>,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    path.as_deref().map_or(Ok(Vec::new()), load_crls)
}

fn crl_paths(crl: &Option<PathBuf>) -> Vec<PathBuf> {
    crl.iter().cloned().collect()
}

fn verifier_err(
    crl: &Option<PathBuf>,
) -> impl FnOnce(rustls::server::VerifierBuilderError) -> TlsError + '_ {
    move |source| TlsError::Verifier {
        crl: crl.clone(),
        source,
    }
}

/// Server side: the client's certificate is mandatory and must be of role `peer`.
#[derive(Debug)]
pub(crate) struct ClientIdentityVerifier {
    inner: Reloading<Arc<dyn ClientCertVerifier>>,
    root_hints: Vec<DistinguishedName>,
    peer: Role,
    stats: Arc<LinkStats>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientIdentityVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        crl: Option<PathBuf>,
        peer: Role,
        stats: Arc<LinkStats>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let root_hints = roots.subjects();
        let algs = provider.signature_verification_algorithms;
        let paths = crl_paths(&crl);
        let build = move || {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .with_crls(crls_of(&crl)?)
                .only_check_end_entity_revocation()
                .build()
                .map_err(verifier_err(&crl))
        };
        Ok(Self {
            inner: Reloading::new("client certificate verifier (CRL)", paths, build)?,
            root_hints,
            peer,
            stats,
            algs,
        })
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let chain = self
            .inner
            .current()
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(chain_error);
        let result = chain.and_then(|ok| check_role(end_entity, self.peer).map(|_| ok));
        counted(result, &self.stats)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        counted(
            verify_tls12_signature(message, cert, dss, &self.algs),
            &self.stats,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        counted(
            verify_tls13_signature(message, cert, dss, &self.algs),
            &self.stats,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Client side: the server's certificate must chain to the cluster CA, be valid now, not
/// be revoked and be of role `peer`, whatever address was dialled.
#[derive(Debug)]
pub(crate) struct ServerIdentityVerifier {
    inner: Reloading<Arc<WebPkiServerVerifier>>,
    peer: Role,
    stats: Arc<LinkStats>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerIdentityVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        crl: Option<PathBuf>,
        peer: Role,
        stats: Arc<LinkStats>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let algs = provider.signature_verification_algorithms;
        let paths = crl_paths(&crl);
        let build = move || {
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .with_crls(crls_of(&crl)?)
                .only_check_end_entity_revocation()
                .build()
                .map_err(verifier_err(&crl))
        };
        Ok(Self {
            inner: Reloading::new("server certificate verifier (CRL)", paths, build)?,
            peer,
            stats,
            algs,
        })
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    /// webpki checks the chain, the validity time and revocation first and the name last,
    /// so a `NotValidForName` error means everything but the name passed; the name (the
    /// dialled address) is deliberately not checked. The tests pin this order: certificates
    /// from another CA, expired or revoked, all fail with a dialled name they do not carry.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verifier = self.inner.current();
        let chain =
            verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        let chain = match chain {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other.map_err(chain_error),
        };
        let result = chain.and_then(|ok| check_role(end_entity, self.peer).map(|_| ok));
        counted(result, &self.stats)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        counted(
            verify_tls12_signature(message, cert, dss, &self.algs),
            &self.stats,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        counted(
            verify_tls13_signature(message, cert, dss, &self.algs),
            &self.stats,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
