//! Key-choice distributions of YCSB: uniform, scrambled zipfian (constant 0.99) and latest.
//!
//! Plain functions of a random source, so their skew is testable without a server.

use rand::Rng;

/// YCSB's zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Zipfian over `0..items`, item 0 the most popular (Gray et al., as in YCSB).
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub fn new(items: u64) -> Zipfian {
        assert!(items >= 2, "zipfian needs at least 2 items");
        let theta = ZIPFIAN_CONSTANT;
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }
}

/// FNV-1a 64, YCSB's scrambling hash.
pub fn fnv1a64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How the next key is chosen.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform {
        items: u64,
    },
    /// Zipfian popularity spread over the key space by a hash, so hot keys are not adjacent.
    ScrambledZipfian {
        zipf: Zipfian,
        items: u64,
    },
    /// Recently inserted keys are the most popular (workload D).
    Latest {
        zipf: Zipfian,
    },
}

impl KeyChooser {
    /// `latest_inserted` is the highest key index inserted so far (for `Latest`).
    pub fn next(&self, rng: &mut impl Rng, latest_inserted: u64) -> u64 {
        match self {
            KeyChooser::Uniform { items } => rng.gen_range(0..*items),
            KeyChooser::ScrambledZipfian { zipf, items } => fnv1a64(zipf.next(rng)) % items,
            KeyChooser::Latest { zipf } => {
                let back = zipf.next(rng);
                latest_inserted.saturating_sub(back)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn counts(chooser: &KeyChooser, items: u64, draws: usize) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut c = vec![0u64; items as usize];
        for _ in 0..draws {
            let k = chooser.next(&mut rng, items - 1);
            c[k as usize] += 1;
        }
        c
    }

    fn top_share(mut c: Vec<u64>, top: usize) -> f64 {
        let total: u64 = c.iter().sum();
        c.sort_unstable_by(|a, b| b.cmp(a));
        c[..top].iter().sum::<u64>() as f64 / total as f64
    }

    #[test]
    fn zipfian_is_skewed_and_uniform_is_flat() {
        let items = 10_000;
        let draws = 200_000;
        let zipf = KeyChooser::ScrambledZipfian {
            zipf: Zipfian::new(items),
            items,
        };
        let uni = KeyChooser::Uniform { items };
        // With theta 0.99 over 10,000 items the hottest 1% of keys take over half the requests.
        let z = top_share(counts(&zipf, items, draws), 100);
        let u = top_share(counts(&uni, items, draws), 100);
        assert!(z > 0.5, "zipfian top-1% share {z}");
        assert!(u < 0.03, "uniform top-1% share {u}");
    }

    #[test]
    fn zipfian_rank_zero_is_most_popular() {
        let z = Zipfian::new(1000);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut c = vec![0u64; 1000];
        for _ in 0..100_000 {
            c[z.next(&mut rng) as usize] += 1;
        }
        assert!(c[0] > c[1] && c[1] > c[10] && c[10] > c[500]);
    }

    #[test]
    fn latest_prefers_recent_keys() {
        let items = 10_000;
        let latest = KeyChooser::Latest {
            zipf: Zipfian::new(items),
        };
        let c = counts(&latest, items, 100_000);
        let recent: u64 = c[(items as usize - 100)..].iter().sum();
        assert!(recent > 50_000, "last 1% of keys got {recent} of 100,000");
    }
}
