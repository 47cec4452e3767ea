//! `trailkeep bench e2e` (issue #18): end to end, an SSE upstream shaped
//! like Grantex's to a local Datadog Logs receiver, N events. Two runs in
//! the same process and on the same cores:
//!
//! 1. a real `trailkeep serve` (this binary, as a child process, on a
//!    temporary data directory) with one SSE source and one Datadog
//!    destination in the `grantex` encoding;
//! 2. the peer: a forwarder that neither stores nor chains anything. It
//!    reads the same stream with the same parsing (reqwest +
//!    `eventsource-stream`) and posts the same Datadog entries as
//!    Grantex's client, batched like trailkeep's Datadog destination by
//!    default (as many events as are ready, up to the same batch size, one
//!    request in flight; with a max age, it waits that long for a batch to
//!    fill).
//! 3. a forwarder with the behaviour of the client trailkeep replaces,
//!    Grantex's `@grantex/destinations` with its defaults (serial: each
//!    event awaited, 100-event batches posted while reading waits), as a
//!    Node script of ours (`bench_e2e_grantex.mjs`); skipped, and said so,
//!    where `node` is not installed.
//!
//! For each: events/s from the first event sent to the last delivered, and
//! each event's first-delivery latency (arrival at the receiver minus the
//! upstream's send time): p50, p99, max. The upstream and the receivers run
//! in this process, so both ends are timed on one monotonic clock.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde::Serialize;

/// Arguments of `bench e2e`.
#[derive(Debug, Args)]
pub struct E2eBenchArgs {
    /// Events the upstream sends (in each run).
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Give up on a run when its events have not all arrived after this long.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

/// The API key the Datadog destination sends (the receiver ignores it).
const DD_KEY_ENV: &str = "TRAILKEEP_BENCH_DD_KEY";
const STREAM_PATH: &str = "/v1/events/stream";

/// When each event was sent and when it first arrived, by index (the
/// upstream's ids are `evt_<index>`).
struct Timeline {
    sent: Vec<OnceLock<Instant>>,
    arrived: Vec<OnceLock<Instant>>,
    delivered: AtomicUsize,
    duplicates: AtomicU64,
    requests: AtomicU64,
    /// Set when the last event arrived.
    done: tokio::sync::Notify,
    /// What the receiver could not read (the first problem), if anything.
    unreadable: OnceLock<String>,
}

impl Timeline {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            sent: (0..n).map(|_| OnceLock::new()).collect(),
            arrived: (0..n).map(|_| OnceLock::new()).collect(),
            delivered: AtomicUsize::new(0),
            duplicates: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            done: tokio::sync::Notify::new(),
            unreadable: OnceLock::new(),
        })
    }

    fn complete(&self) -> bool {
        self.delivered.load(Ordering::Acquire) >= self.sent.len()
    }
}

/// One run's figures.
#[derive(Serialize)]
struct RunFigures {
    run: &'static str,
    events: usize,
    seconds: f64,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// From the first event sent to the first event delivered (any event).
    first_delivery_ms: f64,
    /// Requests the receiver got (batches).
    requests: u64,
    /// Events that arrived more than once.
    duplicates: u64,
}

fn figures(run: &'static str, tl: &Timeline) -> anyhow::Result<RunFigures> {
    let n = tl.sent.len();
    let mut ms = Vec::with_capacity(n);
    let (mut first, mut last, mut earliest) = (None::<Instant>, None::<Instant>, None::<Instant>);
    for i in 0..n {
        let (Some(&s), Some(&a)) = (tl.sent[i].get(), tl.arrived[i].get()) else {
            anyhow::bail!("{run}: event {i} was not both sent and delivered");
        };
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(a, |l| l.max(a)));
        earliest = Some(earliest.map_or(a, |e| e.min(a)));
        ms.push(a.saturating_duration_since(s).as_secs_f64() * 1000.0);
    }
    let (Some(first), Some(last), Some(earliest)) = (first, last, earliest) else {
        anyhow::bail!("{run}: no events");
    };
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    let seconds = last.saturating_duration_since(first).as_secs_f64();
    Ok(RunFigures {
        run,
        events: n,
        seconds,
        events_per_s: n as f64 / seconds.max(f64::MIN_POSITIVE),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
        first_delivery_ms: earliest.saturating_duration_since(first).as_secs_f64() * 1000.0,
        requests: tl.requests.load(Ordering::Relaxed),
        duplicates: tl.duplicates.load(Ordering::Relaxed),
    })
}

/// Servers of one run, stopped when dropped.
/// Tasks of one run (servers, the peer), aborted when dropped.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn serve(app: axum::Router) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok((format!("http://{addr}"), task))
}

/// A Grantex-shaped event, `createdAt` its send time.
fn grantex_event(i: usize) -> String {
    let now = time::OffsetDateTime::now_utc();
    let created = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    );
    let ty = ["grant.created", "token.issued", "grant.revoked"][i % 3];
    format!(
        r#"{{"id":"evt_{i:010}","type":"{ty}","createdAt":"{created}","data":{{"agent":{{"id":"ag_{}","name":"agent {}"}},"grantId":"grnt_{i:012}","scopes":["read:calendar","write:email"],"sentAtUs":{}}}}}"#,
        i % 97,
        i % 97,
        now.unix_timestamp_nanos() / 1000
    )
}

/// The SSE upstream: the first connection gets the `n` events as fast as
/// it reads them (each stamped when the connection's buffer takes it), then
/// stays open; any later connection gets an open stream without events (a
/// reconnect would otherwise count events twice).
async fn upstream(tl: Arc<Timeline>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = axum::Router::new().route(
        STREAM_PATH,
        axum::routing::get(move || {
            let (tl, first) = (tl.clone(), !served.swap(true, Ordering::SeqCst));
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<
                    Result<bytes::Bytes, std::convert::Infallible>,
                >(32);
                tokio::spawn(async move {
                    if first {
                        for i in 0..tl.sent.len() {
                            // Stamped once the stream has room: the
                            // reader's pace, not the upstream's.
                            let Ok(permit) = tx.reserve().await else {
                                return;
                            };
                            let _ = tl.sent[i].set(Instant::now());
                            permit.send(Ok(bytes::Bytes::from(format!(
                                "data: {}\n\n",
                                grantex_event(i)
                            ))));
                        }
                    }
                    // Open until the reader goes away.
                    tx.closed().await;
                });
                let body = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|x| (x, rx))
                });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .header("cache-control", "no-cache")
                    .body(axum::body::Body::from_stream(body))
                    .unwrap_or_default()
            }
        }),
    );
    serve(app).await
}

/// A Datadog Logs receiver: `POST /api/v2/logs`, a JSON array of entries,
/// gzip or not; records each event's first arrival by the id in its
/// `message`.
async fn receiver(tl: Arc<Timeline>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        id: &'a str,
    }
    let app = axum::Router::new().route(
        "/api/v2/logs",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tl = tl.clone();
                async move {
                    let at = Instant::now();
                    tl.requests.fetch_add(1, Ordering::Relaxed);
                    let gzip = headers
                        .get("content-encoding")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
                    let mut raw = Vec::new();
                    let body: &[u8] = if gzip {
                        if let Err(e) = std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&body[..]),
                            &mut raw,
                        ) {
                            let _ = tl.unreadable.set(format!("a gzip body: {e}"));
                            return axum::http::StatusCode::BAD_REQUEST;
                        }
                        &raw
                    } else {
                        &body
                    };
                    let entries: Vec<Entry> = match serde_json::from_slice(body) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tl.unreadable.set(format!("a body: {e}"));
                            return axum::http::StatusCode::BAD_REQUEST;
                        }
                    };
                    for e in entries {
                        let index = serde_json::from_str::<Message<'_>>(&e.message)
                            .ok()
                            .and_then(|m| m.id.strip_prefix("evt_")?.parse::<usize>().ok())
                            .filter(|&i| i < tl.arrived.len());
                        let Some(i) = index else {
                            let _ = tl
                                .unreadable
                                .set(format!("an entry without a known id: {}", e.message));
                            continue;
                        };
                        if tl.arrived[i].set(at).is_err() {
                            tl.duplicates.fetch_add(1, Ordering::Relaxed);
                        } else if tl.delivered.fetch_add(1, Ordering::AcqRel) + 1
                            == tl.arrived.len()
                        {
                            tl.done.notify_one();
                        }
                    }
                    axum::http::StatusCode::ACCEPTED
                }
            },
        ),
    );
    serve(app).await
}

/// The configuration trailkeep runs with (and the peer's batching comes
/// from): one SSE source, one Datadog destination with its defaults.
fn config_text(upstream: &str, receiver: &str) -> String {
    format!(
        "[[sources]]\nname = \"grantex\"\ntype = \"sse\"\nurl = \"{upstream}{STREAM_PATH}\"\nstream = \"grantex\"\nallow_private = true\n\n\
         [[destinations]]\nname = \"datadog\"\ntype = \"datadog_logs\"\nurl = \"{receiver}\"\nsecret_env = \"{DD_KEY_ENV}\"\nencoding = \"grantex\"\nallow_private = true\n"
    )
}

/// Waits until every event arrived, `check` fails, or the timeout passes.
async fn wait_delivered(
    tl: &Timeline,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !tl.complete() {
        check()?;
        if let Some(e) = tl.unreadable.get() {
            anyhow::bail!("{what}: the receiver could not read {e}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: {} of {} events delivered after {} s (raise --timeout-secs if the machine is slow)",
            tl.delivered.load(Ordering::Relaxed),
            tl.sent.len(),
            timeout.as_secs()
        );
        // Woken by the last arrival; the periodic check catches a child
        // that exited.
        let _ = tokio::time::timeout(Duration::from_millis(100), tl.done.notified()).await;
    }
    Ok(())
}

/// Run 1: a real `trailkeep serve` between the upstream and the receiver.
async fn run_trailkeep(args: &E2eBenchArgs, tmp: &Path) -> anyhow::Result<RunFigures> {
    let tl = Timeline::new(args.events);
    let (up, up_task) = upstream(tl.clone()).await?;
    let (dd, dd_task) = receiver(tl.clone()).await?;
    let _tasks = Tasks(vec![up_task.abort_handle(), dd_task.abort_handle()]);
    let data = tmp.join("data");
    let config = tmp.join("trailkeep.toml");
    std::fs::write(&config, config_text(&up, &dd))?;
    let mut child = super::bench_child::ServeChild::start(&super::bench_child::ServeSpec {
        config: &config,
        data_dir: &data,
        log: &tmp.join("serve.log"),
        env: &[(DD_KEY_ENV, "bench-dd-key")],
    })
    .await?;
    wait_delivered(
        &tl,
        "trailkeep",
        Duration::from_secs(args.timeout_secs),
        || child.check(),
    )
    .await?;
    drop(child);
    figures("trailkeep", &tl)
}

/// A Datadog Logs entry as Grantex's `DatadogDestination` makes it.
fn grantex_entry(e: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "ddsource": "grantex",
        "ddtags": format!("type:{}", e["type"].as_str().unwrap_or_default()),
        "hostname": "grantex-auth-service",
        "message": e.to_string(),
        "service": "grantex",
    })
}

/// Run 2: the peer, a forwarder that neither stores nor chains anything.
async fn run_peer(
    args: &E2eBenchArgs,
    max_events: usize,
    max_age: Duration,
) -> anyhow::Result<RunFigures> {
    let tl = Timeline::new(args.events);
    let (up, up_task) = upstream(tl.clone()).await?;
    let (dd, dd_task) = receiver(tl.clone()).await?;
    let mut tasks = Tasks(vec![up_task.abort_handle(), dd_task.abort_handle()]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    // The first error of the reader or the sender.
    let failed = Arc::new(OnceLock::<String>::new());
    let fail = |failed: &OnceLock<String>, r: anyhow::Result<()>| {
        if let Err(e) = r {
            let _ = failed.set(format!("{e:#}"));
        }
    };
    // Reader: parse each frame's data, as Grantex's client does.
    let reader = {
        let client = reqwest::Client::new();
        let failed = failed.clone();
        tokio::spawn(async move {
            let r = async move {
                let resp = client
                    .get(format!("{up}{STREAM_PATH}"))
                    .header("accept", "text/event-stream")
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| anyhow::anyhow!("peer: reading the upstream: {e}"))?;
                let mut frames = resp.bytes_stream().eventsource();
                while let Some(f) = frames.next().await {
                    let f = f.map_err(|e| anyhow::anyhow!("peer: the upstream's stream: {e}"))?;
                    let v: serde_json::Value = serde_json::from_str(&f.data)
                        .map_err(|e| anyhow::anyhow!("peer: an event that is not JSON: {e}"))?;
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Ok::<(), anyhow::Error>(())
            }
            .await;
            fail(&failed, r);
        })
    };
    // Sender: one request in flight; a batch is what is ready (up to
    // `max_events`), or what gathers within `max_age` of its first event.
    let sender = {
        let failed = failed.clone();
        tokio::spawn(async move {
            let r = async move {
                let url = format!("{dd}/api/v2/logs");
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    if !max_age.is_zero() {
                        let deadline = tokio::time::Instant::now() + max_age;
                        while batch.len() < max_events {
                            match tokio::time::timeout_at(deadline, rx.recv()).await {
                                Ok(Some(v)) => batch.push(v),
                                Ok(None) | Err(_) => break,
                            }
                        }
                    }
                    while batch.len() < max_events {
                        match rx.try_recv() {
                            Ok(v) => batch.push(v),
                            Err(_) => break,
                        }
                    }
                    let entries: Vec<serde_json::Value> = batch.iter().map(grantex_entry).collect();
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("dd-api-key", "bench-dd-key")
                        .body(serde_json::to_vec(&entries)?)
                        .send()
                        .await
                        .map_err(|e| anyhow::anyhow!("peer: posting a batch: {e}"))?;
                    anyhow::ensure!(
                        resp.status().is_success(),
                        "peer: the receiver answered {}",
                        resp.status()
                    );
                    let _ = resp.bytes().await;
                }
                Ok::<(), anyhow::Error>(())
            }
            .await;
            fail(&failed, r);
        })
    };
    tasks
        .0
        .extend([reader.abort_handle(), sender.abort_handle()]);
    wait_delivered(
        &tl,
        "peer",
        Duration::from_secs(args.timeout_secs),
        || match failed.get() {
            Some(e) => anyhow::bail!("{e}"),
            None => Ok(()),
        },
    )
    .await?;
    figures("peer (no store, no chain)", &tl)
}

/// Grantex's `DatadogDestination` default batch size.
const GRANTEX_BATCH: usize = 100;

/// Run 3: a forwarder that behaves as Grantex's client does, under Node.
/// `None` when `node` cannot be started.
async fn run_grantex(args: &E2eBenchArgs, tmp: &Path) -> anyhow::Result<Option<RunFigures>> {
    let script = tmp.join("bench_e2e_grantex.mjs");
    std::fs::write(&script, include_str!("bench_e2e_grantex.mjs"))?;
    let tl = Timeline::new(args.events);
    let (up, up_task) = upstream(tl.clone()).await?;
    let (dd, dd_task) = receiver(tl.clone()).await?;
    let _tasks = Tasks(vec![up_task.abort_handle(), dd_task.abort_handle()]);
    let stderr = tmp.join("grantex.log");
    let child = std::process::Command::new("node")
        .arg(&script)
        .arg(format!("{up}{STREAM_PATH}"))
        .arg(format!("{dd}/api/v2/logs"))
        .arg(args.events.to_string())
        .arg(GRANTEX_BATCH.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn();
    let mut child = match child {
        Ok(c) => super::bench_child::KillOnDrop(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("starting node: {e}")),
    };
    wait_delivered(
        &tl,
        "grantex-like client",
        Duration::from_secs(args.timeout_secs),
        || match child.0.try_wait() {
            Ok(Some(st)) if !st.success() => {
                anyhow::bail!(
                    "the node client exited with {st}: {}",
                    super::bench_child::log_tail(&stderr)
                )
            }
            _ => Ok(()),
        },
    )
    .await?;
    figures("grantex-like client (node)", &tl).map(Some)
}

pub(super) async fn run(args: &E2eBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    // The peer batches as trailkeep's Datadog destination does by default:
    // the settings come from the same configuration.
    let cfg =
        crate::config::RawConfig::parse(&config_text("http://127.0.0.1:1", "http://127.0.0.1:2"))
            .map_err(|e| anyhow::anyhow!("the benchmark's configuration: {e}"))?
            .validate(&crate::config::Overrides::default())
            .map_err(|e| anyhow::anyhow!("the benchmark's configuration: {e}"))?;
    let driver = &cfg
        .destinations
        .first()
        .ok_or_else(|| anyhow::anyhow!("the benchmark's configuration has no destination"))?
        .driver;
    let (max_events, max_age) = (driver.max_events, driver.max_age);
    let tmp = super::bench::tempdir()?;
    let ours = run_trailkeep(args, &tmp).await;
    let grantex = match &ours {
        Ok(_) => run_grantex(args, &tmp).await,
        Err(_) => Ok(None),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let (ours, grantex) = (ours?, grantex?);
    let peer = run_peer(args, max_events, max_age).await?;
    let ratio = ours.events_per_s / peer.events_per_s.max(f64::MIN_POSITIVE);
    let grantex_ratio = grantex
        .as_ref()
        .map(|g| ours.events_per_s / g.events_per_s.max(f64::MIN_POSITIVE));
    let runs: Vec<&RunFigures> = [Some(&ours), Some(&peer), grantex.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "events": args.events,
                "batch_max_events": max_events,
                "batch_max_age_ms": max_age.as_millis(),
                "runs": runs,
                "events_per_s_trailkeep_over_peer": ratio,
                "events_per_s_trailkeep_over_grantex_like": grantex_ratio,
            })
        );
    } else {
        println!(
            "end to end: {} events, SSE upstream -> trailkeep or the peer -> Datadog Logs receiver (all on 127.0.0.1)",
            args.events
        );
        println!(
            "batches of up to {max_events} events, max age {} ms; latency = arrival at the receiver - send by the upstream",
            max_age.as_millis()
        );
        println!(
            "{:<26} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "run", "events/s", "seconds", "p50 ms", "p99 ms", "max ms", "first ms", "requests"
        );
        for r in [Some(&ours), Some(&peer), grantex.as_ref()]
            .into_iter()
            .flatten()
        {
            println!(
                "{:<26} {:>10.0} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9}",
                r.run,
                r.events_per_s,
                r.seconds,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.first_delivery_ms,
                r.requests
            );
        }
        println!(
            "first ms: first event sent to first event delivered; requests: batches the receiver got"
        );
        println!("events/s trailkeep / peer: {ratio:.2}x");
        match grantex_ratio {
            Some(r) => println!("events/s trailkeep / grantex-like client: {r:.2}x"),
            None => println!("grantex-like client: skipped (node is not installed)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
