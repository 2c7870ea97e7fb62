//! What frontends keep in etcd is sealed with AES-256-GCM under a key derived from the
//! shared master key: registry entries (function settings, environment variables
//! included) and Events (their payloads) are neither readable nor alterable by anyone
//! with access to etcd's data or traffic but not the master key. Each value is bound to
//! its etcd key (the associated data), so a value moved to another key fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::etcd::EtcdError;
use crate::ids::random_bytes;

const NONCE: usize = 12;
/// Bytes a sealed value adds: its nonce and tag.
pub const OVERHEAD: usize = NONCE + 16;

pub struct Sealer {
    key: Zeroizing<[u8; 32]>,
}

impl Sealer {
    pub fn new(key: Zeroizing<[u8; 32]>) -> Self {
        Self { key }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.key).into())
    }

    /// `nonce || ciphertext || tag`, bound to `etcd_key`.
    pub fn seal(&self, etcd_key: &str, plain: &[u8]) -> Result<Vec<u8>, EtcdError> {
        let nonce = random_bytes::<NONCE>();
        let payload = Payload {
            msg: plain,
            aad: etcd_key.as_bytes(),
        };
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| EtcdError::Settings("sealing a value for etcd failed".into()))?;
        Ok([&nonce[..], &sealed].concat())
    }

    /// The value stored under `etcd_key`, if it was sealed there with this key.
    pub fn open(&self, etcd_key: &str, sealed: &[u8]) -> Result<Vec<u8>, EtcdError> {
        let refused = || {
            EtcdError::Sealed(format!(
                "{etcd_key}: not sealed with this cluster's master key, or altered"
            ))
        };
        if sealed.len() < OVERHEAD {
            return Err(refused());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let payload = Payload {
            msg: body,
            aad: etcd_key.as_bytes(),
        };
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_under_its_key_and_unaltered() {
        let s = Sealer::new(Zeroizing::new([3u8; 32]));
        let v = s.seal("/p/registry/log/1", b"changeset").unwrap();
        assert_eq!(s.open("/p/registry/log/1", &v).unwrap(), b"changeset");
        assert!(
            s.open("/p/registry/log/2", &v).is_err(),
            "moved to another key"
        );
        let mut flipped = v.clone();
        flipped[NONCE + 1] ^= 1;
        assert!(s.open("/p/registry/log/1", &flipped).is_err());
        assert!(s.open("/p/registry/log/1", &v[..OVERHEAD - 1]).is_err());
        let other = Sealer::new(Zeroizing::new([4u8; 32]));
        assert!(
            other.open("/p/registry/log/1", &v).is_err(),
            "another master key"
        );
    }
}
