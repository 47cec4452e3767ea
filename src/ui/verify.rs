//! The Verify page (admin): verification of the hot store, or of the
//! archive and then the hot store from where it ends (as `trailkeep verify`
//! with an archive does, through [`crate::verify::combined`]), as a
//! background job. The page shows its progress (`verify.js` polls it), then
//! the report with every problem located by stream, seq and object key.
//!
//! Jobs live in memory, the last [`KEEP`] of them; one runs at a time per
//! server (a verification reads the whole store). A key bound to a stream
//! verifies that stream only and sees only the jobs of its stream; a job of
//! every stream is seen by keys for `*`. Each run is recorded in `_audit`
//! (`verify.run`) as `POST /v1/verify` records it, and a run over every
//! stream feeds the overview's alarm and `/metrics` as that does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ops::{OpsState, admin_only, link, upper_first};
use super::overview::when;
use super::{UiState, Viewer, problem};
use crate::archive::verify::{ArchiveReport, Status};
use crate::auth::{Scope, Target, allows, sees};
use crate::verify::Report;

/// Jobs kept (finished ones are dropped oldest first).
const KEEP: usize = 10;
/// Problems shown per report; the rest are counted.
const SHOWN: usize = 500;

/// How a job ended.
enum Outcome {
    Done {
        report: Box<Report>,
        archive: Option<Box<ArchiveReport>>,
    },
    Failed(String),
}

/// One verification run.
pub(super) struct Job {
    id: String,
    /// The stream verified, or every stream.
    stream: Option<String>,
    archive: bool,
    by: String,
    started: String,
    /// Events about to be read (hot, plus archived with the archive).
    total: u64,
    read: AtomicU64,
    end: Mutex<Option<(String, Outcome)>>,
}

impl Job {
    fn visible_to(&self, viewer: &Viewer) -> bool {
        match &self.stream {
            Some(s) => sees(&viewer.key, s),
            None => viewer.key.stream == "*",
        }
    }

    fn running(&self) -> bool {
        self.end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none()
    }
}

/// The server's verification jobs.
#[derive(Default)]
pub(super) struct Jobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    fn list(&self) -> Vec<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.list().into_iter().find(|j| j.id == id)
    }

    /// Adds `job` unless one is running; returns the running one if so.
    fn add(&self, job: Arc<Job>) -> Result<(), Arc<Job>> {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = jobs.iter().find(|j| j.running()) {
            return Err(r.clone());
        }
        if jobs.len() == KEEP {
            jobs.pop_back();
        }
        jobs.push_front(job);
        Ok(())
    }
}

#[derive(Deserialize, Default)]
pub(super) struct VerifyQuery {
    job: Option<String>,
}

/// `GET /ui/verify`.
pub(super) async fn page(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    Query(q): Query<VerifyQuery>,
) -> Response {
    if let Err(r) = admin_only(&viewer, "Verification") {
        return r;
    }
    let job = match q.job.as_deref() {
        Some(id) => match ops.jobs.get(id).filter(|j| j.visible_to(&viewer)) {
            Some(j) => Some(j),
            None => {
                return problem(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "There is no such verification run that your key may see (runs are kept in memory: the last ten, until the server restarts).",
                );
            }
        },
        None => None,
    };
    render(&ui, &ops, &viewer, job.as_deref())
}

fn render(ui: &UiState, ops: &OpsState, viewer: &Viewer, job: Option<&Job>) -> Response {
    let bound = viewer.key.stream != "*";
    let recent: Vec<_> = ops
        .jobs
        .list()
        .into_iter()
        .filter(|j| j.visible_to(viewer))
        .collect();
    let content = html! {
        h1 { "Verify" }
        p {
            "Recomputes every event's hash and link, every tile and checkpoint root, and checks every signature; "
            "with the archive, it first checks every archived object against its signed manifest and then the hot store from where the archive ends. "
            "It reads everything, so it takes a while on a large store."
        }
        section aria-labelledby="run-h" {
            h2 id="run-h" { "Run a verification" }
            form method="post" action="/ui/verify" class="inline"
                data-confirm="Verify now? It reads every event (and, with the archive, every archived object)." {
                input type="hidden" name="csrf" value=(viewer.csrf);
                fieldset {
                    legend { "What" }
                    input type="radio" id="what-hot" name="what" value="hot" checked;
                    label for="what-hot" { "The hot store" }
                    input type="radio" id="what-archive" name="what" value="archive";
                    label for="what-archive" { "The archive, then the hot store" }
                }
                label for="v-stream" { "Stream" }
                @if bound {
                    input id="v-stream" name="stream" type="text" readonly value=(viewer.key.stream);
                } @else {
                    input id="v-stream" name="stream" type="text" aria-describedby="v-stream-help";
                    span id="v-stream-help" class="help" { "Blank for every stream." }
                }
                button type="submit" { "Verify" }
            }
            p { "Archive: " code { (ui.app.archiver.bucket().display()) } }
        }
        @if let Some(j) = job { (job_section(j, viewer)) }
        @if !recent.is_empty() {
            section aria-labelledby="recent-h" {
                h2 id="recent-h" { "Recent runs" }
                ul {
                    @for j in &recent {
                        li {
                            a href=(link("/ui/verify", &[("job", &j.id)])) {
                                (scope_text(j)) ", started " (when(&j.started))
                            }
                            ": " (state_text(j))
                        }
                    }
                }
            }
        }
    };
    super::page_with_module(viewer, "Verify", "/ui/verify", "verify", content)
}

fn scope_text(j: &Job) -> String {
    format!(
        "{}{}",
        if j.archive {
            "archive and hot store"
        } else {
            "hot store"
        },
        j.stream
            .as_ref()
            .map(|s| format!(", stream {s}"))
            .unwrap_or_else(|| ", every stream".into())
    )
}

fn state_text(j: &Job) -> String {
    let end = j
        .end
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*end {
        None => "running".into(),
        Some((_, Outcome::Failed(_))) => "could not run".into(),
        Some((_, Outcome::Done { report, archive })) => {
            let n = report.problem_count + archive.as_ref().map_or(0, |a| a.problems.len());
            if n == 0 && archive.as_ref().is_none_or(|a| a.ok) {
                "no problem".into()
            } else {
                format!("{n} problem(s)")
            }
        }
    }
}

fn kind<T: Serialize>(k: &T) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn job_section(j: &Job, viewer: &Viewer) -> Markup {
    let end = j
        .end
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let read = j.read.load(Ordering::Relaxed);
    html! {
        section aria-labelledby="job-h" id="job" data-running[end.is_none()] {
            h2 id="job-h" { "Verification of the " (scope_text(j)) }
            p { "Started " (when(&j.started)) " by key " code { (j.by) } "." }
            @match &*end {
                None => {
                    p role="status" aria-live="polite" {
                        label for="job-progress" { "Running: " (read) " of about " (j.total) " events read." }
                        " "
                        progress id="job-progress" value=(read.min(j.total)) max=(j.total.max(1)) { (read) " of " (j.total) }
                    }
                }
                Some((at, Outcome::Failed(why))) => {
                    p class="bad" role="alert" { "Could not run (" (when(at)) "): " (why) }
                }
                Some((at, Outcome::Done { report, archive })) => {
                    (report_markup(report, archive.as_deref(), viewer, at))
                }
            }
        }
    }
}

fn report_markup(
    report: &Report,
    archive: Option<&ArchiveReport>,
    viewer: &Viewer,
    at: &str,
) -> Markup {
    // Archive findings of streams the key may not see stay hidden.
    let prefix = (viewer.key.stream != "*").then(|| format!("{}/", viewer.key.stream));
    let archive_problems: Vec<_> = archive
        .map(|a| {
            a.problems
                .iter()
                .filter(|p| sees(&viewer.key, &p.stream))
                .collect()
        })
        .unwrap_or_default();
    let bad_keys: Vec<_> = archive
        .map(|a| {
            a.keys
                .iter()
                .filter(|k| k.status != Status::Valid)
                .filter(|k| prefix.as_ref().is_none_or(|p| k.key.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    let hot_problems: Vec<_> = report
        .streams
        .iter()
        .flat_map(|s| s.problems.iter())
        .filter(|p| sees(&viewer.key, &p.stream))
        .collect();
    let n = hot_problems.len() + archive_problems.len() + bad_keys.len();
    // Problems the key may not see (other streams, or the archive's index
    // and manifests, which belong to no one stream) still make the run fail:
    // the verdict never says "no problem" when there was one.
    let total = report.problem_count
        + archive.map_or(0, |a| {
            a.problems.len() + a.keys.iter().filter(|k| k.status != Status::Valid).count()
        });
    let hidden = total.saturating_sub(n);
    let archived_events: u64 = archive.map_or(0, |a| {
        a.streams
            .iter()
            .filter(|s| sees(&viewer.key, &s.stream))
            .map(|s| s.events)
            .sum()
    });
    html! {
        @if hidden > 0 {
            p class="bad" role="alert" id="hidden-problems" { (hidden) " problem(s) outside what your key may see (another stream, or the archive's index and manifests). Ask someone with an admin key for every stream to run this verification." }
        }
        @if n == 0 && hidden == 0 {
            p class="good" role="status" { "Finished " (when(at)) ": no problem. "
                (report.events) " hot events" @if archive.is_some() { " and " (archived_events) " archived events" } " verified." }
        } @else if n > 0 {
            p class="bad" role="alert" { "Finished " (when(at)) ": " (n) " problem(s) found. "
                (report.events) " hot events" @if archive.is_some() { " and " (archived_events) " archived events" } " read." }
        }
        @if !hot_problems.is_empty() {
            div class="scroll" {
                table id="problems" {
                    caption { "Problems in the hot store" @if hot_problems.len() > SHOWN { " (the first " (SHOWN) ")" } }
                    thead { tr {
                        th scope="col" { "Stream" } th scope="col" class="num" { "Seq" } th scope="col" { "Problem" }
                        th scope="col" { "Object key" } th scope="col" { "Expected" } th scope="col" { "Found" }
                    } }
                    tbody {
                        @for p in hot_problems.iter().take(SHOWN) {
                            tr {
                                th scope="row" { code { (p.stream) } }
                                td class="num" { @if let Some(s) = p.seq { (s) } @else { "—" } }
                                td { (kind(&p.kind)) }
                                td { @if let Some(k) = &p.key { code { (k) } } @else { "—" } }
                                td class="hash" { (p.expected.as_deref().unwrap_or("—")) }
                                td class="hash" { (p.found.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
        }
        @if !archive_problems.is_empty() {
            div class="scroll" {
                table id="archive-problems" {
                    caption { "Problems in the archive" @if archive_problems.len() > SHOWN { " (the first " (SHOWN) ")" } }
                    thead { tr {
                        th scope="col" { "Stream" } th scope="col" class="num" { "Seq" } th scope="col" { "Problem" }
                        th scope="col" { "Object key" } th scope="col" { "What is wrong" }
                    } }
                    tbody {
                        @for p in archive_problems.iter().take(SHOWN) {
                            tr {
                                th scope="row" { code { (p.stream) } }
                                td class="num" { @if let Some(s) = p.seq { (s) } @else { "—" } }
                                td { (kind(&p.kind)) }
                                td { @if let Some(k) = &p.key { code { (k) } } @else { "—" } }
                                td { (upper_first(&p.message)) }
                            }
                        }
                    }
                }
            }
        }
        @if !bad_keys.is_empty() {
            div class="scroll" {
                table id="archive-keys" {
                    caption { "Archive objects that did not verify" }
                    thead { tr { th scope="col" { "Object key" } th scope="col" { "Kind" } th scope="col" { "Status" } th scope="col" { "Why" } } }
                    tbody {
                        @for k in bad_keys.iter().take(SHOWN) {
                            tr {
                                th scope="row" { code { (k.key) } }
                                td { (k.kind) }
                                td { (kind(&k.status)) }
                                td { (k.reason.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
        }
        div class="scroll" {
            table {
                caption { "Per stream" }
                thead { tr {
                    th scope="col" { "Stream" } th scope="col" class="num" { "Hot events read" }
                    th scope="col" class="num" { "Head" } th scope="col" class="num" { "Checkpoint" }
                    th scope="col" class="num" { "Problems" }
                } }
                tbody {
                    @for s in report.streams.iter().filter(|s| sees(&viewer.key, &s.stream)).take(SHOWN) {
                        tr {
                            th scope="row" { code { (s.stream) } }
                            td class="num" { (s.events) }
                            td class="num" { (s.head_seq) }
                            td class="num" { @if let Some(c) = s.checkpoint_size { (c) } @else { "none" } }
                            td class="num" { @if s.problems.is_empty() { "none" } @else { span class="bad" { (s.problems.len()) } } }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct StartForm {
    csrf: String,
    #[serde(default)]
    what: String,
    #[serde(default)]
    stream: String,
}

/// `POST /ui/verify`: starts a job and shows it.
pub(super) async fn start(
    State(ui): State<UiState>,
    Extension(ops): Extension<OpsState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<StartForm>,
) -> Response {
    if let Err(r) = super::check_form(&viewer, &headers, &f.csrf)
        .and_then(|()| admin_only(&viewer, "Verification"))
    {
        return r;
    }
    let asked = f.stream.trim();
    let only = match asked {
        "" if viewer.key.stream == "*" => None,
        // A key bound to one stream verifies that stream only.
        "" => Some(viewer.key.stream.clone()),
        s => {
            if let Err(e) = crate::names::StreamName::parse(s) {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad stream name",
                    &format!("Stream: {e}."),
                );
            }
            if !allows(&viewer.key, Scope::Admin, Target::Stream(s)) {
                ui.app.refusals.forbidden(&viewer.key.id);
                return problem(
                    StatusCode::FORBIDDEN,
                    "Not allowed",
                    "Your key is bound to one stream: it verifies that stream only.",
                );
            }
            Some(s.to_owned())
        }
    };
    let archive = f.what == "archive";
    let streams = match ui.app.store.streams().await {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    let total = streams
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| *o == s.name))
        .map(|s| {
            if archive {
                s.head_seq
            } else {
                s.head_seq.saturating_sub(s.archived_seq.unwrap_or(0))
            }
        })
        .sum();
    let job = Arc::new(Job {
        id: super::session::random_token()[..16].to_owned(),
        stream: only,
        archive,
        by: viewer.key.id.clone(),
        started: now(),
        total,
        read: AtomicU64::new(0),
        end: Mutex::new(None),
    });
    if let Err(running) = ops.jobs.add(job.clone()) {
        let see = if running.visible_to(&viewer) {
            format!(" It is at {}.", link("/ui/verify", &[("job", &running.id)]))
        } else {
            String::new()
        };
        return problem(
            StatusCode::CONFLICT,
            "A verification is running",
            &format!(
                "One verification runs at a time; wait for the running one to finish, then start yours.{see}"
            ),
        );
    }
    tokio::spawn(run(ui.app.clone(), job.clone(), viewer.key.id.clone()));
    Redirect::to(&link("/ui/verify", &[("job", &job.id)])).into_response()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Runs `job` to its end and records it.
async fn run(app: crate::api::AppState, job: Arc<Job>, key_id: String) {
    let progress = {
        let job = job.clone();
        move |n: u64| job.read.store(n, Ordering::Relaxed)
    };
    let hot = crate::verify::HotOptions {
        only: job.stream.clone(),
        ..crate::verify::HotOptions::default()
    };
    let result: Result<(Report, Option<ArchiveReport>), String> = if job.archive {
        let opts = crate::archive::verify::VerifyOptions {
            stream: job.stream.clone(),
            hmac_key: app.archiver.settings().hmac_key.clone(),
            max_age: None,
            trusted: Vec::new(),
            hot_follows: true,
        };
        crate::verify::combined::verify_with_archive(
            app.store.as_ref(),
            app.archiver.bucket(),
            &app.verifier,
            &app.log_name,
            hot,
            &opts,
            &progress,
        )
        .await
        .map_err(|e| describe(&e.to_string(), job.stream.as_deref()))
    } else {
        crate::verify::verify_store_with(
            app.store.as_ref(),
            &app.verifier,
            &app.log_name,
            &hot,
            &progress,
        )
        .await
        .map(|r| (r, None))
        .map_err(|e| describe(&e.to_string(), job.stream.as_deref()))
    };
    if job.stream.is_none() {
        // The alarm and /metrics count the archive's findings too.
        let whole = result.as_ref().map_err(|_| ()).map(|(r, a)| {
            let mut r = r.clone();
            if let Some(a) = a {
                r.problem_count += a.problems.len();
                r.ok = r.ok && a.ok;
            }
            r
        });
        crate::verify::record_run(
            &whole.map_err(|()| crate::store::StoreError::Corrupt("verification failed".into())),
        );
    }
    let record = match &result {
        Ok((r, a)) => json!({
            "stream": job.stream, "archive": job.archive,
            "ok": r.ok && a.as_ref().is_none_or(|a| a.ok),
            "events": r.events + a.as_ref().map_or(0, |a| a.summary.events),
            "problems": r.problem_count + a.as_ref().map_or(0, |a| a.problems.len()),
        }),
        Err(e) => json!({"stream": job.stream, "archive": job.archive, "ok": false, "error": e}),
    };
    crate::audit::record(
        app.store.as_ref(),
        "verify.run",
        crate::audit::Actor::Key(&key_id),
        record,
    )
    .await;
    let outcome = match result {
        Ok((report, archive)) => Outcome::Done {
            report: Box::new(report),
            archive: archive.map(Box::new),
        },
        Err(e) => Outcome::Failed(e),
    };
    *job.end
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now(), outcome));
}

/// Why a verification could not run, as a sentence. For a key bound to a
/// stream the store's or bucket's error is not shown (it may name another
/// stream's objects): the server log has it.
fn describe(e: &str, only: Option<&str>) -> String {
    tracing::error!(error = %e, "console verification could not run");
    match only {
        None => format!("{}.", upper_first(e)),
        Some(s) if e.contains("not found") && e.contains(s) => format!("Stream {s} not found."),
        Some(_) => {
            "The store or the archive could not be read; the cause is in the server log.".into()
        }
    }
}
