//! rustls configurations for both ends of a link.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::files::load_certs;
use super::reload::CertKeyResolver;
use super::verify::{ClientIdentityVerifier, ServerIdentityVerifier};
use super::{LinkStats, Role, TlsError, TlsFiles};

/// The one application protocol spoken on links.
pub const ALPN_H2: &[u8] = b"h2";

/// aws-lc-rs's default provider cut down to the single cipher suite links use,
/// `TLS13_AES_256_GCM_SHA384`.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = vec![aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384];
    Arc::new(provider)
}

/// The cluster CA certificate(s) in `path` as the only trust anchors.
pub(crate) fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::CaCert {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(roots))
}

/// Server configuration for a link listener.
///
/// The client must present a certificate from the cluster CA (`files.ca_cert`), valid now,
/// not revoked by `files.crl`, naming role `peer`. TLS 1.3 and `TLS13_AES_256_GCM_SHA384`
/// only, ALPN `h2`, no session resumption (every connection is fully verified, so a
/// revocation applies to the next connection). Certificate, key and CRL are re-read when
/// they change. Verifier refusals are counted in `stats`.
pub fn server_config(
    files: &TlsFiles,
    peer: Role,
    stats: Arc<LinkStats>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let roots = load_roots(&files.ca_cert)?;
    let verifier =
        ClientIdentityVerifier::new(roots, files.crl.clone(), peer, stats, provider.clone())?;
    let resolver = CertKeyResolver::new(&files.cert, &files.key, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client configuration for dialling a link.
///
/// The server's certificate must come from the cluster CA, be valid now, not be revoked
/// and name role `peer`; the dialled host name or address is not checked. The client
/// presents `files.cert`. Same protocol, suite, ALPN and reloading as [`server_config`].
pub fn client_config(
    files: &TlsFiles,
    peer: Role,
    stats: Arc<LinkStats>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let resolver = CertKeyResolver::new(&files.cert, &files.key, provider.clone())?;
    let builder = client_builder(files, peer, stats, provider)?;
    Ok(Arc::new(finish_client(
        builder.with_client_cert_resolver(Arc::new(resolver)),
    )))
}

type WantsClientCert = rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>;

/// A client builder with the link's provider, version and server verifier.
pub(crate) fn client_builder(
    files: &TlsFiles,
    peer: Role,
    stats: Arc<LinkStats>,
    provider: Arc<CryptoProvider>,
) -> Result<WantsClientCert, TlsError> {
    let roots = load_roots(&files.ca_cert)?;
    let verifier =
        ServerIdentityVerifier::new(roots, files.crl.clone(), peer, stats, provider.clone())?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier)))
}

/// ALPN and no resumption.
pub(crate) fn finish_client(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    config
}
