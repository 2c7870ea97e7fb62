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

thread_local! {
    /// A per-thread key from the OS generator and a counter: request ids come from
    /// SHA-256(key, counter), so the invoke path makes no `getrandom` call per request.
    static ID_STREAM: std::cell::RefCell<([u8; 32], u64)> =
        std::cell::RefCell::new((random_bytes::<32>(), 0));
}

/// 16 bytes that are unpredictable without this thread's key and never repeat within it.
fn id_bytes() -> [u8; 16] {
    use sha2::Digest as _;
    ID_STREAM.with(|s| {
        let mut s = s.borrow_mut();
        s.1 = s.1.wrapping_add(1);
        let mut h = sha2::Sha256::new();
        h.update(s.0);
        h.update(s.1.to_le_bytes());
        let out = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&out[..16]);
        b
    })
}

/// A draw uniform in [0, 1) from the same stream (weighted alias routing).
pub fn unit_draw() -> f64 {
    let b = id_bytes();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    // The top 53 bits: every value exactly representable.
    (u64::from_le_bytes(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// A random RFC 4122 version-4 UUID in its canonical textual form.
pub fn uuid_v4() -> String {
    let mut b = id_bytes();
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
    fn unit_draws_are_uniform_in_zero_one() {
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|_| unit_draw()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below = draws.iter().filter(|d| **d < 0.3).count() as f64 / n as f64;
        // 0.3 ± 5 standard deviations (0.0032 each).
        assert!((below - 0.3).abs() < 0.017, "{below}");
    }

    #[test]
    fn uuid_has_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn ids_never_repeat_within_or_across_threads() {
        let mine: std::collections::HashSet<String> = (0..10_000).map(|_| uuid_v4()).collect();
        assert_eq!(mine.len(), 10_000);
        let theirs = std::thread::spawn(|| (0..1000).map(|_| uuid_v4()).collect::<Vec<_>>())
            .join()
            .expect("thread");
        assert!(theirs.iter().all(|u| !mine.contains(u)));
    }
}
