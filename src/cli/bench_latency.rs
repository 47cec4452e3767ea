//! `trailkeep bench latency`: on an idle system, the time from an append's
//! acknowledgement to the event's arrival at a local webhook receiver, with
//! drivers woken by commits beside the same drivers polling only (how they
//! ran before issue #18), in the same run. Target: p99 under 50 ms.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::destinations::driver::{DriverHandle, DriverSettings, run as drive};
use crate::destinations::{HttpClient, encoding::Encoding, webhook};
use crate::event::{Limits, format_received, validate};
use crate::ingest::{Appender, BatchLimits};
use crate::store::Store;

/// Arguments of `bench latency`.
#[derive(Debug, Args)]
pub struct LatencyBenchArgs {
    /// Events sent one at a time, each after the previous one arrived.
    #[arg(long, default_value_t = 200)]
    pub events: usize,
    /// Pause between events, ms (the system is idle in between).
    #[arg(long, default_value_t = 20)]
    pub pause_ms: u64,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

#[derive(Serialize)]
struct Mode {
    mode: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// One mode: a fresh store, appender and webhook driver; `events` single
/// appends, each timed from its ack to its arrival.
async fn measure(args: &LatencyBenchArgs, on_commit: bool) -> anyhow::Result<Mode> {
    let tmp = super::bench::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(crate::store::sqlite::SqliteStore::open(
        &tmp.join("hot.db"),
    )?);
    let (appender, batcher) = Appender::start(store.clone(), BatchLimits::default());
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let app = axum::Router::new().fallback(move || {
        let tx = arrived_tx.clone();
        async move {
            let _ = tx.send(Instant::now());
            axum::http::StatusCode::OK
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let secret = crate::secret::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    let dest = Arc::new(webhook::WebhookDestination::new(
        &format!("http://{addr}/hook"),
        &secret,
        HttpClient::new(
            crate::net::Policy::new(true, "the benchmark"),
            Duration::from_secs(10),
        ),
        Encoding::Trailkeep,
    )?);
    let settings = DriverSettings {
        max_age: Duration::ZERO,
        commits: on_commit.then(|| appender.commits()),
        ..DriverSettings::new("latency")
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(drive(
        store.clone(),
        crate::node::NodeId::random(),
        dest,
        settings,
        DriverHandle::default(),
        stop_rx,
    ));
    let mut ms = Vec::with_capacity(args.events);
    for i in 0..args.events {
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        let received = format_received(time::OffsetDateTime::now_utc());
        let event = validate(
            0,
            serde_json::json!({"type": "grant.created", "data": {"i": i}}),
            &received,
            &Limits::default(),
        )
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        appender.append("latency".into(), vec![event]).await?;
        let acked = Instant::now();
        let at = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
            .await
            .map_err(|_| anyhow::anyhow!("event {i} did not arrive within 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("receiver stopped"))?;
        ms.push(at.saturating_duration_since(acked).as_secs_f64() * 1000.0);
    }
    let _ = stop_tx.send(true);
    let _ = driver.await;
    drop(appender);
    let _ = batcher.await;
    server.abort();
    let _ = std::fs::remove_dir_all(&tmp);
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok(Mode {
        mode: if on_commit {
            "woken by commits"
        } else {
            "polling (200 ms)"
        },
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    })
}

pub(super) async fn run(args: &LatencyBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let commit = measure(args, true).await?;
    let poll = measure(args, false).await?;
    let ratio = poll.p99_ms / commit.p99_ms.max(f64::MIN_POSITIVE);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"events": args.events, "target_p99_ms": 50, "modes": [commit, poll], "p99_polling_over_commit": ratio})
        );
    } else {
        println!(
            "ack to arrival at a local webhook, {} single events on an idle system (target p99 < 50 ms)",
            args.events
        );
        println!(
            "{:<18} {:>8} {:>8} {:>8}",
            "mode", "p50 ms", "p99 ms", "max ms"
        );
        for m in [&commit, &poll] {
            println!(
                "{:<18} {:>8.1} {:>8.1} {:>8.1}",
                m.mode, m.p50_ms, m.p99_ms, m.max_ms
            );
        }
        println!("p99 polling / woken by commits: {ratio:.1}x");
    }
    Ok(ExitCode::SUCCESS)
}
