//! The Sources page: every SSE source feeding a stream the key may see
//! (connection state, last event, counters, reconnects, last error,
//! recorded gaps), and for admins the events a source refused, as
//! `GET /v1/sources/rejected` lists them. Both through the API's functions
//! ([`crate::api::read::source_states`], [`crate::api::read::rejected_events`]).

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::ops::{api_problem, link};
use super::overview::when;
use super::{UiState, Viewer};

/// Sources per page.
const PAGE: usize = 100;
/// Rejected events shown.
const REJECTED: usize = 100;
/// A rejected event's raw data shown, at most (bytes).
const RAW_SHOWN: usize = 4096;

#[derive(Deserialize, Default)]
pub(super) struct SourcesQuery {
    /// Page, from 1.
    page: Option<usize>,
    /// Show this source's rejected events (admin).
    rejected: Option<String>,
}

/// `GET /ui/sources`.
pub(super) async fn page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<SourcesQuery>,
) -> Response {
    let mut all = match crate::api::read::source_states(&ui.app, &viewer.key).await {
        Ok(a) => a,
        Err(e) => return api_problem(&e),
    };
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let admin = viewer.is_admin();
    let rejected_of = q
        .rejected
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let rejected = match rejected_of {
        Some(name) => {
            match crate::api::read::rejected_events(&ui.app, &viewer.key, Some(name), REJECTED)
                .await
            {
                Ok(r) => Some((name, r)),
                Err(e) => return api_problem(&e),
            }
        }
        None => None,
    };
    let total = all.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown = &all[((page_no - 1) * PAGE).min(total)..(page_no * PAGE).min(total)];
    let content = html! {
        h1 { "Sources" }
        @if let Some((name, rows)) = &rejected {
            section aria-labelledby="rejected-h" id="rejected" {
                h2 id="rejected-h" { "Rejected events of " code { (name) } }
                p { a href="/ui/sources" { "← All sources" } }
                @if rows.is_empty() { p { "None." } } @else {
                    p { "Events the source received but could not store, with why (at most " (REJECTED) ")." }
                    div class="scroll" {
                        table {
                            caption class="visually-hidden" { "Rejected events" }
                            thead { tr {
                                th scope="col" { "Received" }
                                th scope="col" { "Where upstream" }
                                th scope="col" { "Why" }
                                th scope="col" { "Data" }
                            } }
                            tbody {
                                @for r in rows {
                                    tr {
                                        td { (when(&r.at)) }
                                        td { code { (r.position) } }
                                        td { (r.reason) }
                                        td {
                                            details {
                                                summary { (r.raw.len()) " bytes" }
                                                pre class="raw" { (truncate(&r.raw, RAW_SHOWN)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if all.is_empty() {
            p { "No source feeds a stream your key may see." }
        } @else {
            div class="scroll" id="sources" data-live="5000" {
                table {
                    caption class="visually-hidden" { "Sources, their connection and counters" }
                    thead { tr {
                        th scope="col" { "Source" }
                        th scope="col" { "Stream" }
                        th scope="col" { "Connection" }
                        th scope="col" { "Last event" }
                        th scope="col" class="num" { "Taken" }
                        th scope="col" class="num" { "Duplicates" }
                        th scope="col" class="num" { "Rejected" }
                        th scope="col" class="num" { "Filtered" }
                        th scope="col" class="num" { "Reconnects" }
                        th scope="col" { "Last error" }
                        th scope="col" { "Possible gaps" }
                    } }
                    tbody {
                        @for s in shown {
                            tr {
                                th scope="row" { code { (s.name) } }
                                td { code { (s.stream) } }
                                td { @if s.connected { span class="good" { "Connected" } } @else { span class="bad" { "Disconnected" } } }
                                td {
                                    @if let Some(id) = &s.last_event_id { "id " code { (id) } }
                                    @if let Some(t) = &s.last_event_time { " · " (when(t)) }
                                    @if s.last_event_id.is_none() && s.last_event_time.is_none() { "none yet" }
                                }
                                td class="num" { (s.taken) }
                                td class="num" { (s.duplicates) }
                                td class="num" {
                                    @if s.rejected > 0 && admin {
                                        a href=(link("/ui/sources", &[("rejected", &s.name)])) aria-label=(format!("{} rejected events of {}: list them", s.rejected, s.name)) { (s.rejected) }
                                    } @else { (s.rejected) }
                                }
                                td class="num" { (s.filtered) }
                                td class="num" { (s.reconnects) }
                                td { @if let Some(e) = &s.last_error {
                                    span class="bad" { (e) }
                                    @if let Some(at) = &s.last_error_at { " · " (when(at)) }
                                } @else { "none" } }
                                td {
                                    @if s.gaps_total == 0 { "none" } @else {
                                        (s.gaps_total) " recorded"
                                        ul class="gaps" {
                                            @for g in &s.gaps {
                                                li { time datetime=(g.start) { (g.start) } " to " time datetime=(g.end) { (g.end) } ": " (g.reason) ", resumed by " (g.resume) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav aria-label="Source pages" class="pager" {
                    @if page_no > 1 { a href=(link("/ui/sources", &[("page", &(page_no - 1).to_string())])) rel="prev" { "← Previous" } }
                    span { "Page " (page_no) " of " (pages) }
                    @if page_no < pages { a href=(link("/ui/sources", &[("page", &(page_no + 1).to_string())])) rel="next" { "Next →" } }
                }
            }
        }
    };
    super::page(&viewer, "Sources", "/ui/sources", content)
}

/// At most `max` bytes of `s`, cut at a character boundary, marked when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(super::truncate("abc", 5), "abc");
        assert_eq!(super::truncate("aéb", 2), "a… (3 more bytes)");
    }
}
