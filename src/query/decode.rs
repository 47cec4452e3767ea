//! Stored events as Arrow rows: the `events` table's schema and the one
//! decoder both tiers use (a hot row's body and an archived line are the
//! same canonical JSON, the line with `hash` inside).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Int64Builder, RecordBatch, RecordBatchOptions, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::bounds::DAY_US;

/// The `events` table's schema. Times are microseconds, UTC (an event
/// `time` with finer digits keeps them in the stored JSON, not here).
pub(crate) fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("time", ts(), false),
        Field::new("received", ts(), false),
        Field::new("actor", DataType::Utf8, true),
        Field::new("subject", DataType::Utf8, true),
        Field::new("data", DataType::Utf8, true),
        Field::new("prev", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("tier", DataType::Utf8, false),
        Field::new("dt", DataType::Date32, false),
    ]))
}

/// One stored event's fields, borrowed from its JSON where possible.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    received: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(default, borrow)]
    hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    actor: Option<&'a RawValue>,
    #[serde(default, borrow)]
    subject: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The fields of a canonical stored line other than actor, subject and
/// data, found by [`crate::event::scan_stored`]; `None` when the line does
/// not look canonical or a value holds an escape.
fn scan(json: &str) -> Option<Fields<'_>> {
    let sc = crate::event::scan_stored(json)?;
    let (seq, id, t, time, received, prev, stream) = (
        sc.seq?,
        sc.id?,
        sc.event_type?,
        sc.time?,
        sc.received?,
        sc.prev?,
        sc.stream?,
    );
    let hash = sc.hash.map(|(h, _)| h);
    if [id, t, time, received, prev, stream]
        .iter()
        .chain(hash.iter())
        .any(|v| v.contains('\\'))
    {
        return None;
    }
    Some(Fields {
        stream: stream.into(),
        seq,
        id: id.into(),
        event_type: t.into(),
        time: time.into(),
        received: received.into(),
        prev: prev.into(),
        hash: hash.map(Cow::Borrowed),
        actor: None,
        subject: None,
        data: None,
    })
}

/// Microseconds since the epoch of a stored time (RFC 3339, UTC `Z`,
/// any number of fraction digits; digits past the sixth are dropped).
pub(crate) fn micros(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        s.iter().try_fold(0i64, |a, c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z'
    {
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let frac = &b[19..b.len() - 1];
        let mut us = 0i64;
        if !frac.is_empty() {
            if frac[0] != b'.' || frac.len() < 2 {
                return slow_micros(t);
            }
            for (i, c) in frac[1..].iter().enumerate() {
                if !c.is_ascii_digit() {
                    return slow_micros(t);
                }
                if i < 6 {
                    us = us * 10 + i64::from(c - b'0');
                }
            }
            us *= 10i64.pow(6u32.saturating_sub((frac.len() - 1) as u32));
        }
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return slow_micros(t);
        }
        let days = days_from_civil(y, mo, d);
        return Some(((days * 24 + h) * 60 + mi) * 60_000_000 + s * 1_000_000 + us);
    }
    slow_micros(t)
}

fn slow_micros(t: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since the epoch of `YYYY-MM-DD`.
pub(crate) fn day_number(day: &str) -> Option<i64> {
    micros(&format!("{day}T00:00:00Z")).map(|us| us.div_euclid(DAY_US))
}

/// A JSON value as a column: a string as its text, anything else as its
/// canonical JSON.
fn json_text(v: &RawValue) -> Cow<'_, str> {
    let raw = v.get();
    if raw.starts_with('"')
        && let Ok(s) = serde_json::from_str::<Cow<'_, str>>(raw)
    {
        return s;
    }
    Cow::Borrowed(raw)
}

/// Builds record batches of the `events` table, one row at a time, only
/// for the columns asked for.
pub(crate) struct Rows {
    want: [bool; 13],
    projection: Vec<usize>,
    schema: SchemaRef,
    rows: usize,
    stream: StringBuilder,
    seq: Int64Builder,
    id: StringBuilder,
    event_type: StringBuilder,
    time: TimestampMicrosecondBuilder,
    received: TimestampMicrosecondBuilder,
    actor: StringBuilder,
    subject: StringBuilder,
    data: StringBuilder,
    prev: StringBuilder,
    hash: StringBuilder,
    tier: StringBuilder,
    dt: Date32Builder,
}

/// Why a stored event could not be read as a row.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadRow(pub String);

impl Rows {
    /// Rows of the columns `projection` names (indices into [`schema`]),
    /// in that order; `schema` is the projected schema.
    pub(crate) fn new(projection: &[usize], schema: SchemaRef) -> Self {
        let mut want = [false; 13];
        for &i in projection {
            want[i] = true;
        }
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Self {
            want,
            projection: projection.to_vec(),
            schema,
            rows: 0,
            stream: StringBuilder::new(),
            seq: Int64Builder::new(),
            id: StringBuilder::new(),
            event_type: StringBuilder::new(),
            time: ts(),
            received: ts(),
            actor: StringBuilder::new(),
            subject: StringBuilder::new(),
            data: StringBuilder::new(),
            prev: StringBuilder::new(),
            hash: StringBuilder::new(),
            tier: StringBuilder::new(),
            dt: Date32Builder::new(),
        }
    }

    /// Rows added since the last [`Rows::finish`].
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Adds one stored event: `json` is its body (hot, `hash` given) or
    /// its archived line (`hash` inside); `dt` is its day, when known
    /// (cold: the object's), else the day of `received`. Adds nothing when
    /// `keep` refuses its seq; whether it was added.
    pub(crate) fn push(
        &mut self,
        json: &str,
        hash: Option<&str>,
        tier: &str,
        dt: Option<i64>,
        keep: &dyn Fn(u64) -> bool,
    ) -> Result<bool, BadRow> {
        // Without actor, subject or data the canonical line is scanned,
        // not parsed (about twice as fast); a line that does not look
        // canonical, or has escapes, is parsed.
        let scanned = if self.want[6] || self.want[7] || self.want[8] {
            None
        } else {
            scan(json)
        };
        let f: Fields<'_> = match scanned {
            Some(f) => f,
            None => serde_json::from_str(json)
                .map_err(|e| BadRow(format!("not a stored event: {e}")))?,
        };
        if !keep(f.seq) {
            return Ok(false);
        }
        let w = &self.want;
        let bad = |what: &str, v: &str| {
            BadRow(format!(
                "seq {}: {what} {v:?} is not an RFC 3339 time",
                f.seq
            ))
        };
        let received = if w[5] || (w[12] && dt.is_none()) {
            Some(micros(&f.received).ok_or_else(|| bad("received", &f.received))?)
        } else {
            None
        };
        if w[0] {
            self.stream.append_value(&f.stream);
        }
        if w[1] {
            self.seq
                .append_value(i64::try_from(f.seq).unwrap_or(i64::MAX));
        }
        if w[2] {
            self.id.append_value(&f.id);
        }
        if w[3] {
            self.event_type.append_value(&f.event_type);
        }
        if w[4] {
            self.time
                .append_value(micros(&f.time).ok_or_else(|| bad("time", &f.time))?);
        }
        if let (true, Some(r)) = (w[5], received) {
            self.received.append_value(r);
        }
        let opt = |b: &mut StringBuilder, v: Option<&RawValue>| match v {
            Some(v) => b.append_value(json_text(v)),
            None => b.append_null(),
        };
        if w[6] {
            opt(&mut self.actor, f.actor);
        }
        if w[7] {
            opt(&mut self.subject, f.subject);
        }
        if w[8] {
            match f.data {
                Some(v) => self.data.append_value(v.get()),
                None => self.data.append_null(),
            }
        }
        if w[9] {
            self.prev.append_value(&f.prev);
        }
        if w[10] {
            let h = hash
                .or(f.hash.as_deref())
                .ok_or_else(|| BadRow(format!("seq {}: no hash", f.seq)))?;
            self.hash.append_value(h);
        }
        if w[11] {
            self.tier.append_value(tier);
        }
        if w[12] {
            let d = match (dt, received) {
                (Some(d), _) => d,
                (None, Some(r)) => r.div_euclid(DAY_US),
                (None, None) => 0,
            };
            self.dt.append_value(
                i32::try_from(d)
                    .map_err(|_| BadRow(format!("seq {}: day {d} out of range", f.seq)))?,
            );
        }
        self.rows += 1;
        Ok(true)
    }

    /// Whether rows need nothing from the events themselves (only `tier`
    /// and `dt`, as `count(*)` by day does).
    pub(crate) fn needs_no_event(&self) -> bool {
        self.want[..11].iter().all(|w| !w)
    }

    /// Adds `n` rows of which only `tier` and `dt` are wanted
    /// ([`Rows::needs_no_event`]).
    pub(crate) fn push_blank(&mut self, n: usize, tier: &str, dt: i64) -> Result<(), BadRow> {
        let day = i32::try_from(dt).map_err(|_| BadRow(format!("day {dt} out of range")))?;
        for _ in 0..n {
            if self.want[11] {
                self.tier.append_value(tier);
            }
            if self.want[12] {
                self.dt.append_value(day);
            }
        }
        self.rows += n;
        Ok(())
    }

    /// The rows added so far as one batch (possibly of no columns), and a
    /// fresh start.
    pub(crate) fn finish(&mut self) -> RecordBatch {
        let rows = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|&i| -> ArrayRef {
                match i {
                    0 => Arc::new(self.stream.finish()),
                    1 => Arc::new(self.seq.finish()),
                    2 => Arc::new(self.id.finish()),
                    3 => Arc::new(self.event_type.finish()),
                    4 => Arc::new(self.time.finish()),
                    5 => Arc::new(self.received.finish()),
                    6 => Arc::new(self.actor.finish()),
                    7 => Arc::new(self.subject.finish()),
                    8 => Arc::new(self.data.finish()),
                    9 => Arc::new(self.prev.finish()),
                    10 => Arc::new(self.hash.finish()),
                    11 => Arc::new(self.tier.finish()),
                    _ => Arc::new(self.dt.finish()),
                }
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        // The builders match the schema by construction.
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .unwrap_or_else(|_| RecordBatch::new_empty(self.schema.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stored_times_read_as_microseconds() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(micros("1970-01-01T00:00:00.1234567Z"), Some(123_456));
        assert_eq!(micros("1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(micros("2026-03-01T12:00:00Z"), Some(1_772_366_400_000_000));
        assert_eq!(micros("2024-02-29T00:00:00Z"), Some(1_709_164_800_000_000));
        assert_eq!(
            micros("2026-03-01T13:00:00+01:00"),
            Some(1_772_366_400_000_000),
            "parsed"
        );
        assert_eq!(micros("yesterday"), None);
        assert_eq!(day_number("1970-01-02"), Some(1));
        for t in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2000-02-29T01:02:03.04Z",
        ] {
            assert_eq!(micros(t), slow_micros(t), "{t}");
        }
    }

    #[test]
    fn a_row_reads_every_column_and_strings_lose_their_quotes() {
        let all: Vec<usize> = (0..13).collect();
        let mut r = Rows::new(&all, schema());
        let line = r#"{"actor":"user-1","data":{"a":1},"hash":"hh","id":"e1","prev":"pp","received":"2026-01-02T00:00:00.000001Z","seq":7,"stream":"s","subject":{"k":"v"},"time":"2026-01-01T00:00:00Z","type":"t.x"}"#;
        assert!(r.push(line, None, "cold", Some(5), &|_| true).unwrap());
        assert!(!r.push(line, None, "cold", Some(5), &|s| s != 7).unwrap());
        let b = r.finish();
        assert_eq!(b.num_rows(), 1);
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&[b])
            .unwrap()
            .to_string();
        for s in [
            "user-1",
            r#"{"a":1}"#,
            r#"{"k":"v"}"#,
            "hh",
            "cold",
            "1970-01-06",
            "2026-01-02T00:00:00.000001Z",
        ] {
            assert!(text.contains(s), "{s} in {text}");
        }
        // Without actor, subject and data the line is scanned: same rows.
        let lean: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 9, 10, 11, 12];
        let lean_schema = Arc::new(schema().project(&lean).unwrap());
        let mut scanned = Rows::new(&lean, lean_schema.clone());
        scanned
            .push(line, None, "cold", Some(5), &|_| true)
            .unwrap();
        let escaped = line.replace("t.x", "t\\u002ex");
        scanned
            .push(&escaped, None, "cold", Some(5), &|_| true)
            .unwrap();
        let scanned = scanned.finish();
        let mut parsed = Rows::new(&all, schema());
        parsed.push(line, None, "cold", Some(5), &|_| true).unwrap();
        parsed
            .push(&escaped, None, "cold", Some(5), &|_| true)
            .unwrap();
        let parsed = parsed.finish().project(&lean).unwrap();
        assert_eq!(scanned, parsed);
        assert!(scan(line).is_some() && scan(&escaped).is_none());
        let mut r = Rows::new(&[], Arc::new(Schema::empty()));
        r.push(line, Some("x"), "hot", None, &|_| true).unwrap();
        assert_eq!(r.finish().num_rows(), 1, "no columns, one row (count(*))");
        assert!(
            Rows::new(&all, schema())
                .push("{}", None, "hot", None, &|_| true)
                .is_err()
        );
    }
}
