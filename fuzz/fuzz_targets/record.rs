//! Record bytes as a data file holds them (a file is outside input: it may be damaged or
//! written by another program): verifying a record returns a view or an error and never
//! panics, whatever the lengths inside claim; a record that verifies re-encodes to the same
//! record. Random bytes rarely pass the checksum, so each input is also tried made to verify
//! (magic, its own length, the right checksum): the walk over the lengths inside is fuzzed too.
#![no_main]

use apogee_engine::record::{write_checksum, Record, RecordView, RECORD_FIXED_BYTES, RECORD_MAGIC};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8], tag: u32) {
    if let Ok(view) = RecordView::decode_tagged(bytes, tag) {
        assert_eq!(view.bins().count(), view.bin_count());
        let record = view.to_record();
        let encoded = record.encode();
        assert_eq!(
            Record::decode(&encoded).expect("a re-encoded record verifies"),
            record
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The first four bytes pick the block tag the checksum is bound to.
    let (tag, bytes) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
        _ => return,
    };
    check(bytes, tag);
    if bytes.len() >= RECORD_FIXED_BYTES + 3 {
        let mut fixed = bytes.to_vec();
        fixed[0..4].copy_from_slice(&RECORD_MAGIC.to_be_bytes());
        let total = u32::try_from(fixed.len()).unwrap_or(u32::MAX);
        fixed[4..8].copy_from_slice(&total.to_be_bytes());
        write_checksum(&mut fixed);
        check(&fixed, 0);
    }
});
