//! Fuzzes the NDJSON ingest body (`POST /v1/streams/{s}/events` with
//! `Content-Type: application/x-ndjson`, `event::parse_request`).
//!
//! Asserts: a body is accepted whole or refused whole; an accepted body has
//! one event per non-blank line, each the event that line gives alone; a
//! refusal of one line names the first line that is refused alone, and
//! every line before it is accepted alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::event::{Limits, NewEvent, canonical_bytes, parse_request};

const RECEIVED: &str = "2026-01-01T00:00:00.000000Z";

fn generated(id: &str) -> bool {
    id.len() == 30 && id.starts_with("evt_")
}

fn same(a: &NewEvent, b: &NewEvent) {
    assert!(
        a.id == b.id || (generated(&a.id) && generated(&b.id)),
        "{a:?} {b:?}"
    );
    assert_eq!(
        (
            &a.event_type,
            &a.time,
            &a.received,
            &a.actor,
            &a.subject,
            &a.data
        ),
        (
            &b.event_type,
            &b.time,
            &b.received,
            &b.actor,
            &b.subject,
            &b.data
        )
    );
}

fuzz_target!(|data: &[u8]| {
    // Small limits, so the size and count refusals are reachable.
    let limits = Limits {
        max_event_bytes: 512,
        max_request_bytes: 16 * 1024,
        max_events_per_request: 16,
    };
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    match parse_request(data, true, RECEIVED, &limits) {
        Ok(events) => {
            assert_eq!(events.len(), lines.len(), "one event per non-blank line");
            assert!(events.len() <= limits.max_events_per_request);
            for (line, ev) in lines.iter().zip(&events) {
                let alone = parse_request(line, true, RECEIVED, &limits)
                    .expect("a line of an accepted body is accepted alone");
                assert_eq!(alone.len(), 1);
                same(&alone[0], ev);
                // The same line as a JSON body is the same event.
                let body = parse_request(line, false, RECEIVED, &limits)
                    .expect("an accepted NDJSON line is an accepted JSON body");
                assert_eq!(body.len(), 1);
                same(&body[0], ev);
                let bytes = canonical_bytes(ev, "fuzz", 1, trailkeep::chain::ZERO_HASH_HEX);
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
                assert!(v.is_object());
            }
        }
        Err(r) => match r.code {
            "request_too_large" => assert!(data.len() > limits.max_request_bytes),
            "no_events" => assert!(lines.is_empty()),
            "too_many_events" => assert!(lines.len() > limits.max_events_per_request),
            code => {
                let i = r.index.expect("a refused line is named");
                assert!(
                    i < lines.len() && i < limits.max_events_per_request,
                    "{r:?}"
                );
                for line in &lines[..i] {
                    assert!(
                        parse_request(line, true, RECEIVED, &limits).is_ok(),
                        "lines before the refused one are valid: {r:?}"
                    );
                }
                let alone = parse_request(lines[i], true, RECEIVED, &limits)
                    .expect_err("the named line is refused alone");
                assert_eq!(alone.code, code);
                assert_eq!(alone.index, Some(0));
                assert_eq!(alone.field, r.field);
            }
        },
    }
});
