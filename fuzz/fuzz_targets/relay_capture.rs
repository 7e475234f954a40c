//! Relay capture files (read by `sotto frame inspect --capture` and the tests) and the frame
//! reassembly over their records. Must never panic; every record of a parsed capture respects
//! the payload limit, and reassembly never panics on any record sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_relay::capture::{frames, parse};
use sotto_relay::consts::MAX_CAPTURE_PAYLOAD;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = parse(data) {
        assert!(records.iter().all(|r| r.payload.len() <= MAX_CAPTURE_PAYLOAD));
        let _ = frames(&records);
    }
});
