//! Stored events read back: the JSON line with its hash (`stored_json`,
//! `split_stored_line`), the fields every stored body has
//! ([`StoredFields`], scanned without parsing when the body is canonical),
//! and the one check of an event's place in its chain ([`check_link`]),
//! which every reader of stored events (verify, the archiver, restore)
//! uses, so they cannot disagree on what a valid link is.

use std::borrow::Cow;

use serde_json::Value;

use crate::chain::{Hash, event_hash};

/// Returns the stored event as JSON text: the canonical body with `hash`
/// added at the top level, itself in JCS order.
///
/// The body is parsed rather than spliced as text: `actor` and `data` sort
/// before `id` and may hold an `id` of their own (regression: the hash once
/// landed inside `actor`).
pub fn stored_json(body: &str, hash_hex: &str) -> String {
    if let Some(at) = hash_position(body.as_bytes()) {
        let mut s = String::with_capacity(body.len() + 76);
        s.push_str(&body[..at]);
        s.push_str("\"hash\":\"");
        s.push_str(hash_hex);
        s.push_str("\",");
        s.push_str(&body[at..]);
        return s;
    }
    stored_json_parsed(body, hash_hex)
}

/// The inverse of [`stored_json`] for a line read back from the archive:
/// the body the hash was computed over, and the `hash` value. Removes the
/// top-level `"hash":"…",` without parsing; falls back to parsing and
/// re-canonicalizing when the line does not look canonical. `None` when the
/// line is not an object with a string `hash`.
pub fn split_stored_line(line: &str) -> Option<(String, String)> {
    let b = line.as_bytes();
    if let Some(at) = hash_position(b)
        && b[at..].starts_with(b"\"hash\":\"")
    {
        let v = at + 8;
        let end = skip_string(b, v - 1)?;
        if b.get(end) == Some(&b',') {
            let hash = line[v..end - 1].to_owned();
            let mut body = String::with_capacity(line.len());
            body.push_str(&line[..at]);
            body.push_str(&line[end + 1..]);
            return Some((body, hash));
        }
    }
    let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
        return None;
    };
    let Some(Value::String(hash)) = m.remove("hash") else {
        return None;
    };
    let body = crate::jcs::to_string(&Value::Object(m));
    Some((body, hash))
}

/// The top-level fields of a stored event line (or body) that the chain
/// checks need, found by scanning rather than parsing. String values are the
/// raw text between the quotes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scanned<'a> {
    /// `hash` value, and the byte range of `"hash":"…",` in the line.
    pub hash: Option<(&'a str, std::ops::Range<usize>)>,
    /// `prev`.
    pub prev: Option<&'a str>,
    /// `seq`.
    pub seq: Option<u64>,
    /// `stream`.
    pub stream: Option<&'a str>,
    /// `received`.
    pub received: Option<&'a str>,
    /// `time`.
    pub time: Option<&'a str>,
    /// `id`.
    pub id: Option<&'a str>,
    /// `type`.
    pub event_type: Option<&'a str>,
}

/// Scans a canonical stored line or body's top-level keys; `None` when it
/// does not look canonical (callers then parse it).
pub fn scan_stored(s: &str) -> Option<Scanned<'_>> {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut out = Scanned::default();
    let mut i = 1;
    loop {
        let key_start = i;
        let key_end = skip_string(b, i)?;
        let key = &b[key_start + 1..key_end - 1];
        if b.get(key_end) != Some(&b':') {
            return None;
        }
        let v = key_end + 1;
        let v_end = skip_value(b, v)?;
        let raw_str = || -> Option<&str> {
            (b.get(v) == Some(&b'"') && v_end >= v + 2).then(|| &s[v + 1..v_end - 1])
        };
        match key {
            b"hash" => out.hash = Some((raw_str()?, key_start..v_end + 1)),
            b"prev" => out.prev = raw_str(),
            b"stream" => out.stream = raw_str(),
            b"received" => out.received = raw_str(),
            b"time" => out.time = raw_str(),
            b"id" => out.id = raw_str(),
            b"type" => out.event_type = raw_str(),
            b"seq" => out.seq = s[v..v_end].parse().ok(),
            _ => {}
        }
        match b.get(v_end) {
            Some(b',') => i = v_end + 1,
            Some(b'}') if v_end + 1 == b.len() => return Some(out),
            _ => return None,
        }
    }
}

/// [`stored_json`] by parsing and re-canonicalizing (the reference).
pub(crate) fn stored_json_parsed(body: &str, hash_hex: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            m.insert("hash".into(), Value::String(hash_hex.to_owned()));
            crate::jcs::to_string(&Value::Object(m))
        }
        // A body that is not an object is served as stored; verify reports it.
        _ => body.to_owned(),
    }
}

/// Where `"hash"` goes in a canonical body: before the first top-level key
/// that sorts after it (`id`, always present in a stored event). Skips the
/// values of earlier keys (`actor`, `data`) without parsing them; `None`
/// when the body does not look canonical (the caller parses instead).
pub(crate) fn hash_position(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut i = 1;
    loop {
        let key_start = i;
        let key_end = skip_string(b, i)?; // index after the closing quote
        let key = &b[key_start + 1..key_end - 1];
        // Top-level keys of a stored event are plain ASCII.
        if key.iter().any(|&c| c == b'\\' || c >= 0x80) {
            return None;
        }
        if key >= b"hash".as_slice() {
            return (key_start > 1 || b.len() > 2).then_some(key_start);
        }
        if b.get(key_end) != Some(&b':') {
            return None;
        }
        i = skip_value(b, key_end + 1)?;
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// Skips a JSON string starting at `b[i] == '"'`; returns the index after it.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Skips one JSON value starting at `i`; returns the index after it.
fn skip_value(b: &[u8], mut i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while !matches!(*b.get(i)?, b',' | b'}' | b']') {
                i += 1;
            }
            Some(i)
        }
    }
}

/// The fields every stored event body has (its canonical JSON without
/// `hash`), borrowed from the body where possible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StoredFields<'a> {
    /// Position in the stream.
    pub seq: u64,
    /// Event id.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Event type.
    #[serde(rename = "type", borrow)]
    pub event_type: Cow<'a, str>,
    /// Event time.
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// Receipt time.
    #[serde(borrow)]
    pub received: Cow<'a, str>,
    /// The previous event's hash.
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    /// The stream.
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
}

impl<'a> StoredFields<'a> {
    /// Reads a stored body: scanned when it is canonical and no value needs
    /// unescaping (the common case, no allocation), else parsed.
    ///
    /// # Errors
    /// What is missing or malformed, from the JSON parser.
    pub fn read(body: &'a str) -> Result<Self, String> {
        if let Some(sc) = scan_stored(body)
            && sc.hash.is_none()
            && let (
                Some(seq),
                Some(id),
                Some(t),
                Some(time),
                Some(received),
                Some(prev),
                Some(stream),
            ) = (
                sc.seq,
                sc.id,
                sc.event_type,
                sc.time,
                sc.received,
                sc.prev,
                sc.stream,
            )
            && ![id, t, time, received, prev, stream]
                .iter()
                .any(|v| v.contains('\\'))
        {
            return Ok(Self {
                seq,
                id: id.into(),
                event_type: t.into(),
                time: time.into(),
                received: received.into(),
                prev: prev.into(),
                stream: stream.into(),
            });
        }
        serde_json::from_str(body).map_err(|e| e.to_string())
    }
}

/// One thing wrong with a stored event at its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFault {
    /// The body is not an event (its fields cannot be read).
    Malformed(String),
    /// The recorded hash is not the SHA-256 of the body.
    Hash {
        /// The body's SHA-256, hex.
        computed: String,
    },
    /// The body's seq is not the seq expected here.
    Seq {
        /// The body's seq.
        found: u64,
    },
    /// The body's `prev` is not the previous event's hash.
    Prev {
        /// The body's `prev`.
        found: String,
    },
    /// The body names another stream.
    Stream {
        /// The body's stream.
        found: String,
    },
}

impl std::fmt::Display for LinkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "not a stored event: {e}"),
            Self::Hash { computed } => {
                write!(
                    f,
                    "hash does not match the event (its SHA-256 is {computed})"
                )
            }
            Self::Seq { found } => write!(f, "the event says seq {found}"),
            Self::Prev { found } => write!(f, "prev {found} does not link to the previous event"),
            Self::Stream { found } => write!(f, "the event belongs to stream {found}"),
        }
    }
}

/// The result of [`check_link`]: every fault found (none short-circuits,
/// so verify can report them all; the others stop at the first), the
/// body's SHA-256 (for the Merkle leaf) and its fields when readable.
#[derive(Debug)]
pub struct Link<'a> {
    /// SHA-256 of the body.
    pub computed: Hash,
    /// The body's fields, when it is an event.
    pub fields: Option<StoredFields<'a>>,
    /// What is wrong, in the order checked: malformed, hash, seq, prev,
    /// stream.
    pub faults: Vec<LinkFault>,
}

impl Link<'_> {
    /// The first fault, if any.
    pub fn first_fault(&self) -> Option<&LinkFault> {
        self.faults.first()
    }
}

/// Checks a stored event as event `seq` of `stream` after `prev`: its
/// recorded hash is the SHA-256 of `body`, and the body says that seq,
/// that prev and that stream. `prev = None` skips the link (the event
/// after a gap has no known predecessor).
pub fn check_link<'a>(
    body: &'a str,
    recorded_hash: &str,
    stream: &str,
    seq: u64,
    prev: Option<&str>,
) -> Link<'a> {
    let computed = event_hash(body.as_bytes());
    let mut faults = Vec::new();
    let fields = match StoredFields::read(body) {
        Ok(f) => Some(f),
        Err(e) => {
            faults.push(LinkFault::Malformed(e));
            None
        }
    };
    if !hex_is(recorded_hash, &computed) {
        faults.push(LinkFault::Hash {
            computed: hex::encode(computed),
        });
    }
    if let Some(f) = &fields {
        if f.seq != seq {
            faults.push(LinkFault::Seq { found: f.seq });
        }
        if let Some(p) = prev
            && f.prev != p
        {
            faults.push(LinkFault::Prev {
                found: f.prev.clone().into_owned(),
            });
        }
        if f.stream != stream {
            faults.push(LinkFault::Stream {
                found: f.stream.clone().into_owned(),
            });
        }
    }
    Link {
        computed,
        fields,
        faults,
    }
}

/// Whether lowercase hex `s` spells `bin` (an uppercase spelling is not the
/// recorded form, so it does not match).
pub fn hex_is(s: &str, bin: &Hash) -> bool {
    let mut b = [0u8; 32];
    s.len() == 64
        && !s.bytes().any(|c| c.is_ascii_uppercase())
        && hex::decode_to_slice(s, &mut b).is_ok()
        && b == *bin
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{NewEvent, canonical_string};
    use proptest::prelude::*;

    fn ev(id: &str, ty: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            event_type: ty.into(),
            time: "2026-01-01T00:00:00Z".into(),
            received: "2026-01-01T00:00:00.000001Z".into(),
            actor: Some(r#"{"id":"not-the-event","seq":9}"#.into()),
            subject: None,
            data: Some(r#"{"prev":"x","stream":"y","type":"z"}"#.into()),
        }
    }

    #[test]
    fn a_good_link_has_no_fault_and_each_lie_is_named() {
        let prev = "ab".repeat(32);
        let body = canonical_string(&ev("e1", "grant.created"), "s", 7, &prev);
        let hash = hex::encode(event_hash(body.as_bytes()));
        let ok = check_link(&body, &hash, "s", 7, Some(&prev));
        assert!(ok.faults.is_empty(), "{:?}", ok.faults);
        let f = ok.fields.unwrap();
        assert_eq!(
            (f.id.as_ref(), f.event_type.as_ref(), f.seq),
            ("e1", "grant.created", 7)
        );
        assert!(
            matches!(f.id, Cow::Borrowed(_)),
            "canonical bodies are scanned"
        );
        let faults =
            |stream, seq, p: Option<&str>, h: &str| check_link(&body, h, stream, seq, p).faults;
        assert!(matches!(
            faults("s", 7, Some(&prev), &"00".repeat(32))[..],
            [LinkFault::Hash { .. }]
        ));
        assert!(matches!(
            faults("s", 7, Some(&prev), &hash.to_uppercase())[..],
            [LinkFault::Hash { .. }]
        ));
        assert_eq!(
            faults("s", 8, Some(&prev), &hash),
            [LinkFault::Seq { found: 7 }]
        );
        assert_eq!(
            faults("s", 7, Some("cd"), &hash),
            [LinkFault::Prev {
                found: prev.clone()
            }]
        );
        assert!(
            faults("s", 7, None, &hash).is_empty(),
            "no known predecessor: link not checked"
        );
        assert_eq!(
            faults("t", 7, Some(&prev), &hash),
            [LinkFault::Stream { found: "s".into() }]
        );
        let bad = check_link("[1,2]", &hash, "s", 7, Some(&prev));
        assert!(matches!(
            bad.faults[..],
            [LinkFault::Malformed(_), LinkFault::Hash { .. }]
        ));
    }

    /// Validated ids and types never need escaping, but a body written
    /// into the database by hand may: it is parsed, not taken raw.
    #[test]
    fn escaped_values_are_parsed_not_taken_raw() {
        let body = r#"{"id":"e\u0031","prev":"00","received":"r","seq":1,"stream":"s","time":"t","type":"a\"b"}"#;
        let f = StoredFields::read(body).unwrap();
        assert_eq!((f.id.as_ref(), f.event_type.as_ref()), ("e1", "a\"b"));
    }

    proptest! {
        /// The scan and the parser read the same fields from any event.
        #[test]
        fn scanning_and_parsing_agree(id in "[!#-\\[\\]-~]{1,20}", ty in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", seq in 1u64..1_000_000) {
            let body = canonical_string(&ev(&id, &ty), "st", seq, &"0f".repeat(32));
            let read = StoredFields::read(&body).unwrap();
            let parsed: StoredFields<'_> = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(read, parsed);
        }
    }
}
