//! `trailkeep bench query`: SQL over an archive of N events (most
//! archived, the last days hot), three questions, each beside DuckDB
//! reading the same archive objects in the same run: time, bytes read and
//! the ratio.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::archive::{ArchiveSettings, Archiver, Bucket, BucketOptions, Compression};
use crate::event::{Limits, validate};
use crate::query::{Engine, QuerySettings, ReadStats, Visible};
use crate::store::{AppendGroup, Store};

/// Arguments of `bench query`.
#[derive(Debug, Args)]
pub struct QueryBenchArgs {
    /// Events in the log.
    #[arg(long, default_value_t = 10_000_000, env = "TRAILKEEP_EVENTS")]
    pub events: u64,
    /// Days of receipt they span (the last 5% stay hot).
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Events per archive object.
    #[arg(long, default_value_t = 100_000)]
    pub segment_events: u64,
    /// A Python with the `duckdb` package (scripts/test.sh installs one in
    /// ~/.cache/trailkeep-tools/venv).
    #[arg(long, env = "TEST_DUCKDB_PYTHON", default_value = "python3")]
    pub duckdb_python: String,
    /// Print JSON.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
}

const TYPES: [&str; 5] = [
    "grant.created",
    "grant.revoked",
    "token.issued",
    "token.refreshed",
    "agent.registered",
];

#[derive(Serialize)]
struct QueryFigures {
    name: &'static str,
    trailkeep_secs: f64,
    trailkeep_objects: u64,
    trailkeep_bytes: u64,
    duckdb_secs: f64,
    duckdb_bytes: u64,
    /// DuckDB's time over ours: ≥ 1 means trailkeep is as fast or faster.
    speed_ratio: f64,
    rows: u64,
}

#[derive(Serialize)]
struct Figures {
    events: u64,
    archived: u64,
    objects: usize,
    archive_bytes: u64,
    objects_per_day: f64,
    queries: Vec<QueryFigures>,
}

/// The DuckDB side: each query twice over `read_ndjson` of the archive,
/// the faster time and the rows' total as JSON.
const DUCKDB: &str = r#"
import duckdb, json, sys, time
glob, day, actor = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute(f"""CREATE VIEW events AS SELECT * FROM read_ndjson('{glob}', hive_partitioning = true,
  columns = {{'stream': 'VARCHAR', 'seq': 'BIGINT', 'id': 'VARCHAR', 'type': 'VARCHAR', 'time': 'TIMESTAMPTZ',
  'received': 'TIMESTAMPTZ', 'actor': 'VARCHAR', 'subject': 'VARCHAR', 'data': 'JSON', 'prev': 'VARCHAR', 'hash': 'VARCHAR'}})""")
queries = {
  "one day by type": f"SELECT type, count(*) FROM events WHERE dt = DATE '{day}' GROUP BY type",
  "one actor, all days": f"SELECT count(*) FROM events WHERE actor = '{actor}'",
  "count per day": "SELECT dt, count(*) FROM events GROUP BY dt",
}
out = {}
for name, q in queries.items():
    best, total = None, None
    for _ in range(2):
        t = time.perf_counter()
        rows = con.execute(q).fetchall()
        s = time.perf_counter() - t
        best = s if best is None else min(best, s)
        total = sum(r[-1] for r in rows)
    out[name] = [best, total]
print(json.dumps(out))
"#;

pub(super) async fn run(args: &QueryBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.days >= 3, "--days: at least 3");
    let tmp = super::bench::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(crate::store::sqlite::SqliteStore::open(
        &tmp.join("hot.db"),
    )?);
    let now = time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let start = now - time::Duration::days(args.days as i64);
    let span = time::Duration::days(args.days as i64);
    let at = |i: u64| start + span * (i as f64 / args.events as f64);
    let t = Instant::now();
    let mut i = 0;
    while i < args.events {
        let n = (args.events - i).min(10_000);
        let received = crate::event::format_received(at(i));
        let events = (i..i + n)
            .map(|j| {
                validate(
                    j as usize,
                    serde_json::json!({
                        "type": TYPES[(j % 5) as usize],
                        "time": received,
                        "actor": format!("user-{}", j % 1000),
                        "subject": format!("agent-{}", j % 97),
                        "data": {"grant_id": format!("grnt_{j:012}"), "scopes": ["read:calendar"], "expires_in": 3600},
                    }),
                    &received,
                    &Limits::default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "bench".into(),
                events,
            }])
            .await?;
        i += n;
        if i % 1_000_000 == 0 {
            eprintln!("appended {i} events ({:.0} s)", t.elapsed().as_secs_f64());
        }
    }
    let archive_dir = tmp.join("archive");
    let url = url::Url::from_directory_path(&archive_dir)
        .map_err(|()| anyhow::anyhow!("temp path"))?
        .to_string();
    let bucket = Bucket::open(&url, &BucketOptions::default())?;
    let signer = crate::chain::note::NoteSigner::from_seed("bench.local", &[1; 32])?;
    let archiver = Archiver::new(
        store.clone(),
        bucket.clone(),
        signer,
        "bench.local".into(),
        ArchiveSettings {
            older_than: std::time::Duration::ZERO,
            segment_events: args.segment_events,
            compression: Compression::Gzip,
            ..ArchiveSettings::default()
        },
    );
    archiver.check_store().await?;
    let cutoff = at(args.events / 100 * 95);
    let report = archiver.run(cutoff, None, &|_| {}).await?;
    eprintln!(
        "archived {} events in {} objects ({:.0} s)",
        report.events_archived,
        report.batches.len(),
        t.elapsed().as_secs_f64()
    );
    let archive_bytes: u64 = report.batches.iter().map(|b| b.object_size).sum();
    let day = (start + time::Duration::days(args.days as i64 / 2))
        .date()
        .to_string();
    let engine = Engine::new(
        store.clone(),
        Some(bucket),
        QuerySettings {
            max_rows: 10_000_000,
            timeout: std::time::Duration::from_secs(3600),
            max_memory_mb: 4096,
            ..QuerySettings::default()
        },
    );
    let ours = [
        (
            "one day by type",
            format!(
                "SELECT type, count(*) AS n FROM events WHERE dt = DATE '{day}' AND tier = 'cold' GROUP BY type"
            ),
        ),
        (
            "one actor, all days",
            "SELECT count(*) AS n FROM events WHERE actor = 'user-42' AND tier = 'cold'".to_owned(),
        ),
        (
            "count per day",
            "SELECT dt, count(*) AS n FROM events WHERE tier = 'cold' GROUP BY dt".to_owned(),
        ),
    ];
    let glob = format!("{}/*/events/dt=*/*.ndjson.gz", archive_dir.display());
    let script = tmp.join("duckdb_bench.py");
    std::fs::write(&script, DUCKDB)?;
    let out = std::process::Command::new(&args.duckdb_python)
        .arg(&script)
        .args([glob.as_str(), day.as_str(), "user-42"])
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", args.duckdb_python))?;
    anyhow::ensure!(
        out.status.success(),
        "DuckDB ({}; --duckdb-python names a Python with the duckdb package): {}",
        args.duckdb_python,
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let size_of = |pred: &dyn Fn(&str) -> bool| -> u64 {
        report
            .batches
            .iter()
            .filter(|b| pred(&b.object_key))
            .map(|b| b.object_size)
            .sum()
    };
    let mut queries = Vec::new();
    for (name, sql) in &ours {
        let mut best: Option<(f64, crate::query::QueryStats, u64)> = None;
        for _ in 0..2 {
            let stats = Arc::new(ReadStats::default());
            let t = Instant::now();
            let a = engine.run(sql, Visible::All, stats).await?;
            let secs = t.elapsed().as_secs_f64();
            let total: u64 = a
                .batches
                .iter()
                .map(|b| {
                    let col = b.column(b.num_columns() - 1);
                    col.as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .map_or(0, |c| c.values().iter().map(|v| *v as u64).sum::<u64>())
                })
                .sum();
            if best.as_ref().is_none_or(|(s, _, _)| secs < *s) {
                best = Some((secs, a.stats, total));
            }
        }
        let Some((secs, stats, total)) = best else {
            continue;
        };
        let d = &duck[*name];
        let (dsecs, dtotal) = (
            d[0].as_f64().unwrap_or(f64::NAN),
            d[1].as_u64().unwrap_or(0),
        );
        anyhow::ensure!(
            total == dtotal,
            "{name}: trailkeep counted {total}, DuckDB {dtotal}"
        );
        let dt_key = format!("/dt={day}/");
        let duckdb_bytes = if *name == "one day by type" {
            size_of(&|k: &str| k.contains(&dt_key))
        } else {
            archive_bytes
        };
        queries.push(QueryFigures {
            name,
            trailkeep_secs: secs,
            trailkeep_objects: stats.objects_read,
            trailkeep_bytes: stats.bytes_read,
            duckdb_secs: dsecs,
            duckdb_bytes,
            speed_ratio: dsecs / secs,
            rows: total,
        });
    }
    let f = Figures {
        events: args.events,
        archived: report.events_archived,
        objects: report.batches.len(),
        archive_bytes,
        objects_per_day: report.batches.len() as f64 / (args.days as f64 * 0.95),
        queries,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    if args.json {
        super::print_json(&serde_json::to_value(&f)?)?;
    } else {
        super::write_stdout(format_args!(
            "{} events, {} archived in {} objects ({:.1} MB gzip, {:.1} objects a day)\n",
            f.events,
            f.archived,
            f.objects,
            f.archive_bytes as f64 / 1e6,
            f.objects_per_day
        ));
        for q in &f.queries {
            super::write_stdout(format_args!(
                "{:<20} trailkeep {:>7.2} s, {:>3} objects, {:>7.1} MB | DuckDB {:>7.2} s, {:>7.1} MB | DuckDB time / ours {:.2} ({} counted)\n",
                q.name,
                q.trailkeep_secs,
                q.trailkeep_objects,
                q.trailkeep_bytes as f64 / 1e6,
                q.duckdb_secs,
                q.duckdb_bytes as f64 / 1e6,
                q.speed_ratio,
                q.rows
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
