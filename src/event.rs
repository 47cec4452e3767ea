//! The audit event: what a producer may send, how it is validated, and the
//! canonical bytes its hash covers.
//!
//! A producer sends a JSON object with `type` (required), and optionally
//! `id`, `time` (or its alias `createdAt`), `actor`, `subject` and `data`.
//! The log adds `stream`, `seq`, `received`, `prev` and `hash`; a producer
//! that sets any of them is refused. Unknown top-level fields are refused too
//! (nothing is silently dropped): application fields belong in `data`.
//!
//! The canonical bytes are the RFC 8785 (JCS) serialization of the stored
//! event without `hash`. Producer-supplied values (`actor`, `subject`,
//! `data`) are canonicalized by [`crate::jcs`] when the request
//! is validated; the log-assigned fields have fixed, escape-free shapes, so
//! [`canonical_bytes`] assembles the object in JCS key order directly. A
//! property test checks the assembly against the generic canonicalizer.
//!
//! Not here: seq assignment and chaining (the store's writer does that).

pub mod filter;
mod parse;
pub mod stored;

pub use stored::{Scanned, StoredFields, scan_stored, split_stored_line, stored_json};
#[cfg(test)]
use stored::{hash_position, stored_json_parsed};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Limits on what one request may carry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Canonical size of one event, in bytes.
    pub max_event_bytes: usize,
    /// Body size of one request, in bytes.
    pub max_request_bytes: usize,
    /// Events in one request.
    pub max_events_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 64 * 1024,
            max_request_bytes: 8 * 1024 * 1024,
            max_events_per_request: 10_000,
        }
    }
}

/// Why an event or request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason, e.g. `forbidden_field`.
    pub code: &'static str,
    /// What is wrong, in words.
    pub message: String,
    /// Index of the offending event in the request, if one event is at fault.
    pub index: Option<usize>,
    /// The offending field, if one is at fault.
    pub field: Option<String>,
    /// Whether the refusal is for size (HTTP 413) rather than content (400).
    pub too_large: bool,
}

impl Rejection {
    fn at(index: usize, field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            index: Some(index),
            field: Some(field.to_owned()),
            too_large: false,
        }
    }

    /// Returns a rejection of the whole request (no event index).
    pub fn request(code: &'static str, message: impl Into<String>, too_large: bool) -> Self {
        Self {
            code,
            message: message.into(),
            index: None,
            field: None,
            too_large,
        }
    }
}

/// A validated event, ready for the log to assign `seq`, `prev` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Producer id or a generated `evt_` ULID.
    pub id: String,
    /// Dotted event type.
    pub event_type: String,
    /// Event time, normalized to RFC 3339 UTC.
    pub time: String,
    /// Receipt time, RFC 3339 UTC with microseconds.
    pub received: String,
    /// Canonical JSON of `actor`, if set.
    pub actor: Option<String>,
    /// Canonical JSON of `subject`, if set.
    pub subject: Option<String>,
    /// Canonical JSON of `data`, if set.
    pub data: Option<String>,
}

const FORBIDDEN: [&str; 5] = ["stream", "seq", "received", "prev", "hash"];

/// The log's own stream: every checkpoint it signs and every archive index
/// it writes is recorded here as an event (`checkpoint.signed`,
/// `index.written`), so destinations with `checkpoints = true` hold copies
/// outside the operator's reach (issue #12).
pub const SELF_STREAM: &str = "_trailkeep";

/// The log's self-audit stream: every administrative act (keys, archive
/// runs, restores, destination switches, verifications, refused
/// authentications) is an event here, naming the key id, never the token.
pub const AUDIT_STREAM: &str = "_audit";

/// Returns whether `s` is a syntactically valid stream name: 1–128 of
/// `A–Z a–z 0–9 . _ -`, and not `.` or `..` (which would climb out of a
/// path or object key). Names starting with `.` or `_` pass here but are
/// the log's own: see [`is_reserved_stream`].
pub fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Returns whether `s` is reserved for the log itself (starts with `.` or
/// `_`): producers, sources and keys cannot name such a stream, and the
/// archive keeps its own folders (`_index`, `_probe`) under such names.
pub fn is_reserved_stream(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('_')
}

/// Orders stream names the way listings and runs take them: the producers'
/// streams by name, then the log's own.
pub fn stream_order(a: &str, b: &str) -> std::cmp::Ordering {
    (is_reserved_stream(a), a).cmp(&(is_reserved_stream(b), b))
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn valid_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Returns a new time-sortable event id: `evt_` + ULID.
pub fn generate_id() -> String {
    format!("evt_{}", ulid::Ulid::new())
}

/// Returns `t` as RFC 3339 UTC with exactly six fractional digits.
pub fn format_received(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Orders two event times (RFC 3339, as stored: UTC, `Z`). Stored times
/// differ in their fraction digits (`…:00Z` vs `…:00.5Z`), so text order is
/// not time order; the date and seconds compare as text, then the
/// fractions as decimals. A time of another shape is parsed; one that does
/// not parse sorts first.
pub fn cmp_time(a: &str, b: &str) -> std::cmp::Ordering {
    match (stored_time_parts(a), stored_time_parts(b)) {
        // The fractions as decimals: digit by digit, the shorter padded
        // with zeros (no allocation: the offline verifier compares every
        // event's time).
        (Some((sa, fa)), Some((sb, fb))) => sa.cmp(sb).then_with(|| {
            let digit = |f: &str, i: usize| f.as_bytes().get(i).copied().unwrap_or(b'0');
            (0..fa.len().max(fb.len()))
                .map(|i| digit(fa, i).cmp(&digit(fb, i)))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        }),
        _ => {
            let p = |t: &str| OffsetDateTime::parse(t, &Rfc3339).ok();
            p(a).cmp(&p(b))
        }
    }
}

/// A stored time's date and seconds (`YYYY-MM-DDTHH:MM:SS`) and fraction
/// digits, when it has the stored shape (UTC, `Z`): the fast path of
/// [`cmp_time`], taken for every stored event without parsing.
fn stored_time_parts(t: &str) -> Option<(&str, &str)> {
    let body = t.strip_suffix('Z')?;
    let (secs, frac) = body.split_at_checked(19)?;
    let frac = match frac.strip_prefix('.') {
        Some(f) if f.bytes().all(|c| c.is_ascii_digit()) => f,
        None if frac.is_empty() => "",
        _ => return None,
    };
    (secs.len() == 19 && secs.as_bytes()[10] == b'T').then_some((secs, frac))
}

fn normalize_time(s: &str) -> Option<String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).ok()
}

/// Returns the first number below `v` that RFC 8785 would change, with
/// its path below the field ([`crate::jcs::number_change`]).
///
/// A `Value` holds integers exactly and other numbers as the double they
/// parsed to: integers are checked here, doubles are what they are (their
/// text, where there was one, is checked before it is parsed: HTTP ingest
/// in [`parse`], sources on the upstream's text). The path is built only on
/// the way back from a failure: valid events allocate nothing here.
fn unsafe_number(v: &Value) -> Option<crate::jcs::NumberChange> {
    match v {
        Value::Number(n) => {
            let (text, ok) = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => (u.to_string(), crate::jcs::integer_survives(u)),
                (None, Some(i)) => (
                    i.to_string(),
                    crate::jcs::integer_survives(i.unsigned_abs()),
                ),
                _ => return None,
            };
            (!ok).then(|| crate::jcs::NumberChange {
                path: String::new(),
                canonical: crate::jcs::number_change(&text).flatten(),
                text,
            })
        }
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| {
            unsafe_number(x).map(|mut c| {
                c.path.insert_str(0, &format!("[{i}]"));
                c
            })
        }),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            unsafe_number(x).map(|mut c| {
                c.path.insert_str(0, &format!(".{k}"));
                c
            })
        }),
        _ => None,
    }
}

/// The refusal of a number RFC 8785 would change, at `field` of event
/// `index`.
pub(crate) fn changed_number(index: usize, field: &str, c: &crate::jcs::NumberChange) -> Rejection {
    Rejection::at(index, field, "unsafe_number", c.to_string())
}

fn canonical_value(index: usize, field: &str, v: &Value) -> Result<String, Rejection> {
    if let Some(c) = unsafe_number(v) {
        return Err(changed_number(index, &format!("{field}{}", c.path), &c));
    }
    Ok(crate::jcs::to_string(v))
}

/// Validates one event object, `index` being its position in the request.
///
/// # Errors
/// A [`Rejection`] naming the index, the field and the reason.
pub fn validate(
    index: usize,
    value: Value,
    received: &str,
    limits: &Limits,
) -> Result<NewEvent, Rejection> {
    let Value::Object(obj) = value else {
        return Err(Rejection {
            code: "not_an_object",
            message: "event must be a JSON object".into(),
            index: Some(index),
            field: None,
            too_large: false,
        });
    };
    validate_object(index, obj, received, limits)
}

fn validate_object(
    index: usize,
    obj: Map<String, Value>,
    received: &str,
    limits: &Limits,
) -> Result<NewEvent, Rejection> {
    let mut f = Fields::default();
    for (key, v) in &obj {
        match key.as_str() {
            k if FORBIDDEN.contains(&k) => {
                return Err(Rejection::at(
                    index,
                    k,
                    "forbidden_field",
                    format!("`{k}` is assigned by the log and may not be set"),
                ));
            }
            "id" => match v {
                Value::String(s) if valid_id(s) => f.id = Some(s.clone()),
                _ => {
                    return Err(Rejection::at(
                        index,
                        "id",
                        "invalid_id",
                        "id must be a string of 1-128 printable ASCII characters without quotes or backslashes",
                    ));
                }
            },
            "type" => match v {
                Value::String(s) if valid_type(s) => f.event_type = Some(s.clone()),
                _ => {
                    return Err(Rejection::at(
                        index,
                        "type",
                        "invalid_type",
                        "type must be a dotted name such as grant.created (letters, digits, _ and -, at most 128 characters)",
                    ));
                }
            },
            "time" | "createdAt" => {
                if f.time.is_some() {
                    return Err(Rejection::at(
                        index,
                        key,
                        "duplicate_time",
                        "set either time or its alias createdAt, not both",
                    ));
                }
                let normalized = match v {
                    Value::String(s) => normalize_time(s),
                    _ => None,
                };
                match normalized {
                    Some(t) => f.time = Some(t),
                    None => {
                        return Err(Rejection::at(
                            index,
                            key,
                            "invalid_time",
                            format!(
                                "{key} must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"
                            ),
                        ));
                    }
                }
            }
            "actor" | "subject" => {
                if !matches!(v, Value::String(_) | Value::Object(_)) {
                    return Err(Rejection::at(
                        index,
                        key,
                        "invalid_value",
                        format!("{key} must be a string or an object"),
                    ));
                }
                let c = canonical_value(index, key, v)?;
                if key == "actor" {
                    f.actor = Some(c)
                } else {
                    f.subject = Some(c)
                }
            }
            "data" => {
                if !v.is_object() {
                    return Err(Rejection::at(
                        index,
                        "data",
                        "invalid_value",
                        "data must be an object",
                    ));
                }
                f.data = Some(canonical_value(index, "data", v)?);
            }
            other => {
                return Err(Rejection::at(
                    index,
                    other,
                    "unknown_field",
                    format!("unknown field `{other}`; put application fields under data"),
                ));
            }
        }
    }
    assemble(index, f, received, limits)
}

/// An event's fields once each passed its own check.
#[derive(Default)]
struct Fields {
    id: Option<String>,
    event_type: Option<String>,
    time: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    data: Option<String>,
}

/// Builds the [`NewEvent`] from checked fields: `type` required, an id
/// generated and `time` defaulted when absent, the size limit applied.
/// Both parsers end here, so they agree on everything after the fields.
fn assemble(
    index: usize,
    f: Fields,
    received: &str,
    limits: &Limits,
) -> Result<NewEvent, Rejection> {
    let Some(event_type) = f.event_type else {
        return Err(Rejection::at(
            index,
            "type",
            "missing_field",
            "type is required",
        ));
    };
    let ev = NewEvent {
        id: f.id.unwrap_or_else(generate_id),
        event_type,
        time: f.time.unwrap_or_else(|| received.to_owned()),
        received: received.to_owned(),
        actor: f.actor,
        subject: f.subject,
        data: f.data,
    };
    // Upper bound of the canonical size: the fixed part is under 400 bytes.
    let size = 400
        + ev.id.len()
        + ev.event_type.len()
        + ev.time.len()
        + [&ev.actor, &ev.subject, &ev.data]
            .iter()
            .map(|o| o.as_ref().map_or(0, String::len))
            .sum::<usize>();
    if size > limits.max_event_bytes {
        return Err(Rejection {
            code: "event_too_large",
            message: format!(
                "event is about {size} bytes, more than the limit of {}",
                limits.max_event_bytes
            ),
            index: Some(index),
            field: None,
            too_large: true,
        });
    }
    Ok(ev)
}

/// Parses and validates a request body: one object, an array of objects, or
/// NDJSON (when `ndjson` is set, one object per non-empty line).
///
/// All or nothing: the first invalid event refuses the whole request.
///
/// # Errors
/// A [`Rejection`] naming what is wrong.
pub fn parse_request(
    body: &[u8],
    ndjson: bool,
    received: &str,
    limits: &Limits,
) -> Result<Vec<NewEvent>, Rejection> {
    if body.len() > limits.max_request_bytes {
        return Err(Rejection::request(
            "request_too_large",
            format!("request body exceeds {} bytes", limits.max_request_bytes),
            true,
        ));
    }
    if !ndjson {
        return parse::parse_body(body, received, limits);
    }
    let mut out = Vec::new();
    for (i, line) in body
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
    {
        if out.len() >= limits.max_events_per_request {
            return Err(too_many(limits));
        }
        out.push(
            parse::parse_line(i, line, received, limits)
                .map_err(|r| json_sent_as_ndjson(r, line))?,
        );
    }
    if out.is_empty() {
        return Err(Rejection::request(
            "no_events",
            "request carries no events",
            false,
        ));
    }
    Ok(out)
}

/// Adds a hint to the refusal of NDJSON's first line when the body looks
/// like JSON sent with an NDJSON type: an array, or one object spread over
/// several lines.
fn json_sent_as_ndjson(mut r: Rejection, line: &[u8]) -> Rejection {
    let start = line.iter().find(|b| !b.is_ascii_whitespace());
    let hint = match (r.index, r.code, start) {
        (Some(0), "not_an_object", Some(b'[')) => {
            "; the body is sent as NDJSON (one event object per line) but starts with an array: send a JSON array with Content-Type: application/json"
        }
        (Some(0), "invalid_json", Some(b'{')) if r.message.contains("EOF while parsing") => {
            "; NDJSON takes one whole event per line: send an object spread over several lines with Content-Type: application/json"
        }
        _ => return r,
    };
    r.message.push_str(hint);
    r
}

fn too_many(limits: &Limits) -> Rejection {
    Rejection::request(
        "too_many_events",
        format!(
            "request carries more than {} events",
            limits.max_events_per_request
        ),
        true,
    )
}

/// Returns the JCS bytes of the stored event without `hash`.
///
/// The keys in JCS order are: actor, data, id, prev, received, seq, stream,
/// subject, time, type. Strings assembled here were validated to need no
/// escaping.
pub fn canonical_bytes(ev: &NewEvent, stream: &str, seq: u64, prev_hex: &str) -> Vec<u8> {
    canonical_string(ev, stream, seq, prev_hex).into_bytes()
}

/// [`canonical_bytes`] as a `String` (it is always UTF-8).
pub fn canonical_string(ev: &NewEvent, stream: &str, seq: u64, prev_hex: &str) -> String {
    let mut s = String::with_capacity(256 + ev.data.as_ref().map_or(0, String::len));
    s.push('{');
    if let Some(a) = &ev.actor {
        s.push_str("\"actor\":");
        s.push_str(a);
        s.push(',');
    }
    if let Some(d) = &ev.data {
        s.push_str("\"data\":");
        s.push_str(d);
        s.push(',');
    }
    s.push_str("\"id\":\"");
    s.push_str(&ev.id);
    s.push_str("\",\"prev\":\"");
    s.push_str(prev_hex);
    s.push_str("\",\"received\":\"");
    s.push_str(&ev.received);
    s.push_str("\",\"seq\":");
    s.push_str(itoa::Buffer::new().format(seq));
    s.push_str(",\"stream\":\"");
    s.push_str(stream);
    s.push_str("\",");
    if let Some(sub) = &ev.subject {
        s.push_str("\"subject\":");
        s.push_str(sub);
        s.push(',');
    }
    s.push_str("\"time\":\"");
    s.push_str(&ev.time);
    s.push_str("\",\"type\":\"");
    s.push_str(&ev.event_type);
    s.push_str("\"}");
    s
}

/// A minimal valid event with id `id`, for tests.
#[cfg(test)]
pub(crate) fn test_event(id: &str) -> NewEvent {
    NewEvent {
        id: id.into(),
        event_type: "t".into(),
        time: "2026-01-01T00:00:00Z".into(),
        received: "2026-01-01T00:00:00.000000Z".into(),
        actor: None,
        subject: None,
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const RECEIVED: &str = "2026-11-23T10:00:00.000000Z";

    /// The stored shapes take the fast path (no parsing: the offline
    /// verifier compares every event's time); anything else is parsed.
    #[test]
    fn stored_times_split_without_parsing() {
        let p = stored_time_parts;
        assert_eq!(p("2026-01-01T00:00:00Z"), Some(("2026-01-01T00:00:00", "")));
        assert_eq!(
            p("2026-01-01T00:00:00.120Z"),
            Some(("2026-01-01T00:00:00", "120"))
        );
        for other in [
            "2026-01-01T01:00:00+01:00",
            "2026-01-01T00:00:00.5xZ",
            "2026-01-01T00:00:00xZ",
            "2026-01-01 00:00:00Z",
            "2026-1-1T0:0:0Z",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
        // Stored shapes compare as text, not through the parser (which
        // refuses a 13th month).
        assert_eq!(
            cmp_time("2026-13-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            std::cmp::Ordering::Greater
        );
    }

    /// Stored times differ in fraction digits: text order is not time
    /// order (`…:00Z` sorts after `…:00.5Z` as text).
    #[test]
    fn times_compare_as_instants() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(
            cmp_time("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z"),
            Less
        );
        assert_eq!(
            cmp_time("2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.50Z"),
            Equal
        );
        assert_eq!(
            cmp_time("2026-01-01T00:00:00.25Z", "2026-01-01T00:00:00.5Z"),
            Less
        );
        assert_eq!(
            cmp_time("2026-01-02T00:00:00Z", "2026-01-01T23:59:59.999999Z"),
            Greater
        );
        assert_eq!(
            cmp_time("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00.1Z"),
            Less
        );
        for t in ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123Z"] {
            let n = normalize_time(t).expect("valid");
            assert_eq!(cmp_time(&n, t), Equal, "{n}");
        }
    }

    /// Runs `v` as event 3 of a request through both parsers (the `Value`
    /// one sources use, and the streaming one HTTP uses) and asserts they
    /// agree on the event or on the refusal (code, index, field).
    fn check(v: Value) -> Result<NewEvent, Rejection> {
        both(v, &Limits::default())
    }

    fn both(v: Value, limits: &Limits) -> Result<NewEvent, Rejection> {
        let by_value = validate(3, v.clone(), RECEIVED, limits);
        let body = json!([{"type":"a"}, {"type":"a"}, {"type":"a"}, v]).to_string();
        let streamed =
            parse_request(body.as_bytes(), false, RECEIVED, limits).map(|mut e| e.remove(3));
        let line = format!("{{\"type\":\"a\"}}\n\n{{\"type\":\"a\"}}\n{{\"type\":\"a\"}}\n{v}\n");
        let lined = parse_request(line.as_bytes(), true, RECEIVED, limits).map(|mut e| e.remove(3));
        for other in [&streamed, &lined] {
            match (&by_value, other) {
                (Ok(a), Ok(b)) => {
                    let generated = !v.get("id").is_some_and(Value::is_string);
                    let same_id = generated || a.id == b.id;
                    assert!(
                        same_id
                            && a.event_type == b.event_type
                            && a.time == b.time
                            && a.received == b.received
                            && a.actor == b.actor
                            && a.subject == b.subject
                            && a.data == b.data,
                        "parsers disagree on {v}: {a:?} vs {b:?}"
                    );
                }
                (Err(a), Err(b)) => assert_eq!(
                    (a.code, a.index, &a.field, a.too_large),
                    (b.code, b.index, &b.field, b.too_large),
                    "parsers refuse {v} differently"
                ),
                (a, b) => panic!("parsers disagree on {v}: {a:?} vs {b:?}"),
            }
        }
        by_value
    }

    #[test]
    fn accepts_a_full_event_and_the_created_at_alias() {
        let ev = check(
            json!({"id":"e1","type":"grant.created","createdAt":"2026-01-02T03:04:05+01:00",
            "actor":{"id":"u1"},"subject":"s","data":{"b":1,"a":[true,null]}}),
        )
        .expect("valid");
        assert_eq!(ev.time, "2026-01-02T02:04:05Z");
        assert_eq!(ev.data.as_deref(), Some(r#"{"a":[true,null],"b":1}"#));
        let generated = check(json!({"type":"x"})).expect("valid");
        assert!(
            generated.id.starts_with("evt_") && generated.id.len() == 30,
            "{}",
            generated.id
        );
        assert_eq!(generated.time, RECEIVED);
    }

    #[test]
    fn generated_ids_sort_by_time() {
        let a = generate_id();
        // ULIDs carry milliseconds (ids of one millisecond sort at random):
        // wait for the clock to reach the next one.
        let ms = ulid::Ulid::from_string(&a["evt_".len()..])
            .expect("a generated id is evt_ and a ULID")
            .timestamp_ms();
        while ulid::Ulid::new().timestamp_ms() <= ms {
            std::thread::yield_now();
        }
        let b = generate_id();
        assert!(a < b, "{a} !< {b}");
    }

    /// Every refused case: (event, field, code).
    #[test]
    fn refuses_each_invalid_case_naming_the_field() {
        let cases: Vec<(Value, Option<&str>, &str)> = vec![
            (
                json!({"type":"a","stream":"x"}),
                Some("stream"),
                "forbidden_field",
            ),
            (json!({"type":"a","seq":1}), Some("seq"), "forbidden_field"),
            (
                json!({"type":"a","received":"x"}),
                Some("received"),
                "forbidden_field",
            ),
            (
                json!({"type":"a","prev":"x"}),
                Some("prev"),
                "forbidden_field",
            ),
            (
                json!({"type":"a","hash":"x"}),
                Some("hash"),
                "forbidden_field",
            ),
            (json!({}), Some("type"), "missing_field"),
            (json!({"type":""}), Some("type"), "invalid_type"),
            (json!({"type":"a..b"}), Some("type"), "invalid_type"),
            (json!({"type":"a b"}), Some("type"), "invalid_type"),
            (json!({"type":7}), Some("type"), "invalid_type"),
            (json!({"type":"a","id":""}), Some("id"), "invalid_id"),
            (
                json!({"type":"a","id":"has space"}),
                Some("id"),
                "invalid_id",
            ),
            (json!({"type":"a","id":"q\"uote"}), Some("id"), "invalid_id"),
            (json!({"type":"a","id":5}), Some("id"), "invalid_id"),
            (
                json!({"type":"a","id":"x".repeat(129)}),
                Some("id"),
                "invalid_id",
            ),
            (
                json!({"type":"a","time":"yesterday"}),
                Some("time"),
                "invalid_time",
            ),
            (
                json!({"type":"a","createdAt":12}),
                Some("createdAt"),
                "invalid_time",
            ),
            (
                json!({"type":"a","time":"2026-01-01T00:00:00Z","createdAt":"2026-01-01T00:00:00Z"}),
                None,
                "duplicate_time",
            ),
            (
                json!({"type":"a","actor":5}),
                Some("actor"),
                "invalid_value",
            ),
            (
                json!({"type":"a","subject":[1]}),
                Some("subject"),
                "invalid_value",
            ),
            (
                json!({"type":"a","data":"str"}),
                Some("data"),
                "invalid_value",
            ),
            (
                json!({"type":"a","data":{"n":{"big":9007199254740993u64}}}),
                Some("data.n.big"),
                "unsafe_number",
            ),
            (
                json!({"type":"a","data":{"l":[1,-9007199254740993i64]}}),
                Some("data.l[1]"),
                "unsafe_number",
            ),
            (
                json!({"type":"a","metadata":{}}),
                Some("metadata"),
                "unknown_field",
            ),
        ];
        for (v, field, code) in cases {
            let r = check(v.clone()).expect_err(&format!("accepted {v}"));
            assert_eq!(r.code, code, "{v}");
            assert_eq!(r.index, Some(3), "{v}");
            if let Some(f) = field {
                assert_eq!(r.field.as_deref(), Some(f), "{v}");
            }
            assert!(!r.too_large);
        }
        let r = validate(0, json!([1]), RECEIVED, &Limits::default())
            .expect_err("array is not an event");
        assert_eq!(r.code, "not_an_object");
    }

    /// The streaming parser refuses a name given twice in one object (a
    /// `Value` would keep the last silently), naming where.
    #[test]
    fn duplicate_names_are_refused() {
        let limits = Limits::default();
        for (body, field) in [
            (r#"{"type":"a","type":"b"}"#, "type"),
            (r#"{"type":"a","id":"x","id":"y"}"#, "id"),
            (r#"{"type":"a","data":{"k":1,"k":2}}"#, "data.k"),
            (
                r#"{"type":"a","data":{"l":[{"x":1,"y":2,"x":3}]}}"#,
                "data.l[0].x",
            ),
            (r#"{"type":"a","actor":{"id":"u","id":"v"}}"#, "actor.id"),
        ] {
            let r = parse_request(body.as_bytes(), false, RECEIVED, &limits).expect_err(body);
            assert_eq!(
                (r.code, r.field.as_deref(), r.index),
                ("duplicate_key", Some(field), Some(0)),
                "{body}"
            );
        }
        let r = parse_request(br#"[1]"#, false, RECEIVED, &limits).expect_err("not an object");
        assert_eq!((r.code, r.index), ("not_an_object", Some(0)));
        let r = parse_request(br#""s""#, false, RECEIVED, &limits).expect_err("not an object");
        assert_eq!((r.code, r.index), ("not_an_object", Some(0)));
    }

    #[test]
    fn request_limits_and_shapes() {
        let limits = Limits {
            max_event_bytes: 1024,
            max_request_bytes: 4096,
            max_events_per_request: 3,
        };
        let big = json!({"type":"a","data":{"x":"y".repeat(2000)}}).to_string();
        let r = parse_request(big.as_bytes(), false, RECEIVED, &limits).expect_err("too big");
        assert!(r.too_large && r.code == "event_too_large" && r.index == Some(0));
        let four = r#"[{"type":"a"},{"type":"a"},{"type":"a"},{"type":"a"}]"#;
        let r = parse_request(four.as_bytes(), false, RECEIVED, &limits).expect_err("too many");
        assert!(r.too_large && r.code == "too_many_events");
        let huge = vec![b' '; 5000];
        assert!(
            parse_request(&huge, false, RECEIVED, &limits)
                .expect_err("too big")
                .too_large
        );
        let nd = b"{\"type\":\"a\"}\n\n{\"type\":\"b\"}\r\n";
        assert_eq!(
            parse_request(nd, true, RECEIVED, &limits)
                .expect("ndjson")
                .len(),
            2
        );
        let nd_bad = b"{\"type\":\"a\"}\n{\"type\":\"b\",\"seq\":1}\n";
        let r = parse_request(nd_bad, true, RECEIVED, &limits).expect_err("forbidden");
        assert_eq!((r.index, r.field.as_deref()), (Some(1), Some("seq")));
        assert_eq!(
            parse_request(b"[]", false, RECEIVED, &limits)
                .expect_err("empty")
                .code,
            "no_events"
        );
        assert_eq!(
            parse_request(b"{", false, RECEIVED, &limits)
                .expect_err("bad json")
                .code,
            "invalid_json"
        );
        let mixed = r#"[{"type":"a"},{"type":"b","hash":"x"}]"#;
        assert_eq!(
            parse_request(mixed.as_bytes(), false, RECEIVED, &limits)
                .expect_err("second bad")
                .index,
            Some(1)
        );
    }

    #[test]
    fn stored_json_puts_hash_at_the_top_level_even_when_actor_has_an_id() {
        let ev =
            check(json!({"id":"e1","type":"t","actor":{"id":"user_1"},"data":{"id":"d","k":"v"}}))
                .expect("valid");
        let body = String::from_utf8(canonical_bytes(&ev, "s", 1, crate::chain::ZERO_HASH_HEX))
            .expect("utf8");
        let v: Value = serde_json::from_str(&stored_json(&body, "ab")).expect("json");
        assert_eq!(v["hash"], "ab");
        assert_eq!(v["actor"], json!({"id":"user_1"}), "actor untouched");
        assert_eq!(v["data"], json!({"id":"d","k":"v"}), "data untouched");
    }

    #[test]
    fn stored_json_inserts_hash_in_jcs_order() {
        let ev = check(json!({"id":"e1","type":"t","data":{"k":"v"}})).expect("valid");
        let body = String::from_utf8(canonical_bytes(&ev, "s", 1, crate::chain::ZERO_HASH_HEX))
            .expect("utf8");
        let full = stored_json(&body, "ab");
        let v: Value = serde_json::from_str(&full).expect("json");
        assert_eq!(serde_json_canonicalizer::to_string(&v).expect("jcs"), full);
    }

    /// The stored `data` of `{"type":"a","data":{"x":<text>}}` sent over
    /// HTTP (one event, an array, NDJSON: all three must agree).
    fn ingest_number(text: &str) -> Result<String, Rejection> {
        let one = format!(r#"{{"type":"a","data":{{"x":{text}}}}}"#);
        let array = format!(r#"[{{"type":"a"}},{{"type":"a","data":{{"l":[1,{{"x":{text}}}]}}}}]"#);
        let lines = format!("{{\"type\":\"a\"}}\n{one}\n");
        let limits = Limits::default();
        let a = parse_request(one.as_bytes(), false, RECEIVED, &limits);
        let b = parse_request(array.as_bytes(), false, RECEIVED, &limits);
        let c = parse_request(lines.as_bytes(), true, RECEIVED, &limits);
        match (&a, &b, &c) {
            (Ok(a), Ok(b), Ok(c)) => {
                let x = a[0].data.clone().expect("data");
                assert_eq!(
                    b[1].data.as_deref(),
                    Some(format!(r#"{{"l":[1,{x}]}}"#).as_str())
                );
                assert_eq!(c[1].data.as_ref(), Some(&x));
            }
            (Err(a), Err(b), Err(c)) => {
                assert_eq!(
                    (a.index, a.field.as_deref()),
                    (Some(0), Some("data.x")),
                    "{text}"
                );
                assert_eq!(
                    (b.index, b.field.as_deref()),
                    (Some(1), Some("data.l[1].x")),
                    "{text}"
                );
                assert_eq!(
                    (c.index, c.field.as_deref()),
                    (Some(1), Some("data.x")),
                    "{text}"
                );
                for r in [a, b, c] {
                    assert_eq!((r.code, &r.message), (a.code, &a.message), "{text}");
                }
            }
            _ => panic!("{text}: one event {a:?}, array {b:?}, lines {c:?}"),
        }
        a.map(|mut e| e.remove(0).data.expect("data"))
    }

    /// Issue #18: an integer past 2^53-1 was refused even when RFC 8785
    /// writes it unchanged. Now every number whose canonical form keeps its
    /// value is stored (in that form), and only numbers that would change
    /// are refused, naming the path, the number and what it would become.
    #[test]
    fn numbers_are_kept_when_rfc8785_keeps_their_value() {
        for (text, stored) in [
            ("9007199254740991", "9007199254740991"),
            ("9007199254740992", "9007199254740992"),
            ("9007199254740994", "9007199254740994"),
            ("-9007199254740994", "-9007199254740994"),
            ("18014398509481984", "18014398509481984"),
            ("1152921504606847000", "1152921504606847000"),
            ("100000000000000000000", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("1E30", "1e+30"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("-0", "0"),
            ("1.0", "1"),
            ("0.1", "0.1"),
            ("5e-324", "5e-324"),
        ] {
            assert_eq!(
                ingest_number(text).expect(text),
                format!(r#"{{"x":{stored}}}"#),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_rfc8785_would_change_are_refused_by_path_and_value() {
        for (text, says) in [
            (
                "9007199254740993",
                "number 9007199254740993 would be stored as 9007199254740992",
            ),
            (
                "-9007199254740993",
                "number -9007199254740993 would be stored as -9007199254740992",
            ),
            (
                "18446744073709551615",
                "would be stored as 18446744073709552000",
            ),
            (
                "18446744073709551616",
                "number 18446744073709551616 would be stored as 18446744073709552000",
            ),
            (
                "1152921504606846976",
                "would be stored as 1152921504606847000",
            ),
            (
                "-9223372036854775808",
                "would be stored as -9223372036854776000",
            ),
            (
                "0.1000000000000000000001",
                "number 0.1000000000000000000001 would be stored as 0.1",
            ),
            ("333333333.33333329", "would be stored as 333333333.3333333"),
            ("1e-400", "number 1e-400 would be stored as 0"),
        ] {
            let r = ingest_number(text).expect_err(text);
            assert_eq!(r.code, "unsafe_number", "{text}");
            assert!(r.message.contains(says), "{text}: {}", r.message);
            assert!(r.message.ends_with("send it as a string"), "{}", r.message);
        }
    }

    /// Sources hand over a `Value`: its integers are judged the same way.
    #[test]
    fn value_integers_are_judged_like_their_text() {
        let ok = validate(
            0,
            json!({"type":"a","data":{"n":9007199254740994u64,"m":-9007199254740994i64}}),
            RECEIVED,
            &Limits::default(),
        )
        .expect("kept");
        assert_eq!(
            ok.data.as_deref(),
            Some(r#"{"m":-9007199254740994,"n":9007199254740994}"#)
        );
        let r = validate(
            2,
            json!({"type":"a","actor":{"l":[0,{"n":u64::MAX}]}}),
            RECEIVED,
            &Limits::default(),
        )
        .expect_err("changes");
        assert_eq!(
            (r.code, r.index, r.field.as_deref()),
            ("unsafe_number", Some(2), Some("actor.l[1].n"))
        );
        assert!(
            r.message
                .starts_with("number 18446744073709551615 would be stored as 18446744073709552000"),
            "{}",
            r.message
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The fast assembly equals the generic RFC 8785 canonicalizer.
        #[test]
        fn assembled_bytes_are_jcs(
            data in proptest::collection::btree_map("\\PC{0,6}", arb_json(), 0..4),
            actor in proptest::option::of("\\PC{0,10}"),
            id in "[!#-\\[\\]-~]{1,20}",
            ty in "[a-z]{1,5}(\\.[a-z0-9_-]{1,5}){0,2}",
            stream in "[A-Za-z0-9._-]{1,20}",
            seq in 1u64..(1 << 53),
        ) {
            let mut obj = json!({"id": id, "type": ty, "data": Value::Object(data.into_iter().collect())});
            if let Some(a) = actor { obj["actor"] = Value::String(a); }
            let ev = validate(0, obj, RECEIVED, &Limits { max_event_bytes: 1 << 30, ..Limits::default() }).expect("valid");
            let bytes = canonical_bytes(&ev, &stream, seq, crate::chain::ZERO_HASH_HEX);
            let parsed: Value = serde_json::from_slice(&bytes).expect("assembled bytes are JSON");
            prop_assert_eq!(serde_json_canonicalizer::to_vec(&parsed).expect("jcs"), bytes);
        }

        /// The streaming parser and the `Value` one agree on random events,
        /// valid or not.
        #[test]
        fn parsers_agree(
            data in proptest::option::of(arb_json()),
            actor in proptest::option::of(arb_json()),
            subject in proptest::option::of(arb_json()),
            id in proptest::option::of("[!#-\\[\\]-~]{1,20}"),
            ty in "[a-z]{1,5}(\\.[a-z0-9_-]{1,5}){0,2}",
            time in proptest::option::of(prop_oneof![Just("2026-01-02T03:04:05+01:00".to_owned()), "\\PC{0,8}"]),
            big in any::<bool>(),
        ) {
            let mut obj = json!({"type": ty});
            if let Some(d) = data { obj["data"] = d; }
            if let Some(a) = actor { obj["actor"] = a; }
            if let Some(s) = subject { obj["subject"] = s; }
            if let Some(i) = id { obj["id"] = Value::String(i); }
            if let Some(t) = time { obj["time"] = Value::String(t); }
            let limits = Limits { max_event_bytes: if big { 1 << 30 } else { 600 }, ..Limits::default() };
            let _ = both(obj, &limits);
        }

        /// Whatever a number's spelling, HTTP ingest either stores it with
        /// the same decimal value or refuses it as `unsafe_number` exactly
        /// when RFC 8785 would change it.
        #[test]
        fn ingest_stores_numbers_with_their_value_or_refuses_them(
            f in any::<f64>().prop_filter("finite", |f| f.is_finite()),
            u in any::<u64>(),
            extra in "[0-9]{0,25}",
            exp in -30i32..30,
            pick in 0u8..4,
        ) {
            let text = match pick {
                0 => format!("{f:e}"),
                1 => u.to_string(),
                2 => format!("-{}{extra}", u.max(1)),
                _ => format!("{}.{extra}1e{exp}", u % 1000),
            };
            match ingest_number(&text) {
                Ok(data) => {
                    let stored = data.trim_start_matches("{\"x\":").trim_end_matches('}');
                    prop_assert_eq!(crate::jcs::number_change(&text), None, "{}", text);
                    // Same value: the stored text, canonicalized again, is
                    // itself, and says what the sent one said.
                    prop_assert_eq!(crate::jcs::number_change(stored), None);
                    prop_assert_eq!(crate::jcs::decimal(stored), crate::jcs::decimal(&text));
                }
                Err(r) => {
                    prop_assert_eq!(r.code, "unsafe_number", "{}: {:?}", text, r);
                    prop_assert!(crate::jcs::number_change(&text).is_some());
                }
            }
        }

        /// Splicing `hash` into the canonical body gives what parsing gives.
        #[test]
        fn spliced_hash_equals_parsed(
            data in proptest::option::of(proptest::collection::btree_map("\\PC{0,6}", arb_json(), 0..4)),
            actor in proptest::option::of(arb_json()),
            subject in proptest::option::of(arb_json()),
            id in "[!#-\\[\\]-~]{1,20}",
            seq in 1u64..(1 << 53),
        ) {
            let mut obj = json!({"id": id, "type": "t.x"});
            if let Some(d) = data { obj["data"] = Value::Object(d.into_iter().collect()); }
            if let Some(a) = actor.filter(|a| a.is_object() || a.is_string()) { obj["actor"] = a; }
            if let Some(s) = subject.filter(|s| s.is_object() || s.is_string()) { obj["subject"] = s; }
            let Ok(ev) = validate(0, obj, RECEIVED, &Limits { max_event_bytes: 1 << 30, ..Limits::default() }) else {
                return Ok(());
            };
            let body = String::from_utf8(canonical_bytes(&ev, "s", seq, crate::chain::ZERO_HASH_HEX)).expect("utf8");
            prop_assert!(hash_position(body.as_bytes()).is_some());
            let line = stored_json(&body, &"ab".repeat(32));
            prop_assert_eq!(&line, &stored_json_parsed(&body, &"ab".repeat(32)));
            prop_assert_eq!(split_stored_line(&line), Some((body.clone(), "ab".repeat(32))));
            let sc = scan_stored(&line).expect("canonical lines scan");
            let (h, range) = sc.hash.clone().expect("hash");
            prop_assert_eq!(h, "ab".repeat(32));
            prop_assert_eq!(format!("{}{}", &line[..range.start], &line[range.end..]), body.clone());
            prop_assert_eq!(sc.seq, Some(seq));
            prop_assert_eq!(sc.prev, Some(crate::chain::ZERO_HASH_HEX));
            prop_assert_eq!(sc.stream, Some("s"));
            prop_assert_eq!(sc.received, Some(RECEIVED));
            prop_assert!(scan_stored(&body).is_some_and(|b| b.hash.is_none() && b.seq == Some(seq)));
        }
    }

    #[test]
    fn splicing_falls_back_on_odd_bodies() {
        for odd in [
            "",
            "{}",
            "[1]",
            "{\"a\":1",
            "{\"actor\":{\"x\":\"}\"},\"id\":\"e\"}",
        ] {
            assert_eq!(
                stored_json(odd, "ab"),
                stored_json_parsed(odd, "ab"),
                "{odd}"
            );
        }
    }
}
