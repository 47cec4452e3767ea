//! `trailkeep bench ingest`: HTTP ingest throughput and ack latency beside
//! the raw SQLite limit measured in the same run.
//!
//! Without `--url` it starts a server in-process on a temporary data
//! directory (same machine, same cores: the figures include the server's
//! cost of parsing, validating, hashing and committing).

use crate::store::EventStore;
use crate::store::KeyStore;
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
    /// HTTP ingest on PostgreSQL with 1 and 3 nodes, beside the raw limit
    /// (batched INSERT of the same rows, same durability). Works in a scratch
    /// schema that it drops afterwards.
    Postgres(PostgresArgs),
    /// Archive throughput (MB/s) and offline verify throughput (events/s),
    /// beside the compressor's own speed and decompression + SHA-256 on the
    /// same bytes.
    Archive(super::bench_archive::ArchiveBenchArgs),
    /// Delivery to local receivers (webhook, Splunk HEC, Datadog, file,
    /// object store) under sustained ingest: events/s and lag.
    Destinations(super::bench_destinations::DestinationsBenchArgs),
    /// Delivery latency on an idle system: ack to arrival at a local
    /// webhook, drivers woken by commits beside polling drivers.
    Latency(super::bench_latency::LatencyBenchArgs),
    /// SQL over an archive of N events (most archived): three questions,
    /// each beside DuckDB reading the same objects (time, bytes, ratio).
    Query(super::bench_query::QueryBenchArgs),
    /// End to end (issue #18): an SSE upstream through `trailkeep serve`
    /// to a Datadog receiver, beside a forwarder that neither stores nor
    /// chains (events/s, first-delivery latency).
    E2e(super::bench_e2e::E2eBenchArgs),
}

/// Arguments of `bench postgres`.
#[derive(Debug, Args)]
pub struct PostgresArgs {
    /// The database to use (a scratch schema is created and dropped in it).
    #[arg(long, env = "TRAILKEEP_BENCH_POSTGRES_URL", hide_env_values = true)]
    pub postgres: String,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10, env = "TRAILKEEP_DURATION_SECS")]
    pub duration_secs: u64,
    /// Concurrent clients (spread over the nodes).
    #[arg(long, default_value_t = 64, env = "TRAILKEEP_CLIENTS")]
    pub clients: usize,
    /// Rows for the raw limit.
    #[arg(long, default_value_t = 200_000, env = "TRAILKEEP_RAW_ROWS")]
    pub raw_rows: usize,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

/// Arguments of `bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// A running server's base URL (`http://host:port`); default: start one in-process.
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
    /// Streams the clients spread over (the raw limit uses the same layout).
    #[arg(long, default_value_t = 4, env = "TRAILKEEP_STREAMS")]
    pub streams: usize,
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
    /// Node URLs; client `c` talks to `urls[c % len]`.
    urls: &'a [String],
    token: &'a str,
    duration: Duration,
    streams: usize,
}

async fn scenario(
    t: &Target<'_>,
    name: &str,
    clients: usize,
    batch: usize,
    rate: Option<u64>,
) -> Scenario {
    let (token, duration) = (t.token, t.duration);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr = t.urls[c % t.urls.len()]
            .trim_start_matches("http://")
            .to_owned();
        let path = format!("/v1/streams/bench-{}/events", c % t.streams);
        let auth = format!("Bearer {token}");
        // Ids are generated by the server, so one body per client is enough:
        // every request still becomes new events.
        let body = bytes::Bytes::from(if batch == 1 {
            event_json(c as u64)
        } else {
            format!(
                "[{}]",
                (0..batch as u64)
                    .map(|i| event_json(((c as u64) << 32) + i))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        });
        // Paced clients send one request per `interval` each.
        let interval = rate.map(|r| Duration::from_secs_f64((clients * batch) as f64 / r as f64));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut events, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            // One HTTP/1.1 keep-alive connection per client, as a light load generator.
            let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
                return (lat, 0, 0, 1);
            };
            let _ = tcp.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
            else {
                return (lat, 0, 0, 1);
            };
            tokio::spawn(conn);
            let mut next = Instant::now()
                + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(c as f64 / clients as f64));
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let req = hyper::Request::post(path.as_str())
                    .header("host", addr.as_str())
                    .header("authorization", auth.as_str())
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(body.clone()));
                let Ok(req) = req else { break };
                let t = Instant::now();
                let ok = match sender.send_request(req).await {
                    Ok(r) => {
                        let status = r.status();
                        status.is_success()
                            && http_body_util::BodyExt::collect(r.into_body())
                                .await
                                .is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                    events += batch as u64;
                    bytes += body.len() as u64;
                } else {
                    errors += 1;
                    break;
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
/// WAL + synchronous=FULL in 1,000-row transactions; returns rows/s. Like
/// the HTTP load, rows go to `streams` streams in runs of 100 (a 100-event
/// request lands in one stream), so both write the same B-tree layout.
fn raw_sqlite_limit(dir: &std::path::Path, rows: usize, streams: usize) -> anyhow::Result<f64> {
    let path = dir.join("raw.db");
    drop(crate::store::sqlite::SqliteStore::open(&path)?); // same schema
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    for s in 1..=streams {
        conn.execute(
            "INSERT INTO streams (id, name, head_seq, head_hash, created) VALUES (?1, ?2, 0, '', '')",
            params![s as i64, format!("raw-{s}")],
        )?;
    }
    let limits = crate::event::Limits::default();
    let received = crate::event::format_received(time::OffsetDateTime::now_utc());
    let mut next_seq = vec![1u64; streams + 1];
    let rows_data: Vec<(i64, i64, String, String, String)> = (0..rows as u64)
        .map(|i| {
            let stream = ((i / 100) as usize % streams) + 1;
            let seq = next_seq[stream];
            next_seq[stream] += 1;
            let v: serde_json::Value = serde_json::from_str(&event_json(i)).unwrap_or_default();
            let ev = crate::event::validate(0, v, &received, &limits)
                .map_err(|r| anyhow::anyhow!(r.message))?;
            let name = format!("raw-{stream}");
            let body = String::from_utf8(crate::event::canonical_bytes(
                &ev,
                &name,
                seq,
                crate::chain::ZERO_HASH_HEX,
            ))?;
            let hash = hex::encode(crate::chain::event_hash(body.as_bytes()));
            Ok((stream as i64, seq as i64, ev.id, hash, body))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    for chunk in rows_data.chunks(1000) {
        let tx = conn.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) VALUES (?1, ?2, ?3, 'grant.created', ?4, ?4, ?5, ?6)",
            )?;
            for (stream, seq, id, hash, body) in chunk {
                ins.execute(params![stream, seq, id, received, hash, body])?;
            }
        }
        tx.commit()?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub(super) async fn run(config: &Config, cmd: &BenchCommand) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        BenchCommand::Ingest(a) => a,
        BenchCommand::Postgres(a) => return postgres_bench(config, a).await,
        BenchCommand::Archive(a) => return super::bench_archive::run(a).await,
        BenchCommand::Destinations(a) => return super::bench_destinations::run(a).await,
        BenchCommand::Latency(a) => return super::bench_latency::run(a).await,
        BenchCommand::Query(a) => return super::bench_query::run(a).await,
        BenchCommand::E2e(a) => return super::bench_e2e::run(a).await,
    };
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
                store: None,
                archive: None,
            })?;
            cfg.log_name = config.log_name.clone();
            unlimited(&mut cfg);
            let store = crate::server::open_sqlite(&data_dir)?;
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
    let d = Duration::from_secs(args.duration_secs);
    let c = args.clients;
    // The raw limit is measured before and after the load; the higher figure
    // is the limit (shared machines vary; the higher limit gives the
    // conservative ratio).
    let raw_before = raw_limit(&tmp, "raw-before", args.raw_rows, args.streams).await?;
    let store_only = store_only_rate(&tmp, args.raw_rows, args.streams).await?;
    let mut results = Vec::new();
    let urls = [url.clone()];
    let target = Target {
        urls: &urls,
        token: &token,
        duration: d,
        streams: args.streams.max(1),
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
    let raw_after = raw_limit(&tmp, "raw-after", args.raw_rows, args.streams).await?;
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
            serde_json::json!({"scenarios": results, "raw_sqlite_rows_per_sec": raw, "store_append_events_per_sec": store_only, "raw_before": raw_before, "raw_after": raw_after, "batch100_over_raw": ratio, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)})
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
        println!(
            "Store::append alone (no HTTP; 64 groups of 100 per commit): {store_only:.0} events/s = {:.1}% of the raw limit",
            store_only / raw * 100.0
        );
        println!("batch100 / raw limit: {:.1}%", ratio * 100.0);
    }
    Ok(ExitCode::SUCCESS)
}

/// Returns events/s of [`EventStore::append`] alone: the same events as the HTTP
/// load, validated up front, committed as 64 groups of 100 per call (what
/// the batcher gathers from 64 clients), spread over `streams` streams.
async fn store_only_rate(
    tmp: &std::path::Path,
    rows: usize,
    streams: usize,
) -> anyhow::Result<f64> {
    let dir = tmp.join("store-only");
    std::fs::create_dir_all(&dir)?;
    let store = crate::store::sqlite::SqliteStore::open(&dir.join("s.db"))?;
    let limits = crate::event::Limits::default();
    let received = crate::event::format_received(time::OffsetDateTime::now_utc());
    let mut groups = Vec::new();
    for (n, chunk) in (0..rows as u64).collect::<Vec<_>>().chunks(100).enumerate() {
        let events = chunk
            .iter()
            .map(|&i| {
                let v: serde_json::Value = serde_json::from_str(&event_json(i)).unwrap_or_default();
                crate::event::validate(0, v, &received, &limits)
                    .map_err(|r| anyhow::anyhow!(r.message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        groups.push(crate::store::AppendGroup {
            sealed: None,
            stream: format!("s{}", n % streams.max(1)),
            events,
        });
    }
    let started = Instant::now();
    let mut it = groups.into_iter().peekable();
    while it.peek().is_some() {
        let commit: Vec<_> = it.by_ref().take(64).collect();
        store.append(commit).await?;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Inserts `rows` rows shaped like stored events into a copy of the events
/// table (same indexes) with UNNEST batches of 1,000 per transaction, with
/// PostgreSQL's default durability (`synchronous_commit = on`); rows/s.
async fn raw_postgres_limit(
    client: &tokio_postgres::Client,
    rows: usize,
    streams: usize,
) -> anyhow::Result<f64> {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS raw_events; CREATE TABLE raw_events (stream_id BIGINT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL, \
             type TEXT NOT NULL, time TEXT NOT NULL, received TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (stream_id, seq)); \
             CREATE UNIQUE INDEX ON raw_events (stream_id, id)",
        )
        .await?;
    let limits = crate::event::Limits::default();
    let received = crate::event::format_received(time::OffsetDateTime::now_utc());
    let mut next_seq = vec![1i64; streams + 1];
    let mut all = Vec::with_capacity(rows);
    for i in 0..rows as u64 {
        let stream = ((i / 100) as usize % streams) + 1;
        let seq = next_seq[stream];
        next_seq[stream] += 1;
        let v: serde_json::Value = serde_json::from_str(&event_json(i)).unwrap_or_default();
        let ev = crate::event::validate(0, v, &received, &limits)
            .map_err(|r| anyhow::anyhow!(r.message))?;
        let body = String::from_utf8(crate::event::canonical_bytes(
            &ev,
            "raw",
            seq as u64,
            crate::chain::ZERO_HASH_HEX,
        ))?;
        let hash = hex::encode(crate::chain::event_hash(body.as_bytes()));
        all.push((stream as i64, seq, ev.id, hash, body));
    }
    let started = Instant::now();
    for chunk in all.chunks(1000) {
        let sids: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let seqs: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let ids: Vec<&str> = chunk.iter().map(|r| r.2.as_str()).collect();
        let hashes: Vec<&str> = chunk.iter().map(|r| r.3.as_str()).collect();
        let bodies: Vec<&str> = chunk.iter().map(|r| r.4.as_str()).collect();
        client
            .execute(
                "INSERT INTO raw_events (stream_id, seq, id, type, time, received, hash, body) \
                 SELECT s, q, i, 'grant.created', $5, $5, h, b FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $6::text[]) AS t(s, q, i, h, b)",
                &[&sids, &seqs, &ids, &hashes, &received, &bodies],
            )
            .await?;
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    client.batch_execute("DROP TABLE raw_events").await?;
    Ok(rate)
}

async fn postgres_bench(config: &Config, args: &PostgresArgs) -> anyhow::Result<ExitCode> {
    let client = crate::store::pg_tls::connect_one(&args.postgres)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to --postgres: {e}"))?;
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let schema = format!("bench_{}", hex::encode(b));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}"
        ))
        .await?;
    let sep = if args.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}options=-c%20search_path%3D{schema}", args.postgres);
    let tmp = tempdir()?;
    let outcome = async {
        let raw_before = raw_postgres_limit(&client, args.raw_rows, 4).await?;
        let store = crate::store::postgres::PostgresStore::connect(&url, None).await?;
        let (rec, token) = generate(Scope::Ingest, "*", "bench");
        store.create_key(rec).await?;
        drop(store);
        let mut results = Vec::new();
        for nodes in [1usize, 3] {
            let mut urls = Vec::new();
            let mut servers = Vec::new();
            for n in 0..nodes {
                let mut cfg = RawConfig::default().validate(&Overrides {
                    data_dir: Some(tmp.join(format!("node{n}"))),
                    listen: Some("127.0.0.1:0".into()),
                    store: Some(url.clone()),
                    archive: None,
                })?;
                cfg.log_name = config.log_name.clone();
                unlimited(&mut cfg);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                urls.push(format!("http://{}", listener.local_addr()?));
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let handle = tokio::spawn(crate::server::run(cfg, listener, async move {
                    let _ = stopped.await;
                }));
                servers.push((stop, handle));
            }
            let target = Target {
                urls: &urls,
                token: &token,
                duration: Duration::from_secs(args.duration_secs),
                streams: 4,
            };
            for (name, batch) in [("batch100", 100), ("single", 1)] {
                let mut r = scenario(&target, name, args.clients, batch, None).await;
                r.name = format!("{nodes} node{} {name}", if nodes > 1 { "s" } else { "" });
                results.push(r);
            }
            for (stop, handle) in servers {
                let _ = stop.send(());
                handle.await??;
            }
        }
        let raw_after = raw_postgres_limit(&client, args.raw_rows, 4).await?;
        anyhow::Ok((results, raw_before.max(raw_after), raw_before, raw_after))
    }
    .await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    let _ = std::fs::remove_dir_all(&tmp);
    let (results, raw, raw_before, raw_after) = outcome?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"scenarios": results, "raw_postgres_rows_per_sec": raw, "raw_before": raw_before, "raw_after": raw_after})
        );
    } else {
        println!(
            "{:<22} {:>7} {:>5} {:>12} {:>8} {:>8} {:>8} {:>7}",
            "scenario", "clients", "batch", "events/s", "p50 ms", "p99 ms", "% raw", "errors"
        );
        for r in &results {
            println!(
                "{:<22} {:>7} {:>5} {:>12.0} {:>8.2} {:>8.2} {:>7.1}% {:>7}",
                r.name,
                r.clients,
                r.batch,
                r.events_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.events_per_sec / raw * 100.0,
                r.errors
            );
        }
        println!(
            "raw PostgreSQL limit (UNNEST INSERT, 1,000-row transactions, synchronous_commit=on): {raw:.0} rows/s (before {raw_before:.0}, after {raw_after:.0})"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn raw_limit(
    tmp: &std::path::Path,
    name: &str,
    rows: usize,
    streams: usize,
) -> anyhow::Result<f64> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    tokio::task::spawn_blocking(move || raw_sqlite_limit(&dir, rows, streams)).await?
}

/// The bench measures what the server can take, not the per-key rate
/// limits (`[server] requests_per_second`, `events_per_second`), which
/// would cap its one key: both off for its in-process servers.
fn unlimited(cfg: &mut Config) {
    cfg.server.requests_per_second = 0;
    cfg.server.events_per_second = 0;
}

pub(super) fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let p = std::env::temp_dir().join(format!("trailkeep-bench-{}", hex::encode(b)));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

#[allow(dead_code)]
fn _assert_send(_: Arc<dyn Store>) {}
