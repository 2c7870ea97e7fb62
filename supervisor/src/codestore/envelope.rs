//! AES-256-GCM envelope encryption of code objects.
//!
//! Each object gets a fresh random 256-bit data key; the data key is wrapped
//! by the master key. Both encryptions use random 96-bit nonces; a data key
//! encrypts exactly one message, and the master key wraps one small key per
//! object, far below the 2^32 random-nonce bound. The AAD binds function
//! name, version and CodeSha256, so a blob moved to another function or
//! version fails authentication.
//!
//! Layout: magic(8) | key_nonce(12) | wrapped_key(32) | key_tag(16) |
//! data_nonce(12) | ciphertext(n) | data_tag(16).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use zeroize::Zeroizing;

use super::master_key::MasterKey;
use crate::ids::random_bytes;

const MAGIC: &[u8; 8] = b"LMCODE\x00\x01";
const NONCE: usize = 12;
const TAG: usize = 16;
const KEY: usize = 32;
pub const HEADER_LEN: usize = MAGIC.len() + NONCE + KEY + TAG + NONCE;
/// Bytes a sealed object adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("sealed object is truncated or not a code object")]
    Format,
    #[error("authentication failed: wrong master key, or the object was tampered with or belongs to another function/version")]
    Authentication,
    #[error("encryption failed")]
    Encrypt,
}

/// What the ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct CodeAad<'a> {
    pub function: &'a str,
    pub version: &'a str,
    pub code_sha256: &'a str,
}

impl CodeAad<'_> {
    fn bytes(&self, domain: &[u8]) -> Vec<u8> {
        // Length-prefixed fields: no separator ambiguity whatever the names.
        let mut out = Vec::with_capacity(64 + self.function.len());
        out.extend_from_slice(domain);
        for field in [self.function, self.version, self.code_sha256] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// The fixed-size parts of a sealed object around the ciphertext.
pub struct Sealed {
    pub header: [u8; HEADER_LEN],
    pub tag: [u8; TAG],
}

fn cipher(key: &[u8; KEY]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// Encrypts `data` in place (no allocation, so a 50 MB object costs one
/// pass of AES-GCM) and returns the header and tag to store around it.
pub fn seal_in_place(
    master: &MasterKey,
    aad: &CodeAad<'_>,
    data: &mut [u8],
) -> Result<Sealed, EnvelopeError> {
    let data_key = Zeroizing::new(random_bytes::<KEY>());
    let key_nonce = random_bytes::<NONCE>();
    let data_nonce = random_bytes::<NONCE>();
    let mut wrapped = *data_key;
    let key_tag = cipher(master.bytes())
        .encrypt_in_place_detached(
            Nonce::from_slice(&key_nonce),
            &aad.bytes(b"wrap"),
            &mut wrapped,
        )
        .map_err(|_| EnvelopeError::Encrypt)?;
    let data_tag = cipher(&data_key)
        .encrypt_in_place_detached(Nonce::from_slice(&data_nonce), &data_aad(aad), data)
        .map_err(|_| EnvelopeError::Encrypt)?;
    let mut header = [0u8; HEADER_LEN];
    let parts: [&[u8]; 5] = [MAGIC, &key_nonce, &wrapped, &key_tag, &data_nonce];
    let mut at = 0;
    for p in parts {
        header[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Ok(Sealed {
        header,
        tag: data_tag.into(),
    })
}

/// Authenticates and decrypts `data` in place.
pub fn open_in_place(
    master: &MasterKey,
    aad: &CodeAad<'_>,
    sealed: &Sealed,
    data: &mut [u8],
) -> Result<(), EnvelopeError> {
    let h = &sealed.header;
    if &h[..MAGIC.len()] != MAGIC {
        return Err(EnvelopeError::Format);
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| {
        let r = at..at + n;
        at += n;
        r
    };
    let (kn, wk, kt, dn) = (take(NONCE), take(KEY), take(TAG), take(NONCE));
    let mut data_key = Zeroizing::new([0u8; KEY]);
    data_key.copy_from_slice(&h[wk]);
    cipher(master.bytes())
        .decrypt_in_place_detached(
            Nonce::from_slice(&h[kn]),
            &aad.bytes(b"wrap"),
            &mut *data_key,
            Tag::from_slice(&h[kt]),
        )
        .map_err(|_| EnvelopeError::Authentication)?;
    cipher(&data_key)
        .decrypt_in_place_detached(
            Nonce::from_slice(&h[dn]),
            &data_aad(aad),
            data,
            Tag::from_slice(&sealed.tag),
        )
        .map_err(|_| EnvelopeError::Authentication)
}

fn data_aad(aad: &CodeAad<'_>) -> Vec<u8> {
    let mut d = MAGIC.to_vec();
    d.extend_from_slice(&aad.bytes(b"data"));
    d
}

/// Copying convenience: plaintext in, complete sealed object out.
pub fn seal(
    master: &MasterKey,
    aad: &CodeAad<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let mut body = plaintext.to_vec();
    let s = seal_in_place(master, aad, &mut body)?;
    let mut out = Vec::with_capacity(OVERHEAD + body.len());
    out.extend_from_slice(&s.header);
    out.extend_from_slice(&body);
    out.extend_from_slice(&s.tag);
    Ok(out)
}

/// Splits a complete sealed object and decrypts it.
pub fn open(
    master: &MasterKey,
    aad: &CodeAad<'_>,
    mut sealed: Vec<u8>,
) -> Result<Vec<u8>, EnvelopeError> {
    if sealed.len() < OVERHEAD {
        return Err(EnvelopeError::Format);
    }
    let tag_at = sealed.len() - TAG;
    let parts = Sealed {
        header: sealed[..HEADER_LEN]
            .try_into()
            .map_err(|_| EnvelopeError::Format)?,
        tag: sealed[tag_at..]
            .try_into()
            .map_err(|_| EnvelopeError::Format)?,
    };
    open_in_place(master, aad, &parts, &mut sealed[HEADER_LEN..tag_at])?;
    sealed.truncate(tag_at);
    sealed.drain(..HEADER_LEN);
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: CodeAad<'static> = CodeAad {
        function: "fn",
        version: "$LATEST",
        code_sha256: "abc=",
    };

    #[test]
    fn round_trip_and_no_plaintext_in_ciphertext() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let msg = b"MARKER-PLAINTEXT-MARKER".repeat(100);
        let sealed = seal(&mk, &AAD, &msg).expect("seal");
        assert_eq!(sealed.len(), msg.len() + OVERHEAD);
        assert!(!sealed.windows(23).any(|w| w == b"MARKER-PLAINTEXT-MARKER"));
        assert_eq!(open(&mk, &AAD, sealed).expect("open"), msg);
    }

    #[test]
    fn fresh_keys_and_nonces_every_time() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let a = seal(&mk, &AAD, b"same").expect("seal");
        let b = seal(&mk, &AAD, b"same").expect("seal");
        assert_ne!(a[8..20], b[8..20], "key nonce reused");
        assert_ne!(
            a[HEADER_LEN - 12..HEADER_LEN],
            b[HEADER_LEN - 12..HEADER_LEN]
        );
        assert_ne!(a, b);
    }

    #[test]
    fn aad_binding_tamper_and_wrong_key_fail() {
        let mk = MasterKey::from_bytes([7u8; 32]);
        let sealed = seal(&mk, &AAD, b"payload").expect("seal");
        for other in [
            CodeAad {
                function: "fn2",
                ..AAD
            },
            CodeAad {
                version: "1",
                ..AAD
            },
            CodeAad {
                code_sha256: "abd=",
                ..AAD
            },
        ] {
            assert!(matches!(
                open(&mk, &other, sealed.clone()),
                Err(EnvelopeError::Authentication)
            ));
        }
        let wrong = MasterKey::from_bytes([8u8; 32]);
        assert!(matches!(
            open(&wrong, &AAD, sealed.clone()),
            Err(EnvelopeError::Authentication)
        ));
        for i in [0usize, 10, 30, 70, HEADER_LEN, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert!(open(&mk, &AAD, t).is_err(), "tamper at {i} accepted");
        }
        assert!(matches!(
            open(&mk, &AAD, sealed[..40].to_vec()),
            Err(EnvelopeError::Format)
        ));
    }
}
