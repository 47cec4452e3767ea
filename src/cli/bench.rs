//! `trailkeep bench ingest`: HTTP ingest throughput and ack latency beside
//! the raw SQLite limit measured in the same run.
//!
//! Without `--url` it starts a server in-process on a temporary data
//! directory (same machine, same cores: the figures include the server's
//! cost of parsing, validating, hashing and committing).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use rusqlite::params;
use serde::Serialize;

use crate::auth::{Scope, generate};
use crate::config::{Config, Overrides, RawConfig};
use crate::store::Store;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// HTTP ingest: events/s, MB/s, p50/p99 ack latency, and the raw SQLite limit.
    Ingest(IngestArgs),
}

/// Arguments of `bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// A running server's base URL; default: start one in-process.
    #[arg(long, env = "TRAILKEEP_URL")]
    pub url: Option<String>,
    /// Ingest token for `--url`.
    #[arg(long, env = "TRAILKEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10, env = "TRAILKEEP_DURATION_SECS")]
    pub duration_secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64, env = "TRAILKEEP_CLIENTS")]
    pub clients: usize,
    /// Rows for the raw SQLite limit.
    #[arg(long, default_value_t = 300_000, env = "TRAILKEEP_RAW_ROWS")]
    pub raw_rows: usize,
    /// Run only this scenario (batch100, single, single_paced_5000).
    #[arg(long, env = "TRAILKEEP_ONLY")]
    pub only: Option<String>,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Scenario {
    name: String,
    clients: usize,
    batch: usize,
    target_events_per_sec: Option<u64>,
    events: u64,
    events_per_sec: f64,
    mb_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn event_json(i: u64) -> String {
    format!(
        r#"{{"type":"grant.created","actor":{{"id":"user-{}","kind":"user"}},"subject":"agent-{}","data":{{"grant_id":"grnt_{i:012}","scopes":["read:calendar","write:email"],"expires_in":3600}}}}"#,
        i % 1000,
        i % 97
    )
}

/// Where and how to send load.
struct Target<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    token: &'a str,
    duration: Duration,
}

async fn scenario(
    t: &Target<'_>,
    name: &str,
    clients: usize,
    batch: usize,
    rate: Option<u64>,
) -> Scenario {
    let (client, url, token, duration) = (t.client, t.url, t.token, t.duration);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = client.clone();
        let endpoint = format!("{url}/v1/streams/bench-{}/events", c % 4);
        let auth = format!("Bearer {token}");
        // Paced clients send one request per `interval` each.
        let interval = rate.map(|r| Duration::from_secs_f64((clients * batch) as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut events, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            let mut i = (c as u64) << 40;
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(c as f64 / clients as f64));
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let body = if batch == 1 {
                    i += 1;
                    event_json(i)
                } else {
                    let items: Vec<String> = (0..batch)
                        .map(|_| {
                            i += 1;
                            event_json(i)
                        })
                        .collect();
                    format!("[{}]", items.join(","))
                };
                let len = body.len() as u64;
                let t = Instant::now();
                let ok = match client
                    .post(&endpoint)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                    events += batch as u64;
                    bytes += len;
                } else {
                    errors += 1;
                }
            }
            (lat, events, bytes, errors)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let (mut events, mut bytes, mut errors) = (0, 0, 0);
    for t in tasks {
        if let Ok((l, e, b, x)) = t.await {
            lat.extend(l);
            events += e;
            bytes += b;
            errors += x;
        }
    }
    let secs = started.elapsed().as_secs_f64().max(duration.as_secs_f64());
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Scenario {
        name: name.into(),
        clients,
        batch,
        target_events_per_sec: rate,
        events,
        events_per_sec: events as f64 / secs,
        mb_per_sec: bytes as f64 / secs / 1e6,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    }
}

/// Inserts `rows` rows shaped like stored events into the same schema with
/// WAL + synchronous=FULL in 1,000-row transactions; returns rows/s.
fn raw_sqlite_limit(dir: &std::path::Path, rows: usize) -> anyhow::Result<f64> {
    let path = dir.join("raw.db");
    drop(crate::store::sqlite::SqliteStore::open(&path)?); // same schema
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(
        "INSERT INTO streams (id, name, head_seq, head_hash, created) VALUES (1, 'raw', 0, '', '')",
        [],
    )?;
    let limits = crate::event::Limits::default();
    let received = crate::event::format_received(time::OffsetDateTime::now_utc());
    let rows_data: Vec<(String, String, String)> = (0..rows as u64)
        .map(|i| {
            let v: serde_json::Value = serde_json::from_str(&event_json(i)).unwrap_or_default();
            let ev = crate::event::validate(0, v, &received, &limits)
                .map_err(|r| anyhow::anyhow!(r.message))?;
            let body = String::from_utf8(crate::event::canonical_bytes(
                &ev,
                "raw",
                i + 1,
                crate::chain::ZERO_HASH_HEX,
            ))?;
            Ok((
                ev.id,
                hex::encode(crate::chain::event_hash(body.as_bytes())),
                body,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    for (chunk_no, chunk) in rows_data.chunks(1000).enumerate() {
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) VALUES (1, ?1, ?2, 'grant.created', ?3, ?3, ?4, ?5)",
            )?;
            for (j, (id, hash, body)) in chunk.iter().enumerate() {
                ins.execute(params![
                    (chunk_no * 1000 + j + 1) as i64,
                    id,
                    received,
                    hash,
                    body
                ])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub(super) async fn run(config: &Config, cmd: &BenchCommand) -> anyhow::Result<ExitCode> {
    let BenchCommand::Ingest(args) = cmd;
    let tmp = tempdir()?;
    let (url, token, server) = match &args.url {
        Some(u) => (
            u.trim_end_matches('/').to_owned(),
            args.token
                .clone()
                .context("--token is required with --url")?,
            None,
        ),
        None => {
            let data_dir = tmp.join("data");
            let mut cfg = RawConfig::default().validate(&Overrides {
                data_dir: Some(data_dir.clone()),
                listen: Some("127.0.0.1:0".into()),
            })?;
            cfg.log_name = config.log_name.clone();
            let store = crate::server::open_store(&data_dir)?;
            let (rec, token) = generate(Scope::Ingest, "*", "bench");
            store.create_key(rec).await?;
            drop(store);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(crate::server::run(cfg, listener, async move {
                let _ = stopped.await;
            }));
            (format!("http://{addr}"), token, Some((stop, handle)))
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let d = Duration::from_secs(args.duration_secs);
    let c = args.clients;
    // The raw limit is measured before and after the load; the higher figure
    // is the limit (shared machines vary; the higher limit gives the
    // conservative ratio).
    let raw_before = raw_limit(&tmp, "raw-before", args.raw_rows).await?;
    let mut results = Vec::new();
    let target = Target {
        client: &client,
        url: &url,
        token: &token,
        duration: d,
    };
    let scenarios: [(&str, usize, Option<u64>); 3] = [
        ("batch100", 100, None),
        ("single", 1, None),
        ("single_paced_5000", 1, Some(5000)),
    ];
    for (name, batch, rate) in scenarios {
        if args.only.as_deref().is_none_or(|o| o == name) {
            results.push(scenario(&target, name, c, batch, rate).await);
        }
    }
    if let Some((stop, handle)) = server {
        let _ = stop.send(());
        handle.await??;
    }
    let raw_after = raw_limit(&tmp, "raw-after", args.raw_rows).await?;
    let raw = raw_before.max(raw_after);
    let _ = std::fs::remove_dir_all(&tmp);
    let best = results
        .iter()
        .find(|r| r.batch > 1)
        .map_or(0.0, |r| r.events_per_sec);
    let ratio = best / raw;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"scenarios": results, "raw_sqlite_rows_per_sec": raw, "raw_before": raw_before, "raw_after": raw_after, "batch100_over_raw": ratio, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)})
        );
    } else {
        println!(
            "{:<20} {:>7} {:>5} {:>10} {:>12} {:>8} {:>8} {:>8} {:>6}",
            "scenario",
            "clients",
            "batch",
            "target/s",
            "events/s",
            "MB/s",
            "p50 ms",
            "p99 ms",
            "errors"
        );
        for r in &results {
            println!(
                "{:<20} {:>7} {:>5} {:>10} {:>12.0} {:>8.2} {:>8.2} {:>8.2} {:>6}",
                r.name,
                r.clients,
                r.batch,
                r.target_events_per_sec
                    .map_or("-".into(), |t| t.to_string()),
                r.events_per_sec,
                r.mb_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.errors
            );
        }
        println!(
            "raw SQLite limit (WAL, synchronous=FULL, 1,000-row transactions): {raw:.0} rows/s"
        );
        println!("batch100 / raw limit: {:.1}%", ratio * 100.0);
    }
    Ok(ExitCode::SUCCESS)
}

async fn raw_limit(tmp: &std::path::Path, name: &str, rows: usize) -> anyhow::Result<f64> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    tokio::task::spawn_blocking(move || raw_sqlite_limit(&dir, rows)).await?
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let p = std::env::temp_dir().join(format!("trailkeep-bench-{}", hex::encode(b)));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

#[allow(dead_code)]
fn _assert_send(_: Arc<dyn Store>) {}
