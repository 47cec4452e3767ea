//! Payload encodings (`encoding = "trailkeep" | "grantex"`): what one event
//! looks like in a destination's payload. Not the wire format around it
//! (each destination's own), nor compression.
//!
//! `grantex` is what Grantex's own tools write for an event
//! (`JSON.stringify(event)` of `{id, type, createdAt, data}`, pinned by the
//! golden files in `tests/data/grantex/`): the members in that order,
//! `createdAt` with (at least) three fractional digits as JavaScript's
//! `toISOString` writes it, and `data` always present (`{}` when the event
//! has none: Grantex events always carry one). `data` is copied from the
//! stored event's canonical (RFC 8785) text, which writes strings and
//! numbers exactly as `JSON.stringify` does; its members are in RFC 8785
//! order (the order trailkeep hashes), where Grantex passes on whatever
//! order the upstream built them in.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The stored event, chain fields included.
    #[default]
    Trailkeep,
    /// `{id, type, createdAt, data}`, as the Grantex tools write.
    Grantex,
}

impl Encoding {
    /// Returns the encoding a config names (`None`: the default).
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("trailkeep") => Some(Self::Trailkeep),
            Some("grantex") => Some(Self::Grantex),
            Some(_) => None,
        }
    }
}

/// The fields of a stored event the Grantex shape takes, borrowed from its
/// JSON (`id`, `type` and `time` are validated escape-free at ingest).
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Returns the payload of one stored event (`json`) in `encoding`.
pub fn encode(json: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Trailkeep => json.to_owned(),
        Encoding::Grantex => {
            let mut out = String::with_capacity(json.len());
            write_grantex(&mut out, json);
            out
        }
    }
}

/// Appends the Grantex form of the stored event `json` to `out`:
/// `{"id":…,"type":…,"createdAt":…,"data":…}`. A stored event always has
/// these fields; were one unreadable, the event goes out as stored rather
/// than not at all.
pub fn write_grantex(out: &mut String, json: &str) {
    let Ok(s) = serde_json::from_str::<Stored<'_>>(json) else {
        out.push_str(json);
        return;
    };
    out.push_str("{\"id\":");
    crate::jcs::write_str(out, &s.id);
    out.push_str(",\"type\":");
    crate::jcs::write_str(out, &s.event_type);
    out.push_str(",\"createdAt\":\"");
    push_iso_millis(out, &s.time);
    out.push_str("\",\"data\":");
    out.push_str(s.data.map_or("{}", RawValue::get));
    out.push('}');
}

/// Appends a stored time (RFC 3339 UTC, `Z`, fraction digits trimmed:
/// `…:00.12Z`, `…:01Z`) with at least three fraction digits, as
/// JavaScript's `Date.prototype.toISOString` writes it (`…:00.120Z`,
/// `…:01.000Z`). A time finer than milliseconds keeps its digits: the
/// copy says what the log holds rather than truncating it.
pub fn push_iso_millis(out: &mut String, time: &str) {
    let Some(body) = time.strip_suffix('Z') else {
        out.push_str(time);
        return;
    };
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    out.push_str(secs);
    out.push('.');
    out.push_str(frac);
    for _ in frac.len()..3 {
        out.push('0');
    }
    out.push('Z');
}

/// Returns the event time of a stored event in whole Unix seconds, rounded
/// down as Grantex's Splunk destination computes it
/// (`Math.floor(new Date(createdAt).getTime() / 1000)`); `None` when the
/// stored time does not parse.
pub fn unix_seconds_floor(time: &str) -> Option<i64> {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STORED: &str = r#"{"actor":{"id":"u"},"data":{"k":1},"hash":"ab","id":"e1","prev":"00","received":"r","seq":3,"stream":"s","time":"2026-01-01T00:00:00Z","type":"grant.created"}"#;

    #[test]
    fn grantex_encoding_has_the_grantex_shape_in_its_order() {
        assert_eq!(
            encode(STORED, Encoding::Grantex),
            r#"{"id":"e1","type":"grant.created","createdAt":"2026-01-01T00:00:00.000Z","data":{"k":1}}"#
        );
        assert_eq!(encode(STORED, Encoding::Trailkeep), STORED);
    }

    #[test]
    fn grantex_encoding_keeps_empty_data_and_adds_it_when_absent() {
        let with_empty = r#"{"data":{},"hash":"ab","id":"e2","prev":"00","received":"r","seq":1,"stream":"s","time":"2026-01-01T00:00:00.5Z","type":"t"}"#;
        let without = r#"{"hash":"ab","id":"e3","prev":"00","received":"r","seq":1,"stream":"s","time":"2026-01-01T00:00:00.5Z","type":"t"}"#;
        for (json, id) in [(with_empty, "e2"), (without, "e3")] {
            assert_eq!(
                encode(json, Encoding::Grantex),
                format!(
                    r#"{{"id":"{id}","type":"t","createdAt":"2026-01-01T00:00:00.500Z","data":{{}}}}"#
                )
            );
        }
    }

    #[test]
    fn grantex_encoding_copies_data_text_unchanged() {
        let stored = r#"{"data":{"big":9007199254740994,"e":1e+21,"s":"Zoë\u0001\"","z":{}},"hash":"ab","id":"e4","prev":"00","received":"r","seq":1,"stream":"s","time":"2026-01-01T00:00:00.123456Z","type":"t"}"#;
        assert_eq!(
            encode(stored, Encoding::Grantex),
            r#"{"id":"e4","type":"t","createdAt":"2026-01-01T00:00:00.123456Z","data":{"big":9007199254740994,"e":1e+21,"s":"Zoë\u0001\"","z":{}}}"#
        );
    }

    #[test]
    fn iso_millis_pads_to_three_digits_like_to_iso_string() {
        for (stored, js) in [
            ("2026-11-23T10:00:00.12Z", "2026-11-23T10:00:00.120Z"),
            ("2026-11-23T10:00:00.1Z", "2026-11-23T10:00:00.100Z"),
            ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00.000Z"),
            ("2026-11-23T10:00:00.005Z", "2026-11-23T10:00:00.005Z"),
            ("2026-11-23T10:00:00.1234Z", "2026-11-23T10:00:00.1234Z"),
            ("not a time", "not a time"),
        ] {
            let mut out = String::new();
            push_iso_millis(&mut out, stored);
            assert_eq!(out, js);
        }
    }

    #[test]
    fn splunk_seconds_round_down_like_math_floor() {
        assert_eq!(unix_seconds_floor("1970-01-01T00:00:01.999Z"), Some(1));
        assert_eq!(unix_seconds_floor("1969-12-31T23:59:59.9Z"), Some(-1));
        assert_eq!(
            unix_seconds_floor("2026-11-23T10:00:00Z"),
            Some(1_795_428_000)
        );
        assert_eq!(unix_seconds_floor("x"), None);
    }

    #[test]
    fn an_unreadable_stored_event_goes_out_as_stored() {
        assert_eq!(encode("{\"x\":1}", Encoding::Grantex), "{\"x\":1}");
    }
}
