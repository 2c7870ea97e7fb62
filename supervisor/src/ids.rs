//! Random identifiers (object ids, revision ids, request ids, credentials).

use std::fmt::Write as _;

/// Fills a fixed-size array from the OS CSPRNG.
///
/// Failure of the OS RNG is unrecoverable for a service that mints keys, so
/// it aborts loudly instead of silently producing weak material.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::getrandom(&mut buf) {
        panic!("OS random number generator failed: {e}");
    }
    buf
}

/// Lowercase hex of `N` random bytes.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}

/// A random RFC 4122 version-4 UUID in its canonical textual form.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    let mut s = String::with_capacity(36);
    for (i, range) in [(0..8), (8..12), (12..16), (16..20), (20..32)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            s.push('-');
        }
        let _ = write!(s, "{}", &h[range]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), u);
    }
}
