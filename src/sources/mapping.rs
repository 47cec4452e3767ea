//! Turns an upstream JSON object into a trailkeep event, then validates it
//! exactly like HTTP ingest (`event::validate`).
//!
//! - `id`, `type` and the time are read from configurable fields (defaults
//!   `id`, `type`, and `time` or `createdAt`, the Grantex shape);
//! - `actor` and `subject` pass through when present;
//! - every other field goes into `data`, so nothing is dropped. An object
//!   whose only other field is a `data` object (`{id, type, createdAt, data}`,
//!   as Grantex sends) keeps that object as `data`, even when it is `{}`;
//! - with no id in the object, the SSE `id:` is used; with neither, the id is
//!   derived from the source name and the content (`src_` + 32 hex of
//!   SHA-256), so a re-delivered event is recognised as a duplicate.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{Limits, NewEvent};

/// Field names as configured (`[sources.fields]`, `[sources.backfill.fields]`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFields {
    /// Field holding the event id (default `id`).
    pub id: Option<String>,
    /// Field holding the event type (default `type`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Field holding the event time (default `time`, then `createdAt`).
    pub time: Option<String>,
}

/// Validated field names.
#[derive(Debug, Clone)]
pub struct Fields {
    id: String,
    event_type: String,
    time: Option<String>,
}

impl From<RawFields> for Fields {
    fn from(r: RawFields) -> Self {
        Self {
            id: r.id.unwrap_or_else(|| "id".into()),
            event_type: r.event_type.unwrap_or_else(|| "type".into()),
            time: r.time,
        }
    }
}

impl Default for Fields {
    fn default() -> Self {
        RawFields::default().into()
    }
}

/// What became of one upstream item.
#[derive(Debug)]
pub enum Mapped {
    /// A valid event.
    Event(NewEvent),
    /// Valid, but its type is not wanted.
    Filtered,
    /// Not storable; the reason says why.
    Rejected(String),
}

/// The reason an upstream item is refused for a number RFC 8785 would
/// change: its path in the upstream's object, then what would happen.
pub(crate) fn number_reason(c: &crate::jcs::NumberChange) -> String {
    format!("{}: {c}", c.path.trim_start_matches('.'))
}

/// For each item of a backfill page (`page`: its JSON text; the items are
/// the array at `items_field`, else the page) that holds a number RFC 8785
/// would change, the reason it is refused.
pub(crate) fn changed_numbers_by_item(
    page: &[u8],
    items_field: Option<&str>,
) -> std::collections::HashMap<usize, String> {
    let prefix = items_field.map_or(String::new(), |f| format!(".{f}"));
    let mut out = std::collections::HashMap::new();
    for mut c in crate::jcs::changed_numbers(page, false) {
        let Some((i, rest)) = c
            .path
            .strip_prefix(prefix.as_str())
            .and_then(|p| p.strip_prefix('['))
            .and_then(|p| p.split_once(']'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest.to_owned())))
        else {
            continue;
        };
        c.path = rest;
        out.entry(i).or_insert_with(|| number_reason(&c));
    }
    out
}

/// Maps and validates one upstream object.
pub fn map_item(
    item: Value,
    fields: &Fields,
    source: &str,
    sse_id: Option<&str>,
    wants: impl Fn(&str) -> bool,
    received: &str,
) -> Mapped {
    let Value::Object(mut obj) = item else {
        return Mapped::Rejected("not a JSON object".into());
    };
    // Computed before any field is taken out: the id covers the whole object.
    let derived_id =
        (!obj.contains_key(&fields.id) && sse_id.is_none_or(str::is_empty)).then(|| {
            let canonical = crate::jcs::to_string(&Value::Object(obj.clone()));
            let mut h = Sha256::new();
            h.update(source.as_bytes());
            h.update(b"\n");
            h.update(canonical.as_bytes());
            format!("src_{}", &hex::encode(h.finalize())[..32])
        });
    let id = match obj.remove(&fields.id) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Mapped::Rejected(format!("field {} is not a string", fields.id)),
        None => match (sse_id.filter(|s| !s.is_empty()), derived_id) {
            (Some(s), _) => s.to_owned(),
            (None, Some(d)) => d,
            (None, None) => return Mapped::Rejected("no id could be derived".into()),
        },
    };
    let event_type = match obj.remove(&fields.event_type) {
        Some(Value::String(s)) => s,
        Some(_) => return Mapped::Rejected(format!("field {} is not a string", fields.event_type)),
        None => return Mapped::Rejected(format!("missing field {}", fields.event_type)),
    };
    if !wants(&event_type) {
        return Mapped::Filtered;
    }
    let time = match &fields.time {
        Some(f) => obj.remove(f),
        None => obj.remove("time").or_else(|| obj.remove("createdAt")),
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id));
    out.insert("type".into(), Value::String(event_type));
    if let Some(t) = time {
        out.insert("time".into(), t);
    }
    for k in ["actor", "subject"] {
        if let Some(v) = obj.remove(k) {
            out.insert(k.into(), v);
        }
    }
    // The upstream's own `data` object is kept even when empty (`data: {}`
    // is what Grantex sends for an event without details, and the
    // `grantex` encoding passes it on); gathered fields only when any.
    let (data, explicit) = match obj.remove("data") {
        Some(Value::Object(d)) if obj.is_empty() => (Value::Object(d), true),
        Some(other) => {
            obj.insert("data".into(), other);
            (Value::Object(obj), false)
        }
        None => (Value::Object(obj), false),
    };
    if explicit || data.as_object().is_some_and(|d| !d.is_empty()) {
        out.insert("data".into(), data);
    }
    match crate::event::validate(0, Value::Object(out), received, &Limits::default()) {
        Ok(ev) => Mapped::Event(ev),
        Err(r) => Mapped::Rejected(match r.field {
            Some(f) => format!("{f}: {}", r.message),
            None => r.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-01T00:00:00.000000Z";

    fn map(v: Value, fields: &Fields, sse_id: Option<&str>) -> Mapped {
        map_item(v, fields, "up", sse_id, |t| t != "skip.me", NOW)
    }

    #[test]
    fn grantex_event_shape_maps_directly() {
        let m = map(
            json!({"id":"evt_1","type":"grant.created","createdAt":"2026-01-02T03:04:05Z","data":{"grantId":"g"}}),
            &Fields::default(),
            None,
        );
        let Mapped::Event(ev) = m else {
            panic!("not mapped: {m:?}")
        };
        assert_eq!(
            (ev.id.as_str(), ev.event_type.as_str(), ev.time.as_str()),
            ("evt_1", "grant.created", "2026-01-02T03:04:05Z")
        );
        assert_eq!(ev.data.as_deref(), Some(r#"{"grantId":"g"}"#));
    }

    /// `data: {}` from the upstream is stored as sent (it was dropped, so
    /// the `grantex` encoding could not give it back); an object with no
    /// other fields still gets no `data`.
    #[test]
    fn an_empty_upstream_data_object_is_kept() {
        let m = map(
            json!({"id":"evt_2","type":"token.issued","createdAt":"2026-01-02T03:04:05.000Z","data":{}}),
            &Fields::default(),
            None,
        );
        let Mapped::Event(ev) = m else {
            panic!("not mapped: {m:?}")
        };
        assert_eq!(ev.data.as_deref(), Some("{}"));
        let m = map(
            json!({"id":"evt_3","type":"token.issued"}),
            &Fields::default(),
            None,
        );
        let Mapped::Event(ev) = m else {
            panic!("not mapped: {m:?}")
        };
        assert_eq!(ev.data, None);
    }

    #[test]
    fn audit_entry_shape_maps_with_configured_fields_and_keeps_everything() {
        let fields: Fields = RawFields {
            id: Some("entryId".into()),
            event_type: Some("action".into()),
            time: Some("timestamp".into()),
        }
        .into();
        let m = map(
            json!({"entryId":"a1","action":"tool.called","timestamp":"2026-01-02T03:04:05Z","agentId":"ag","metadata":{"k":1}}),
            &fields,
            None,
        );
        let Mapped::Event(ev) = m else {
            panic!("not mapped: {m:?}")
        };
        assert_eq!(ev.id, "a1");
        assert_eq!(
            ev.data.as_deref(),
            Some(r#"{"agentId":"ag","metadata":{"k":1}}"#),
            "unmapped fields go to data"
        );
    }

    #[test]
    fn ids_come_from_the_object_then_sse_then_content() {
        let Mapped::Event(a) = map(json!({"type":"x"}), &Fields::default(), Some("42")) else {
            panic!()
        };
        assert_eq!(a.id, "42");
        let Mapped::Event(b) = map(json!({"type":"x","data":{"n":1}}), &Fields::default(), None)
        else {
            panic!()
        };
        let Mapped::Event(c) = map(json!({"data":{"n":1},"type":"x"}), &Fields::default(), None)
        else {
            panic!()
        };
        assert!(b.id.starts_with("src_"));
        assert_eq!(b.id, c.id, "derived ids depend on content, not key order");
        let Mapped::Event(d) = map(json!({"type":"x","data":{"n":2}}), &Fields::default(), None)
        else {
            panic!()
        };
        assert_ne!(b.id, d.id);
    }

    #[test]
    fn refusals_and_filter() {
        assert!(matches!(
            map(json!([1]), &Fields::default(), None),
            Mapped::Rejected(_)
        ));
        assert!(
            matches!(map(json!({"id":"1"}), &Fields::default(), None), Mapped::Rejected(r) if r.contains("type"))
        );
        assert!(matches!(
            map(json!({"type":"a b"}), &Fields::default(), None),
            Mapped::Rejected(_)
        ));
        assert!(
            matches!(map(json!({"type":"x","time":"yesterday"}), &Fields::default(), None), Mapped::Rejected(r) if r.starts_with("time"))
        );
        assert!(matches!(
            map(json!({"type":"skip.me"}), &Fields::default(), None),
            Mapped::Filtered
        ));
    }
}
