//! The query engine on a real SQLite store and a real (directory) archive:
//! the same answers hot, archived, deleted and restored; pruning read from
//! the read counters; what a stream-bound caller can reach; the limits.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::archive::{ArchiveSettings, Archiver};
use crate::chain::note::NoteSigner;
use crate::event::{Limits, validate};
use crate::objstore::{BucketOptions, Compression};
use crate::store::sqlite::SqliteStore;
use crate::store::{AppendGroup, Store};

const HOUR_US: i64 = 3_600_000_000;
/// 2026-01-01T00:00:00Z.
const JAN_1: i64 = 1_767_225_600_000_000;

fn signer() -> NoteSigner {
    NoteSigner::from_seed("log.test", &[9; 32]).unwrap()
}

fn at(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Events `from..from+n` of `stream`, event i at JAN_1 + i hours, types
/// alternating, principal `user-{i % 3}`.
async fn append(store: &dyn Store, stream: &str, from: usize, n: usize) {
    let events = (from..from + n)
        .map(|i| {
            let t = if i % 2 == 0 {
                "grant.created"
            } else {
                "grant.revoked"
            };
            validate(
                i,
                serde_json::json!({
                    "id": format!("{stream}-{i}"),
                    "type": t,
                    "time": at(JAN_1 + i as i64 * HOUR_US),
                    "actor": format!("user-{}", i % 3),
                    "data": {"principalId": format!("user-{}", i % 3), "n": i}
                }),
                &crate::event::format_received(time::OffsetDateTime::now_utc()),
                &Limits::default(),
            )
            .unwrap()
        })
        .collect();
    store
        .append(vec![AppendGroup {
            sealed: None,
            stream: stream.into(),
            events,
        }])
        .await
        .unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    bucket: Bucket,
    archiver: Archiver,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    append(store.as_ref(), "s", 0, 250).await;
    append(store.as_ref(), "t", 0, 40).await;
    let url = format!("file://{}", dir.path().join("archive").display());
    let bucket = Bucket::open(&url, &BucketOptions::default()).unwrap();
    let settings = ArchiveSettings {
        older_than: Duration::ZERO,
        segment_events: 100,
        compression: Compression::Gzip,
        ..ArchiveSettings::default()
    };
    let archiver = Archiver::new(
        store.clone(),
        bucket.clone(),
        signer(),
        "log.test".into(),
        settings,
    );
    Fixture {
        _dir: dir,
        store,
        bucket,
        archiver,
    }
}

impl Fixture {
    fn engine(&self, settings: QuerySettings) -> Engine {
        Engine::new(self.store.clone(), Some(self.bucket.clone()), settings)
    }

    async fn run(&self, sql: &str) -> (String, QueryStats) {
        self.run_as(sql, Visible::All).await
    }

    async fn run_as(&self, sql: &str, visible: Visible) -> (String, QueryStats) {
        let a = self
            .engine(QuerySettings::default())
            .run(sql, visible, Arc::default())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        (
            pretty_format_batches(&a.batches).unwrap().to_string(),
            a.stats,
        )
    }

    async fn archive(&self) {
        crate::archive::conformance::clock_past_now().await;
        self.archiver
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
    }
}

const EVERYTHING: &str = "SELECT stream, seq, id, type, time, received, actor, subject, data, prev, hash, dt \
                          FROM events ORDER BY stream, seq";
const SEED: &str = "SELECT type, date_trunc('day', time) AS day, count(*) AS n FROM events \
                    WHERE json_get_str(data, 'principalId') = 'user-1' GROUP BY 1, 2 ORDER BY 1, 2";

#[tokio::test]
async fn the_seed_guides_athena_functions_run_unchanged() {
    let f = fixture().await;
    let (a, _) = f
        .run(
            "SELECT json_extract_scalar(data, '$.principalId') AS p, count(*) AS n FROM events \
              WHERE json_extract_scalar(data, '$.principalId') = 'user-1' GROUP BY 1",
        )
        .await;
    let (b, _) = f
        .run("SELECT data->>'principalId' AS p, count(*) AS n FROM events WHERE (data->>'principalId') = 'user-1' GROUP BY 1")
        .await;
    assert_eq!(a, b);
    assert!(a.contains("| user-1 | 96 |"), "83 of s and 13 of t: {a}");
    let (n, _) = f.run("SELECT json_extract_scalar(data, '$.n') AS n, json_extract(data, '$') AS d FROM events WHERE stream = 't' AND seq = 2").await;
    assert!(
        n.contains(r#"| 1 | {"n":1,"principalId":"user-1"} |"#),
        "{n}"
    );
    let e = refused(
        &f,
        QuerySettings::default(),
        "SELECT json_extract_scalar(data, 'principalId') FROM events",
    )
    .await;
    assert!(e.to_string().contains("not a JSONPath"), "{e}");
}

#[tokio::test]
async fn answers_are_the_same_hot_archived_deleted_and_restored() {
    let f = fixture().await;
    let (hot, _) = f.run(EVERYTHING).await;
    let (seed, _) = f.run(SEED).await;
    assert!(
        hot.contains("| s      | 250 |") && hot.contains("| t      | 40  |"),
        "{hot}"
    );
    let (tiers, _) = f
        .run("SELECT tier, count(*) FROM events GROUP BY tier")
        .await;
    assert!(tiers.contains("| hot  | 290"), "{tiers}");

    // A run archives and then deletes from hot what it archived (no
    // destination holds it back here).
    f.archive().await;
    let (cold, st) = f.run(EVERYTHING).await;
    assert_eq!(cold, hot, "read from the archive");
    assert_eq!(
        st.objects_read, 4,
        "s 1-100, 101-200, 201-250, t 1-40: {st:?}"
    );
    assert_eq!(st.hot_rows_read, 0);
    assert_eq!(f.run(SEED).await.0, seed);
    let (tiers, _) = f
        .run("SELECT tier, count(*) AS n FROM events GROUP BY tier ORDER BY tier")
        .await;
    assert!(tiers.contains("| cold | 290"), "{tiers}");
    append(f.store.as_ref(), "t", 40, 10).await;
    let (seed, _) = f.run(SEED).await;
    let (tiers, _) = f
        .run("SELECT tier, count(*) AS n FROM events GROUP BY tier ORDER BY tier")
        .await;
    assert!(
        tiers.contains("| cold | 290") && tiers.contains("| hot  | 10"),
        "{tiers}"
    );

    let restored = crate::archive::restore::restore(
        f.store.as_ref(),
        &f.bucket,
        &signer().verifier(),
        None,
        crate::archive::restore::RestoreRange {
            stream: "s",
            from: 51,
            to: 120,
        },
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(restored.restored, 70);
    let (hot_now, _) = f
        .run(&EVERYTHING.replace("FROM events", "FROM events WHERE seq <= 40 OR stream = 's'"))
        .await;
    assert_eq!(hot_now, hot, "restored seqs are counted once");
    let (tiers, _) = f
        .run("SELECT tier, count(*) AS n FROM events GROUP BY tier ORDER BY tier")
        .await;
    assert!(
        tiers.contains("| cold | 220") && tiers.contains("| hot  | 80"),
        "{tiers}"
    );
    let (n, _) = f
        .run("SELECT count(*) AS n FROM events WHERE tier = 'cold'")
        .await;
    assert!(
        n.contains("| 220 |"),
        "tier = 'cold' is a subset of the whole: {n}"
    );
    assert_eq!(f.run(SEED).await.0, seed);
}

#[tokio::test]
async fn narrow_questions_read_only_the_objects_they_need() {
    let f = fixture().await;
    f.archive().await;
    let (out, st) = f
        .run("SELECT count(*) AS n FROM events WHERE stream = 's' AND seq BETWEEN 120 AND 130")
        .await;
    assert!(out.contains("| 11 |"), "{out}");
    assert_eq!((st.objects_read, st.hot_rows_read), (1, 0), "{st:?}");

    // Event i is at JAN_1 + i h (seq i+1): 2026-01-05 holds seqs 97-120 of
    // s, split over the first two objects; t's events end on 2026-01-02.
    let (out, st) = f
        .run("SELECT count(*) AS n FROM events WHERE time >= '2026-01-05T00:00:00Z' AND time < '2026-01-06T00:00:00Z'")
        .await;
    assert!(out.contains("| 24 |"), "{out}");
    assert_eq!(st.objects_read, 2, "{st:?}");

    let (_, st) = f
        .run("SELECT count(*) FROM events WHERE stream = 'nope'")
        .await;
    assert_eq!((st.objects_read, st.hot_rows_read), (0, 0));
    let (_, st) = f
        .run("SELECT count(*) FROM events WHERE tier = 'hot'")
        .await;
    assert_eq!(st.objects_read, 0);
    let (_, st) = f.run("SELECT count(*) FROM events WHERE seq > 200").await;
    assert_eq!(st.objects_read, 1, "s 201-250; t ends at 40: {st:?}");
    let (_, st) = f
        .run("SELECT count(*) FROM events WHERE dt < '2000-01-01'")
        .await;
    assert_eq!(
        (st.objects_read, st.hot_rows_read),
        (0, 0),
        "dt is the day of receipt: today"
    );

    let (plan, _) = f
        .run("EXPLAIN SELECT * FROM events WHERE stream = 's' AND seq < 50")
        .await;
    assert!(
        plan.contains("archive objects=1 of 1 batches")
            && plan.contains("s/events/dt=")
            && plan.contains("00000000000000000001-00000000000000000100"),
        "EXPLAIN names the objects: {plan}"
    );
}

#[tokio::test]
async fn a_stream_bound_caller_sees_only_its_stream_whatever_the_sql() {
    let f = fixture().await;
    f.archive().await;
    let only_t = || Visible::Only("t".into());
    for sql in [
        "SELECT DISTINCT stream FROM events",
        "SELECT stream FROM events WHERE stream = 's'",
        "SELECT stream FROM events UNION ALL SELECT stream FROM events WHERE stream <> 't'",
        "SELECT stream FROM (SELECT * FROM events) e WHERE e.stream IN ('s', 't')",
        "SELECT stream FROM events WHERE seq IN (SELECT seq FROM events WHERE stream = 's')",
        "SELECT table_name AS stream FROM information_schema.tables",
        "SELECT column_name AS stream FROM information_schema.columns",
    ] {
        let (out, _) = f.run_as(sql, only_t()).await;
        assert!(!out.contains("| s "), "{sql} showed stream s:\n{out}");
    }
    let (out, st) = f.run_as("SELECT count(*) AS n FROM events", only_t()).await;
    assert!(out.contains("| 40 |"), "{out}");
    assert_eq!(st.objects_read, 1, "t's object only, not s's three: {st:?}");
    let (out, _) = f
        .run_as(
            "SELECT count(*) AS n FROM events WHERE stream = 's'",
            only_t(),
        )
        .await;
    assert!(out.contains("| 0 |"), "{out}");
}

async fn refused(f: &Fixture, settings: QuerySettings, sql: &str) -> QueryError {
    f.engine(settings)
        .run(sql, Visible::All, Arc::default())
        .await
        .expect_err(sql)
}

#[tokio::test]
async fn nothing_can_be_changed_or_reached_outside_the_table() {
    let f = fixture().await;
    let d = QuerySettings::default;
    for sql in [
        "INSERT INTO events (stream) VALUES ('x')",
        "DELETE FROM events",
        "UPDATE events SET type = 'x'",
        "DROP TABLE events",
        "CREATE TABLE x AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM events",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/trailkeep-query-copy.csv'",
        "SET datafusion.execution.target_partitions = 64",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let e = refused(&f, d(), sql).await;
        assert!(e.is_bad_query(), "{sql}: {e:?}");
    }
    let (out, _) = f.run("SELECT count(*) AS n FROM events").await;
    assert!(out.contains("| 290 |"), "{out}");
}

#[tokio::test]
async fn bad_sql_says_where() {
    let f = fixture().await;
    let e = refused(&f, QuerySettings::default(), "SELECT *\nFRM events").await;
    let QueryError::Sql { line, column, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!((*line, *column), (Some(2), Some(1)), "{e}");
    let e = refused(&f, QuerySettings::default(), "SELECT nope FROM events").await;
    assert!(
        matches!(&e, QueryError::Invalid(m) if m.contains("nope")),
        "{e:?}"
    );
}

#[tokio::test]
async fn limits_stop_a_runaway_query_and_name_the_setting() {
    let f = fixture().await;
    let e = refused(
        &f,
        QuerySettings {
            max_rows: 10,
            ..QuerySettings::default()
        },
        "SELECT * FROM events",
    )
    .await;
    assert!(
        matches!(
            e,
            QueryError::Limit {
                setting: "max_rows",
                ..
            }
        ),
        "{e:?}"
    );
    let e = refused(
        &f,
        QuerySettings {
            timeout: Duration::from_millis(300),
            ..QuerySettings::default()
        },
        "SELECT count(*) FROM events a, events b, events c, events d",
    )
    .await;
    assert!(
        matches!(
            e,
            QueryError::Limit {
                setting: "timeout",
                ..
            }
        ),
        "{e:?}"
    );
    let e = refused(
        &f,
        QuerySettings {
            max_memory_mb: 16,
            ..QuerySettings::default()
        },
        "SELECT a.data, b.data, c.data FROM events a, events b, events c ORDER BY a.data, b.data, c.data",
    )
    .await;
    assert!(
        matches!(
            e,
            QueryError::Limit {
                setting: "max_memory_mb",
                ..
            }
        ),
        "{e:?}"
    );
    let e = refused(
        &f,
        QuerySettings::default(),
        &format!("SELECT 1 {}", " ".repeat(70_000)),
    )
    .await;
    assert!(
        matches!(
            e,
            QueryError::Limit {
                setting: "max_sql_bytes",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_changed_or_missing_archive_object_fails_the_query_naming_it() {
    let f = fixture().await;
    f.archive().await;
    let b = f.store.archive_batch_at("t", 1).await.unwrap().unwrap();
    let path = f._dir.path().join("archive").join(&b.object_key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = refused(
        &f,
        QuerySettings::default(),
        "SELECT count(*) FROM events WHERE stream = 't'",
    )
    .await;
    assert!(
        matches!(&e, QueryError::Archive(m) if m.contains(&b.object_key) && m.contains("SHA-256")),
        "{e:?}"
    );
    std::fs::remove_file(&path).unwrap();
    let e = refused(
        &f,
        QuerySettings::default(),
        "SELECT count(*) FROM events WHERE stream = 't'",
    )
    .await;
    assert!(
        matches!(&e, QueryError::Archive(m) if m.contains("not in the archive")),
        "{e:?}"
    );
    let (out, _) = f
        .run("SELECT count(*) AS n FROM events WHERE stream = 's'")
        .await;
    assert!(out.contains("| 250 |"), "other streams still answer: {out}");
}

#[tokio::test]
async fn every_format_writes() {
    let f = fixture().await;
    let a = f
        .engine(QuerySettings::default())
        .run(
            "SELECT stream, seq, time, data FROM events WHERE stream = 't' AND seq <= 2 ORDER BY seq",
            Visible::All,
            Arc::default(),
        )
        .await
        .unwrap();
    let out = |fmt| {
        let mut v = Vec::new();
        output::write(fmt, &a.schema, &a.batches, &a.stats, &mut v).unwrap();
        v
    };
    let json: serde_json::Value = serde_json::from_slice(&out(output::Format::Json)).unwrap();
    assert_eq!(json["rows"][1]["seq"], 2);
    assert_eq!(json["columns"][0]["name"], "stream");
    assert_eq!(json["stats"]["rows"], 2);
    let nd = String::from_utf8(out(output::Format::Ndjson)).unwrap();
    assert_eq!(nd.lines().count(), 2);
    let csv = String::from_utf8(out(output::Format::Csv)).unwrap();
    assert!(csv.starts_with("stream,seq,time,data\n"), "{csv}");
    let pq = out(output::Format::Parquet);
    assert_eq!(&pq[..4], b"PAR1");
    let (schema, batches) = output::read_arrow(&out(output::Format::Arrow)).unwrap();
    assert_eq!((schema, batches), (a.schema.clone(), a.batches.clone()));
    let table = String::from_utf8(out(output::Format::Table)).unwrap();
    assert!(table.contains("2026-01-01T01:00:00Z"), "{table}");
}

/// The README's queries run as written.
#[tokio::test]
async fn the_readme_queries_run() {
    let f = fixture().await;
    f.archive().await;
    let readme = include_str!("../../README.md");
    let start = readme.find("## SQL over every event").unwrap();
    let section =
        &readme[start..start + readme[start..].find("\n## Querying the archive").unwrap()];
    let mut ran = 0;
    for block in section.split("```sql\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        for sql in block.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let sql: String = sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            f.run(&sql).await;
            ran += 1;
        }
    }
    for line in section.lines().filter(|l| l.starts_with("trailkeep query")) {
        let parts: Vec<&str> = line.split('"').collect();
        if parts.len() >= 3 && !line.contains("--server") {
            let q = parts[1];
            f.run(q).await;
            ran += 1;
        }
    }
    let completeness = section
        .split("trailkeep query --format csv \"SELECT stream, dt")
        .nth(1)
        .unwrap();
    let sql = format!(
        "SELECT stream, dt{}",
        &completeness[..completeness.find('"').unwrap()]
    );
    let (out, _) = f.run(&sql).await;
    assert!(out.contains("| true"), "{out}");
    assert!(ran >= 5, "{ran}");
}

/// A read key must not be able to crash the server with deep SQL: a long
/// chain of operators (parsed in a loop, not recursively) is a deep tree.
#[tokio::test]
async fn deep_sql_is_refused_or_answered_never_a_crash() {
    let f = fixture().await;
    let run = |sql: String| {
        let e = f.engine(QuerySettings::default());
        async move { e.run(&sql, Visible::All, Arc::default()).await }
    };
    // At the limits: answered.
    let r = run(format!("SELECT 1{} AS x", "+1".repeat(MAX_OPERATORS))).await;
    assert!(r.is_ok(), "{r:?}");
    let r = run(format!(
        "SELECT count(*) FROM events WHERE {}",
        vec!["seq = 1"; MAX_OPERATORS / 2].join(" OR ")
    ))
    .await;
    assert!(r.is_ok(), "{r:?}");
    let r = run(format!(
        "SELECT {}1{} AS x",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    ))
    .await;
    assert!(r.is_ok(), "{r:?}");
    // Past them: refused, naming why (this used to overflow the stack and
    // abort the process).
    for sql in [
        format!("SELECT 1{} AS x", "+1".repeat(20_000)),
        format!("SELECT {}1{} AS x", "(".repeat(20_000), ")".repeat(20_000)),
        format!("SELECT 1 WHERE {}", vec!["1 = 1"; 5_000].join(" AND ")),
        format!("SELECT {}1", "- ".repeat(20_000)),
    ] {
        let e = run(sql).await.expect_err("refused");
        assert!(
            e.is_bad_query() && e.to_string().contains("more than"),
            "{e}"
        );
    }
}
