//! AS_MSG bodies, batch rows (field 41) and compressed (type 4) bodies as a client could send
//! them: decoding must return a value or an error, never panic, and a decoded message must
//! re-encode and decode to the same ops.
#![no_main]

use apogee_wire::msg::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("a decoded message re-encodes");
        assert_eq!(again.ops.len(), m.ops.len());
        assert_eq!(again.fields.len(), m.fields.len());
    }
    // The same bytes as a batch's field 41: every decoded row re-encodes as a keyed command.
    let outer = apogee_wire::MsgHeader::default();
    if let Ok(b) = apogee_wire::batch::decode(data, &outer, None) {
        for row in b.rows.iter().take(64) {
            let msg = row.message();
            Message::decode(&msg.encode()).expect("a batch row re-encodes as a message");
        }
    }
    let _ = apogee_wire::compression::inflate_message(data);
    let _ = apogee_wire::info::parse_request(data);
});
