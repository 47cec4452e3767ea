//! The overview: every stream the key sees (paged), its head, latest
//! signed checkpoint, hot/cold boundary and ingest rate; writer health and
//! alarms.

use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{UiState, Viewer, rates};
use crate::auth::sees;

/// Streams per page.
const PAGE: usize = 100;
/// A destination this far behind (seconds) raises an alarm.
const LAG_ALARM_SECS: f64 = 300.0;

#[derive(Deserialize, Default)]
pub(super) struct OverviewQuery {
    /// Streams whose name contains this.
    q: Option<String>,
    /// Page, from 1.
    page: Option<usize>,
}

/// "3 min ago", for an RFC 3339 time.
pub(super) fn ago(rfc3339: &str) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return rfc3339.to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds();
    match secs {
        s if s < 0 => "just now".into(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// A time shown as its age, the exact time in a tooltip and to machines.
pub(super) fn when(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) title=(rfc3339) { (ago(rfc3339)) } }
}

/// `GET /ui/`.
pub(super) async fn page(
    State(ui): State<UiState>,
    viewer: Viewer,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let app = &ui.app;
    let mut streams = match app.store.streams().await {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    streams.retain(|s| sees(&viewer.key, &s.name));
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
    let filter = q.q.as_deref().map(str::trim).filter(|f| !f.is_empty());
    if let Some(f) = filter {
        streams.retain(|s| s.name.contains(f));
    }
    let total = streams.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<_> = streams
        .into_iter()
        .skip((page_no - 1) * PAGE)
        .take(PAGE)
        .collect();
    let mut checkpoints = Vec::with_capacity(shown.len());
    for s in &shown {
        match app.store.latest_checkpoint(&s.name).await {
            Ok(c) => checkpoints.push(c),
            Err(e) => return super::failure(&e),
        }
    }
    let alarms = match alarms(&ui, &viewer).await {
        Ok(a) => a,
        Err(e) => return super::failure(&e),
    };
    let link = |p: usize| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(f) = filter {
            s.append_pair("q", f);
        }
        s.append_pair("page", &p.to_string());
        format!("/ui/?{}", s.finish())
    };
    let content = html! {
        h1 { "Overview" }
        section aria-labelledby="health-h" id="health" data-live="10000" {
            h2 id="health-h" { "Health" }
            @if app.appender.is_poisoned() {
                p class="bad" role="alert" { "Writer: refusing appends. A commit failed; restart the server to recover (see its log)." }
            } @else {
                p class="good" { "Writer: accepting events." }
            }
            @if alarms.is_empty() {
                p class="good" id="no-alarms" { "No alarms." }
            } @else {
                ul class="alarms" id="alarms" {
                    @for a in &alarms { li class="bad" { (a) } }
                }
            }
        }
        section aria-labelledby="streams-h" {
            h2 id="streams-h" { "Streams" }
            form method="get" action="/ui/" class="filter" role="search" {
                label for="q" { "Name contains" }
                input id="q" name="q" type="search" value=[filter];
                button type="submit" { "Filter" }
            }
            p { (total) " stream" @if total != 1 { "s" } @if let Some(f) = filter { " matching " code { (f) } } "." }
            div class="scroll" id="streams" data-live="5000" {
                table {
                    caption class="visually-hidden" { "Streams, their heads, checkpoints and archive boundary" }
                    thead { tr {
                        th scope="col" { "Stream" }
                        th scope="col" class="num" { "Head seq" }
                        th scope="col" { "Last event" }
                        th scope="col" { "Latest checkpoint" }
                        th scope="col" class="num" { "Oldest hot seq" }
                        th scope="col" class="num" { "Archived through" }
                        th scope="col" { "Ingest (10 min)" }
                    } }
                    tbody {
                        @for (s, cp) in shown.iter().zip(&checkpoints) {
                            tr {
                                th scope="row" { a href=(format!("/ui/events?stream={}", s.name)) { (s.name) } }
                                td class="num" { (s.head_seq) }
                                td { @if let Some(r) = &s.head_received { (when(r)) } @else { "—" } }
                                td {
                                    @if let Some(c) = cp {
                                        "size " (c.size) " · root " code title=(c.root) { (c.root.get(..12).unwrap_or(&c.root)) "…" } " · " (when(&c.created))
                                        @if c.size < s.head_seq { " · " span class="warn" { (s.head_seq - c.size) " not yet signed" } }
                                    } @else { "none yet" }
                                }
                                td class="num" { @if let Some(o) = s.oldest_hot_seq { (o) } @else { "—" } }
                                td class="num" { @if let Some(a) = s.archived_seq { (a) } @else { "—" } }
                                td { (rates::sparkline(&ui.rates.deltas(&s.name))) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav aria-label="Stream pages" class="pager" {
                    @if page_no > 1 { a href=(link(page_no - 1)) rel="prev" { "← Previous" } }
                    span { "Page " (page_no) " of " (pages) }
                    @if page_no < pages { a href=(link(page_no + 1)) rel="next" { "Next →" } }
                }
            }
        }
    };
    super::page(&viewer, "Overview", "/ui/", content)
}

/// What needs someone's attention, among what the key may see.
async fn alarms(ui: &UiState, viewer: &Viewer) -> Result<Vec<String>, crate::store::StoreError> {
    let app = &ui.app;
    let mut out = Vec::new();
    for d in &app.destinations {
        let name = &d.config.driver.name;
        if viewer.key.stream != "*" && !d.config.driver.filter.stream(&viewer.key.stream) {
            continue;
        }
        let mut lags =
            crate::destinations::lags(app.store.as_ref(), name, &d.config.driver.filter).await?;
        lags.retain(|l| sees(&viewer.key, &l.stream));
        let worst = lags
            .iter()
            .filter_map(|l| l.lag_seconds)
            .fold(0.0_f64, f64::max);
        let status = d.handle.status();
        if status.paused {
            out.push(format!("Destination {name} is paused."));
        } else if worst > LAG_ALARM_SECS {
            out.push(format!(
                "Destination {name} is {:.0} s behind ({} events).",
                worst,
                lags.iter().map(|l| l.lag_events).sum::<u64>()
            ));
        }
        let open = app
            .store
            .dead_letters(Some(name), false)
            .await?
            .iter()
            .filter(|l| sees(&viewer.key, &l.stream))
            .count();
        if open > 0 {
            out.push(format!(
                "Destination {name} has {open} open dead letter(s)."
            ));
        }
    }
    for s in app.store.source_states().await? {
        if sees(&viewer.key, &s.stream) && !s.connected {
            out.push(format!(
                "Source {} (stream {}) is disconnected{}.",
                s.name,
                s.stream,
                s.last_error_at
                    .as_deref()
                    .map(|t| format!(" since {}", ago(t)))
                    .unwrap_or_default()
            ));
        }
    }
    if viewer.key.stream == "*" {
        let archive = app.archiver.status();
        if archive.late(time::OffsetDateTime::now_utc()) {
            out.push(match &archive.last_run {
                Some(r) if r.result.is_err() => {
                    "The last archive run failed; see Archive for why.".to_owned()
                }
                _ => format!(
                    "The archive is late: no run succeeded for twice its schedule ({}); see Archive.",
                    archive.schedule.as_ref().map_or("", |s| s.text.as_str())
                ),
            });
        }
    }
    if viewer.key.stream == "*"
        && let Some(run) = crate::verify::last_run()
        && run.outcome != "ok"
    {
        out.push(match run.outcome {
            "problems" => format!(
                "The last verification found {} problem(s); run Verify to see where.",
                run.problems
            ),
            _ => "The last verification could not read the store; see the server log.".to_owned(),
        });
    }
    Ok(out)
}
