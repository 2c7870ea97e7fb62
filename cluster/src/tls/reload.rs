//! Values rebuilt from files when they change: the own certificate and key (renewal) and
//! the CRL (revocation), picked up by new handshakes without a restart. Established
//! connections keep the keys they negotiated and are unaffected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::files::{load_certs, load_key, stamps, Stamp};
use super::TlsError;

/// Files are looked at (stat) at most this often, on handshakes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

type Loader<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A value built from some files and rebuilt when one of them changes (mtime, size or
/// inode), checked at most every [`RELOAD_CHECK_INTERVAL`]. When the rebuild fails the old
/// value stays in use and a warning is logged once per change.
pub(crate) struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: T,
    stamps: Vec<Option<Stamp>>,
    last_check: Instant,
}

impl<T: Clone> Reloading<T> {
    /// Loads the value now; an error here is the caller's (a config cannot start without).
    pub(crate) fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = stamps(&path_refs(&paths));
        let current = load()?;
        Ok(Self {
            what,
            paths,
            load: Box::new(load),
            state: Mutex::new(State {
                current,
                stamps,
                last_check: Instant::now(),
            }),
        })
    }

    /// The current value, after a reload if the files changed since the last look.
    pub(crate) fn current(&self) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.last_check.elapsed() >= RELOAD_CHECK_INTERVAL {
            state.last_check = Instant::now();
            // Stamps before loading: a change racing the load is seen again next time.
            let stamps = stamps(&path_refs(&self.paths));
            if stamps != state.stamps {
                state.stamps = stamps;
                match (self.load)() {
                    Ok(value) => {
                        tracing::info!(what = self.what, files = ?self.paths, "reloaded");
                        state.current = value;
                    }
                    Err(error) => tracing::warn!(
                        what = self.what, %error, "reload failed, keeping the previous one"
                    ),
                }
            }
        }
        state.current.clone()
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn path_refs(paths: &[PathBuf]) -> Vec<&Path> {
    paths.iter().map(PathBuf::as_path).collect()
}

/// Loads a certificate chain and its private key, checking that they belong together.
pub(crate) fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map(Arc::new)
        .map_err(|source| TlsError::CertKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
}

/// The own certificate and key, for both sides of a link, re-read when renewed.
#[derive(Debug)]
pub(crate) struct CertKeyResolver(Reloading<Arc<CertifiedKey>>);

impl CertKeyResolver {
    pub(crate) fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let (c, k) = (cert.to_owned(), key.to_owned());
        let paths = vec![c.clone(), k.clone()];
        let load = move || load_certified_key(&c, &k, &provider);
        Ok(Self(Reloading::new("certificate and key", paths, load)?))
    }
}

impl ResolvesServerCert for CertKeyResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for CertKeyResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
