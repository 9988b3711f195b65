//! List/map (CDT) and bit op payloads against list, map and blob bins: the first byte picks the
//! bin's particle type and splits the rest into bin bytes and op payload. Any outcome but a
//! panic is fine; a successful modify must leave a bin that decodes again, and every value that
//! decodes passes the write path's nesting check.
#![no_main]

use apogee_ops::{bits, cdt, hll, value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let split = usize::from(sel >> 2).min(rest.len());
    let (bin, payload) = rest.split_at(split);
    let ptype = [19u8, 20, 4, 1][usize::from(sel & 3)];
    let bin = (!bin.is_empty()).then_some((ptype, bin));
    for modify in [false, true] {
        if let Ok(out) = cdt::apply(bin, payload, modify) {
            if let Some(v) = out.new_bin {
                value::decode(&v.encode()).expect("a modified collection decodes again");
            }
        }
        let _ = bits::apply(bin, payload, modify);
        let _ = hll::apply(bin, payload, modify);
    }
    let _ = value::check_nesting(data);
    if let Ok(v) = value::decode(data) {
        let again = v.encode();
        value::decode(&again).expect("a decoded value re-encodes");
        // decode and the write path's nesting check bound depth the same way.
        value::check_nesting(&again).expect("a decoded value is within the nesting limit");
    }
});
