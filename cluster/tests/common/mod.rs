//! What the cluster crate's seeded simulators share: a small deterministic random source, so
//! that any failing seed replays exactly.
#![allow(dead_code)]

/// splitmix64: every simulated choice (drops, delays, kills, which message next) comes from
/// one of these, seeded by the run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p` / 1000.
    pub fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}
