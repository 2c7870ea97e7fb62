//! A small deterministic PRNG (xoshiro256**, seeded through splitmix64) and the
//! few distributions the simulator draws from. Written for reproducible
//! traces: the same seed gives the same numbers on every platform.

use std::hash::{BuildHasherDefault, Hasher};

use crate::placement::mix64;

/// xoshiro256**: fast, 256 bits of state, good enough for simulation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 turns any seed, even 0, into a well-mixed nonzero state.
        let mut counter = seed;
        let mut next = || {
            counter = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(counter)
        };
        Rng {
            state: [next(), next(), next(), next()],
        }
    }

    /// An independent stream for `(seed, stream)`, e.g. one per function, so
    /// that one stream's draws do not shift another's.
    pub fn stream(seed: u64, stream: u64) -> Self {
        Rng::new(mix64(seed) ^ mix64(stream.wrapping_add(0x632b_e59b_d9b4_e019)))
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s1 << 17;
        let (mut s0, mut s1, mut s2, mut s3) = (s0, s1, s2, s3);
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = s3.rotate_left(45);
        self.state = [s0, s1, s2, s3];
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); n > 0. Multiply-high: bias below 2^-32 for
    /// the n the simulator uses.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.uniform() < probability
    }

    /// Standard normal (Box–Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// exp(N(mu, sigma²)).
    pub fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }

    /// Uniform on a log scale between `low` and `high`.
    pub fn log_uniform(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + (high.ln() - low.ln()) * self.uniform()).exp()
    }

    /// Poisson(mean): exact (Knuth) for small means, normal approximation above
    /// 30, where the difference does not matter here.
    pub fn poisson(&mut self, mean: f64) -> u32 {
        if mean <= 0.0 {
            return 0;
        }
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as u32;
        }
        let limit = (-mean).exp();
        let mut product = self.uniform();
        let mut count = 0;
        while product > limit {
            product *= self.uniform();
            count += 1;
        }
        count
    }

    /// Binomial(trials, p): exact for few trials, normal approximation above.
    pub fn binomial(&mut self, trials: u32, probability: f64) -> u32 {
        if trials < 40 {
            return (0..trials).filter(|_| self.chance(probability)).count() as u32;
        }
        let n = f64::from(trials);
        let mean = n * probability;
        let sd = (mean * (1.0 - probability)).sqrt();
        (mean + sd * self.normal()).round().clamp(0.0, n) as u32
    }
}

/// Hasher for the simulator's maps: deterministic (no random keys), so map
/// iteration order, and with it every result, depends only on the seed; and
/// word-at-a-time (Fx-style), because the policy hashes the same short key once
/// per worker on every placement.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordHasher(u64);

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        // Shifts, not a copy into a buffer: the copy was a memcpy call whose
        // byte stores then stalled the word load (measured: 18 % of a run).
        let tail = chunks
            .remainder()
            .iter()
            .rev()
            .fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
        self.add(tail ^ bytes.len() as u64);
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak; the map indexes by them.
        mix64(self.0)
    }
}

pub type WordBuild = BuildHasherDefault<WordHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|pair| pair[0] == pair[1]));
        let mut one = Rng::stream(7, 1);
        let mut two = Rng::stream(7, 2);
        assert_ne!(one.next_u64(), two.next_u64());
    }

    #[test]
    fn distributions_have_the_right_means() {
        let mut rng = Rng::new(42);
        let draws = 200_000;
        let mean = |values: &mut dyn FnMut() -> f64| {
            (0..draws).map(|_| values()).sum::<f64>() / draws as f64
        };
        assert!((mean(&mut || rng.uniform()) - 0.5).abs() < 0.01);
        assert!(mean(&mut || rng.normal()).abs() < 0.01);
        assert!((mean(&mut || f64::from(rng.poisson(3.0))) - 3.0).abs() < 0.03);
        assert!((mean(&mut || f64::from(rng.poisson(80.0))) - 80.0).abs() < 0.2);
        assert!((mean(&mut || f64::from(rng.binomial(10, 0.3))) - 3.0).abs() < 0.03);
        assert!((mean(&mut || f64::from(rng.binomial(500, 0.9))) - 450.0).abs() < 0.3);
        assert!((mean(&mut || rng.below(10) as f64) - 4.5).abs() < 0.05);
    }
}
