//! `trailkeep bench postgres` (issue #19, item 4): HTTP ingest on
//! PostgreSQL with 1, 2 and 3 `serve` nodes, each a separate process (this
//! binary as a child, see [`super::bench_child`]), beside PostgreSQL's raw
//! insert rate of the same rows measured in the same run, and one node on
//! SQLite as the reference for CPU per event.
//!
//! Per scenario it reports events/s, p50/p99 ack latency, the share of the
//! raw rate (100-row and 1,000-row transactions), CPU-seconds per event of
//! every node process and of the PostgreSQL cluster (all its processes,
//! from `/proc`), lock waits sampled from `pg_stat_activity`, the nodes'
//! own conflict and redirect counters (`/metrics`), and failed requests.
//!
//! Not a multi-host benchmark: every node, PostgreSQL and the load
//! generator share this machine's cores, so the figures say what the
//! append path costs per event and whether nodes get in each other's way,
//! not what several machines would reach.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::bench::event_json;
use super::bench_child::{ServeChild, ServeSpec};
use crate::auth::{Scope, generate};
use crate::store::KeyStore as _;

/// Arguments of `bench postgres`.
#[derive(Debug, Args)]
pub struct PostgresArgs {
    /// The database to use (a scratch schema is created and dropped in it).
    #[arg(long, env = "TRAILKEEP_BENCH_POSTGRES_URL", hide_env_values = true)]
    pub postgres: String,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10, env = "TRAILKEEP_DURATION_SECS")]
    pub duration_secs: u64,
    /// Concurrent HTTP clients (keep-alive), spread over the nodes as
    /// --layout says.
    #[arg(long, default_value_t = 64, env = "TRAILKEEP_CLIENTS")]
    pub clients: usize,
    /// Streams written; client i writes stream i % streams (the raw
    /// limit uses the same streams).
    #[arg(long, default_value_t = 16, env = "TRAILKEEP_STREAMS")]
    pub streams: usize,
    /// Which node each client talks to: `distinct` (client i writes
    /// stream i % streams on node (i % streams) % nodes: each stream is
    /// written through one node only) or `shared` (on node
    /// (i / streams) % nodes: every stream through several nodes).
    #[arg(long, value_enum, default_value_t = Layout::Distinct, env = "TRAILKEEP_LAYOUT")]
    pub layout: Layout,
    /// Node counts to run, each a separate set of `serve` processes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,3",
        env = "TRAILKEEP_NODES"
    )]
    pub nodes: Vec<usize>,
    /// Rows for each raw limit.
    #[arg(long, default_value_t = 200_000, env = "TRAILKEEP_RAW_ROWS")]
    pub raw_rows: usize,
    /// What a node does with a request for a stream another node owns
    /// (`[cluster] non_owner`): forward, redirect or local.
    #[arg(long, default_value = "forward", env = "TRAILKEEP_NON_OWNER")]
    pub non_owner: String,
    /// Leave out the SQLite reference node.
    #[arg(long, env = "TRAILKEEP_NO_SQLITE")]
    pub no_sqlite: bool,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

/// How clients are spread over nodes (`--layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Each stream is written through one node only.
    Distinct,
    /// Every stream is written through several nodes.
    Shared,
}

impl Layout {
    /// The node client `c` talks to (client `c` writes stream
    /// `c % streams`).
    fn node_of(self, c: usize, streams: usize, nodes: usize) -> usize {
        match self {
            Self::Distinct => (c % streams) % nodes,
            Self::Shared => (c / streams) % nodes,
        }
    }
}

/// A node gets this long to stop after `SIGTERM` before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// `pg_stat_activity` is sampled this often during a scenario.
const LOCK_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// PostgreSQL's processes are read from `/proc` this often (a process
/// that exits between two reads loses at most this much of its CPU).
const PG_CPU_EVERY: Duration = Duration::from_millis(250);

/// Redirects one request follows at most.
const MAX_REDIRECTS: usize = 3;

/// The two request shapes every node set runs.
const SHAPES: [(&str, usize); 2] = [("batch100", 100), ("single", 1)];

/// Returns the config file text of one node: `store` (a PostgreSQL URL,
/// or `sqlite` for a store in the data directory), `data_dir`, the signing
/// key every node of a run shares (`signing.key` beside the data
/// directories, created by the first node), per-key rate limits off (the
/// bench measures what a node can take, not its one key's limits), then
/// `extra` (more tables, e.g. `[cluster]`).
fn node_config(store: &str, data_dir: &Path, extra: &str) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let key = data_dir.with_file_name("signing.key");
    format!(
        "store = {}\ndata_dir = {}\nsigning_key_file = {}\n\n\
         [server]\nrequests_per_second = 0\nevents_per_second = 0\n\n{extra}",
        quote(store),
        quote(&data_dir.to_string_lossy()),
        quote(&key.to_string_lossy()),
    )
}

/// One scenario's figures.
#[derive(Debug, Serialize)]
struct ScenarioResult {
    name: String,
    /// `postgres` or `sqlite`.
    store: &'static str,
    nodes: usize,
    clients: usize,
    streams: usize,
    batch: usize,
    seconds: f64,
    requests: u64,
    events: u64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests that failed (non-2xx, transport errors, redirects not
    /// followed).
    errors: u64,
    /// The first failure, for the reader.
    first_error: Option<String>,
    /// Requests answered by a redirect (307/308) that the client followed.
    redirected_requests: u64,
    /// Percent of PostgreSQL's raw rate in 100-row transactions.
    pct_of_raw_100: Option<f64>,
    /// Percent of PostgreSQL's raw rate in 1,000-row transactions.
    pct_of_raw_1000: Option<f64>,
    /// events/s over the 1-node PostgreSQL scenario of the same batch.
    over_1_node: Option<f64>,
    /// CPU-seconds (user + system) of each node process over the scenario.
    node_cpu_seconds: Vec<f64>,
    /// The nodes' CPU (all of them) per event, µs.
    node_cpu_us_per_event: f64,
    /// `node_cpu_us_per_event` over the SQLite node's, same batch.
    node_cpu_over_sqlite: Option<f64>,
    /// CPU-seconds of the PostgreSQL cluster (every process of it); null
    /// when it does not run on this machine.
    postgres_cpu_seconds: Option<f64>,
    postgres_cpu_us_per_event: Option<f64>,
    /// The load generator's own CPU per event, µs (this process).
    bench_cpu_us_per_event: f64,
    /// Backends waiting on a lock (`pg_stat_activity`); null on SQLite.
    lock_waits: Option<LockWaits>,
    /// Sum of every `trailkeep_append_conflicts_total` sample of the nodes.
    append_conflicts: f64,
    /// Sum of every `trailkeep_ingest_redirects_total` sample of the nodes.
    ingest_redirects: f64,
    /// Sum of every `trailkeep_ingest_forwarded_total` sample of the nodes
    /// (requests a non-owner sent on to the stream's owner).
    ingest_forwarded: f64,
}

/// Lock waits seen by sampling `pg_stat_activity`.
#[derive(Debug, Default, Clone, Serialize)]
struct LockWaits {
    samples: u64,
    /// Samples in which at least one backend waited on a lock.
    samples_with_waits: u64,
    /// Backends waiting on a lock, mean over the samples.
    avg_waiting: f64,
    max_waiting: i64,
}

/// PostgreSQL's raw insert rates, rows/s.
#[derive(Debug, Clone, Copy, Serialize)]
struct RawRates {
    rows_100: f64,
    rows_1000: f64,
}

/// What a run measured.
#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    clients: usize,
    streams: usize,
    layout: Layout,
    duration_secs: u64,
    /// The higher of before and after, per transaction size.
    raw_postgres: RawRates,
    raw_before: RawRates,
    raw_after: RawRates,
    scenarios: Vec<ScenarioResult>,
}

pub(super) async fn run(args: &PostgresArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(args.duration_secs > 0, "--duration-secs must be at least 1");
    anyhow::ensure!(args.raw_rows > 0, "--raw-rows must be at least 1");
    anyhow::ensure!(
        !args.nodes.is_empty() && args.nodes.iter().all(|&n| (1..=32).contains(&n)),
        "--nodes must list node counts from 1 to 32 (e.g. 1,2,3)"
    );
    let most = args.nodes.iter().copied().max().unwrap_or(1);
    anyhow::ensure!(
        args.layout == Layout::Shared || args.streams >= most,
        "--layout distinct needs at least as many --streams as nodes ({most}): with fewer, some nodes get no clients"
    );
    let client = crate::store::pg_tls::connect_one(&args.postgres)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to --postgres: {e}"))?;
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let schema = format!("bench_{}", hex::encode(b));
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; CREATE SCHEMA {schema}; SET search_path = {schema}"
        ))
        .await?;
    let sep = if args.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}options=-c%20search_path%3D{schema}", args.postgres);
    let tmp = super::bench::tempdir()?;
    // Every way out drops the nodes (killed if still running) before the
    // schema goes: an error, a panic inside, or Ctrl-C.
    let outcome = tokio::select! {
        r = measure(args, &client, &url, &tmp) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
    {
        eprintln!("trailkeep: could not drop the scratch schema {schema}: {e}; drop it by hand");
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The run itself: raw limits, the node sets, the SQLite node, raw limits
/// again. Nodes are stopped before it returns, on every path.
async fn measure(
    args: &PostgresArgs,
    client: &tokio_postgres::Client,
    url: &str,
    tmp: &Path,
) -> anyhow::Result<Report> {
    let raw_before = raw_rates(client, args).await?;
    let store = crate::store::postgres::PostgresStore::connect(url, None).await?;
    let (rec, pg_token) = generate(Scope::Ingest, "*", "bench");
    store.create_key(rec).await?;
    drop(store);
    let postmaster = postmaster_pid(client).await;
    let run_dir = tmp.join("nodes");
    std::fs::create_dir_all(&run_dir)?;
    let mut scenarios = Vec::new();
    for &n in &args.nodes {
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = run_dir.join(format!("pg{n}-node{i}"));
            let cluster = format!(
                "[cluster]\nlease_ttl_ms = {BENCH_LEASE_TTL_MS}\nnon_owner = {}\n",
                toml::Value::String(args.non_owner.clone())
            );
            nodes.push(start_node(&run_dir, &dir, url, &cluster).await?);
        }
        let urls: Vec<String> = nodes.iter().map(|c| c.url.clone()).collect();
        settle(&urls).await?;
        for (shape, batch) in SHAPES {
            let name = format!("pg {n} node{} {shape}", if n > 1 { "s" } else { "" });
            let pg = PgSide { url, postmaster };
            scenarios
                .push(scenario(args, &name, &mut nodes, &urls, &pg_token, batch, Some(&pg)).await?);
        }
        stop_all(nodes).await;
    }
    if !args.no_sqlite {
        let dir = run_dir.join("sqlite-node0");
        let store = crate::server::open_sqlite(&dir)?;
        let (rec, token) = generate(Scope::Ingest, "*", "bench");
        store.create_key(rec).await?;
        drop(store);
        let mut nodes = vec![start_node(&run_dir, &dir, "sqlite", "").await?];
        let urls = vec![nodes[0].url.clone()];
        for (shape, batch) in SHAPES {
            let name = format!("sqlite 1 node {shape}");
            scenarios.push(scenario(args, &name, &mut nodes, &urls, &token, batch, None).await?);
        }
        stop_all(nodes).await;
    }
    let raw_after = raw_rates(client, args).await?;
    let raw = RawRates {
        rows_100: raw_before.rows_100.max(raw_after.rows_100),
        rows_1000: raw_before.rows_1000.max(raw_after.rows_1000),
    };
    compare(&mut scenarios, raw);
    Ok(Report {
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get),
        clients: args.clients,
        streams: args.streams,
        layout: args.layout,
        duration_secs: args.duration_secs,
        raw_postgres: raw,
        raw_before,
        raw_after,
        scenarios,
    })
}

/// Fills in the ratios the goals are read from.
fn compare(scenarios: &mut [ScenarioResult], raw: RawRates) {
    let find = |s: &[ScenarioResult], store: &str, nodes: usize, batch: usize| {
        s.iter()
            .find(|r| r.store == store && r.nodes == nodes && r.batch == batch)
            .map(|r| (r.events_per_sec, r.node_cpu_us_per_event))
    };
    let refs: Vec<_> = scenarios
        .iter()
        .map(|r| {
            (
                find(scenarios, "postgres", 1, r.batch),
                find(scenarios, "sqlite", 1, r.batch),
            )
        })
        .collect();
    for (r, (one, sqlite)) in scenarios.iter_mut().zip(refs) {
        if r.store == "postgres" {
            r.pct_of_raw_100 = Some(r.events_per_sec / raw.rows_100 * 100.0);
            r.pct_of_raw_1000 = Some(r.events_per_sec / raw.rows_1000 * 100.0);
            r.over_1_node = one.map(|(eps, _)| r.events_per_sec / eps);
            r.node_cpu_over_sqlite = sqlite.map(|(_, cpu)| r.node_cpu_us_per_event / cpu);
        }
    }
}

/// Starts one node on `store` in `dir` (config file and log beside it in
/// `run_dir`).
async fn start_node(
    run_dir: &Path,
    dir: &Path,
    store: &str,
    extra: &str,
) -> anyhow::Result<ServeChild> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = run_dir.join(format!("{name}.toml"));
    // Holds the database URL: private to this user (the process umask is
    // 077, see cli::private_files).
    std::fs::write(&config, node_config(store, dir, extra))?;
    ServeChild::start(&ServeSpec {
        config: &config,
        data_dir: dir,
        log: &run_dir.join(format!("{name}.log")),
        env: &[],
    })
    .await
}

/// Shard lease TTL of the bench's nodes: rounds every second, so the
/// nodes settle their shares quickly.
const BENCH_LEASE_TTL_MS: u64 = 3000;

/// Waits until the nodes own every shard between them, each about its
/// share, and then two more rounds, after which every node's view of who
/// owns what agrees (each learns the others' shards at its next round).
async fn settle(urls: &[String]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let share = 64 / urls.len().max(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = Vec::new();
        for u in urls {
            let text = http
                .get(format!("{u}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            owned.push(sample_sum(&text, "trailkeep_shards_owned"));
        }
        if owned.iter().sum::<f64>() == 64.0 && owned.iter().all(|o| *o + 2.0 >= share as f64) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the nodes did not divide the 64 shards within 60 s (owned: {owned:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2 * BENCH_LEASE_TTL_MS / 3 + 200)).await;
    Ok(())
}

/// Stops every node, all at once, each gracefully if it can.
async fn stop_all(nodes: Vec<ServeChild>) {
    futures_util::future::join_all(nodes.into_iter().map(|n| n.stop(STOP_GRACE))).await;
}

/// The PostgreSQL side of a scenario: what to sample.
struct PgSide<'a> {
    url: &'a str,
    postmaster: Option<u32>,
}

/// Runs one scenario on running nodes.
async fn scenario(
    args: &PostgresArgs,
    name: &str,
    nodes: &mut [ServeChild],
    urls: &[String],
    token: &str,
    batch: usize,
    pg: Option<&PgSide<'_>>,
) -> anyhow::Result<ScenarioResult> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    for n in nodes.iter_mut() {
        n.check()?;
    }
    let (conflicts_before, redirects_before, forwarded_before) = scrape_all(&http, urls).await?;
    let pids: Vec<u32> = nodes.iter().map(ServeChild::pid).collect();
    let node_before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p).unwrap_or(0)).collect();
    let me = std::process::id();
    let bench_before = cpu_ticks(me).unwrap_or(0);
    let sampler = match pg {
        Some(pg) => Some(Sampler::start(pg).await?),
        None => None,
    };
    let load = drive(&Load {
        urls,
        token,
        duration: Duration::from_secs(args.duration_secs),
        clients: args.clients,
        streams: args.streams,
        layout: args.layout,
        batch,
    })
    .await;
    let (lock_waits, pg_ticks) = match sampler {
        Some(s) => {
            let (l, t) = s.stop().await;
            (Some(l), t)
        }
        None => (None, None),
    };
    let bench_ticks = cpu_ticks(me).unwrap_or(0).saturating_sub(bench_before);
    let node_ticks: Vec<u64> = pids
        .iter()
        .zip(&node_before)
        .map(|(&p, &b)| cpu_ticks(p).unwrap_or(0).saturating_sub(b))
        .collect();
    // A node that died during the load makes the figures meaningless.
    for n in nodes.iter_mut() {
        n.check()?;
    }
    let (conflicts_after, redirects_after, forwarded_after) = scrape_all(&http, urls).await?;
    let hz = clock_ticks_per_second();
    let events = load.events.max(1) as f64;
    let node_cpu_seconds: Vec<f64> = node_ticks.iter().map(|&t| t as f64 / hz).collect();
    let node_total: f64 = node_cpu_seconds.iter().sum();
    let postgres_cpu_seconds = pg_ticks.map(|t| t as f64 / hz);
    let mut lat = load.latencies;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(ScenarioResult {
        name: name.to_owned(),
        store: if pg.is_some() { "postgres" } else { "sqlite" },
        nodes: nodes.len(),
        clients: args.clients,
        streams: args.streams,
        batch,
        seconds: load.seconds,
        requests: load.requests,
        events: load.events,
        events_per_sec: load.events as f64 / load.seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: load.errors,
        first_error: load.first_error,
        redirected_requests: load.redirected,
        pct_of_raw_100: None,
        pct_of_raw_1000: None,
        over_1_node: None,
        node_cpu_seconds,
        node_cpu_us_per_event: node_total / events * 1e6,
        node_cpu_over_sqlite: None,
        postgres_cpu_us_per_event: postgres_cpu_seconds.map(|s| s / events * 1e6),
        postgres_cpu_seconds,
        bench_cpu_us_per_event: bench_ticks as f64 / hz / events * 1e6,
        lock_waits,
        append_conflicts: conflicts_after - conflicts_before,
        ingest_redirects: redirects_after - redirects_before,
        ingest_forwarded: forwarded_after - forwarded_before,
    })
}

/// The sum over the nodes of (append conflicts, ingest redirects) from
/// their `/metrics` (no key needed).
async fn scrape_all(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<(f64, f64, f64)> {
    let (mut conflicts, mut redirects, mut forwarded) = (0.0, 0.0, 0.0);
    for u in urls {
        let r = http
            .get(format!("{u}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| anyhow::anyhow!("reading {u}/metrics: {e}"))?;
        let text = r
            .text()
            .await
            .map_err(|e| anyhow::anyhow!("reading {u}/metrics: {e}"))?;
        conflicts += sample_sum(&text, "trailkeep_append_conflicts_total");
        redirects += sample_sum(&text, "trailkeep_ingest_redirects_total");
        forwarded += sample_sum(&text, "trailkeep_ingest_forwarded_total");
    }
    Ok((conflicts, redirects, forwarded))
}

/// Returns the sum of every sample of `metric` (any labels) in Prometheus
/// text exposition; 0 when there is none.
fn sample_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?;
            let value = if let Some(labels) = rest.strip_prefix('{') {
                // Label values are quoted and may hold spaces or braces:
                // the value follows the last `}`.
                let end = labels.rfind('}')?;
                &labels[end + 1..]
            } else if rest.starts_with([' ', '\t']) {
                rest
            } else {
                return None; // another metric with this prefix
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// What to send.
struct Load<'a> {
    /// Node URLs; client `c` talks to `urls[c % len]`.
    urls: &'a [String],
    token: &'a str,
    duration: Duration,
    clients: usize,
    streams: usize,
    layout: Layout,
    batch: usize,
}

/// What the clients saw.
#[derive(Debug, Default)]
struct LoadResult {
    latencies: Vec<Duration>,
    seconds: f64,
    requests: u64,
    events: u64,
    errors: u64,
    redirected: u64,
    first_error: Option<String>,
}

/// Drives the nodes with `load.clients` keep-alive HTTP clients for
/// `load.duration`: client `c` posts `load.batch` events at a time to
/// stream `bench-{c % streams}` on the node `load.layout` says, back to
/// back.
async fn drive(load: &Load<'_>) -> LoadResult {
    let deadline = Instant::now() + load.duration;
    let nodes: Arc<Vec<url::Url>> = Arc::new(
        load.urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .collect(),
    );
    let auth = format!("Bearer {}", load.token);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..load.clients {
        let url = format!(
            "{}/v1/streams/bench-{}/events",
            load.urls[load.layout.node_of(c, load.streams, load.urls.len())],
            c % load.streams
        );
        // Ids are generated by the server, so one body per client is
        // enough: every request still becomes new events.
        let body = bytes::Bytes::from(if load.batch == 1 {
            event_json(c as u64)
        } else {
            format!(
                "[{}]",
                (0..load.batch as u64)
                    .map(|i| event_json(((c as u64) << 32) + i))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        });
        let (nodes, auth, batch) = (nodes.clone(), auth.clone(), load.batch as u64);
        tasks.push(tokio::spawn(async move {
            let mut out = LoadResult::default();
            // One client, one keep-alive connection per node it reaches.
            let http = match reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()
            {
                Ok(h) => h,
                Err(e) => {
                    out.errors = 1;
                    out.first_error = Some(format!("building an HTTP client: {e}"));
                    return out;
                }
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                out.requests += 1;
                match post(&http, &nodes, &url, &auth, &body).await {
                    Ok(hops) => {
                        out.latencies.push(t.elapsed());
                        out.events += batch;
                        out.redirected += u64::from(hops > 0);
                    }
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(e.message);
                        }
                        if e.fatal {
                            break;
                        }
                    }
                }
            }
            out
        }));
    }
    let mut all = LoadResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => {
                all.latencies.extend(r.latencies);
                all.requests += r.requests;
                all.events += r.events;
                all.errors += r.errors;
                all.redirected += r.redirected;
                all.first_error = all.first_error.or(r.first_error);
            }
            Err(e) => {
                all.errors += 1;
                all.first_error = all
                    .first_error
                    .or_else(|| Some(format!("a client failed: {e}")));
            }
        }
    }
    all.seconds = started
        .elapsed()
        .as_secs_f64()
        .max(load.duration.as_secs_f64());
    all
}

/// A failed request.
#[derive(Debug)]
struct PostError {
    message: String,
    /// The client stops (the node cannot be reached): going on would spin.
    fatal: bool,
}

/// Posts `body` to `url`, following 307/308 redirects to the bench's own
/// nodes (and only those) with the same body and `Authorization`; returns
/// how many redirects it followed.
///
/// By hand because HTTP clients drop `Authorization` on a redirect to
/// another origin (reqwest, as browsers' fetch and curl do), and nodes on
/// one host differ by port: a followed redirect would arrive without the
/// key. Refusing origins other than the nodes keeps the key from going
/// anywhere else.
async fn post(
    http: &reqwest::Client,
    nodes: &[url::Url],
    url: &str,
    auth: &str,
    body: &bytes::Bytes,
) -> Result<usize, PostError> {
    let fail = |message: String, fatal: bool| PostError { message, fatal };
    let mut target = url::Url::parse(url).map_err(|e| fail(format!("{url}: {e}"), true))?;
    for hops in 0..=MAX_REDIRECTS {
        let r = http
            .post(target.clone())
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| fail(format!("POST {target}: {e}"), true))?;
        let status = r.status();
        if matches!(status.as_u16(), 307 | 308) {
            let location = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fail(format!("{status} from {target} without a Location"), false))?;
            let next = target.join(location).map_err(|e| {
                fail(
                    format!("{status} from {target}: Location {location:?}: {e}"),
                    false,
                )
            })?;
            if !nodes.iter().any(|n| n.origin() == next.origin()) {
                return Err(fail(
                    format!(
                        "{status} from {target} to {next}, which is not one of this run's nodes: not followed (the key goes to the nodes only)"
                    ),
                    false,
                ));
            }
            let _ = r.bytes().await;
            target = next;
            continue;
        }
        let text = r.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
            return Err(fail(
                format!("{status} from POST {target}: {snippet}"),
                false,
            ));
        }
        return Ok(hops);
    }
    Err(fail(
        format!("more than {MAX_REDIRECTS} redirects from {url}"),
        false,
    ))
}

/// Samples `pg_stat_activity` (lock waits) and the cluster's CPU during a
/// scenario.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    locks: tokio::task::JoinHandle<LockWaits>,
    cpu: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<u64>)>,
}

impl Sampler {
    /// Starts sampling on its own connection (so sampling never waits
    /// behind the run's control connection).
    async fn start(pg: &PgSide<'_>) -> anyhow::Result<Self> {
        let conn = crate::store::pg_tls::connect_one(pg.url)
            .await
            .map_err(|e| anyhow::anyhow!("connecting the lock sampler: {e}"))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let locks = tokio::spawn(async move {
            let mut w = LockWaits::default();
            let mut sum = 0i64;
            let mut tick = tokio::time::interval(LOCK_SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let Ok(row) = conn
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE wait_event_type = 'Lock' AND datname = current_database()",
                        &[],
                    )
                    .await
                else {
                    continue;
                };
                let n: i64 = row.get(0);
                w.samples += 1;
                w.samples_with_waits += u64::from(n > 0);
                w.max_waiting = w.max_waiting.max(n);
                sum += n;
            }
            w.avg_waiting = sum as f64 / w.samples.max(1) as f64;
            w
        });
        let cpu = pg.postmaster.map(|pm| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                let start = cluster_ticks(pm);
                let mut last = start.clone();
                loop {
                    let done = !matches!(
                        rx.recv_timeout(PG_CPU_EVERY),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    // A process keeps its last reading after it exits;
                    // new ones count from zero.
                    last.extend(cluster_ticks(pm));
                    if done {
                        break;
                    }
                }
                last.iter()
                    .map(|(pid, t)| t.saturating_sub(start.get(pid).copied().unwrap_or(0)))
                    .sum()
            });
            (tx, thread)
        });
        Ok(Self { stop, locks, cpu })
    }

    /// Stops sampling; returns the lock waits and the cluster's CPU ticks.
    async fn stop(self) -> (LockWaits, Option<u64>) {
        let _ = self.stop.send(());
        let locks = self.locks.await.unwrap_or_default();
        let ticks = match self.cpu {
            Some((tx, thread)) => {
                let _ = tx.send(());
                tokio::task::spawn_blocking(move || thread.join().ok())
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        (locks, ticks)
    }
}

/// The PostgreSQL cluster's postmaster, when it runs on this machine:
/// the parent of this connection's backend, both named `postgres`. `None`
/// for a server elsewhere (then its CPU is not measured).
async fn postmaster_pid(client: &tokio_postgres::Client) -> Option<u32> {
    let row = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?;
    let backend = u32::try_from(row.get::<_, i32>(0)).ok()?;
    if !is_postgres(backend) {
        return None;
    }
    let (ppid, _) = proc_stat(backend)?;
    is_postgres(ppid).then_some(ppid)
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "postgres")
}

/// CPU ticks (user + system) of every process of the cluster whose
/// postmaster is `postmaster`: itself and its children named `postgres`
/// (backends, WAL writer, checkpointer, …; not other clusters on the
/// machine).
fn cluster_ticks(postmaster: u32) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !is_postgres(pid) {
            continue;
        }
        if let Some((ppid, ticks)) = proc_stat(pid)
            && (pid == postmaster || ppid == postmaster)
        {
            out.insert(pid, ticks);
        }
    }
    out
}

/// CPU ticks (user + system) of a process so far.
fn cpu_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// (parent pid, utime + stime in clock ticks) from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/PID/stat`: the command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself, so fields are counted from
/// the last `)`: state (3), ppid (4), …, utime (14), stime (15).
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`).
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads its integer argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Both raw rates (100-row and 1,000-row transactions).
async fn raw_rates(
    client: &tokio_postgres::Client,
    args: &PostgresArgs,
) -> anyhow::Result<RawRates> {
    Ok(RawRates {
        rows_100: raw_postgres_limit(client, args.raw_rows, args.streams, 100).await?,
        rows_1000: raw_postgres_limit(client, args.raw_rows, args.streams, 1000).await?,
    })
}

/// Inserts `rows` rows shaped like stored events into a copy of the events
/// table (same indexes) with one `UNNEST` insert of `batch` rows per
/// transaction, with PostgreSQL's default durability
/// (`synchronous_commit = on`); rows/s. Rows go to `streams` streams in
/// runs of 100, as 100-event requests land.
async fn raw_postgres_limit(
    client: &tokio_postgres::Client,
    rows: usize,
    streams: usize,
    batch: usize,
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
    for chunk in all.chunks(batch.max(1)) {
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

fn opt(v: Option<f64>, prec: usize, suffix: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}{suffix}"))
}

fn print_table(r: &Report) {
    let layout = match r.layout {
        Layout::Distinct => "each stream through one node",
        Layout::Shared => "each stream through several nodes",
    };
    println!(
        "{} clients over {} streams ({layout}), {} s per scenario, {} cores shared by the nodes, PostgreSQL and this load generator",
        r.clients, r.streams, r.duration_secs, r.cores
    );
    println!(
        "\n{:<24} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "scenario",
        "events/s",
        "p50 ms",
        "p99 ms",
        "%raw100",
        "%raw1000",
        "x 1 node",
        "errors",
        "redirects"
    );
    for s in &r.scenarios {
        println!(
            "{:<24} {:>10.0} {:>8.2} {:>8.2} {:>8} {:>8} {:>8} {:>7} {:>9}",
            s.name,
            s.events_per_sec,
            s.p50_ms,
            s.p99_ms,
            opt(s.pct_of_raw_100, 1, "%"),
            opt(s.pct_of_raw_1000, 1, "%"),
            opt(s.over_1_node, 2, "x"),
            s.errors,
            s.redirected_requests
        );
    }
    println!(
        "\n{:<24} {:>11} {:>20} {:>9} {:>9} {:>9} {:>12} {:>8} {:>9} {:>9} {:>9}",
        "scenario",
        "node us/ev",
        "per node s",
        "x SQLite",
        "pg us/ev",
        "gen us/ev",
        "locks avg/max",
        "% wait",
        "conflicts",
        "redirects",
        "forwarded"
    );
    for s in &r.scenarios {
        let per_node = s
            .node_cpu_seconds
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join("/");
        let locks = s.lock_waits.as_ref();
        println!(
            "{:<24} {:>11.1} {:>20} {:>9} {:>9} {:>9.1} {:>12} {:>8} {:>9} {:>9} {:>9}",
            s.name,
            s.node_cpu_us_per_event,
            per_node,
            opt(s.node_cpu_over_sqlite, 2, "x"),
            opt(s.postgres_cpu_us_per_event, 1, ""),
            s.bench_cpu_us_per_event,
            locks.map_or("-".into(), |l| format!(
                "{:.2}/{}",
                l.avg_waiting, l.max_waiting
            )),
            locks.map_or("-".into(), |l| format!(
                "{:.1}%",
                l.samples_with_waits as f64 / l.samples.max(1) as f64 * 100.0
            )),
            s.append_conflicts,
            s.ingest_redirects,
            s.ingest_forwarded
        );
    }
    println!(
        "\nraw PostgreSQL (UNNEST INSERT, synchronous_commit=on, higher of before/after): \
         {:.0} rows/s in 100-row transactions (before {:.0}, after {:.0}), \
         {:.0} rows/s in 1,000-row transactions (before {:.0}, after {:.0})",
        r.raw_postgres.rows_100,
        r.raw_before.rows_100,
        r.raw_after.rows_100,
        r.raw_postgres.rows_1000,
        r.raw_before.rows_1000,
        r.raw_after.rows_1000
    );
    println!(
        "us/ev: CPU microseconds per event (user + system, /proc): node = all nodes together, \
         pg = every process of the cluster, gen = this load generator; locks: backends waiting on a lock \
         in pg_stat_activity every {} ms; redirects: requests the clients followed (307/308), then the nodes' \
         trailkeep_ingest_redirects_total; conflicts: trailkeep_append_conflicts_total",
        LOCK_SAMPLE_EVERY.as_millis()
    );
    for s in r.scenarios.iter().filter(|s| s.errors > 0) {
        println!(
            "{}: {} failed requests; the first: {}",
            s.name,
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    let goal = |store: &str, nodes: usize, batch: usize| {
        r.scenarios
            .iter()
            .find(|s| s.store == store && s.nodes == nodes && s.batch == batch)
    };
    println!("\ngoals (issue #19):");
    if let Some(s) = goal("postgres", 1, 100) {
        println!(
            "  one node, 100-event batches: {} of raw 100-row transactions (goal >= 60%)",
            opt(s.pct_of_raw_100, 1, "%")
        );
    }
    let mut counts: Vec<usize> = r.scenarios.iter().map(|s| s.nodes).collect();
    counts.sort_unstable();
    counts.dedup();
    for n in counts.into_iter().filter(|&n| n > 1) {
        if let Some(s) = goal("postgres", n, 100) {
            println!(
                "  {n} nodes / 1 node, 100-event batches: {} (goal for 3 nodes >= 1.00x)",
                opt(s.over_1_node, 2, "x")
            );
        }
    }
    if let Some(s) = goal("postgres", 1, 100) {
        println!(
            "  node CPU per event / SQLite's, 100-event batches, one node: {} (goal <= 1.50x)",
            opt(s.node_cpu_over_sqlite, 2, "x")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> crate::config::Config {
        crate::config::RawConfig::parse(text)
            .expect("parses")
            .validate(&crate::config::Overrides::default())
            .expect("validates")
    }

    #[test]
    fn node_config_is_a_valid_config_with_rate_limits_off() {
        let dir = Path::new("/tmp/a \"quoted\" dir/pg2-node1");
        let url = "postgres://u@127.0.0.1:5432/db?options=-c%20search_path%3Dbench_1";
        let cfg = parsed(&node_config(url, dir, "[metrics]\nstream_labels = true\n"));
        assert_eq!(cfg.server.requests_per_second, 0);
        assert_eq!(cfg.server.events_per_second, 0);
        assert_eq!(cfg.data_dir, dir);
        assert_eq!(
            cfg.signing_key_path(),
            Path::new("/tmp/a \"quoted\" dir/signing.key")
        );
        assert!(cfg.metrics.stream_labels, "extra tables are kept");
        assert!(
            matches!(&cfg.store, crate::config::StoreLocation::Postgres(u) if u == url),
            "{:?}",
            cfg.store
        );
        let sqlite = parsed(&node_config("sqlite", dir, ""));
        assert!(matches!(sqlite.store, crate::config::StoreLocation::Sqlite));
    }

    #[test]
    fn layouts_spread_streams_over_nodes_as_documented() {
        // stream -> the set of nodes its 64 clients talk to.
        let nodes_per_stream = |layout: Layout, nodes: usize| {
            let mut m = vec![std::collections::BTreeSet::new(); 16];
            for c in 0..64 {
                m[c % 16].insert(layout.node_of(c, 16, nodes));
            }
            m
        };
        for nodes in 1..=5 {
            let distinct = nodes_per_stream(Layout::Distinct, nodes);
            assert!(
                distinct.iter().all(|s| s.len() == 1),
                "{nodes}: {distinct:?}"
            );
            let used: std::collections::BTreeSet<_> = distinct.iter().flatten().collect();
            assert_eq!(used.len(), nodes, "every node gets clients");
            let shared = nodes_per_stream(Layout::Shared, nodes);
            assert!(
                shared.iter().all(|s| s.len() == nodes.min(4)),
                "{nodes}: {shared:?}"
            );
        }
    }

    #[test]
    fn sample_sum_adds_every_labelled_sample_of_one_metric() {
        let text = "# HELP trailkeep_append_conflicts_total x\n\
                    # TYPE trailkeep_append_conflicts_total counter\n\
                    trailkeep_append_conflicts_total{reason=\"head\"} 3\n\
                    trailkeep_append_conflicts_total{reason=\"a } b\"} 2.5\n\
                    trailkeep_append_conflicts_total_other 100\n\
                    trailkeep_ingest_redirects_total 7\n";
        assert_eq!(sample_sum(text, "trailkeep_append_conflicts_total"), 5.5);
        assert_eq!(sample_sum(text, "trailkeep_ingest_redirects_total"), 7.0);
        assert_eq!(sample_sum(text, "trailkeep_absent_total"), 0.0);
    }

    #[test]
    fn parse_stat_counts_fields_from_the_last_parenthesis() {
        let stat = "4242 (post gres) (x)) S 17 4242 4242 0 -1 4194560 500 0 0 0 120 35 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(stat), Some((17, 155)));
        assert_eq!(parse_stat("garbage"), None);
        // This process: readable, and its parent is not itself.
        let (ppid, _) = proc_stat(std::process::id()).expect("own stat");
        assert_ne!(ppid, std::process::id());
    }

    /// A node answering 307 to another node: the client follows with the
    /// key and the body (reqwest's own policy would drop `Authorization`
    /// across ports) and counts the redirect; a redirect anywhere else is
    /// an error and the key is not sent there.
    #[tokio::test]
    async fn post_follows_redirects_to_nodes_only_with_the_key() {
        use axum::http::{HeaderMap, StatusCode, header};
        async fn listen(app: axum::Router) -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(async move { axum::serve(l, app).await });
            format!("http://{addr}")
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let log = seen.clone();
        let owner = listen(axum::Router::new().route(
            "/v1/streams/s/events",
            axum::routing::post(move |h: HeaderMap, body: String| {
                let log = log.clone();
                async move {
                    let auth = h
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    log.lock().expect("lock").push((auth.clone(), body));
                    if auth == "Bearer k" {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                }
            }),
        ))
        .await;
        let stranger = listen(axum::Router::new().route(
            "/v1/streams/s/events",
            axum::routing::post(|| async { StatusCode::OK }),
        ))
        .await;
        let redirect_to = |to: String| {
            axum::Router::new().route(
                "/v1/streams/s/events",
                axum::routing::post(move || {
                    let to = to.clone();
                    async move {
                        (
                            StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, format!("{to}/v1/streams/s/events"))],
                        )
                    }
                }),
            )
        };
        let other = listen(redirect_to(owner.clone())).await;
        let rogue = listen(redirect_to(stranger.clone())).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let nodes: Vec<url::Url> = [&owner, &other, &rogue]
            .iter()
            .map(|u| url::Url::parse(u).expect("url"))
            .collect();
        let body = bytes::Bytes::from_static(b"[1]");
        let hops = post(
            &http,
            &nodes,
            &format!("{other}/v1/streams/s/events"),
            "Bearer k",
            &body,
        )
        .await
        .expect("followed to the owner");
        assert_eq!(hops, 1);
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![("Bearer k".to_owned(), "[1]".to_owned())]
        );
        let direct = post(
            &http,
            &nodes,
            &format!("{owner}/v1/streams/s/events"),
            "Bearer k",
            &body,
        )
        .await
        .expect("direct");
        assert_eq!(direct, 0);
        let e = post(
            &http,
            &nodes,
            &format!("{rogue}/v1/streams/s/events"),
            "Bearer k",
            &body,
        )
        .await
        .expect_err("a redirect off the nodes is not followed");
        assert!(
            e.message.contains("not one of this run's nodes"),
            "{}",
            e.message
        );
        assert!(!e.fatal);
        let e = post(
            &http,
            &nodes,
            &format!("{owner}/v1/streams/s/events"),
            "Bearer bad",
            &body,
        )
        .await
        .expect_err("401");
        assert!(e.message.contains("401"), "{}", e.message);
    }
}
