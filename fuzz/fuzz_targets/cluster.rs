//! Bytes from another node, as the heartbeat socket receives them: a view-change message
//! decodes to a value or an error and never panics, and a decoded message re-encodes to one
//! that decodes the same; a failure detector fed the same bytes as packets (one after another,
//! at advancing times) never panics and sends only packets within its size limit.
#![no_main]

use apogee_cluster::detector::{
    Detector, DetectorConfig, DetectorOutput, DETECTOR_PACKET_BYTES_MAX,
};
use apogee_cluster::view::message::Message;
use apogee_cluster::view::Instant;
use apogee_cluster::NodeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("a decoded message re-encodes");
        assert_eq!(again, m);
    }
    let mut d = Detector::new(NodeId(0xA1), 1, DetectorConfig::default(), 7);
    let mut out = DetectorOutput::default();
    // Split the input into packets at 0xFF bytes, so one input can be several packets.
    for (i, packet) in data.split(|b| *b == 0xFF).take(16).enumerate() {
        let now = Instant::from_millis(1_000 + 100 * i as u64);
        let _ = d.on_packet(now, packet, &mut out);
        let _ = d.on_tick(now, &mut out);
    }
    for (_, p) in &out.packets {
        assert!(
            p.len() <= DETECTOR_PACKET_BYTES_MAX,
            "a packet of {} bytes",
            p.len()
        );
    }
});
