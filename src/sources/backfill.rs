//! Backfill: read a paged HTTP endpoint (e.g. Grantex's
//! `GET /v1/audit/entries`) to cover a gap, appending every item through the
//! same mapping, validation and group commit. Repeats are harmless: ids
//! deduplicate.
//!
//! Paging: a time parameter (`since_param`, the last event time committed)
//! and/or a cursor (`cursor_param`, taken from `next_cursor_field` of each
//! response) until a page is empty or has no next cursor.

use serde::Deserialize;
use serde_json::Value;

use super::mapping::{Fields, Mapped, RawFields, map_item};
use super::{Secret, SourceConfig};
use crate::ingest::Appender;
use crate::store::{RejectedEvent, Store};

/// `[sources.backfill]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackfill {
    /// Endpoint URL.
    pub url: String,
    /// Query parameter for the time to start from (RFC 3339); omit to send none.
    pub since_param: Option<String>,
    /// Query parameter for the page cursor.
    pub cursor_param: Option<String>,
    /// Response field holding the next cursor.
    pub next_cursor_field: Option<String>,
    /// Response field holding the items (default: the body is the array).
    pub items_field: Option<String>,
    /// How far before the latest committed event time a backfill starts,
    /// ms (default 300000): events that reach the endpoint late, out of
    /// order, are still read.
    #[serde(default = "default_overlap_ms")]
    pub overlap_ms: u64,
    /// Most pages read in one backfill (default 10000).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Largest page accepted, bytes (default 16 MiB); a larger page fails
    /// the backfill without being read further.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// Field mapping of the items.
    #[serde(default)]
    pub fields: RawFields,
}

fn default_max_pages() -> u32 {
    10_000
}

fn default_overlap_ms() -> u64 {
    300_000
}

fn default_max_page_bytes() -> usize {
    16 << 20
}

/// A validated backfill configuration.
#[derive(Debug, Clone)]
pub struct BackfillConfig {
    url: reqwest::Url,
    since_param: Option<String>,
    cursor_param: Option<String>,
    next_cursor_field: Option<String>,
    items_field: Option<String>,
    overlap: time::Duration,
    max_pages: u32,
    max_page_bytes: usize,
    fields: Fields,
}

impl RawBackfill {
    /// Validates (`allow_private` is the source's); errors are (key, message).
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(self, allow_private: bool) -> Result<BackfillConfig, (&'static str, String)> {
        let url = super::parse_http_url(&self.url).map_err(|m| ("url", m))?;
        crate::net::guard::check_config_url(&url, allow_private).map_err(|m| ("url", m))?;
        if !(1024..=(1 << 30)).contains(&self.max_page_bytes) {
            return Err((
                "max_page_bytes",
                "must be between 1024 and 1073741824".into(),
            ));
        }
        if self.cursor_param.is_some() != self.next_cursor_field.is_some() {
            return Err((
                "cursor_param",
                "set cursor_param and next_cursor_field together".into(),
            ));
        }
        if self.overlap_ms > 7 * 86_400_000 {
            return Err(("overlap_ms", "must be at most 604800000 (7 days)".into()));
        }
        if self.max_pages == 0 {
            return Err(("max_pages", "must be at least 1".into()));
        }
        Ok(BackfillConfig {
            url,
            since_param: self.since_param,
            cursor_param: self.cursor_param,
            next_cursor_field: self.next_cursor_field,
            items_field: self.items_field,
            overlap: time::Duration::milliseconds(self.overlap_ms as i64),
            max_pages: self.max_pages,
            max_page_bytes: self.max_page_bytes,
            fields: self.fields.into(),
        })
    }
}

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackfillStats {
    /// Pages read.
    pub pages: u64,
    /// New events stored.
    pub taken: u64,
    /// Items already stored.
    pub duplicates: u64,
    /// Items skipped by the type filter.
    pub filtered: u64,
    /// Items refused (recorded).
    pub rejected: u64,
    /// Latest event time stored.
    pub last_event_time: Option<String>,
}

pub(crate) use crate::store::later;

/// Parses one page: its items (the array at `items_field`, else the body
/// itself) and the next cursor (a non-empty string or a number at
/// `next_cursor_field`).
///
/// # Errors
/// A message when the body is not JSON or holds no array there.
pub(crate) fn parse_page(
    bytes: &[u8],
    items_field: Option<&str>,
    next_cursor_field: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), String> {
    let mut body: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("backfill response is not JSON: {e}"))?;
    let items = match items_field {
        Some(f) => body.get_mut(f).map(Value::take),
        None => Some(body.clone()),
    };
    let Some(Value::Array(items)) = items else {
        return Err(format!(
            "backfill response has no array at {}",
            items_field.unwrap_or("the top level")
        ));
    };
    let next = next_cursor_field.and_then(|f| match body.get(f) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    Ok((items, next))
}

/// Reads the backfill endpoint from `since` (when set) and appends every
/// item. `progress` is called with items handled so far.
///
/// # Errors
/// A message (HTTP status, bad JSON, append failure); never the API key.
pub async fn run(
    cfg: &SourceConfig,
    client: &reqwest::Client,
    key: &Secret,
    appender: &Appender,
    store: &dyn Store,
    since: Option<&str>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<BackfillStats, String> {
    let Some(b) = &cfg.backfill else {
        return Err(format!("source {} has no backfill endpoint", cfg.name));
    };
    let mut stats = BackfillStats::default();
    let mut cursor: Option<String> = None;
    // Without a cursor, pages follow by time: the next one starts at the
    // latest time of the last, until a page brings no later time.
    let by_time = b.cursor_param.is_none() && b.since_param.is_some();
    let mut page_since = since.map(str::to_owned);
    for page in 0..b.max_pages {
        let mut url = b.url.clone();
        {
            let mut q = url.query_pairs_mut();
            if let (Some(p), Some(s)) = (&b.since_param, &page_since) {
                q.append_pair(p, s);
            }
            if let (Some(p), Some(c)) = (&b.cursor_param, &cursor) {
                q.append_pair(p, c);
            }
        }
        let resp = cfg
            .policy()
            .send(cfg.authorize(client.get(url), key))
            .await
            .map_err(|e| format!("backfill request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("backfill endpoint answered HTTP {status}"));
        }
        let got = crate::net::read_limited(resp, b.max_page_bytes)
            .await
            .map_err(|e| format!("backfill read failed: {}", crate::net::describe(&e)))?;
        if got.truncated {
            return Err(format!(
                "backfill page {} is over max_page_bytes ({}); not read further",
                page + 1,
                b.max_page_bytes
            ));
        }
        let (items, next) = parse_page(
            &got.bytes,
            b.items_field.as_deref(),
            b.next_cursor_field.as_deref(),
        )?;
        stats.pages += 1;
        if items.is_empty() {
            break;
        }
        let received = super::now();
        let mut events = Vec::new();
        let mut page_latest: Option<String> = None;
        // Numbers are judged on the page's text (a parsed value no longer
        // says how they were written).
        let mut bad_numbers =
            super::mapping::changed_numbers_by_item(&got.bytes, b.items_field.as_deref());
        for (i, item) in items.into_iter().enumerate() {
            let raw = item.to_string();
            let mapped = match bad_numbers.remove(&i) {
                Some(reason) => Mapped::Rejected(reason),
                None => map_item(
                    item,
                    &b.fields,
                    &cfg.name,
                    None,
                    |t| cfg.wants(t),
                    &received,
                ),
            };
            match mapped {
                Mapped::Event(ev) => {
                    page_latest = later(page_latest.take(), &ev.time);
                    events.push(ev);
                }
                Mapped::Filtered => stats.filtered += 1,
                Mapped::Rejected(reason) => {
                    stats.rejected += 1;
                    let rec = RejectedEvent {
                        source: cfg.name.clone(),
                        at: received.clone(),
                        position: format!("backfill page {}, item {i}", page + 1),
                        reason,
                        raw: super::truncate(&raw, 64 * 1024),
                    };
                    store
                        .add_rejected(rec)
                        .await
                        .map_err(|e| format!("cannot record a rejected event: {e}"))?;
                }
            }
        }
        for chunk in events.chunks(1000) {
            let times: Vec<String> = chunk.iter().map(|e| e.time.clone()).collect();
            let res = appender
                .append(cfg.stream.clone(), chunk.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            for (a, t) in res.accepted.iter().zip(&times) {
                if a.duplicate {
                    stats.duplicates += 1;
                } else {
                    stats.taken += 1;
                    stats.last_event_time = later(stats.last_event_time.take(), t);
                }
            }
        }
        progress(stats.taken + stats.duplicates + stats.filtered + stats.rejected);
        match next {
            Some(n) => cursor = Some(n),
            None if by_time => match page_latest {
                // Only a later time moves on: an endpoint that ignores
                // `since` answers the same page, and paging stops.
                Some(t)
                    if later(page_since.clone(), &t).as_deref() == Some(t.as_str())
                        && page_since.as_deref() != Some(t.as_str()) =>
                {
                    page_since = Some(t);
                }
                _ => break,
            },
            None => break,
        }
    }
    Ok(stats)
}

/// The time a backfill after a (re)connect starts from: the latest event
/// time committed, less the configured overlap (events can reach the
/// endpoint late and out of order); `None` (from the start) without one.
pub(crate) fn since_with_overlap(cfg: &SourceConfig, last: Option<&str>) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let last = last?;
    let overlap = cfg
        .backfill
        .as_ref()
        .map_or(time::Duration::ZERO, |b| b.overlap);
    match time::OffsetDateTime::parse(last, &Rfc3339) {
        Ok(t) => (t - overlap)
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .ok(),
        // Not a time this can compute with: from the start (more, not less).
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_compares_instants_not_text() {
        assert_eq!(
            later(
                Some("2026-01-01T00:00:05Z".into()),
                "2026-01-01T00:00:05.5Z"
            )
            .as_deref(),
            Some("2026-01-01T00:00:05.5Z")
        );
        assert_eq!(
            later(
                Some("2026-01-01T00:00:06Z".into()),
                "2026-01-01T00:00:05.5Z"
            )
            .as_deref(),
            Some("2026-01-01T00:00:06Z")
        );
        assert_eq!(later(None, "x").as_deref(), Some("x"));
    }
}
