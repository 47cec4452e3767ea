//! Fuzzes a backfill page as the HTTP endpoint returns it: the page parser
//! (`sources::backfill::parse_page`: items and next cursor) and the mapping
//! of every item (`sources::mapping::map_item`).
//!
//! Asserts: the items are the array at the configured field (or the body),
//! a cursor is never empty; every item maps the same way twice (a repeated
//! page deduplicates: the id, given or derived from the content, is
//! stable), and a mapped event's canonical bytes are JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep::event::canonical_bytes;
use trailkeep::fuzzing::{Fields, Mapped, RawFields, backfill_page};
use trailkeep::sources::mapping::map_item;

const RECEIVED: &str = "2026-01-01T00:00:00.000000Z";

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let items_field = [None, Some("items"), Some("data"), Some("entries")][(k & 3) as usize];
    let next_field =
        [None, Some("next"), Some("nextCursor"), Some("items")][((k >> 2) & 3) as usize];
    let fields: Fields = if k & 16 == 0 {
        Fields::default()
    } else {
        RawFields {
            id: Some("entryId".into()),
            event_type: Some("action".into()),
            time: Some("timestamp".into()),
        }
        .into()
    };
    let Ok((items, next)) = backfill_page(body, items_field, next_field) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(body).expect("an accepted page is JSON");
    let expected = match items_field {
        Some(f) => v.get(f),
        None => Some(&v),
    };
    assert_eq!(expected, Some(&serde_json::Value::Array(items.clone())));
    if let Some(n) = &next {
        assert!(!n.is_empty());
    }
    for item in items {
        let a = map_item(
            item.clone(),
            &fields,
            "up",
            None,
            |t| t != "skip.me",
            RECEIVED,
        );
        let b = map_item(item, &fields, "up", None, |t| t != "skip.me", RECEIVED);
        match (a, b) {
            (Mapped::Event(a), Mapped::Event(b)) => {
                assert_eq!(
                    canonical_bytes(&a, "up", 1, trailkeep::chain::ZERO_HASH_HEX),
                    canonical_bytes(&b, "up", 1, trailkeep::chain::ZERO_HASH_HEX),
                    "the same item maps to the same event"
                );
                let bytes = canonical_bytes(&a, "up", 1, trailkeep::chain::ZERO_HASH_HEX);
                let _: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("canonical bytes are JSON");
            }
            (Mapped::Filtered, Mapped::Filtered) => {}
            (Mapped::Rejected(a), Mapped::Rejected(b)) => assert_eq!(a, b),
            (a, b) => panic!("mapped differently: {a:?} vs {b:?}"),
        }
    }
});
