//! The request parser: from the body's bytes straight to [`NewEvent`]s.
//!
//! `actor`, `subject` and `data` are canonicalized (RFC 8785) while they are
//! parsed, with no `serde_json::Value` tree in between: building that tree
//! and walking it again was most of the CPU that HTTP ingest spent per event
//! (perf, `bench ingest`). Each field is checked as it arrives, then
//! [`super::assemble`] finishes the event exactly as [`super::validate`]
//! does for events that arrive as a `Value` (sources), and a test runs every
//! refusal case and random events through both.
//!
//! Stricter than a `Value` in one way: a name repeated inside one object
//! (`{"a":1,"a":2}`) is refused (`duplicate_key`), where a `Value` would keep
//! the last silently. JSON that means different things to different parsers
//! has no place in an audit log.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    FORBIDDEN, Fields, Limits, NewEvent, Rejection, assemble, normalize_time, valid_id, valid_type,
};

/// What one parse shares: the request's receipt time and limits, and the
/// refusal that stopped it (serde errors carry only text, so the structured
/// [`Rejection`] waits here).
struct Ctx<'a> {
    received: &'a str,
    limits: &'a Limits,
    rejection: RefCell<Option<Rejection>>,
    /// A number arrived as a double (a fraction, an exponent, or an
    /// integer past 64 bits): whether RFC 8785 keeps its value depends on
    /// its text, which the parser does not hand over, so the body is
    /// scanned for such numbers once it parsed ([`check_numbers`]).
    doubles: std::cell::Cell<bool>,
}

/// Refuses the first number in `body` (the request, or one NDJSON line,
/// event `line`) whose value RFC 8785 would change, naming the event and
/// the path below it.
fn check_numbers(body: &[u8], line: Option<usize>) -> Result<(), Rejection> {
    let Some(c) = crate::jcs::first_changed_number(body) else {
        return Ok(());
    };
    // `[i].data.x` in an array of events, `.data.x` in one event.
    let (index, field) = match (line, c.path.strip_prefix('[')) {
        (None, Some(rest)) => {
            let (i, field) = rest.split_once(']').unwrap_or((rest, ""));
            (i.parse().unwrap_or(0), field)
        }
        (line, _) => (line.unwrap_or(0), c.path.as_str()),
    };
    Err(super::changed_number(
        index,
        field.trim_start_matches('.'),
        &c,
    ))
}

impl Ctx<'_> {
    fn reject<E: de::Error>(&self, r: Rejection) -> E {
        *self.rejection.borrow_mut() = Some(r);
        E::custom("rejected")
    }

    /// Prefixes the path of the refusal in flight with `part` (on the way
    /// back out of a nested value: `.key` or `[index]`).
    fn prefix(&self, part: &str) {
        if let Some(r) = self.rejection.borrow_mut().as_mut()
            && let Some(f) = r.field.as_mut()
        {
            f.insert_str(0, part);
        }
    }

    /// The refusal behind `e`: ours if one is waiting, else the JSON error.
    fn take(
        &self,
        e: serde_json::Error,
        json_error: impl FnOnce(serde_json::Error) -> Rejection,
    ) -> Rejection {
        self.rejection
            .borrow_mut()
            .take()
            .unwrap_or_else(|| json_error(e))
    }
}

/// Parses a JSON body: one event object or an array of them.
pub(super) fn parse_body(
    body: &[u8],
    received: &str,
    limits: &Limits,
) -> Result<Vec<NewEvent>, Rejection> {
    let ctx = Ctx {
        received,
        limits,
        rejection: RefCell::new(None),
        doubles: std::cell::Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let events = de
        .deserialize_any(RequestVisitor { ctx: &ctx })
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            ctx.take(e, |e| {
                let hint = if looks_like_ndjson(&e) {
                    "; it looks like NDJSON (one JSON value per line): send it with Content-Type: application/x-ndjson, or as one JSON array"
                } else {
                    ""
                };
                Rejection::request("invalid_json", format!("body is not JSON: {e}{hint}"), false)
            })
        })?;
    if ctx.doubles.get() {
        check_numbers(body, None)?;
    }
    Ok(events)
}

/// Whether a JSON body failed because more values follow the first on
/// later lines: what NDJSON sent as `application/json` looks like.
fn looks_like_ndjson(e: &serde_json::Error) -> bool {
    e.line() > 1 && e.to_string().starts_with("trailing characters")
}

/// Parses one NDJSON line as event `index`.
pub(super) fn parse_line(
    index: usize,
    line: &[u8],
    received: &str,
    limits: &Limits,
) -> Result<NewEvent, Rejection> {
    let ctx = Ctx {
        received,
        limits,
        rejection: RefCell::new(None),
        doubles: std::cell::Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_slice(line);
    let event = EventSeed { ctx: &ctx, index }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            ctx.take(e, |e| Rejection {
                code: "invalid_json",
                message: format!("line is not JSON: {e}"),
                index: Some(index),
                field: None,
                too_large: false,
            })
        })?;
    if ctx.doubles.get() {
        check_numbers(line, Some(index))?;
    }
    Ok(event)
}

fn not_an_object(index: usize) -> Rejection {
    Rejection {
        code: "not_an_object",
        message: "event must be a JSON object".into(),
        index: Some(index),
        field: None,
        too_large: false,
    }
}

struct RequestVisitor<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> Visitor<'de> for RequestVisitor<'_, '_> {
    type Value = Vec<NewEvent>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(1024));
        loop {
            let index = out.len();
            let Some(ev) = seq.next_element_seed(EventSeed { ctx, index })? else {
                break;
            };
            if out.len() >= ctx.limits.max_events_per_request {
                return Err(ctx.reject(super::too_many(ctx.limits)));
            }
            out.push(ev);
        }
        if out.is_empty() {
            return Err(ctx.reject(Rejection::request(
                "no_events",
                "request carries no events",
                false,
            )));
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        EventVisitor {
            ctx: self.ctx,
            index: 0,
        }
        .visit_map(map)
        .map(|ev| vec![ev])
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.ctx.reject(not_an_object(0)))
    }
}

struct EventSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = NewEvent;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<NewEvent, D::Error> {
        d.deserialize_any(EventVisitor {
            ctx: self.ctx,
            index: self.index,
        })
    }
}

struct EventVisitor<'c, 'a> {
    ctx: &'c Ctx<'a>,
    index: usize,
}

impl EventVisitor<'_, '_> {
    fn not_an_object<E: de::Error>(&self) -> Result<NewEvent, E> {
        Err(self.ctx.reject(not_an_object(self.index)))
    }
}

impl<'de> Visitor<'de> for EventVisitor<'_, '_> {
    type Value = NewEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NewEvent, A::Error> {
        let (ctx, index) = (self.ctx, self.index);
        let at =
            |field: &str, code, msg: String| ctx.reject(Rejection::at(index, field, code, msg));
        let mut f = Fields::default();
        let mut time_key: Option<&'static str> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let key = key.as_ref();
            match key {
                k if FORBIDDEN.contains(&k) => {
                    return Err(at(
                        k,
                        "forbidden_field",
                        format!("`{k}` is assigned by the log and may not be set"),
                    ));
                }
                "id" => {
                    if f.id.is_some() {
                        return Err(at("id", "duplicate_key", "id is given twice".into()));
                    }
                    match map.next_value_seed(StrSeed)? {
                        Some(s) if valid_id(&s) => f.id = Some(s.into_owned()),
                        _ => {
                            return Err(at(
                                "id",
                                "invalid_id",
                                "id must be a string of 1-128 printable ASCII characters without quotes or backslashes".into(),
                            ));
                        }
                    }
                }
                "type" => {
                    if f.event_type.is_some() {
                        return Err(at("type", "duplicate_key", "type is given twice".into()));
                    }
                    match map.next_value_seed(StrSeed)? {
                        Some(s) if valid_type(&s) => f.event_type = Some(s.into_owned()),
                        _ => {
                            return Err(at(
                                "type",
                                "invalid_type",
                                "type must be a dotted name such as grant.created (letters, digits, _ and -, at most 128 characters)".into(),
                            ));
                        }
                    }
                }
                "time" | "createdAt" => {
                    let name = if key == "time" { "time" } else { "createdAt" };
                    if let Some(first) = time_key {
                        return Err(if first == name {
                            at(name, "duplicate_key", format!("{name} is given twice"))
                        } else {
                            at(
                                name,
                                "duplicate_time",
                                "set either time or its alias createdAt, not both".into(),
                            )
                        });
                    }
                    time_key = Some(name);
                    match map
                        .next_value_seed(StrSeed)?
                        .and_then(|s| normalize_time(&s))
                    {
                        Some(t) => f.time = Some(t),
                        None => {
                            return Err(at(
                                name,
                                "invalid_time",
                                format!(
                                    "{name} must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"
                                ),
                            ));
                        }
                    }
                }
                "actor" | "subject" | "data" => {
                    let (name, slot, top) = match key {
                        "actor" => ("actor", &mut f.actor, Top::StringOrObject),
                        "subject" => ("subject", &mut f.subject, Top::StringOrObject),
                        _ => ("data", &mut f.data, Top::Object),
                    };
                    if slot.is_some() {
                        return Err(at(name, "duplicate_key", format!("{name} is given twice")));
                    }
                    let mut out = String::with_capacity(64);
                    let r = map.next_value_seed(Canon {
                        ctx,
                        index,
                        out: &mut out,
                        top,
                        name,
                    });
                    if r.is_err() {
                        ctx.prefix(name);
                    }
                    r?;
                    *slot = Some(out);
                }
                other => {
                    return Err(at(
                        other,
                        "unknown_field",
                        format!("unknown field `{other}`; put application fields under data"),
                    ));
                }
            }
        }
        assemble(index, f, ctx.received, ctx.limits).map_err(|r| ctx.reject(r))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<NewEvent, A::Error> {
        self.not_an_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<NewEvent, E> {
        self.not_an_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<NewEvent, E> {
        self.not_an_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<NewEvent, E> {
        self.not_an_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<NewEvent, E> {
        self.not_an_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<NewEvent, E> {
        self.not_an_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<NewEvent, E> {
        self.not_an_object()
    }
}

/// An object key, borrowed from the body unless it had escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(CowStr)
    }
}

struct CowStr;

impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string value, or `None` for any other JSON value (consumed).
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(MaybeStr)
    }
}

struct MaybeStr;

impl<'de> Visitor<'de> for MaybeStr {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Which JSON kinds a canonicalized field may hold at its top.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    /// Any value (inside a field).
    Any,
    /// `actor`, `subject`.
    StringOrObject,
    /// `data`.
    Object,
}

/// Writes the RFC 8785 form of the value being parsed into `out`
/// (`crate::jcs` rules), refusing integers JCS cannot carry exactly and
/// names repeated within an object.
struct Canon<'c, 'a, 'o> {
    ctx: &'c Ctx<'a>,
    index: usize,
    out: &'o mut String,
    top: Top,
    /// The event field being written (for messages).
    name: &'static str,
}

impl Canon<'_, '_, '_> {
    fn kind_ok<E: de::Error>(&self, is_string: bool, is_object: bool) -> Result<(), E> {
        let ok = match self.top {
            Top::Any => true,
            Top::StringOrObject => is_string || is_object,
            Top::Object => is_object,
        };
        if ok {
            return Ok(());
        }
        let (name, kind) = if self.top == Top::Object {
            (self.name, "an object")
        } else {
            (self.name, "a string or an object")
        };
        // The field name is prefixed by the caller.
        Err(self.ctx.reject(Rejection::at(
            self.index,
            "",
            "invalid_value",
            format!("{name} must be {kind}"),
        )))
    }

    /// Refuses the integer `v` (its sign: `negative`) when RFC 8785 would
    /// change it; the path is prefixed on the way out.
    fn integer<E: de::Error>(&self, negative: bool, v: u64) -> Result<(), E> {
        if crate::jcs::integer_survives(v) {
            return Ok(());
        }
        let text = format!("{}{v}", if negative { "-" } else { "" });
        let c = crate::jcs::NumberChange {
            path: String::new(),
            canonical: crate::jcs::number_change(&text).flatten(),
            text,
        };
        Err(self.ctx.reject(super::changed_number(self.index, "", &c)))
    }
}

impl<'de> DeserializeSeed<'de> for Canon<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.kind_ok(false, false)?;
        self.out.push_str("null");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.kind_ok(false, false)?;
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.kind_ok(false, false)?;
        self.integer(false, v)?;
        crate::jcs::write(self.out, &serde_json::Value::from(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.kind_ok(false, false)?;
        self.integer(v < 0, v.unsigned_abs())?;
        crate::jcs::write(self.out, &serde_json::Value::from(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.kind_ok(false, false)?;
        self.ctx.doubles.set(true);
        crate::jcs::write_f64(self.out, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.kind_ok(true, false)?;
        crate::jcs::write_str(self.out, v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.kind_ok(false, false)?;
        let (ctx, index) = (self.ctx, self.index);
        self.out.push('[');
        let name = self.name;
        let mut i = 0usize;
        loop {
            let mark = self.out.len();
            if i > 0 {
                self.out.push(',');
            }
            let seed = Canon {
                ctx,
                index,
                out: &mut *self.out,
                top: Top::Any,
                name,
            };
            match seq.next_element_seed(seed) {
                Ok(Some(())) => {}
                Ok(None) => {
                    // No element after the comma pushed above.
                    self.out.truncate(mark);
                    break;
                }
                Err(e) => {
                    ctx.prefix(&format!("[{i}]"));
                    return Err(e);
                }
            }
            i += 1;
        }
        self.out.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.kind_ok(false, true)?;
        let (ctx, index, name) = (self.ctx, self.index, self.name);
        // Members are canonicalized one by one, then written in UTF-16 key
        // order (RFC 8785 §3.2.3).
        let mut members: Vec<(Cow<'de, str>, String)> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let mut value = String::new();
            let r = map.next_value_seed(Canon {
                ctx,
                index,
                out: &mut value,
                top: Top::Any,
                name,
            });
            if let Err(e) = r {
                ctx.prefix(&format!(".{key}"));
                return Err(e);
            }
            members.push((key, value));
        }
        members.sort_by(|a, b| crate::jcs::key_cmp(&a.0, &b.0));
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            let name = w[0].0.to_string();
            let e = ctx.reject(Rejection::at(
                index,
                &format!(".{name}"),
                "duplicate_key",
                format!("`{name}` is given twice in one object"),
            ));
            return Err(e);
        }
        self.out.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            crate::jcs::write_str(self.out, k);
            self.out.push(':');
            self.out.push_str(v);
        }
        self.out.push('}');
        Ok(())
    }
}
