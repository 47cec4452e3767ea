//! Fuzzes the request parser: any bytes, as JSON or NDJSON. It must never
//! panic; whatever it accepts must canonicalize to valid JSON, and the
//! `Value`-based validation (used for source events) must accept the same
//! events with the same canonical fields, and no number in an accepted body
//! may be one RFC 8785 would change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::event::{Limits, canonical_bytes, parse_request, validate};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for ndjson in [false, true] {
        if let Ok(events) = parse_request(data, ndjson, "2026-01-01T00:00:00.000000Z", &limits) {
            assert_eq!(trailkeep::jcs::first_changed_number(data), None);
            for ev in &events {
                let bytes = canonical_bytes(ev, "fuzz", 1, trailkeep::chain::ZERO_HASH_HEX);
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
                assert!(v.is_object());
            }
            if !ndjson {
                // Differential: the same body through a Value tree.
                let v: serde_json::Value =
                    serde_json::from_slice(data).expect("accepted body is JSON");
                let values = match v {
                    serde_json::Value::Array(a) => a,
                    other => vec![other],
                };
                assert_eq!(values.len(), events.len());
                for (i, (v, ev)) in values.into_iter().zip(&events).enumerate() {
                    let by_value = validate(i, v, "2026-01-01T00:00:00.000000Z", &limits)
                        .expect("accepted by both parsers");
                    assert_eq!(
                        (
                            &by_value.event_type,
                            &by_value.time,
                            &by_value.actor,
                            &by_value.subject,
                            &by_value.data
                        ),
                        (&ev.event_type, &ev.time, &ev.actor, &ev.subject, &ev.data)
                    );
                }
            }
        }
    }
});
