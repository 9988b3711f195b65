//! Mutated and random inputs for every decoder in apogee-ops, on stable Rust so it runs in
//! every test run: a bounded, seeded stand-in for the cargo-fuzz targets in `fuzz/` (which need
//! nightly). Starts from payloads the official clients send, flips, inserts and drops bytes,
//! and checks that nothing panics and that every modified collection decodes again. Files in
//! `fuzz/regressions/` (inputs that once crashed a target) are replayed through every decoder.

use apogee_ops::exp::{self, Meta, RecordAccess};
use apogee_ops::{bits, cdt, hll, value};

/// Iterations per seed: enough to reach deep into each decoder, small enough for CI (< 2 s).
const MUTATIONS_PER_SEED: usize = 3_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, so a failure replays from the seed printed with it.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(4) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let interesting = [0x00, 0x7f, 0x80, 0xc0, 0xc7, 0xcc, 0xd4, 0xdd, 0xdf, 0xff];
                v.insert(i, interesting[rng.below(interesting.len())]);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

struct Rec(Meta);

impl RecordAccess for Rec {
    fn bin(&self, name: &[u8]) -> Option<(u8, &[u8])> {
        Some(match name {
            b"a" | b"i" => (1, &[0, 0, 0, 0, 0, 0, 0, 8][..]),
            b"s" => (3, b"str"),
            b"l" => (20, &[0x93, 1, 2, 3][..]),
            b"m" => (19, &[0x81, 0xa2, 3, b'k', 1][..]),
            b"b" => (4, &[0xff, 0x01][..]),
            _ => return None,
        })
    }

    fn meta(&self) -> &Meta {
        &self.0
    }
}

/// Runs one input through every decoder and op entry point.
fn exercise(input: &[u8]) {
    static HLL_BIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let hll_bin = HLL_BIN.get_or_init(|| {
        let add = [
            0x95, 0x01, 0x92, 0xa2, 0x03, 0x61, 0xa2, 0x03, 0x62, 0x04, 0x04, 0x00,
        ];
        hll::apply(None, &add, true).unwrap().new_hll.unwrap()
    });
    let bins: [Option<(u8, &[u8])>; 5] = [
        Some((18, hll_bin)),
        None,
        Some((20, &[0x94, 0x07, 0x03, 0x09, 0x01][..])),
        Some((
            19,
            &[
                0x82, 0xa2, 0x03, b'a', 0x01, 0xa2, 0x03, b'b', 0x92, 0x01, 0x02,
            ][..],
        )),
        Some((4, &[0x01, 0x42, 0x03][..])),
    ];
    for bin in bins {
        for modify in [false, true] {
            if let Ok(out) = cdt::apply(bin, input, modify) {
                if let Some(v) = out.new_bin {
                    value::decode(&v.encode()).expect("a modified collection decodes again");
                }
            }
            let _ = bits::apply(bin, input, modify);
            let _ = hll::apply(bin, input, modify);
        }
    }
    if let Ok(v) = value::decode(input) {
        value::decode(&v.encode()).expect("a decoded value re-encodes");
    }
    let rec = Rec(Meta {
        set_name: b"demo".to_vec(),
        void_time: 1000,
        now_ms: 500_000,
        ..Default::default()
    });
    let _ = exp::filter(input, &rec);
    if let Ok((e, _)) = exp::parse_op(input) {
        let _ = exp::evaluate(&e, &rec);
    }
}

/// Payloads the official clients send (spec §4.5–§4.8 captures) and a few built here.
const SEEDS: &[&[u8]] = &[
    &[0x93, 0xcc, 0xff, 0x92, 0x10, 0x00, 0x92, 0x01, 0x09],
    &[0x94, 0x1a, 0x07, 0x00, 0x02],
    &[0x94, 0x43, 0xa3, 0x03, 0x6b, 0x32, 0x16, 0x00],
    &[0x93, 0x61, 0x07, 0xa3, 0x03, 0x6b, 0x32],
    &[0x95, 0x1b, 0x07, 0x05, 0xff, 0x02],
    &[0x94, 0x00, 0x04, 0x00, 0x00],
    &[0x95, 0x03, 0x0d, 0x03, 0xa2, 0x04, 0xe0, 0x00],
    &[0x96, 0x0a, 0x18, 0x10, 0xcc, 0x80, 0x00, 0x00],
    &[0x93, 0x01, 0x93, 0x51, 0x02, 0xa1, 0x61, 0x08],
    &[0x92, 0x93, 0x51, 0x02, 0xa1, 0x61, 0x00],
    &[
        0x94, 0x7d, 0xa1, b'x', 0x93, 0x14, 0x93, 0x51, 0x02, 0xa1, b'a', 0x02, 0x92, 0x7c, 0xa1,
        b'x',
    ],
    &[
        0x95, 0x7f, 0x02, 0x00, 0x91, 0x10, 0x93, 0x51, 0x04, 0xa1, b'l',
    ],
    &[
        0x83, 0xc7, 0x00, 0x01, 0xc0, 0xa2, 0x03, 0x61, 0x01, 0xa2, 0x03, 0x62, 0x02,
    ],
];

#[test]
fn mutated_client_payloads_never_panic() {
    for (s, seed) in SEEDS.iter().enumerate() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (s as u64 + 1));
        exercise(seed);
        for _ in 0..MUTATIONS_PER_SEED {
            let input = mutate(&mut rng, seed);
            exercise(&input);
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let n = rng.below(24);
        let input: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        exercise(&input);
    }
}

#[test]
fn fuzz_regressions_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let input = std::fs::read(e.path()).unwrap();
        exercise(&input);
    }
}
