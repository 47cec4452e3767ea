//! Events: browse a stream (newest first, filtered, paged by seq through
//! the query engine, so hot and archived events alike), and one event with
//! the evidence an auditor needs, checked in the browser by `proof.js` and
//! downloadable for `trailkeep verify --evidence`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::{UiState, Viewer};
use crate::api::{EventEvidence, event_evidence};
use crate::auth::sees;
use crate::query::Visible;
use crate::store::StoreExt as _;

/// Events per page.
const PAGE: usize = 50;
/// Most seqs one page request searches when filters match rarely; the
/// page then offers to go on from where it stopped.
const SEARCH_BUDGET: u64 = 200_000;
/// Streams per page of the picker.
const STREAMS_PAGE: usize = 100;
/// Longest filter value.
const MAX_FILTER: usize = 512;

#[derive(Deserialize, Default)]
pub(super) struct EventsQuery {
    stream: Option<String>,
    before_seq: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    id: Option<String>,
    /// Picker: name contains.
    q: Option<String>,
    /// Picker: page.
    page: Option<usize>,
}

/// A SQL string literal: single quotes doubled (the engine's dialect has
/// no backslash escapes).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A time filter: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` / `YYYY-MM-DD` in
/// UTC (what a browser's date and time inputs send). Returned as RFC 3339.
fn parse_time(field: &str, s: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let bad = || {
        format!(
            "{field}: {s:?} is not a time; write 2026-12-01, 2026-12-01T09:30 (UTC) or RFC 3339 (2026-12-01T09:30:00+01:00)"
        )
    };
    let t = if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else {
        let full = match s.len() {
            10 => format!("{s}T00:00:00Z"),
            16 => format!("{s}:00Z"),
            19 => format!("{s}Z"),
            _ => return Err(bad()),
        };
        time::OffsetDateTime::parse(&full, &Rfc3339).map_err(|_| bad())?
    };
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|_| bad())
}

/// The filters of a listing, checked; each becomes a conjunct of SQL built
/// from validated pieces only.
#[derive(Default)]
struct Filters {
    from: Option<String>,
    to: Option<String>,
    event_type: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    id: Option<String>,
}

fn given(v: Option<&String>) -> Option<&str> {
    v.map(|s| s.trim()).filter(|s| !s.is_empty())
}

impl Filters {
    /// Whether no filter is set.
    fn is_empty(&self) -> bool {
        self.from.is_none()
            && self.to.is_none()
            && self.event_type.is_none()
            && self.actor.is_none()
            && self.subject.is_none()
            && self.id.is_none()
    }

    fn parse(q: &EventsQuery) -> Result<Self, String> {
        let text = |field: &str, v: Option<&String>| -> Result<Option<String>, String> {
            match given(v) {
                Some(s) if s.len() > MAX_FILTER => Err(format!(
                    "{field}: longer than {MAX_FILTER} bytes; shorten it"
                )),
                Some(s) if s.chars().any(char::is_control) => {
                    Err(format!("{field}: control characters are not allowed"))
                }
                other => Ok(other.map(str::to_owned)),
            }
        };
        let f = Self {
            from: given(q.from.as_ref())
                .map(|s| parse_time("From", s))
                .transpose()?,
            to: given(q.to.as_ref())
                .map(|s| parse_time("To", s))
                .transpose()?,
            event_type: text("Type", q.event_type.as_ref())?,
            actor: text("Actor", q.actor.as_ref())?,
            subject: text("Subject", q.subject.as_ref())?,
            id: text("Id", q.id.as_ref())?,
        };
        Ok(f)
    }

    /// ` AND …` for each filter.
    fn sql(&self) -> String {
        let mut w = String::new();
        if let Some(t) = &self.from {
            w.push_str(&format!(" AND time >= {}", lit(t)));
        }
        if let Some(t) = &self.to {
            w.push_str(&format!(" AND time < {}", lit(t)));
        }
        if let Some(t) = &self.event_type {
            w.push_str(&format!(" AND type = {}", lit(t)));
        }
        // `actor` and `subject` are a string or a JSON object: match the
        // string, or the object's `id`.
        for (col, v) in [("actor", &self.actor), ("subject", &self.subject)] {
            if let Some(v) = v {
                let l = lit(v);
                w.push_str(&format!(
                    " AND ({col} = {l} OR json_get_str({col}, 'id') = {l})"
                ));
            }
        }
        if let Some(v) = &self.id {
            w.push_str(&format!(" AND id = {}", lit(v)));
        }
        w
    }

    /// The query string of these filters (for links).
    fn append(&self, raw: &EventsQuery, s: &mut form_urlencoded::Serializer<'_, String>) {
        for (k, v) in [
            ("from", &raw.from),
            ("to", &raw.to),
            ("type", &raw.event_type),
            ("actor", &raw.actor),
            ("subject", &raw.subject),
            ("id", &raw.id),
        ] {
            if let Some(v) = given(v.as_ref()) {
                s.append_pair(k, v);
            }
        }
    }

    fn any(&self) -> bool {
        self.from.is_some()
            || self.to.is_some()
            || self.event_type.is_some()
            || self.actor.is_some()
            || self.subject.is_some()
            || self.id.is_some()
    }
}

/// One row of the listing.
#[derive(Deserialize)]
struct Row {
    seq: u64,
    time: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    actor: Option<String>,
    subject: Option<String>,
    id: String,
    tier: String,
}

/// Rows of `stream` with seq in `lo..hi` matching `filters`, newest first,
/// at most `limit`.
async fn window(
    ui: &UiState,
    viewer: &Viewer,
    stream: &str,
    filters: &Filters,
    (lo, hi): (u64, u64),
    limit: usize,
) -> Result<Vec<Row>, crate::query::QueryError> {
    let sql = format!(
        "SELECT seq, time, type, actor, subject, id, tier FROM events \
         WHERE stream = {} AND seq >= {lo} AND seq < {hi}{} ORDER BY seq DESC LIMIT {limit}",
        lit(stream),
        filters.sql()
    );
    let visible = if viewer.key.stream == "*" {
        Visible::All
    } else {
        Visible::Only(viewer.key.stream.clone())
    };
    let answer = ui.app.query.run(&sql, visible, Arc::default()).await?;
    let mut out = Vec::new();
    crate::query::output::write(
        crate::query::output::Format::Ndjson,
        &answer.schema,
        &answer.batches,
        &answer.stats,
        &mut out,
    )
    .map_err(|e| crate::query::QueryError::Internal(e.to_string()))?;
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| crate::query::QueryError::Internal(format!("row {l}: {e}")))
        })
        .collect()
}

/// A page of rows, newest first, from below `before`: grows the seq window
/// until the page is full, the stream's start is reached or
/// [`SEARCH_BUDGET`] seqs were searched. Returns the rows (up to
/// `PAGE + 1`) and the lowest seq searched.
async fn search(
    ui: &UiState,
    viewer: &Viewer,
    stream: &str,
    filters: &Filters,
    before: u64,
) -> Result<(Vec<Row>, u64), crate::query::QueryError> {
    let mut rows = Vec::new();
    let mut hi = before;
    let mut span = PAGE as u64 + 1;
    let mut searched = 0;
    while rows.len() <= PAGE && hi > 1 && searched < SEARCH_BUDGET {
        let lo = hi.saturating_sub(span).max(1);
        let got = window(ui, viewer, stream, filters, (lo, hi), PAGE + 1 - rows.len()).await?;
        rows.extend(got);
        searched += hi - lo;
        hi = lo;
        span = span
            .saturating_mul(8)
            .min(SEARCH_BUDGET - searched.min(SEARCH_BUDGET))
            .max(1);
    }
    Ok((rows, hi))
}

fn not_found() -> Response {
    super::problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such stream or event, or this key may not read it.",
    )
}

/// `GET /ui/events`.
pub(super) async fn list(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<EventsQuery>,
) -> Response {
    let Some(stream) = given(q.stream.as_ref()).map(str::to_owned) else {
        return picker(&ui, &viewer, &q).await;
    };
    if !crate::event::valid_stream_name(&stream) || !sees(&viewer.key, &stream) {
        return not_found();
    }
    let info = match ui.app.store.stream(&stream).await {
        Ok(Some(i)) => i,
        Ok(None) => return not_found(),
        Err(e) => return super::failure(&e),
    };
    let before = match given(q.before_seq.as_ref()) {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return super::problem(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "before_seq must be a seq (a whole number from 1).",
                );
            }
        },
    };
    let filters = Filters::parse(&q);
    let mut error = None;
    let mut rows = Vec::new();
    let mut lowest = 1;
    match &filters {
        Ok(f) => {
            let top = before.unwrap_or(info.head_seq.saturating_add(1));
            match search(&ui, &viewer, &stream, f, top).await {
                Ok((r, l)) => (rows, lowest) = (r, l),
                Err(e) if e.is_bad_query() => error = Some(e.to_string()),
                Err(
                    crate::query::QueryError::Limit { .. } | crate::query::QueryError::Archive(_),
                ) => {
                    tracing::warn!(stream, "console events query");
                    error = Some("The events could not be read just now (the archive is unreachable or the query engine is busy); try again.".into());
                }
                Err(e) => return super::failure(&e),
            }
        }
        Err(msg) => error = Some(msg.clone()),
    }
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let empty = Filters::default();
    let f = filters.as_ref().unwrap_or(&empty);
    let link = |before: u64| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("stream", &stream);
        f.append(&q, &mut s);
        s.append_pair("before_seq", &before.to_string());
        format!("/ui/events?{}", s.finish())
    };
    let newest = {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("stream", &stream);
        f.append(&q, &mut s);
        format!("/ui/events?{}", s.finish())
    };
    let value = |v: &Option<String>| given(v.as_ref()).map(str::to_owned);
    // The newest page of an unfiltered stream refreshes itself; a filtered
    // search may scan up to 200,000 seqs, so it runs when asked only.
    let live = (before.is_none() && f.is_empty()).then_some("3000");
    let content = html! {
        h1 { "Events of " code { (stream) } }
        p id="stream-head" data-live=[live] {
            (info.head_seq) " events · "
            a href="/ui/events" { "Other streams" }
        }
        form method="get" action="/ui/events" class="filter" role="search" aria-label="Filter events" {
            input type="hidden" name="stream" value=(stream);
            span class="field" {
                label for="from" { "From" }
                input id="from" name="from" type="text" placeholder="2026-12-01T00:00" value=[value(&q.from)] aria-describedby="time-help";
            }
            span class="field" {
                label for="to" { "To" }
                input id="to" name="to" type="text" placeholder="2026-12-02" value=[value(&q.to)] aria-describedby="time-help";
            }
            span class="field" {
                label for="type" { "Type" }
                input id="type" name="type" type="text" value=[value(&q.event_type)];
            }
            span class="field" {
                label for="actor" { "Actor" }
                input id="actor" name="actor" type="text" value=[value(&q.actor)];
            }
            span class="field" {
                label for="subject" { "Subject" }
                input id="subject" name="subject" type="text" value=[value(&q.subject)];
            }
            span class="field" {
                label for="id" { "Id" }
                input id="id" name="id" type="text" value=[value(&q.id)];
            }
            button type="submit" { "Filter" }
            @if f.any() { a href=(format!("/ui/events?stream={stream}")) { "Clear" } }
        }
        p id="time-help" class="help" { "Times in UTC unless they carry an offset; From is inclusive, To exclusive. Actor and subject match the value or its id." }
        @if let Some(e) = &error {
            p class="error" role="alert" id="filter-error" { (e) }
        }
        @if before.is_some() {
            p { a href=(newest) { "↑ Newest events" } }
        }
        div class="scroll" id="events" data-live=[live] {
            table {
                caption class="visually-hidden" { "Events, newest first" }
                thead { tr {
                    th scope="col" class="num" { "Seq" }
                    th scope="col" { "Time" }
                    th scope="col" { "Type" }
                    th scope="col" { "Actor" }
                    th scope="col" { "Subject" }
                    th scope="col" { "Id" }
                    th scope="col" { "Tier" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            th scope="row" class="num" { a href=(format!("/ui/events/{stream}/{}", r.seq)) aria-label=(format!("Event {}", r.seq)) { (r.seq) } }
                            td { @if let Some(t) = &r.time { time datetime=(t) { (t) } } }
                            td { (r.event_type) }
                            td { (short(r.actor.as_deref())) }
                            td { (short(r.subject.as_deref())) }
                            td { code { (r.id) } }
                            td { (r.tier) }
                        }
                    }
                }
            }
            @if rows.is_empty() && error.is_none() {
                p id="no-events" { @if f.any() { "No events match in seqs " (lowest) "–" (before.unwrap_or(info.head_seq.saturating_add(1)).saturating_sub(1)) "." } @else { "No events." } }
            }
        }
        nav aria-label="Event pages" class="pager" {
            @if more {
                a href=(link(rows.last().map_or(1, |r| r.seq))) rel="next" { "Older events →" }
            } @else if lowest > 1 && error.is_none() {
                span { "Searched down to seq " (lowest) ". " }
                a href=(link(lowest)) rel="next" { "Search older events →" }
            }
        }
    };
    super::page(
        &viewer,
        &format!("Events of {stream}"),
        "/ui/events",
        content,
    )
}

/// A value for a table cell: at most 80 characters, the whole in a tooltip.
fn short(v: Option<&str>) -> Markup {
    match v {
        None => html! { "—" },
        Some(s) if s.chars().count() > 80 => {
            let cut: String = s.chars().take(79).collect();
            html! { span title=(s) { (cut) "…" } }
        }
        Some(s) => html! { (s) },
    }
}

/// The stream picker: the streams the key sees, paged.
async fn picker(ui: &UiState, viewer: &Viewer, q: &EventsQuery) -> Response {
    let mut streams = match ui.app.store.streams().await {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    streams.retain(|s| sees(&viewer.key, &s.name));
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
    let filter = given(q.q.as_ref());
    if let Some(f) = filter {
        streams.retain(|s| s.name.contains(f));
    }
    let total = streams.len();
    let pages = total.div_ceil(STREAMS_PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let link = |p: usize| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(f) = filter {
            s.append_pair("q", f);
        }
        s.append_pair("page", &p.to_string());
        format!("/ui/events?{}", s.finish())
    };
    let content = html! {
        h1 { "Events" }
        p { "Choose a stream." }
        form method="get" action="/ui/events" class="filter" role="search" {
            label for="q" { "Name contains" }
            input id="q" name="q" type="search" value=[filter];
            button type="submit" { "Filter" }
        }
        ul id="stream-picker" {
            @for s in streams.iter().skip((page_no - 1) * STREAMS_PAGE).take(STREAMS_PAGE) {
                li { a href=(format!("/ui/events?stream={}", s.name)) { (s.name) } " · " (s.head_seq) " events" }
            }
        }
        @if total == 0 { p { "No streams" @if filter.is_some() { " match" } "." } }
        @if pages > 1 {
            nav aria-label="Stream pages" class="pager" {
                @if page_no > 1 { a href=(link(page_no - 1)) rel="prev" { "← Previous" } }
                span { "Page " (page_no) " of " (pages) }
                @if page_no < pages { a href=(link(page_no + 1)) rel="next" { "Next →" } }
            }
        }
    };
    super::page(viewer, "Events", "/ui/events", content)
}

/// The stream and seq of an event URL; None when either is malformed.
fn target(stream: &str, seq: &str) -> Option<u64> {
    if !crate::event::valid_stream_name(stream) {
        return None;
    }
    seq.parse::<u64>().ok().filter(|s| *s >= 1)
}

async fn load(
    ui: &UiState,
    viewer: &Viewer,
    stream: &str,
    seq: &str,
) -> Result<EventEvidence, Response> {
    let Some(seq) = target(stream, seq) else {
        return Err(not_found());
    };
    match event_evidence(&ui.app, &viewer.key, stream, seq).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(not_found()),
        Err(e) => {
            tracing::error!(stream, seq, error = %e.message, "console event page");
            Err(super::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not read this event; the cause is in its log. Try again, or check /readyz.",
            ))
        }
    }
}

/// The evidence as the page embeds it: JSON with every `<` escaped, so
/// nothing in an event can end the script element.
fn embedded(e: &crate::verify::evidence::Evidence) -> String {
    serde_json::to_string(e)
        .unwrap_or_default()
        .replace('<', "\\u003c")
}

/// `GET /ui/events/{stream}/{seq}`.
pub(super) async fn event(
    State(ui): State<UiState>,
    viewer: Viewer,
    Path((stream, seq)): Path<(String, String)>,
) -> Response {
    let ev = match load(&ui, &viewer, &stream, &seq).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let fields: serde_json::Value = serde_json::from_str(&ev.line).unwrap_or_default();
    let field = |k: &str| -> Option<String> {
        match fields.get(k)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            v => Some(v.to_string()),
        }
    };
    let seq_n = target(&stream, &seq).unwrap_or(0);
    let pretty = serde_json::to_string_pretty(&fields).unwrap_or_else(|_| ev.line.clone());
    let content = html! {
        h1 { "Event " (seq_n) " of " code { (stream) } }
        p { a href=(format!("/ui/events?stream={stream}")) { "← Events of " (stream) } }
        dl class="facts" {
            dt { "Id" } dd { code { (field("id").unwrap_or_default()) } }
            dt { "Type" } dd { (field("type").unwrap_or_default()) }
            dt { "Time" } dd { (field("time").unwrap_or_default()) }
            dt { "Received" } dd { (field("received").unwrap_or_default()) }
            dt { "Actor" } dd { (field("actor").unwrap_or_else(|| "—".into())) }
            dt { "Subject" } dd { (field("subject").unwrap_or_else(|| "—".into())) }
            dt { "Tier" } dd { (ev.tier.as_str()) @if ev.tier == crate::api::Tier::Cold { " (read from its archive object)" } }
            dt { "Hash" } dd { code id="event-hash" { (field("hash").unwrap_or_default()) } }
            dt { "Prev" } dd { code { (field("prev").unwrap_or_default()) } }
        }
        h2 { "Proof" }
        @match &ev.evidence {
            Some(e) => {
                p id="proof-result" role="status" aria-live="polite" class="status-line" { "Checking the proof in your browser…" }
                ol id="proof-steps" class="steps" {}
                noscript { p { "Checking here needs JavaScript. Download the evidence and run " code { "trailkeep verify --evidence FILE --public-key KEY" } "." } }
                p class="help" {
                    "Your browser recomputes the event's hash, climbs the Merkle path to the root of the latest signed checkpoint, and checks the checkpoint's Ed25519 signature with the log's key below. "
                    "Compare that key with the one you pinned: a server can sign with any key it likes."
                }
                p { a href=(format!("/ui/events/{stream}/{seq_n}/evidence.json")) download { "Download evidence" } " (JSON, for " code { "trailkeep verify --evidence" } ")" }
                dl class="facts" {
                    dt { "Checkpoint" } dd { "size " (e.proof.size) ", root " code { (e.proof.root) } }
                    dt { "Leaf index" } dd { (e.proof.leaf_index) }
                    dt { "Path" } dd { (e.proof.hashes.len()) " hashes" }
                    dt { "Public key" } dd { code id="public-key" { (e.public_key) } }
                }
                h3 { "Checkpoint note" }
                pre id="checkpoint-note" { (e.checkpoint) }
                script type="application/json" id="evidence" { (PreEscaped(embedded(e))) }
            }
            None => {
                p id="proof-result" role="status" {
                    "Not yet provable: "
                    @match ev.checkpoint_size {
                        Some(n) => { "the latest signed checkpoint covers seqs 1–" (n) "" }
                        None => { "the stream has no signed checkpoint yet" }
                    }
                    ". Checkpoints are signed every few seconds; reload this page shortly."
                }
            }
        }
        h2 { "Stored JSON" }
        p class="help" { "The event as stored: its canonical JSON (RFC 8785) with its hash. Formatted for reading below." }
        pre id="stored-line" { code { (ev.line) } }
        details {
            summary { "Formatted" }
            pre { code { (pretty) } }
        }
    };
    super::page_with_module(
        &viewer,
        &format!("Event {seq_n} of {stream}"),
        "/ui/events",
        "proof",
        content,
    )
}

/// `GET /ui/events/{stream}/{seq}/evidence.json`.
pub(super) async fn evidence(
    State(ui): State<UiState>,
    viewer: Viewer,
    Path((stream, seq)): Path<(String, String)>,
) -> Response {
    let ev = match load(&ui, &viewer, &stream, &seq).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let Some(e) = ev.evidence else {
        return super::problem(
            StatusCode::CONFLICT,
            "Not yet provable",
            "No signed checkpoint covers this event yet; checkpoints are signed every few seconds. Try again shortly.",
        );
    };
    let body = match serde_json::to_string_pretty(&e) {
        Ok(b) => b + "\n",
        Err(err) => return super::failure(&err),
    };
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"trailkeep-{stream}-{}.evidence.json\"",
                    e.seq
                ),
            ),
        ],
        body,
    )
        .into_response()
}
