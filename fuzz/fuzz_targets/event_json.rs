//! Fuzzes the request parser: any bytes, as JSON or NDJSON. It must never
//! panic; whatever it accepts must canonicalize to valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::event::{Limits, canonical_bytes, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for ndjson in [false, true] {
        if let Ok(events) = parse_request(data, ndjson, "2026-01-01T00:00:00.000000Z", &limits) {
            for ev in &events {
                let bytes = canonical_bytes(ev, "fuzz", 1, trailkeep::chain::ZERO_HASH_HEX);
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
                assert!(v.is_object());
            }
        }
    }
});
