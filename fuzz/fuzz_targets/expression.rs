//! Filter expressions and expression-op payloads evaluated against a fixed record holding a
//! bin of each common type: parse errors and unknown results are fine, panics are not.
#![no_main]

use apogee_ops::exp::{self, Meta, RecordAccess};
use libfuzzer_sys::fuzz_target;

struct Rec(Meta);

impl RecordAccess for Rec {
    fn bin(&self, name: &[u8]) -> Option<(u8, &[u8])> {
        Some(match name {
            b"i" => (1, &[0, 0, 0, 0, 0, 0, 0, 8][..]),
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

fuzz_target!(|data: &[u8]| {
    let rec = Rec(Meta {
        set_name: b"demo".to_vec(),
        void_time: 1000,
        now_ms: 500_000,
        ..Default::default()
    });
    let _ = exp::filter(data, &rec);
    if let Ok((e, _flags)) = exp::parse_op(data) {
        let _ = exp::evaluate(&e, &rec);
    }
});
