//! The Destinations page: every destination the key may see (type, state,
//! delivered, retries, lag in events and seconds with a chart, open dead
//! letters, and for admins the last error), and one destination's page:
//! lag per stream (paged), dead letters (paged; admins) with "Retry", and
//! Pause / Resume for a key that may switch it. Everything goes through
//! the API's functions ([`crate::api::destinations`]): same narrowing,
//! same redaction of receivers' errors, same `_audit` records.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::ops::{OpsState, api_problem, link, secs};
use super::overview::when;
use super::{UiState, Viewer, lags};
use crate::api::destinations::{DestinationStatus, letters, may_switch_named, statuses};

/// Streams per page on a destination's page.
const STREAMS: usize = 50;
/// Dead letters per page.
const LETTERS: usize = 50;

fn state(d: &DestinationStatus) -> Markup {
    html! {
        @if d.paused { span class="warn" { "Paused" } }
        @else if d.lag_events == 0 { span class="good" { "Delivering, caught up" } }
        @else { span { "Delivering" } }
    }
}

/// `GET /ui/destinations`.
pub(super) async fn list(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
) -> Response {
    let all = match statuses(&ui.app, &viewer.key).await {
        Ok(a) => a,
        Err(e) => return api_problem(&e),
    };
    let admin = viewer.is_admin();
    let content = html! {
        h1 { "Destinations" }
        @if all.is_empty() {
            p { "No destination takes a stream your key may see." }
        } @else {
            div class="scroll" id="destinations" data-live="10000" {
                table {
                    caption class="visually-hidden" { "Destinations, their delivery and lag" }
                    thead { tr {
                        th scope="col" { "Destination" }
                        th scope="col" { "Type" }
                        th scope="col" { "State" }
                        th scope="col" class="num" { "Delivered" }
                        th scope="col" class="num" { "Retries" }
                        th scope="col" class="num" { "Open dead letters" }
                        th scope="col" class="num" { "Lag" }
                        th scope="col" { "Lag, 10 min" }
                        @if admin { th scope="col" { "Last error" } }
                    } }
                    tbody {
                        @for d in &all {
                            tr {
                                th scope="row" { a href=(format!("/ui/destinations/{}", d.name)) { (d.name) } }
                                td { (d.kind) }
                                td { (state(d)) }
                                td class="num" { (d.delivered) }
                                td class="num" { (d.retries) }
                                td class="num" { @if d.dead_letters > 0 { span class="warn" { (d.dead_letters) } } @else { "0" } }
                                td class="num" { (d.lag_events) " events · " (secs(d.lag_seconds)) }
                                td { (lags::chart(&ops.lags.series(&d.name, &viewer.key))) }
                                @if admin {
                                    td { @if let Some(e) = &d.last_error {
                                        span class="bad" { (e) }
                                        @if let Some(at) = &d.last_error_at { " · " (when(at)) }
                                    } @else { "none" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    super::page(&viewer, "Destinations", "/ui/destinations", content)
}

#[derive(Deserialize, Default)]
pub(super) struct DetailQuery {
    /// Page of the stream table, from 1.
    spage: Option<usize>,
    /// Page of the dead letters, from 1 (newest first).
    dpage: Option<usize>,
}

/// `GET /ui/destinations/{name}`.
pub(super) async fn detail(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    render(&ui, &ops, &viewer, &name, &q, None).await
}

/// What an admin action did: whether it worked, and what to say.
type Outcome = (bool, String);

async fn render(
    ui: &UiState,
    ops: &OpsState,
    viewer: &Viewer,
    name: &str,
    q: &DetailQuery,
    done: Option<(StatusCode, Outcome)>,
) -> Response {
    let all = match statuses(&ui.app, &viewer.key).await {
        Ok(a) => a,
        Err(e) => return api_problem(&e),
    };
    // A destination the key may not see is answered as one that does not
    // exist, as the API does.
    let Some(d) = all.into_iter().find(|d| d.name == name) else {
        return super::problem(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is no destination {name} that your key may see."),
        );
    };
    let admin = viewer.is_admin();
    let switch = may_switch_named(&ui.app, &viewer.key, name);
    let letters = if admin {
        match letters(&ui.app, &viewer.key, name).await {
            Ok(mut l) => {
                l.reverse();
                l
            }
            Err(e) => return api_problem(&e),
        }
    } else {
        Vec::new()
    };
    let mut streams = d.streams.clone();
    streams.sort_by(|a, b| {
        b.lag_events
            .cmp(&a.lag_events)
            .then_with(|| crate::event::stream_order(&a.stream, &b.stream))
    });
    let spages = streams.len().div_ceil(STREAMS).max(1);
    let spage = q.spage.unwrap_or(1).clamp(1, spages);
    let shown =
        &streams[((spage - 1) * STREAMS).min(streams.len())..(spage * STREAMS).min(streams.len())];
    let dpages = letters.len().div_ceil(LETTERS).max(1);
    let dpage = q.dpage.unwrap_or(1).clamp(1, dpages);
    let letters_shown =
        &letters[((dpage - 1) * LETTERS).min(letters.len())..(dpage * LETTERS).min(letters.len())];
    let here = format!("/ui/destinations/{name}");
    let page_link = |s: usize, dl: usize| {
        link(
            &here,
            &[
                ("spage", &if s > 1 { s.to_string() } else { String::new() }),
                (
                    "dpage",
                    &if dl > 1 {
                        dl.to_string()
                    } else {
                        String::new()
                    },
                ),
            ],
        )
    };
    let status = done.as_ref().map_or(StatusCode::OK, |(s, _)| *s);
    let content = html! {
        p { a href="/ui/destinations" { "← All destinations" } }
        h1 { "Destination " code { (d.name) } }
        @if let Some((_, (ok, message))) = &done {
            @if *ok {
                section class="notice" role="status" id="outcome" { p { (message) } }
            } @else {
                section class="notice bad" role="alert" id="outcome" { p { (message) } }
            }
        }
        section aria-labelledby="status-h" id="status" data-live="10000" {
            h2 id="status-h" { "Status" }
            dl class="facts" {
                dt { "Type" } dd { (d.kind) }
                dt { "State" } dd { (state(&d)) }
                dt { "Delivered" } dd { (d.delivered) " events (" (d.batches) " batches since this server started)" }
                dt { "Retries" } dd { (d.retries) " since this server started" }
                dt { "Lag" } dd { (d.lag_events) " events · oldest undelivered " (secs(d.lag_seconds)) " old" }
                dt { "Lag, 10 min" } dd { (lags::chart(&ops.lags.series(&d.name, &viewer.key))) }
                dt { "Open dead letters" } dd { (d.dead_letters) }
                @if admin {
                    dt { "Last error" }
                    dd {
                        @if let Some(e) = &d.last_error {
                            span class="bad" { (e) }
                            @if let Some(at) = &d.last_error_at { " · " (when(at)) }
                            @if let Some(detail) = &d.last_error_detail { br; code class="detail" { (detail) } }
                        } @else { "none" }
                    }
                }
            }
        }
        @if switch {
            section aria-labelledby="switch-h" {
                h2 id="switch-h" { "Delivery" }
                @if d.paused {
                    form method="post" action=(format!("{here}/resume")) data-confirm=(format!("Resume delivery to {name}?")) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Resume" }
                    }
                } @else {
                    form method="post" action=(format!("{here}/pause")) data-confirm=(format!("Pause delivery to {name}? Events wait in the hot store (and hold back archive deletion) until it resumes.")) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" class="danger" { "Pause" }
                    }
                }
            }
        }
        section aria-labelledby="streams-h" {
            h2 id="streams-h" { "Streams" }
            @if shown.is_empty() { p { "It takes no stream your key may see yet." } } @else {
                div class="scroll" {
                    table {
                        caption class="visually-hidden" { "Lag per stream, most behind first" }
                        thead { tr {
                            th scope="col" { "Stream" }
                            th scope="col" class="num" { "Delivered through" }
                            th scope="col" class="num" { "Head" }
                            th scope="col" class="num" { "Events behind" }
                            th scope="col" class="num" { "Oldest undelivered" }
                        } }
                        tbody {
                            @for l in shown {
                                tr {
                                    th scope="row" { code { (l.stream) } }
                                    td class="num" { (l.cursor) }
                                    td class="num" { (l.head) }
                                    td class="num" { (l.lag_events) }
                                    td class="num" { @if let Some(s) = l.lag_seconds { (secs(s)) " old" } @else { "caught up" } }
                                }
                            }
                        }
                    }
                }
            }
            @if spages > 1 {
                nav aria-label="Stream pages" class="pager" {
                    @if spage > 1 { a href=(page_link(spage - 1, dpage)) rel="prev" { "← Previous" } }
                    span { "Page " (spage) " of " (spages) }
                    @if spage < spages { a href=(page_link(spage + 1, dpage)) rel="next" { "Next →" } }
                }
            }
        }
        @if admin {
            section aria-labelledby="letters-h" id="dead-letters" {
                h2 id="letters-h" { "Dead letters" }
                p { "Batches the destination refused for good. Retry sends one again; it stays open if the destination refuses it again." }
                @if letters_shown.is_empty() { p { "None." } } @else {
                    div class="scroll" {
                        table {
                            caption class="visually-hidden" { "Dead letters, newest first" }
                            thead { tr {
                                th scope="col" { "Id" }
                                th scope="col" { "Stream" }
                                th scope="col" class="num" { "Seqs" }
                                th scope="col" { "Refused" }
                                th scope="col" { "Why" }
                                th scope="col" { "State" }
                                th scope="col" { span class="visually-hidden" { "Action" } }
                            } }
                            tbody {
                                @for l in letters_shown {
                                    tr id=(format!("letter-{}", l.id)) {
                                        th scope="row" { (l.id) }
                                        td { code { (l.stream) } }
                                        td class="num" { (l.start_seq) "–" (l.end_seq) }
                                        td { (when(&l.at)) }
                                        td { @if let Some(s) = l.status { "HTTP " (s) ": " } (l.error) }
                                        td { @if let Some(r) = &l.resolved { span class="good" { "resolved " } (when(r)) } @else { span class="warn" { "open" } } }
                                        td {
                                            @if l.resolved.is_none() {
                                                form method="post" action=(format!("{here}/dead-letters/{}/retry", l.id))
                                                    data-confirm=(format!("Send dead letter {} (seqs {}–{} of {}) to {name} again?", l.id, l.start_seq, l.end_seq, l.stream)) {
                                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                                    button type="submit" { "Retry" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if dpages > 1 {
                    nav aria-label="Dead letter pages" class="pager" {
                        @if dpage > 1 { a href=(page_link(spage, dpage - 1)) rel="prev" { "← Newer" } }
                        span { "Page " (dpage) " of " (dpages) }
                        @if dpage < dpages { a href=(page_link(spage, dpage + 1)) rel="next" { "Older →" } }
                    }
                }
            }
        }
    };
    let title = format!("Destination {name}");
    (
        status,
        super::page(viewer, &title, "/ui/destinations", content),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    csrf: String,
}

async fn switch(
    ui: &UiState,
    ops: &OpsState,
    viewer: &Viewer,
    headers: &HeaderMap,
    name: &str,
    paused: bool,
    csrf: &str,
) -> Response {
    if let Err(r) = super::check_form(viewer, headers, csrf)
        .and_then(|()| super::ops::admin_only(viewer, "Pausing and resuming a destination"))
    {
        return r;
    }
    match crate::api::destinations::switch(&ui.app, &viewer.key, name, paused).await {
        Ok(()) => {
            let message = if paused {
                format!("Delivery to {name} is paused.")
            } else {
                format!("Delivery to {name} resumed.")
            };
            render(
                ui,
                ops,
                viewer,
                name,
                &DetailQuery::default(),
                Some((StatusCode::OK, (true, message))),
            )
            .await
        }
        Err(e) => api_problem(&e),
    }
}

/// `POST /ui/destinations/{name}/pause`.
pub(super) async fn pause(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    switch(&ui, &ops, &viewer, &headers, &name, true, &f.csrf).await
}

/// `POST /ui/destinations/{name}/resume`.
pub(super) async fn resume(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    switch(&ui, &ops, &viewer, &headers, &name, false, &f.csrf).await
}

/// `POST /ui/destinations/{name}/dead-letters/{id}/retry`.
pub(super) async fn retry(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = super::check_form(&viewer, &headers, &f.csrf)
        .and_then(|()| super::ops::admin_only(&viewer, "Retrying a dead letter"))
    {
        return r;
    }
    let outcome =
        match crate::api::destinations::retry_letter(&ui.app, &viewer.key, &name, id).await {
            Ok(()) => (
                StatusCode::OK,
                (
                    true,
                    format!("Dead letter {id} was delivered to {name} and is resolved."),
                ),
            ),
            Err(e) if e.status == StatusCode::BAD_GATEWAY => (
                e.status,
                (
                    false,
                    format!(
                        "Dead letter {id}: {name} refused it again; it stays open. {}",
                        super::ops::upper_first(&e.message)
                    ),
                ),
            ),
            Err(e) => return api_problem(&e),
        };
    render(
        &ui,
        &ops,
        &viewer,
        &name,
        &DetailQuery::default(),
        Some(outcome),
    )
    .await
}
