//! Fuzzes what an SSE source does with the bytes of `text/event-stream`:
//! the frame parser (`eventsource-stream`, as `sources::sse` runs it) over
//! the bytes cut into network chunks, then the mapping of each frame's data
//! to a stored event (`sources::sse::map_frame`, `sources::mapping`).
//!
//! Asserts: the frames do not depend on where the chunks were cut; bytes
//! that are not UTF-8 are reported while the connection is still open (not
//! buffered silently until it closes); every mapped event has an id and
//! canonical bytes that are JSON, and takes the frame's `id:` when its data
//! has none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::event::canonical_bytes;
use trailkeep::fuzzing::{Fields, Mapped, RawFields, map_sse_frame, sse_frames};

const RECEIVED: &str = "2026-01-01T00:00:00.000000Z";

/// Cuts `body` into chunks whose sizes follow the bits of `k`.
fn chunks(body: &[u8], k: u8) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0u32;
    while !rest.is_empty() {
        let n = (1 + ((k.rotate_left(i) as usize) % 5)).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a.to_vec());
        rest = b;
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let whole = sse_frames(vec![body.to_vec()], false);
    let cut = sse_frames(chunks(body, k), false);
    let ok = |v: &[Result<_, String>]| {
        v.iter()
            .filter_map(|r| r.as_ref().ok())
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(ok(&whole), ok(&cut), "frames depend on chunk boundaries");
    assert_eq!(
        whole.iter().any(Result::is_err),
        cut.iter().any(Result::is_err)
    );

    // A byte that can never be UTF-8 (not merely a sequence cut at the
    // end) must surface while the connection is open.
    if let Err(e) = std::str::from_utf8(body)
        && e.error_len().is_some()
    {
        let open = sse_frames(chunks(body, k), true);
        assert!(
            open.iter().any(Result::is_err),
            "invalid UTF-8 went unreported on an open stream"
        );
    }

    let configured: Fields = RawFields {
        id: Some("entryId".into()),
        event_type: Some("action".into()),
        time: Some("timestamp".into()),
    }
    .into();
    for fields in [Fields::default(), configured] {
        let mut prev = String::new();
        for ev in whole.iter().filter_map(|r| r.as_ref().ok()) {
            let before = prev.clone();
            let Some(m) = map_sse_frame(ev, &mut prev, &fields, "up", |t| t != "skip.me", RECEIVED)
            else {
                assert!(ev.data.is_empty());
                continue;
            };
            if let Mapped::Event(e) = m {
                assert!(!e.id.is_empty());
                let v: serde_json::Value =
                    serde_json::from_str(&ev.data).expect("mapped data is JSON");
                let has_own_id = v
                    .as_object()
                    .is_some_and(|o| o.contains_key("id") || o.contains_key("entryId"));
                if !has_own_id && !ev.id.is_empty() && ev.id != before {
                    assert_eq!(e.id, ev.id, "a fresh SSE id names the event");
                }
                let bytes = canonical_bytes(&e, "up", 1, trailkeep::chain::ZERO_HASH_HEX);
                let _: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
            }
        }
    }
});
