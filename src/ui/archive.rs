//! The Archive page: the batches in the archive (newest first, paged by a
//! keyset cursor, filtered by stream), each stream's hot/cold boundary
//! (paged), the schedule and this server's last run; for admins "Run
//! archive now" (a key for `*`) and "Restore a range" (their streams).
//! Runs and restores go through the API's own functions
//! ([`crate::api::archive::run_now`], [`crate::api::archive::restore_range`]):
//! same permissions, same `_audit` records, same messages.
//!
//! Listing batches needs an admin key, as `GET /v1/archives` does; every
//! key sees the boundary of the streams it may see.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::ops::{api_problem, link, size};
use super::overview::when;
use super::{UiState, Viewer};
use crate::archive::RunReport;
use crate::archive::restore::RestoreReport;
use crate::auth::{Scope, Target, allows, sees};
use crate::store::{ArchiveBatch, BatchCursor};

/// Batches per page.
const BATCHES: usize = 50;
/// Streams per page in the boundary table.
const STREAMS: usize = 100;

#[derive(Deserialize, Default)]
pub(super) struct ArchiveQuery {
    /// Only this stream.
    stream: Option<String>,
    /// Batches after this one (`created,stream,start_seq`).
    older: Option<String>,
    /// Page of the boundary table, from 1.
    spage: Option<usize>,
}

impl ArchiveQuery {
    fn stream(&self) -> Option<&str> {
        self.stream
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

fn cursor_text(c: &BatchCursor) -> String {
    format!("{},{},{}", c.created, c.stream, c.start_seq)
}

/// A cursor from a link; names and RFC 3339 times hold no comma.
fn parse_cursor(s: &str) -> Option<BatchCursor> {
    let mut it = s.splitn(3, ',');
    let created = it.next()?.to_owned();
    let stream = it.next()?.to_owned();
    let start_seq = it.next()?.parse().ok()?;
    Some(BatchCursor {
        created,
        stream,
        start_seq,
    })
}

/// What an admin action did, shown above the page.
enum Outcome {
    Ran(RunReport),
    Restored(RestoreReport),
    Failed(&'static str, String),
}

/// `GET /ui/archive`.
pub(super) async fn page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<ArchiveQuery>,
) -> Response {
    render(&ui, &viewer, &q, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub(super) struct RunForm {
    csrf: String,
    /// `30d`, `0s`; blank: the configured retention.
    #[serde(default)]
    older_than: String,
}

/// `POST /ui/archive/run`.
pub(super) async fn run(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<RunForm>,
) -> Response {
    if let Err(r) = super::check_form(&viewer, &headers, &f.csrf) {
        return r;
    }
    if !allows(&viewer.key, Scope::Admin, Target::AllStreams) {
        ui.app.refusals.forbidden(&viewer.key.id);
        return super::problem(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Running the archive needs an admin key for every stream (*): a run archives every stream.",
        );
    }
    let older_than = match f.older_than.trim() {
        "" => None,
        s => match crate::archive::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                let o = Outcome::Failed("Not run", format!("Older than: {e}."));
                return render(
                    &ui,
                    &viewer,
                    &ArchiveQuery::default(),
                    Some(o),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        },
    };
    let (o, status) = match crate::api::archive::run_now(&ui.app, &viewer.key, older_than).await {
        Ok(r) => (Outcome::Ran(r), StatusCode::OK),
        Err(e) if e.status == StatusCode::FORBIDDEN => return api_problem(&e),
        Err(e) => (
            Outcome::Failed("Archive run failed", super::ops::upper_first(&e.message)),
            e.status,
        ),
    };
    render(&ui, &viewer, &ArchiveQuery::default(), Some(o), status).await
}

#[derive(Deserialize)]
pub(super) struct RestoreForm {
    csrf: String,
    stream: String,
    from: String,
    to: String,
}

/// `POST /ui/archive/restore`.
pub(super) async fn restore(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<RestoreForm>,
) -> Response {
    if let Err(r) = super::check_form(&viewer, &headers, &f.csrf)
        .and_then(|()| super::ops::admin_only(&viewer, "Restoring archived events"))
    {
        return r;
    }
    let stream = f.stream.trim();
    let q = ArchiveQuery {
        stream: Some(stream.to_owned()).filter(|s| sees(&viewer.key, s)),
        ..ArchiveQuery::default()
    };
    let seq = |what: &str, v: &str| -> Result<u64, String> {
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=i64::MAX as u64).contains(n))
            .ok_or_else(|| format!("{what} must be a seq (a whole number from 1)."))
    };
    let (from, to) = match (seq("From", &f.from), seq("To", &f.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(m), _) | (_, Err(m)) => {
            let o = Outcome::Failed("Not restored", m);
            return render(&ui, &viewer, &q, Some(o), StatusCode::BAD_REQUEST).await;
        }
    };
    let (o, status) =
        match crate::api::archive::restore_range(&ui.app, &viewer.key, stream, from, to).await {
            Ok(r) => (Outcome::Restored(r), StatusCode::OK),
            Err(e) if e.status == StatusCode::FORBIDDEN => return api_problem(&e),
            Err(e) => (
                Outcome::Failed("Restore failed", super::ops::upper_first(&e.message)),
                e.status,
            ),
        };
    render(&ui, &viewer, &q, Some(o), status).await
}

fn outcome(o: &Outcome) -> Markup {
    match o {
        Outcome::Ran(r) => html! {
            section class="notice" role="status" aria-labelledby="outcome-h" id="outcome" {
                h2 id="outcome-h" { "Archive run finished" }
                p {
                    (r.batches.len()) " batch" @if r.batches.len() != 1 { "es" } " written ("
                    (r.batches.len()) " object" @if r.batches.len() != 1 { "s" } ", each with a signed manifest), "
                    (r.events_archived) " events archived, " (size(r.stored_bytes)) " stored ("
                    (size(r.raw_bytes)) " before compression), " (r.deleted) " deleted from the hot store"
                    @if r.resumed_objects > 0 { ", " (r.resumed_objects) " objects of an interrupted run adopted" }
                    ". Events received before " (r.cutoff) " were due."
                }
                @if !r.held_back.is_empty() {
                    p { "Held back in the hot store (a destination has not delivered them yet):" }
                    ul {
                        @for h in &r.held_back {
                            li { "stream " code { (h.stream) } ": destination " code { (h.destination) }
                                " is at seq " (h.cursor_seq) " of " (h.archived_seq) " archived (" (h.reason) ")" }
                        }
                    }
                }
                @if !r.batches.is_empty() {
                    (batch_table("Batches written by this run", &r.batches))
                }
            }
        },
        Outcome::Restored(r) => html! {
            section class="notice" role="status" aria-labelledby="outcome-h" id="outcome" {
                h2 id="outcome-h" { "Restored" }
                p {
                    "Stream " code { (r.stream) } ", seqs " (r.from) "–" (r.to) ": "
                    (r.restored) " events brought back into the hot store, " (r.already_hot)
                    " were already there; " (r.objects) " archive object" @if r.objects != 1 { "s" }
                    " read and checked against their signed manifests."
                }
            }
        },
        Outcome::Failed(title, message) => html! {
            section class="notice bad" role="alert" aria-labelledby="outcome-h" id="outcome" {
                h2 id="outcome-h" { (title) }
                p { (message) }
            }
        },
    }
}

fn batch_table(caption: &str, batches: &[ArchiveBatch]) -> Markup {
    html! {
        div class="scroll" {
            table class="batches" {
                caption { (caption) }
                thead { tr {
                    th scope="col" { "Archived" }
                    th scope="col" { "Stream" }
                    th scope="col" class="num" { "Seqs" }
                    th scope="col" class="num" { "Events" }
                    th scope="col" class="num" { "Size (stored / raw)" }
                    th scope="col" { "Manifest SHA-256" }
                    th scope="col" { "Objects" }
                } }
                tbody {
                    @for b in batches {
                        tr {
                            td { (when(&b.created)) }
                            th scope="row" { code { (b.stream) } }
                            td class="num" { (b.start_seq) "–" (b.end_seq) }
                            td class="num" { (b.count) }
                            td class="num" { (size(b.object_size)) " / " (size(b.raw_size)) }
                            td { code title=(b.manifest_sha256) { (b.manifest_sha256.get(..12).unwrap_or(&b.manifest_sha256)) "…" } }
                            td class="keys" {
                                code title=(format!("SHA-256 {}", b.object_sha256)) { (b.object_key) } br;
                                code { (b.manifest_key) }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn render(
    ui: &UiState,
    viewer: &Viewer,
    q: &ArchiveQuery,
    done: Option<Outcome>,
    status: StatusCode,
) -> Response {
    let app = &ui.app;
    let admin = viewer.is_admin();
    let bound = viewer.key.stream != "*";
    // A key bound to a stream sees that stream only; a filter naming
    // another one finds nothing (and says only what was typed).
    let filter = q.stream().map(str::to_owned);
    let visible_filter = filter.as_deref().filter(|s| sees(&viewer.key, s));
    let narrowed = filter.is_some() && visible_filter.is_none();
    let listed = visible_filter.or(bound.then_some(viewer.key.stream.as_str()));
    let before = q.older.as_deref().and_then(parse_cursor);
    let batches = if admin && !narrowed {
        match app
            .store
            .archive_batches_newest(listed, before.as_ref(), BATCHES + 1)
            .await
        {
            Ok(b) => b,
            Err(e) => return super::failure(&e),
        }
    } else {
        Vec::new()
    };
    let more = batches.len() > BATCHES;
    let batches = &batches[..batches.len().min(BATCHES)];
    let mut streams = match app.store.streams().await {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    streams.retain(|s| sees(&viewer.key, &s.name) && listed.is_none_or(|l| l == s.name));
    if narrowed {
        streams.clear();
    }
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
    let total = streams.len();
    let pages = total.div_ceil(STREAMS).max(1);
    let spage = q.spage.unwrap_or(1).clamp(1, pages);
    let shown = &streams[((spage - 1) * STREAMS).min(total)..(spage * STREAMS).min(total)];
    let status_rec = app.archiver.status();
    let every_stream = !bound;
    let filter_text = filter.clone().unwrap_or_default();
    let content = html! {
        h1 { "Archive" }
        @if let Some(o) = &done { (outcome(o)) }
        section aria-labelledby="sched-h" id="schedule" data-live="10000" {
            h2 id="sched-h" { "Schedule and last run" }
            dl class="facts" {
                @if every_stream && viewer.is_admin() {
                    dt { "Archive" } dd { code { (app.archiver.bucket().display()) } }
                }
                dt { "Schedule" }
                dd { @match &status_rec.schedule {
                    Some(s) => { "Runs " (s.text) ", archiving events older than " (crate::archive::format_duration(app.archiver.settings().older_than)) "." }
                    None => { "Not run by this server on a schedule ([archive] enabled = false); runs happen when asked." }
                } }
                dt { "Last run here" }
                dd { @match &status_rec.last_run {
                    None => { "None since this server started." }
                    Some(r) => {
                        (when(&rfc3339(r.at))) ": "
                        @match &r.result {
                            // Totals cover every stream: for keys for every stream only.
                            Ok(s) => { span class="good" { "succeeded" } @if every_stream { ", " (s.batches) " batches, " (s.events) " events, " (size(s.stored_bytes)) " stored, " (s.deleted) " deleted from hot" } "." }
                            Err(e) => {
                                span class="bad" { "failed" }
                                // The error may name any stream's objects.
                                @if every_stream { ": " (e) } @else { " (the cause is shown to keys for every stream)." }
                            }
                        }
                    }
                } }
                dt { "Last success here" }
                dd { @match status_rec.last_success { Some(t) => { (when(&rfc3339(t))) }, None => { "None since this server started." } } }
                @if let Some(t) = status_rec.busy_at {
                    dt { "Last run elsewhere" } dd { "Another node held the archiver lease " (when(&rfc3339(t))) "." }
                }
            }
            @if every_stream && status_rec.late(time::OffsetDateTime::now_utc()) {
                p class="bad" role="alert" { "The archive is late: its last run failed, or nothing succeeded for twice its schedule." }
            }
        }
        @if admin {
            section aria-labelledby="actions-h" {
                h2 id="actions-h" { "Actions" }
                @if allows(&viewer.key, Scope::Admin, Target::AllStreams) {
                    form method="post" action="/ui/archive/run" class="inline"
                        data-confirm="Run the archive now? Events past the retention are written to the archive and deleted from the hot store." {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="older_than" { "Older than" }
                        input id="older_than" name="older_than" type="text" size="6" placeholder=(crate::archive::format_duration(app.archiver.settings().older_than)) aria-describedby="older-help";
                        span id="older-help" class="help" { "30d, 12h, 0s; blank: the configured " (crate::archive::format_duration(app.archiver.settings().older_than)) "." }
                        button type="submit" { "Run archive now" }
                    }
                }
                form method="post" action="/ui/archive/restore" class="inline"
                    data-confirm="Restore this range into the hot store? Each object is checked against its signed manifest first." {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label for="r-stream" { "Stream" }
                    @if bound {
                        input id="r-stream" name="stream" type="text" readonly value=(viewer.key.stream);
                    } @else {
                        input id="r-stream" name="stream" type="text" required value=(visible_filter.unwrap_or_default());
                    }
                    label for="r-from" { "From seq" }
                    input id="r-from" name="from" type="number" min="1" required size="8";
                    label for="r-to" { "To seq" }
                    input id="r-to" name="to" type="number" min="1" required size="8";
                    button type="submit" { "Restore a range" }
                }
            }
        }
        section aria-labelledby="batches-h" {
            h2 id="batches-h" { "Batches" }
            form method="get" action="/ui/archive" class="filter" role="search" {
                label for="stream" { "Stream" }
                @if bound {
                    input id="stream" name="stream" type="text" readonly value=(viewer.key.stream);
                } @else {
                    input id="stream" name="stream" type="search" value=(filter_text) aria-describedby="stream-help";
                    span id="stream-help" class="help" { "Exact name; blank for every stream." }
                    button type="submit" { "Filter" }
                }
            }
            @if narrowed {
                p { "No stream " code { (filter_text) } " that your key may see." }
            }
            @if !admin {
                p { "Listing archive batches needs an admin key, as " code { "GET /v1/archives" } " does." }
            } @else if batches.is_empty() {
                p { @if before.is_some() { "No older batches." } @else { "Nothing archived yet." } }
            } @else {
                (batch_table("Archived batches, newest first", batches))
            }
            @if before.is_some() || more {
                nav aria-label="Batch pages" class="pager" {
                    @if before.is_some() { a href=(link("/ui/archive", &[("stream", visible_filter.unwrap_or_default())])) { "← Newest" } }
                    @if more {
                        @if let Some(last) = batches.last() {
                            a href=(link("/ui/archive", &[("stream", visible_filter.unwrap_or_default()), ("older", &cursor_text(&BatchCursor::from(last)))])) rel="next" { "Older →" }
                        }
                    }
                }
            }
        }
        section aria-labelledby="tiers-h" {
            h2 id="tiers-h" { "Hot and cold" }
            p { "Seqs up to “archived through” are in the archive; the hot store holds from “oldest hot” to the head (restored seqs are hot again)." }
            div class="scroll" {
                table {
                    caption class="visually-hidden" { "Each stream's boundary between the hot store and the archive" }
                    thead { tr {
                        th scope="col" { "Stream" }
                        th scope="col" class="num" { "Archived through" }
                        th scope="col" class="num" { "Oldest hot seq" }
                        th scope="col" class="num" { "Head seq" }
                    } }
                    tbody {
                        @for s in shown {
                            tr {
                                th scope="row" { a href=(link("/ui/archive", &[("stream", &s.name)])) { (s.name) } }
                                td class="num" { @if let Some(a) = s.archived_seq { (a) } @else { "nothing archived" } }
                                td class="num" { @if let Some(o) = s.oldest_hot_seq { (o) } @else { "—" } }
                                td class="num" { (s.head_seq) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav aria-label="Stream pages" class="pager" {
                    @if spage > 1 { a href=(link("/ui/archive", &[("stream", visible_filter.unwrap_or_default()), ("spage", &(spage - 1).to_string())])) rel="prev" { "← Previous" } }
                    span { "Page " (spage) " of " (pages) }
                    @if spage < pages { a href=(link("/ui/archive", &[("stream", visible_filter.unwrap_or_default()), ("spage", &(spage + 1).to_string())])) rel="next" { "Next →" } }
                }
            }
        }
    };
    (
        status,
        super::page(viewer, "Archive", "/ui/archive", content),
    )
        .into_response()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_none() {
        let c = BatchCursor {
            created: "2026-12-01T00:00:00.000000Z".into(),
            stream: "a.b-c".into(),
            start_seq: 42,
        };
        assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
        assert_eq!(parse_cursor("x,y"), None);
        assert_eq!(parse_cursor("x,y,z"), None);
    }
}
