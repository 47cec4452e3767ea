//! `trailkeep bench destinations`: delivery to local receivers while events
//! are ingested at a sustained rate (default 10,000 events/s), beside the
//! ingest rate achieved in the same run. Target: every destination keeps up
//! with lag under 5 s.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::destinations::driver::{DriverHandle, DriverSettings, run as drive};
use crate::destinations::{
    Destination, HttpClient, encoding::Encoding, file, http, object, webhook,
};
use crate::event::{Limits, format_received, validate};
use crate::store::{AppendGroup, Store};

/// Arguments of `bench destinations`.
#[derive(Debug, Args)]
pub struct DestinationsBenchArgs {
    /// Ingest rate, events/s.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of sustained ingest.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    destination: &'static str,
    delivered: u64,
    events_per_s: f64,
    max_lag_s: f64,
    caught_up_after_s: f64,
}

async fn counting_receiver(count: Arc<AtomicU64>, kind: &'static str) -> anyhow::Result<String> {
    use axum::body::Bytes;
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let count = count.clone();
        async move {
            let n = match kind {
                "webhook" => serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["data"]["events"].as_array().map(Vec::len))
                    .unwrap_or(0),
                "splunk" => serde_json::Deserializer::from_slice(&body)
                    .into_iter::<serde_json::Value>()
                    .count(),
                _ => {
                    let mut raw = Vec::new();
                    let _ = std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&body[..]),
                        &mut raw,
                    );
                    serde_json::from_slice::<Vec<serde_json::Value>>(&raw).map_or(0, |v| v.len())
                }
            };
            count.fetch_add(n as u64, Ordering::Relaxed);
            if kind == "datadog" {
                axum::http::StatusCode::ACCEPTED
            } else {
                axum::http::StatusCode::OK
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(format!("http://{addr}"))
}

pub(super) async fn run(args: &DestinationsBenchArgs) -> anyhow::Result<ExitCode> {
    let tmp = super::bench::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(crate::store::sqlite::SqliteStore::open(
        &tmp.join("hot.db"),
    )?);
    let secret = crate::secret::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    let token = crate::secret::Secret::new("bench-token".into());
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    let hook = counting_receiver(counts[0].clone(), "webhook").await?;
    let hec = counting_receiver(counts[1].clone(), "splunk").await?;
    let dd = counting_receiver(counts[2].clone(), "datadog").await?;
    let bucket = crate::archive::Bucket::open(
        url::Url::from_directory_path(tmp.join("objects"))
            .map_err(|()| anyhow::anyhow!("path"))?
            .as_str(),
        &crate::archive::BucketOptions::default(),
    )?;
    let t = Duration::from_secs(10);
    // The benchmark's receivers listen on loopback.
    let local = crate::net::Policy::new(true, "the benchmark");
    let dests: Vec<(&'static str, Arc<dyn Destination>)> = vec![
        (
            "webhook",
            Arc::new(webhook::WebhookDestination::new(
                &format!("{hook}/hook"),
                &secret,
                HttpClient::new(local.clone(), t),
                Encoding::Trailkeep,
            )?),
        ),
        (
            "splunk_hec",
            Arc::new(http::SplunkHec::new(
                &hec,
                token.clone(),
                http::HecSettings::default(),
                Encoding::Trailkeep,
                HttpClient::new(local.clone(), t),
            )),
        ),
        (
            "datadog_logs",
            Arc::new(http::DatadogLogs::new(
                &dd,
                token,
                http::DatadogSettings::default(),
                Encoding::Trailkeep,
                HttpClient::new(local.clone(), t),
            )),
        ),
        (
            "file",
            Arc::new(file::FileDestination::new(
                tmp.join("out.ndjson"),
                1 << 30,
                1,
            )),
        ),
        (
            "s3_local_dir",
            Arc::new(object::ObjectDestination::new(
                bucket,
                object::ObjectCompression::Gzip,
                Encoding::Trailkeep,
            )),
        ),
    ];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for (name, d) in &dests {
        let settings = DriverSettings {
            max_events: 1000,
            max_age: Duration::from_millis(200),
            poll: Duration::from_millis(50),
            ..DriverSettings::new(name)
        };
        let h = DriverHandle::default();
        tasks.push(tokio::spawn(drive(
            store.clone(),
            crate::node::NodeId::random(),
            d.clone(),
            settings.clone(),
            h.clone(),
            stop_rx.clone(),
        )));
        handles.push((*name, h, settings));
    }

    // Sustained ingest: a group every 10 ms.
    let per_tick = (args.rate / 100).max(1);
    let total = per_tick * 100 * args.duration_secs;
    let ingest = {
        let store = store.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            while sent < total {
                tick.tick().await;
                let received = format_received(time::OffsetDateTime::now_utc());
                let events = (sent..sent + per_tick)
                    .map(|i| validate(i as usize, serde_json::json!({"type": "grant.created", "actor": {"id": format!("u{}", i % 1000)}, "data": {"i": i}}), &received, &Limits::default()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                store
                    .append(vec![AppendGroup {
                        sealed: None,
                        stream: "bench".into(),
                        events,
                    }])
                    .await?;
                sent += per_tick;
            }
            Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64())
        })
    };
    let start = Instant::now();
    let mut max_lag = vec![0.0_f64; handles.len()];
    let mut caught = vec![None::<f64>; handles.len()];
    let deadline = Duration::from_secs(args.duration_secs + 60);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ingest_done = ingest.is_finished();
        for (i, (name, _, s)) in handles.iter().enumerate() {
            let lags = crate::destinations::lags(store.as_ref(), name, &s.filter).await?;
            let lag = lags
                .iter()
                .filter_map(|l| l.lag_seconds)
                .fold(0.0, f64::max);
            max_lag[i] = max_lag[i].max(lag);
            let done = lags.iter().all(|l| l.cursor >= total) && !lags.is_empty();
            if done && caught[i].is_none() {
                caught[i] = Some(start.elapsed().as_secs_f64());
            }
        }
        if (ingest_done && caught.iter().all(Option::is_some)) || start.elapsed() > deadline {
            break;
        }
    }
    let ingest_secs = ingest.await??;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let rows: Vec<Row> = handles
        .iter()
        .enumerate()
        .map(|(i, (name, h, _))| {
            let secs = caught[i].unwrap_or(f64::NAN);
            Row {
                destination: name,
                delivered: h.status().delivered,
                events_per_s: h.status().delivered as f64 / secs.max(ingest_secs),
                max_lag_s: max_lag[i],
                caught_up_after_s: secs,
            }
        })
        .collect();
    let receivers: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let ingest_rate = total as f64 / ingest_secs;
    let _ = std::fs::remove_dir_all(&tmp);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"ingest_events_per_s": ingest_rate, "events": total, "destinations": rows, "receiver_counts": receivers})
        );
    } else {
        println!(
            "ingest: {total} events in {ingest_secs:.1} s = {ingest_rate:.0} events/s (target {})",
            args.rate
        );
        println!(
            "{:<14} {:>10} {:>12} {:>10} {:>14}",
            "destination", "delivered", "events/s", "max lag s", "caught up at s"
        );
        for r in &rows {
            println!(
                "{:<14} {:>10} {:>12.0} {:>10.2} {:>14.1}",
                r.destination, r.delivered, r.events_per_s, r.max_lag_s, r.caught_up_after_s
            );
        }
        println!(
            "receivers counted: webhook {}, splunk_hec {}, datadog_logs {}",
            receivers[0], receivers[1], receivers[2]
        );
    }
    Ok(ExitCode::SUCCESS)
}
