//! The archive read in place by warehouse engines (issue #16 item 5):
//! `trailkeep ddl`'s DuckDB and Spark definitions are executed by the real
//! engines (PyPI `duckdb`, `pyspark` on the machine's Java) against an
//! archive that the real `trailkeep archive run` wrote (two streams, four
//! `dt` days, gzip and zstd objects), and must count exactly what was
//! written. The Athena, BigQuery and Trino definitions are checked by
//! sqlglot, which is a parser, not those engines: it catches syntax slips,
//! not what a running engine would refuse.
//!
//! scripts/test.sh installs the tools into its venv and sets
//! TEST_DUCKDB_PYTHON, TEST_PYSPARK_PYTHON and TEST_SQLGLOT_PYTHON (a Python
//! that imports each); without them a test is skipped, except under CI,
//! where that fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::trailkeep;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime, Time};
use trailkeep::store::EventStore;

fn tool(var: &str, what: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|s| !s.is_empty()) {
        return Some(p.into());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run {what}: {var} is not set (scripts/test.sh sets it)"
    );
    eprintln!("skipped: {var} is not set; run scripts/test.sh");
    None
}

/// What the test wrote, counted the ways the engines must count it.
#[derive(Debug, Default)]
struct Written {
    per_stream: BTreeMap<String, u64>,
    per_type: BTreeMap<String, u64>,
    per_stream_dt: BTreeMap<String, u64>,
}

const STREAMS: [&str; 2] = ["auth", "billing.v2"];
const TYPES: [&str; 3] = ["grant.created", "token.issued", "budget.alert"];

/// Writes events received on four past UTC days into a fresh data
/// directory, then archives them with the real binary (to `archive_url`,
/// else the data directory's `archive`): the two older days gzip, the two
/// newer zstd. Each event's `time` is three days before its `received`, so
/// a `dt` taken from `time` would count other days.
async fn archive(dir: &Path, archive_url: Option<&str>) -> (PathBuf, Written) {
    let data = dir.join("data");
    let m = trailkeep(&data, &["migrate"]);
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let store = trailkeep::store::sqlite::SqliteStore::open(&data.join("trailkeep.db")).unwrap();
    let midnight = OffsetDateTime::now_utc().replace_time(Time::MIDNIGHT);
    let mut w = Written::default();
    for (si, stream) in STREAMS.iter().enumerate() {
        let mut events = Vec::new();
        for days_ago in [5_i64, 4, 2, 1] {
            let n = 3 + si + days_ago as usize;
            for k in 0..n {
                let received = midnight - Duration::days(days_ago)
                    + Duration::hours(10)
                    + Duration::seconds(k as i64);
                let received = trailkeep::event::format_received(received);
                let time = (midnight - Duration::days(days_ago + 3))
                    .replace_nanosecond(123_456_789)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let ty = TYPES[(k + si) % TYPES.len()];
                let mut ev = json!({
                    "id": format!("{stream}-{days_ago}-{k}"),
                    "type": ty,
                    "time": time,
                    "data": {"k": k, "nested": {"list": [1, 2]}},
                });
                if k % 2 == 0 {
                    ev["actor"] = json!({"id": format!("u{k}")});
                    ev["subject"] = json!("doc-1");
                }
                let dt = received[..10].to_owned();
                events.push(
                    trailkeep::event::validate(
                        events.len(),
                        ev,
                        &received,
                        &trailkeep::event::Limits::default(),
                    )
                    .unwrap(),
                );
                *w.per_stream.entry((*stream).to_owned()).or_default() += 1;
                *w.per_type.entry(ty.to_owned()).or_default() += 1;
                *w.per_stream_dt.entry(format!("{stream}|{dt}")).or_default() += 1;
            }
        }
        store
            .append(vec![trailkeep::store::AppendGroup {
                stream: (*stream).to_owned(),
                events,
                sealed: None,
            }])
            .await
            .unwrap();
    }
    drop(store);
    for (compression, older_than) in [("gzip", "3d"), ("zstd", "0s")] {
        let cfg = dir.join(format!("{compression}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[archive]\ncompression = \"{compression}\"\n{}",
                archive_url.map_or_else(String::new, |u| format!("url = \"{u}\"\n"))
            ),
        )
        .unwrap();
        let out = trailkeep(
            &data,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "archive",
                "run",
                "--older-than",
                older_than,
            ],
        );
        assert!(
            out.status.success(),
            "archive run ({compression}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (data, w)
}

fn ddl(data: &Path, args: &[&str]) -> String {
    let out = trailkeep(data, &[&["ddl"], args].concat());
    assert!(
        out.status.success(),
        "ddl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the definition in `engine` and the same counting queries in both.
const COUNT: &str = r#"
import json, sys
engine, ddl_path, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
text = "\n".join(l for l in open(ddl_path).read().splitlines() if not l.startswith("--"))
stmts = [s for s in text.split(";") if s.strip()]
if engine == "duckdb":
    import duckdb
    con = duckdb.connect()
    hint = [l[5:] for l in open(ddl_path).read().splitlines() if l.startswith("--   CREATE SECRET")]
    if hint:
        # The s3:// form: httpfs from PyPI's duckdb-ext-httpfs (DuckDB's
        # signed build; this machine cannot download extensions), and the
        # secret the comment suggests, with this test's keys in place of the
        # credential chain (which needs the aws extension).
        import os, duckdb_ext
        con.execute("SET extension_directory = ?", (os.path.join(list(duckdb_ext.__path__)[0], "extensions"),))
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD httpfs")
        keys = f"KEY_ID '{os.environ['AWS_ACCESS_KEY_ID']}', SECRET '{os.environ['AWS_SECRET_ACCESS_KEY']}'"
        con.execute(hint[0].replace("PROVIDER credential_chain", keys))
    for s in stmts:
        con.execute(s)
    q = lambda s: [tuple(r) for r in con.execute(s).fetchall()]
else:
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[1]")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.sql.warehouse.dir", scratch)
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    for s in stmts:
        spark.sql(s)
    q = lambda s: [tuple(r) for r in spark.sql(s).collect()]
USER = "substr(stream, 1, 1) <> '_'"
T = "trailkeep_events"
out = {
    "total": q(f"SELECT count(*) FROM {T} WHERE {USER}")[0][0],
    "per_stream": {s: n for s, n in q(f"SELECT stream, count(*) FROM {T} WHERE {USER} GROUP BY stream")},
    "per_type": {t: n for t, n in q(f"SELECT type, count(*) FROM {T} WHERE {USER} GROUP BY type")},
    "per_stream_dt": {f"{s}|{d}": n for s, d, n in q(f"SELECT stream, CAST(dt AS STRING), count(*) FROM {T} WHERE {USER} GROUP BY stream, dt")},
    "complete": {s: [c, d, m] for s, c, d, m in q(f"SELECT stream, count(*), count(DISTINCT seq), max(seq) FROM {T} GROUP BY stream")},
    "typed": list(q(f"SELECT count(*), count(time), count(received), count(dt), count(data), count(actor) FROM {T} WHERE {USER}")[0]),
    "first_object": q(f"SELECT min(object) FROM {T}")[0][0],
    "objects": {k: n for k, n in q(f"SELECT regexp_extract(object, '[.](gz|zst)$', 1), count(*) FROM {T} WHERE {USER} GROUP BY 1")},
}
print(json.dumps(out))
"#;

async fn engine_counts_what_was_written(engine: &str, python: &Path, archive_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let (data, w) = archive(dir.path(), archive_url).await;
    let mut args = vec!["--engine", engine];
    if let Some(u) = archive_url {
        args.extend(["--archive", u]);
    }
    let sql = ddl(&data, &args);
    let sql_file = dir.path().join(format!("{engine}.sql"));
    std::fs::write(&sql_file, &sql).unwrap();
    let script = dir.path().join("count.py");
    std::fs::write(&script, COUNT).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = Command::new(python)
        .arg(&script)
        .arg(engine)
        .arg(&sql_file)
        .arg(&scratch)
        .current_dir(&scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{engine} ran the definition:\n{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let total: u64 = w.per_stream.values().sum();
    let counts = |m: &BTreeMap<String, u64>| json!(m);
    assert_eq!(got["total"], json!(total), "{engine} total: {got}");
    assert_eq!(
        got["per_stream"],
        counts(&w.per_stream),
        "{engine} per stream"
    );
    assert_eq!(got["per_type"], counts(&w.per_type), "{engine} per type");
    assert_eq!(
        got["per_stream_dt"],
        counts(&w.per_stream_dt),
        "{engine} per stream and dt (dt is the day of received, not of time)"
    );
    assert_eq!(
        w.per_stream_dt.len(),
        STREAMS.len() * 4,
        "two streams over four days"
    );
    // Every column typed and present: time and received parsed (a 9-digit
    // fraction included), dt from the folder, data as JSON; actor on half.
    let actors: u64 = w.per_stream_dt.values().map(|n| n.div_ceil(2)).sum();
    assert_eq!(
        got["typed"],
        json!([total, total, total, total, total, actors]),
        "{engine} typed columns"
    );
    // The README's cross-check holds for every stream, the log's own too.
    let complete = got["complete"].as_object().unwrap();
    // The log's own streams are folders starting with `_`, which Hadoop
    // and some globbing hide: the archive run recorded itself in `_audit`.
    for stream in ["auth", "billing.v2", "_audit"] {
        assert!(
            complete.contains_key(stream),
            "{engine} lacks {stream}: {got}"
        );
    }
    for (stream, v) in complete {
        assert_eq!(v[0], v[1], "{engine} {stream}: duplicates");
        assert_eq!(v[0], v[2], "{engine} {stream}: count = max(seq)");
    }
    // Read where the archive is: the bucket itself for s3://.
    let first = got["first_object"].as_str().unwrap();
    if let Some(u) = archive_url {
        let root = u.split('?').next().unwrap();
        assert!(
            first.starts_with(root),
            "{engine} read {first}, not under {root}"
        );
    } else {
        assert!(
            first.contains(&data.join("archive").display().to_string()),
            "{engine} read {first}"
        );
    }
    // `trailkeep query` gives the same counts as the engine.
    let q = |sql: &str| -> Vec<Value> {
        let mut args = vec!["query", "--quiet", "--format", "json", sql];
        if let Some(u) = archive_url {
            args.splice(0..0, ["--archive", u]);
        }
        let out = trailkeep(&data, &args);
        assert!(
            out.status.success(),
            "query {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["rows"].as_array().unwrap().clone()
    };
    const USER: &str = "substr(stream, 1, 1) <> '_'";
    let pairs = |rows: Vec<Value>| -> Value {
        let m: BTreeMap<String, Value> = rows
            .iter()
            .map(|r| (r["k"].as_str().unwrap().to_owned(), r["n"].clone()))
            .collect();
        json!(m)
    };
    let ours = json!({
        "total": q(&format!("SELECT count(*) AS n FROM events WHERE {USER}"))[0]["n"],
        "per_stream": pairs(q(&format!("SELECT stream AS k, count(*) AS n FROM events WHERE {USER} GROUP BY stream"))),
        "per_type": pairs(q(&format!("SELECT type AS k, count(*) AS n FROM events WHERE {USER} GROUP BY type"))),
        "per_stream_dt": pairs(q(&format!(
            "SELECT stream || '|' || CAST(dt AS VARCHAR) AS k, count(*) AS n FROM events WHERE {USER} GROUP BY stream, dt"
        ))),
    });
    for k in ["total", "per_stream", "per_type", "per_stream_dt"] {
        assert_eq!(ours[k], got[k], "trailkeep query and {engine} agree on {k}");
    }
    // Both compressions were read.
    let objects = got["objects"].as_object().unwrap();
    assert!(
        objects.get("gz").and_then(Value::as_u64).unwrap_or(0) > 0
            && objects.get("zst").and_then(Value::as_u64).unwrap_or(0) > 0,
        "{engine} read gzip and zstd objects: {got}"
    );
}

/// DuckDB runs `trailkeep ddl --engine duckdb` and counts exactly what
/// was written: total, per stream, per type, per stream and dt.
#[tokio::test]
async fn duckdb_counts_the_archive_as_written() {
    let Some(python) = tool("TEST_DUCKDB_PYTHON", "the DuckDB test") else {
        return;
    };
    engine_counts_what_was_written("duckdb", &python, None).await;
}

/// The same over S3 (moto): the `s3://` form DuckDB reads through httpfs,
/// with the secret the output's comment suggests (endpoint, plain HTTP,
/// path-style addressing taken from the archive URL).
#[tokio::test]
async fn duckdb_counts_the_archive_on_s3_as_written() {
    let Some(python) = tool("TEST_DUCKDB_PYTHON", "the DuckDB test") else {
        return;
    };
    let Some(endpoint) = tool("TEST_S3_ENDPOINT", "the DuckDB S3 test") else {
        return;
    };
    let bucket = std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!(
        "s3://{bucket}/warehouse-{}-{nanos}?endpoint={}&region=us-east-1&path_style=true",
        std::process::id(),
        endpoint.display()
    );
    engine_counts_what_was_written("duckdb", &python, Some(&url)).await;
}

/// Spark (local, PyPI pyspark) runs `trailkeep ddl --engine spark` and
/// counts the same.
#[tokio::test]
async fn spark_counts_the_archive_as_written() {
    let Some(python) = tool("TEST_PYSPARK_PYTHON", "the Spark test") else {
        return;
    };
    engine_counts_what_was_written("spark", &python, None).await;
}

/// sqlglot parses what Athena, BigQuery and Trino get (and DuckDB and
/// Spark, executed above): a syntax check, not the engines. It does not
/// know BigQuery's `WITH PARTITION COLUMNS` clause or Trino's `CALL`, so
/// the first is removed before parsing and the second is checked by shape;
/// any other statement it cannot parse fails.
#[test]
fn sqlglot_parses_every_engine_dialect() {
    let Some(python) = tool("TEST_SQLGLOT_PYTHON", "the sqlglot syntax check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let streams = ["--stream", "auth", "--stream", "billing.v2"];
    let cases: [(&str, &str, &[&str]); 7] = [
        ("athena", "s3://bkt/archive?region=eu-west-1", &streams),
        ("athena", "s3://bkt", &[]),
        ("bigquery", "gs://bkt/archive", &streams),
        (
            "duckdb",
            "s3://bkt/archive?endpoint=http://127.0.0.1:9000&path_style=true",
            &[],
        ),
        ("trino", "s3://bkt/archive", &streams),
        ("spark", "s3://bkt/archive", &[]),
        ("spark", "az://ctr/archive?account=acct", &[]),
    ];
    let script = r#"
import sys, sqlglot
from sqlglot import exp
dialect, path = sys.argv[1], sys.argv[2]
sql = open(path).read().replace("WITH PARTITION COLUMNS (dt DATE)\n", "")
n = 0
for s in sqlglot.parse(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE):
    if s is None:
        continue
    text = s.sql(dialect)
    if isinstance(s, exp.Command):
        import re
        if not (dialect == "trino" and re.fullmatch(r"CALL (\w+\.)?system\.sync_partition_metadata\('\w+', '\w+', 'ADD'\)", str(s).strip())):
            sys.exit(f"{dialect}: sqlglot could not parse: {str(s)[:200]}")
    n += 1
print(n)
"#;
    let script_file = dir.path().join("parse.py");
    std::fs::write(&script_file, script).unwrap();
    for (engine, url, extra) in cases {
        let table = if engine == "bigquery" {
            "analytics.trailkeep_events"
        } else {
            "trailkeep_events"
        };
        let sql = ddl(
            &data,
            &[
                &["--archive", url, "--engine", engine, "--table", table],
                extra,
            ]
            .concat(),
        );
        let file = dir.path().join(format!("{engine}.sql"));
        std::fs::write(&file, &sql).unwrap();
        let dialect = engine;
        let out = Command::new(&python)
            .arg(&script_file)
            .arg(dialect)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sqlglot ({dialect}) refused:\n{sql}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let statements: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(statements >= 1, "{engine}: {sql}");
    }
}

/// The command refuses what an engine cannot read, naming the fix, and
/// never prints the URL's query.
#[test]
fn ddl_refuses_an_archive_the_engine_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = trailkeep(
        &data,
        &[
            "--archive",
            "s3://bkt/p?region=eu-west-1",
            "ddl",
            "--engine",
            "bigquery",
            "--table",
            "ds.t",
            "--stream",
            "a",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gs://") && err.contains("--archive") && !err.contains("region"),
        "{err}"
    );
    let out = trailkeep(&data, &["ddl", "--engine", "trino"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stream NAME"));
}
