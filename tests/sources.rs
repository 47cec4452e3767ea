//! SSE source tests against a local upstream server (axum) that scripts each
//! connection: ids or none, multi-line data, CRLF, comments, drops mid-event,
//! resume by `Last-Event-ID` or not at all, a backfill endpoint, malformed
//! events, and `kill -9` of `serve` while the source runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use common::*;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

/// What one upstream connection sends.
struct Script {
    frames: Vec<String>,
    /// Close after the frames (else hold the connection open).
    close: bool,
    /// Pause before each frame.
    delay: Duration,
}

type StreamFn = dyn Fn(usize, Option<String>) -> Script + Send + Sync;
type BackfillFn = dyn Fn(Option<String>) -> Value + Send + Sync;

#[derive(Default)]
struct Seen {
    last_event_ids: Vec<Option<String>>,
    queries: Vec<Option<String>>,
    auth: Vec<Option<String>>,
    backfill_since: Vec<Option<String>>,
}

#[derive(Clone)]
struct Upstream {
    stream: Arc<StreamFn>,
    backfill: Arc<BackfillFn>,
    seen: Arc<Mutex<Seen>>,
}

async fn stream_handler(
    State(up): State<Upstream>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let n = {
        let mut s = up.seen.lock().unwrap();
        s.last_event_ids.push(last.clone());
        s.queries.push(q);
        s.auth.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        s.last_event_ids.len()
    };
    let script = (up.stream)(n, last);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        for f in script.frames {
            // The fake upstream's own pace (a live stream), not a wait.
            tokio::time::sleep(script.delay).await;
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return;
            }
        }
        if !script.close {
            // Keep the stream open (the sender alive) for good.
            std::future::pending::<()>().await;
        }
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn backfill_handler(State(up): State<Upstream>, RawQuery(q): RawQuery) -> axum::Json<Value> {
    let since = q.and_then(|q| {
        q.split('&').find_map(|kv| {
            kv.strip_prefix("since=")
                .map(|v| v.replace("%3A", ":").replace("%2B", "+"))
        })
    });
    up.seen.lock().unwrap().backfill_since.push(since.clone());
    axum::Json((up.backfill)(since))
}

async fn start_upstream(
    stream: Arc<StreamFn>,
    backfill: Arc<BackfillFn>,
) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let up = Upstream {
        stream,
        backfill,
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/stream", get(stream_handler))
        .route("/backfill", get(backfill_handler))
        .with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn no_backfill() -> Arc<BackfillFn> {
    Arc::new(|_| json!({"entries": []}))
}

/// A Grantex-shaped event: `{id, type, createdAt, data}`.
fn event(i: usize, ty: &str) -> Value {
    json!({"id": format!("e{i}"), "type": ty, "createdAt": format!("2026-11-23T10:{:02}:{:02}Z", i / 60, i % 60), "data": {"n": i}})
}

fn frame(id: Option<&str>, data: &Value) -> String {
    match id {
        Some(id) => format!("id: {id}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

fn write_config(dir: &Path, base: &str, extra: &str, backfill: bool) -> PathBuf {
    let mut text = format!(
        "[[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"{base}/stream\"\nstream = \"up\"\nallow_private = true\napi_key_env = \"TEST_SSE_KEY\"\nreconnect_initial_ms = 50\nreconnect_max_ms = 200\nlease_ttl_ms = 1000\n{extra}\n"
    );
    if backfill {
        text.push_str(&format!("[sources.backfill]\nurl = \"{base}/backfill\"\nsince_param = \"since\"\nitems_field = \"entries\"\n"));
    }
    let path = dir.join("trailkeep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_serve(data: &Path, config: &Path, store: &str) -> Server {
    // SAFETY of the environment: set before any thread of this test reads it.
    unsafe { std::env::set_var("TEST_SSE_KEY", "secret123") };
    Server::start(
        data,
        &["--config", config.to_str().unwrap(), "--store", store],
    )
    .await
}

fn stored(data: &Path) -> Vec<(u64, String, Value)> {
    let conn = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    let mut q = conn.prepare("SELECT e.seq, e.id, e.body FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = 'up' ORDER BY e.seq").unwrap();
    q.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get(1)?,
            serde_json::from_str::<Value>(&r.get::<_, String>(2)?).unwrap(),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn status(data: &Path) -> Value {
    let out = trailkeep(data, &["sources", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

fn assert_exactly_once(data: &Path, expected_ids: &[String]) {
    let rows = stored(data);
    let ids: Vec<&String> = rows.iter().map(|r| &r.1).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event was stored twice: {ids:?}"
    );
    let want: HashSet<&String> = expected_ids.iter().collect();
    assert_eq!(unique, want, "stored ids differ from the upstream's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_stream_shape_is_stored() {
    let multi = "{\"id\":\"multi\",\"type\":\"grant.created\",\n\"data\":{\"lines\":2}}";
    let frames = vec![
        ": a comment line\n\n".to_owned(),
        "retry: 100\n\n".to_owned(),
        frame(Some("1"), &event(1, "grant.created")),
        // No id in the frame, an id in the object.
        frame(None, &event(2, "token.issued")),
        // Multi-line data: the lines join with \n and parse as one JSON value.
        format!(
            "id: 3\nevent: grant.created\ndata: {}\ndata: {}\n\n",
            multi.split('\n').next().unwrap(),
            multi.split('\n').nth(1).unwrap()
        ),
        // CRLF line endings.
        format!("id: 4\r\ndata: {}\r\n\r\n", event(4, "grant.revoked")),
        // Neither an object id nor a frame id: the id is derived from content.
        format!(
            "data: {}\n\n",
            json!({"type": "budget.alert", "data": {"pct": 90}})
        ),
    ];
    let frames = Arc::new(frames);
    let stream: Arc<StreamFn> = Arc::new(move |n, _| Script {
        frames: if n == 1 { (*frames).clone() } else { vec![] },
        close: false,
        delay: Duration::from_millis(5),
    });
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", false);
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(10), "five events", || {
        data.join("trailkeep.db").metadata().is_ok() && stored(&data).len() == 5
    })
    .await;
    let rows = stored(&data);
    let ids: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(&ids[..4], ["e1", "e2", "multi", "e4"]);
    assert!(ids[4].starts_with("src_"), "derived id: {}", ids[4]);
    assert_eq!(rows[2].2["data"]["lines"], 2, "multi-line data joined");
    assert_eq!(
        rows[0].2["time"], "2026-11-23T10:00:01Z",
        "createdAt became time"
    );
    assert_eq!(
        seen.lock().unwrap().auth[0].as_deref(),
        Some("Bearer secret123"),
        "API key sent as a bearer token"
    );
    // The state row follows the commits within `PROGRESS_EVERY` (250 ms).
    wait_until(Duration::from_secs(10), "the counters written", || {
        status(&data)["taken"].as_u64() >= Some(5)
    })
    .await;
    let st = status(&data);
    assert_eq!(
        (
            st["taken"].as_u64(),
            st["rejected"].as_u64(),
            st["connected"].as_bool()
        ),
        (Some(5), Some(0), Some(true)),
        "{st}"
    );
    assert_eq!(
        st["last_event_id"], "4",
        "the last frame id seen is the resume position"
    );
    // The same status over HTTP, for a read key; rejected events need admin.
    let read = create_key(&data, "read");
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/v1/sources", server.url))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["sources"][0]["name"], "up");
    assert_eq!(v["sources"][0]["taken"], 5);
    let r = client
        .get(format!("{}/v1/sources/rejected", server.url))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "rejected events are admin-only");
    assert_eq!(
        client
            .get(format!("{}/v1/sources", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mid_event_resumes_from_last_event_id() {
    let all: Vec<String> = (1..=10)
        .map(|i| frame(Some(&i.to_string()), &event(i, "grant.created")))
        .collect();
    let all = Arc::new(all);
    let stream: Arc<StreamFn> = Arc::new(move |n, last: Option<String>| {
        let from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        if n == 1 {
            // Three events, then half of the fourth, then the connection drops.
            let mut frames: Vec<String> = all[..3].to_vec();
            frames.push(all[3][..all[3].len() / 2].to_owned());
            Script {
                frames,
                close: true,
                delay: Duration::from_millis(5),
            }
        } else {
            Script {
                frames: all[from..].to_vec(),
                close: false,
                delay: Duration::from_millis(5),
            }
        }
    });
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_serve(&data, &write_config(dir.path(), &base, "", false), "sqlite").await;
    wait_until(Duration::from_secs(10), "ten events", || {
        data.join("trailkeep.db").metadata().is_ok() && stored(&data).len() >= 10
    })
    .await;
    assert_exactly_once(
        &data,
        &(1..=10).map(|i| format!("e{i}")).collect::<Vec<_>>(),
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last_event_ids[0], None);
    assert_eq!(
        seen.last_event_ids[1].as_deref(),
        Some("3"),
        "reconnected with Last-Event-ID of the last complete event"
    );
    drop(seen);
    assert!(status(&data)["reconnects"].as_u64().unwrap() >= 1);
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_fills_the_gap_when_the_upstream_cannot_resume() {
    // The upstream sends no ids and cannot resume: events 4-6 happen while
    // the source is disconnected and exist only in the backfill endpoint.
    let log: Arc<Vec<Value>> = Arc::new((1..=9).map(|i| event(i, "grant.created")).collect());
    let l = log.clone();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = connections.clone();
    let stream: Arc<StreamFn> = Arc::new(move |n, _| {
        c.store(n, std::sync::atomic::Ordering::SeqCst);
        match n {
            1 => Script {
                frames: l[..3].iter().map(|e| frame(None, e)).collect(),
                close: true,
                delay: Duration::from_millis(5),
            },
            _ => Script {
                frames: l[6..].iter().map(|e| frame(None, e)).collect(),
                close: false,
                delay: Duration::from_millis(50),
            },
        }
    });
    let l = log.clone();
    let backfill: Arc<BackfillFn> = Arc::new(move |since| {
        // What has happened by then: e1-e3 before the first connection,
        // e4-e6 while the source was disconnected.
        let happened = if connections.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            3
        } else {
            6
        };
        let entries: Vec<&Value> = l[..happened]
            .iter()
            .filter(|e| {
                since
                    .as_ref()
                    .is_none_or(|s| e["createdAt"].as_str().unwrap() >= s.as_str())
            })
            .collect();
        json!({"entries": entries})
    });
    let (base, seen) = start_upstream(stream, backfill).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_serve(&data, &write_config(dir.path(), &base, "", true), "sqlite").await;
    wait_until(
        Duration::from_secs(10),
        "nine events and the overlap answered as duplicates",
        || {
            data.join("trailkeep.db").metadata().is_ok()
                && stored(&data).len() >= 9
                && status(&data)["duplicates"].as_u64().unwrap_or(0) >= 1
        },
    )
    .await;
    // A clean stop: whatever was in flight is stored before we look.
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(&data, &(1..=9).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let seen = seen.lock().unwrap();
    assert!(
        seen.backfill_since.len() >= 2,
        "a backfill after every (re)connect"
    );
    assert!(
        seen.backfill_since
            .contains(&Some("2026-11-23T09:55:03Z".to_owned())),
        "the backfill after the reconnect starts overlap_ms (5 minutes) before the last committed time: {:?}",
        seen.backfill_since
    );
    drop(seen);
    let st = status(&data);
    assert!(
        st["duplicates"].as_u64().unwrap() >= 1,
        "the overlap was answered as duplicates: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_counted_logged_and_kept() {
    let frames = vec![
        "id: 1\ndata: {not json\n\n".to_owned(),
        "id: 2\ndata: [1,2,3]\n\n".to_owned(),
        format!("id: 3\ndata: {}\n\n", json!({"id": "x", "data": {}})),
        format!(
            "id: 4\ndata: {}\n\n",
            json!({"id": "bad-time", "type": "t", "time": "yesterday"})
        ),
        frame(Some("5"), &event(5, "grant.created")),
    ];
    let frames = Arc::new(frames);
    let stream: Arc<StreamFn> = Arc::new(move |n, _| Script {
        frames: if n == 1 { (*frames).clone() } else { vec![] },
        close: false,
        delay: Duration::from_millis(5),
    });
    let (base, _) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_serve(&data, &write_config(dir.path(), &base, "", false), "sqlite").await;
    wait_until(
        Duration::from_secs(10),
        "the valid event and four rejections",
        || {
            data.join("trailkeep.db").metadata().is_ok()
                && !stored(&data).is_empty()
                && status(&data)["rejected"].as_u64().unwrap_or(0) >= 4
        },
    )
    .await;
    // Issue #15: the source's series say the same (connected, what was
    // taken and rejected, when the last event came).
    let (metrics, _) = common::scrape(&server.url).await;
    let series = |name: &str| -> f64 {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
    };
    assert_eq!(series("trailkeep_source_connected{source=\"up\"}"), 1.0);
    assert_eq!(
        series("trailkeep_source_events_total{source=\"up\",outcome=\"rejected\"}"),
        4.0
    );
    assert_eq!(
        series("trailkeep_source_events_total{source=\"up\",outcome=\"taken\"}"),
        1.0
    );
    assert_eq!(
        series("trailkeep_source_events_total{source=\"up\",outcome=\"filtered\"}"),
        0.0
    );
    assert!(series("trailkeep_source_last_event_timestamp_seconds{source=\"up\"}") > 1.7e9);
    // A clean stop: whatever was in flight is stored before we look.
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(&data, &["e5".to_owned()]);
    let st = status(&data);
    assert_eq!(st["rejected"], 4, "{st}");
    let out = trailkeep(&data, &["sources", "rejected", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("not JSON"),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["raw"], "{not json");
    assert!(
        rows[0]["position"].as_str().unwrap().contains("event 1"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON object")
    );
    assert!(rows[2]["reason"].as_str().unwrap().contains("type"));
    assert!(
        rows[3]["reason"].as_str().unwrap().starts_with("time"),
        "{}",
        rows[3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_type_filter_is_sent_upstream_and_enforced_here() {
    let frames = vec![
        frame(Some("1"), &event(1, "grant.created")),
        frame(Some("2"), &event(2, "token.issued")),
        frame(Some("3"), &event(3, "grant.revoked")),
    ];
    let frames = Arc::new(frames);
    // The upstream ignores the filter and sends everything.
    let stream: Arc<StreamFn> = Arc::new(move |n, _| Script {
        frames: if n == 1 { (*frames).clone() } else { vec![] },
        close: false,
        delay: Duration::from_millis(5),
    });
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_serve(
        &data,
        &write_config(
            dir.path(),
            &base,
            "types = [\"grant.created\", \"grant.revoked\"]",
            false,
        ),
        "sqlite",
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "two events and one filtered",
        || {
            data.join("trailkeep.db").metadata().is_ok()
                && stored(&data).len() >= 2
                && status(&data)["filtered"].as_u64().unwrap_or(0) >= 1
        },
    )
    .await;
    // A clean stop: whatever was in flight is stored before we look.
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(&data, &["e1".to_owned(), "e3".to_owned()]);
    assert_eq!(
        seen.lock().unwrap().queries[0].as_deref(),
        Some("types=grant.created%2Cgrant.revoked")
    );
    assert_eq!(status(&data)["filtered"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_source_runs_loses_and_doubles_nothing() {
    const TOTAL: usize = 600;
    let all: Arc<Vec<String>> = Arc::new(
        (1..=TOTAL)
            .map(|i| frame(Some(&i.to_string()), &event(i, "grant.created")))
            .collect(),
    );
    let stream: Arc<StreamFn> = Arc::new(move |_, last: Option<String>| {
        let from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        Script {
            frames: all[from..].to_vec(),
            close: false,
            delay: Duration::from_millis(2),
        }
    });
    let (base, _) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", false);
    for _ in 0..4 {
        let server = start_serve(&data, &config, "sqlite").await;
        // Kill mid-stream, once this run has stored some events of its own.
        let before = stored(&data).len();
        wait_until(Duration::from_secs(30), "this run to store events", || {
            stored(&data).len() >= (before + 40).min(TOTAL)
        })
        .await;
        server.kill9();
    }
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(30), "every event", || {
        stored(&data).len() >= TOTAL
    })
    .await;
    // A clean stop: whatever was in flight is stored before we look.
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(
        &data,
        &(1..=TOTAL).map(|i| format!("e{i}")).collect::<Vec<_>>(),
    );
    let (code, report) = verify_json(&data);
    assert_eq!(code, 0, "{report}");
}

/// The source writes its position at most every 250 ms (issue #18), so a
/// crash can leave it behind what was committed. Here the process dies
/// right after a commit, before the position moved: the restart resumes
/// from the older id and the replay goes into deduplication, each event
/// stored once, nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_position_write_replays_into_dedup() {
    const TOTAL: usize = 30;
    let all: Arc<Vec<String>> = Arc::new(
        (1..=TOTAL)
            .map(|i| frame(Some(&i.to_string()), &event(i, "grant.created")))
            .collect(),
    );
    // Events the upstream has so far; each connection gets those after
    // its Last-Event-ID, then stays open.
    let available = Arc::new(std::sync::atomic::AtomicUsize::new(10));
    let stream: Arc<StreamFn> = {
        let available = available.clone();
        Arc::new(move |_, last: Option<String>| {
            let from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
            let to = available.load(std::sync::atomic::Ordering::SeqCst);
            Script {
                frames: all[from.min(to)..to].to_vec(),
                close: false,
                delay: Duration::from_millis(1),
            }
        })
    };
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", false);
    // Run 1: ten events, and the position written.
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(10), "the position at 10", || {
        data.join("trailkeep.db").metadata().is_ok() && status(&data)["last_event_id"] == "10"
    })
    .await;
    server.kill9();
    // Run 2: twenty more; the process dies right after its first commit.
    available.store(TOTAL, std::sync::atomic::Ordering::SeqCst);
    let mut serve = std::process::Command::new(BIN);
    serve
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(["--store", "sqlite"])
        .env("TEST_SSE_KEY", "secret123")
        .env("TRAILKEEP_TEST_FAILPOINT", "source.batch.committed")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let died = tokio::task::spawn_blocking(move || serve.status().unwrap())
        .await
        .unwrap();
    assert!(!died.success(), "the failpoint aborted the process");
    let committed = stored(&data).len();
    assert!(committed > 10, "run 2 committed before dying ({committed})");
    assert_eq!(
        status(&data)["last_event_id"],
        "10",
        "the position stayed behind"
    );
    // Run 3: resumes from the older id; the replay is deduplicated.
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(20), "every event", || {
        stored(&data).len() >= TOTAL
    })
    .await;
    // Every event stored is not yet every position written: the state row
    // trails by up to 250 ms (a read here once saw 12). Wait for the state
    // that means "caught up"; its counts are written with the position, so
    // from then on they are final too.
    let last = format!("{TOTAL}");
    let mut st = Value::Null;
    let caught_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while st["last_event_id"] != last.as_str() {
        assert!(
            tokio::time::Instant::now() < caught_up,
            "the source's state never reached last_event_id {last} in 20 s: {st}"
        );
        tokio::time::sleep(POLL).await;
        st = status(&data);
    }
    assert_eq!(
        st["duplicates"].as_u64(),
        Some((committed - 10) as u64),
        "what run 2 committed came again and was answered as duplicates: {st}"
    );
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(
        seen.lock().unwrap().last_event_ids,
        [None, Some("10".to_owned()), Some("10".to_owned())]
    );
    assert_exactly_once(
        &data,
        &(1..=TOTAL).map(|i| format!("e{i}")).collect::<Vec<_>>(),
    );
    // The stop's last write changed neither the position nor the counts.
    let after = status(&data);
    assert_eq!(after["last_event_id"], st["last_event_id"], "{after}");
    assert_eq!(after["duplicates"], st["duplicates"], "{after}");
    let (code, report) = verify_json(&data);
    assert_eq!(code, 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_follows_cursors_page_by_page() {
    let log: Arc<Vec<Value>> = Arc::new((1..=7).map(|i| event(i, "grant.created")).collect());
    let l = log.clone();
    // Pages of three, the cursor being the index of the next item.
    let backfill: Arc<BackfillFn> = Arc::new(move |q| {
        let at: usize = q.and_then(|c| c.parse().ok()).unwrap_or(0);
        let page: Vec<&Value> = l.iter().skip(at).take(3).collect();
        let next = (at + 3 < l.len()).then(|| (at + 3).to_string());
        json!({"entries": page, "next": next})
    });
    let stream: Arc<StreamFn> = Arc::new(|_, _| Script {
        frames: vec![],
        close: false,
        delay: Duration::ZERO,
    });
    let (base, seen) = start_upstream(stream, backfill).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The cursor travels in the parameter the test handler records as `since`.
    let text = format!(
        "[[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"{base}/stream\"\nstream = \"up\"\nallow_private = true\n[sources.backfill]\nurl = \"{base}/backfill\"\ncursor_param = \"since\"\nnext_cursor_field = \"next\"\nitems_field = \"entries\"\n"
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, text).unwrap();
    create_key(&data, "read");
    let out = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "sources",
            "backfill",
            "--since",
            "2026-01-01T00:00:00Z",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report[0]["stats"]["pages"].as_u64(),
            report[0]["stats"]["taken"].as_u64()
        ),
        (Some(3), Some(7)),
        "{report}"
    );
    assert_exactly_once(&data, &(1..=7).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let cursors = seen.lock().unwrap().backfill_since.clone();
    assert_eq!(
        cursors,
        vec![None, Some("3".to_owned()), Some("6".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_on_demand_from_the_cli() {
    let log: Arc<Vec<Value>> = Arc::new((1..=5).map(|i| event(i, "grant.created")).collect());
    let l = log.clone();
    let backfill: Arc<BackfillFn> = Arc::new(move |since| {
        let entries: Vec<&Value> = l
            .iter()
            .filter(|e| {
                since
                    .as_ref()
                    .is_none_or(|s| e["createdAt"].as_str().unwrap() >= s.as_str())
            })
            .collect();
        json!({"entries": entries})
    });
    let stream: Arc<StreamFn> = Arc::new(|_, _| Script {
        frames: vec![],
        close: false,
        delay: Duration::ZERO,
    });
    let (base, seen) = start_upstream(stream, backfill).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", true);
    create_key(&data, "read"); // creates the store
    let out = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "sources",
            "backfill",
            "--since",
            "2026-11-23T10:00:03Z",
            "--json",
        ])
        .env("TEST_SSE_KEY", "secret123")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["stats"]["taken"], 3, "{report}");
    assert_exactly_once(&data, &["e3".to_owned(), "e4".to_owned(), "e5".to_owned()]);
    assert_eq!(
        seen.lock().unwrap().backfill_since[0].as_deref(),
        Some("2026-11-23T10:00:03Z")
    );
    let bad = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["sources", "backfill", "--since", "last tuesday"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since"));
}

/// Two `serve` nodes on one PostgreSQL run one source: only the lease holder
/// connects upstream; after `kill -9` of the holder the other node takes
/// over (resuming by `Last-Event-ID`) and every event is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_lease_fails_over_between_nodes() {
    let Some(pg) = fresh_postgres("tk_lease").await else {
        return;
    };
    const TOTAL: usize = 300;
    let all: Arc<Vec<String>> = Arc::new(
        (1..=TOTAL)
            .map(|i| frame(Some(&i.to_string()), &event(i, "grant.created")))
            .collect(),
    );
    let stream: Arc<StreamFn> = Arc::new(move |_, last: Option<String>| {
        let from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        Script {
            frames: all[from..].to_vec(),
            close: false,
            delay: Duration::from_millis(5),
        }
    });
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &base, "", false);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = start_serve(&a_dir, &config, &pg.url).await;
    wait_until(Duration::from_secs(10), "node a connected upstream", || {
        seen.lock().unwrap().last_event_ids.len() == 1
    })
    .await;
    let b = start_serve(&b_dir, &config, &pg.url).await;
    // Wall-clock on purpose: "b stands by" needs a window to hold in, past
    // a lease TTL (1 s) in which b would take a free lease.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        seen.lock().unwrap().last_event_ids.len(),
        1,
        "the second node stands by while the first holds the lease"
    );
    a.kill9();
    wait_until(Duration::from_secs(10), "node b took over", || {
        seen.lock().unwrap().last_event_ids.len() >= 2
    })
    .await;
    let resumed_from = seen.lock().unwrap().last_event_ids[1].clone();
    assert!(
        resumed_from.is_some(),
        "the new holder resumed from the stored position"
    );
    let (db, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let count = || async {
        db.query_one(
            "SELECT count(*), count(DISTINCT e.id) FROM events e JOIN streams s ON s.id = e.stream_id WHERE substr(s.name, 1, 1) <> '_'",
            &[],
        )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .unwrap()
    };
    common::wait_for(Duration::from_secs(20), "every event stored", async || {
        count().await.0 >= TOTAL as i64
    })
    .await;
    // A clean stop: whatever was in flight is stored before we count.
    assert_eq!(b.terminate().code(), Some(0));
    let (n, distinct) = count().await;
    assert_eq!(
        (n, distinct),
        (TOTAL as i64, TOTAL as i64),
        "every event once, none twice"
    );
    // The takeover window is recorded: from node a's last heartbeat to
    // node b's first connection, resumed by Last-Event-ID.
    let gap = db
        .query_one(
            "SELECT reason, resume, end_ms - start_ms FROM source_gaps",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(gap.get::<_, String>(0), "node_stopped");
    assert_eq!(gap.get::<_, String>(1), "last_event_id");
    assert!(gap.get::<_, i64>(2) > 0);
}

fn source_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("trailkeep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Issue #13: SSE source URLs had no SSRF guard; issue #15: `localhost`
/// is refused when the config is read (RFC 6761: always loopback), naming
/// the source's key that allows it; nothing is connected to. (A name the
/// resolver maps to a private address is refused at connect time:
/// `net::tests::refused_before_any_connection`.)
#[test]
fn a_source_refuses_private_addresses_before_connecting() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = source_config(
        dir.path(),
        &format!(
            "[[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"http://localhost:{port}/stream\"\nstream = \"up\"\napi_key_env = \"TEST_SSE_KEY\"\n"
        ),
    );
    let out = trailkeep(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("sources[0].url")
            && e.contains("localhost is loopback")
            && e.contains("allow_private = true"),
        "{e}"
    );
    assert!(
        matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection was made"
    );
}

/// Issue #13: sources followed redirects to other origins and sent the
/// custom key header there. A cross-origin redirect is refused; the other
/// origin never sees a request, let alone the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_redirect_is_refused_and_the_key_stays_home() {
    let other_seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let rec = other_seen.clone();
    let other = axum::Router::new().route(
        "/stream",
        get(move |headers: HeaderMap| {
            let rec = rec.clone();
            async move {
                rec.lock().unwrap().push(headers);
                "data: {}\n\n"
            }
        }),
    );
    let lo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = lo.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(lo, other).await.unwrap() });
    let home_hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits = home_hits.clone();
    let home = axum::Router::new().route(
        "/stream",
        get(move || {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                Response::builder()
                    .status(307)
                    // Same address, another origin (host and port differ).
                    .header("location", format!("http://localhost:{other_port}/stream"))
                    .body(Body::empty())
                    .unwrap()
            }
        }),
    );
    let lh = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let home_addr = lh.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(lh, home).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = source_config(
        dir.path(),
        &format!(
            "[[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"http://{home_addr}/stream\"\nstream = \"up\"\nallow_private = true\napi_key_env = \"TEST_SSE_KEY\"\napi_key_header = \"x-api-key\"\nreconnect_initial_ms = 50\nreconnect_max_ms = 200\nlease_ttl_ms = 1000\n"
        ),
    );
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(20), "a few redirects", || {
        home_hits.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    let st = status(&data);
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("another origin"),
        "{st}"
    );
    assert!(
        other_seen.lock().unwrap().is_empty(),
        "the other origin got requests: {:?}",
        other_seen.lock().unwrap()
    );
    server.kill9();
}

/// Issue #13: SSE events had no size limit; one endless `data:` line burned
/// a core and memory. It is cut off at `max_event_bytes`, rejected and
/// counted, and each connection is dropped after little more than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_data_line_is_cut_off_and_rejected() {
    // Bytes each connection got out before the source dropped it, and
    // whether its body is gone (the server drops it when the connection
    // closes).
    type Sent = (
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    );
    struct Closed(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Closed {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let rec = sent.clone();
    let app = axum::Router::new().route(
        "/stream",
        get(move || {
            let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            rec.lock().unwrap().push((counter.clone(), closed.clone()));
            let guard = Closed(closed);
            async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let first = futures_util::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"data: "))
                });
                let endless = futures_util::stream::repeat(chunk).map(move |c| {
                    let _alive = &guard;
                    counter.fetch_add(c.len(), std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, Infallible>(c)
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(futures_util::StreamExt::chain(
                        first, endless,
                    )))
                    .unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = source_config(
        dir.path(),
        &format!(
            "[[sources]]\nname = \"up\"\ntype = \"sse\"\nurl = \"http://{addr}/stream\"\nstream = \"up\"\nallow_private = true\nmax_event_bytes = 65536\nreconnect_initial_ms = 50\nreconnect_max_ms = 200\n"
        ),
    );
    let server = start_serve(&data, &config, "sqlite").await;
    let st = common::poll(Duration::from_secs(30), "a rejected event", async || {
        let st = status(&data);
        (st["rejected"].as_u64().unwrap_or(0) >= 1).then_some(st)
    })
    .await;
    let e = st["last_error"].as_str().unwrap_or_default();
    // One endless line: the line limit (by default the event limit) cuts it.
    assert!(
        e.contains("max_line_bytes") || e.contains("max_event_bytes"),
        "{st}"
    );
    // The first connection was dropped: what it sent stays bounded (the
    // 64 KiB limit, plus what socket buffers held). The default lease TTL:
    // a loaded debug build may take a while on the cut-off event.
    let (first, closed) = sent.lock().unwrap()[0].clone();
    wait_until(
        Duration::from_secs(10),
        "the first connection to be closed (its body dropped)",
        || closed.load(std::sync::atomic::Ordering::SeqCst),
    )
    .await;
    let a = first.load(std::sync::atomic::Ordering::SeqCst);
    assert!(a < 64 << 20, "{a} bytes sent into one endless line");
    server.kill9();
}

/// A non-resumable upstream as Grantex's: every event goes to every open
/// connection as it happens, without `id:`, and nothing is replayed.
struct Hub {
    tx: tokio::sync::broadcast::Sender<String>,
    /// Connections made so far.
    made: std::sync::atomic::AtomicUsize,
    /// Connections open now.
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// How many frames connection `n` (from 1) gets before it is dropped.
    drop_after: Box<dyn Fn(usize) -> Option<usize> + Send + Sync>,
}

struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Hub {
    fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sends event `i` (time `base` + `i` ms... as given) to every open connection.
    fn emit(&self, e: &Value) {
        let _ = self.tx.send(frame(None, e));
    }
}

async fn hub_handler(State(h): State<Arc<Hub>>) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    let n = h.made.fetch_add(1, SeqCst) + 1;
    let limit = (h.drop_after)(n).unwrap_or(usize::MAX);
    let rx = h.tx.subscribe();
    h.open.fetch_add(1, SeqCst);
    let guard = OpenGuard(h.open.clone());
    let body = futures_util::stream::unfold(
        (rx, 0usize, guard),
        move |(mut rx, sent, guard)| async move {
            if sent >= limit {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(f) => {
                        return Some((Ok::<_, Infallible>(Bytes::from(f)), (rx, sent + 1, guard)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

async fn start_hub(
    drop_after: impl Fn(usize) -> Option<usize> + Send + Sync + 'static,
) -> (String, Arc<Hub>) {
    let (tx, _) = tokio::sync::broadcast::channel(8192);
    let hub = Arc::new(Hub {
        tx,
        made: Default::default(),
        open: Default::default(),
        drop_after: Box::new(drop_after),
    });
    let app = axum::Router::new()
        .route("/stream", get(hub_handler))
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hub)
}

/// Emits events `from..=to` at the upstream's own pace.
async fn emit(hub: &Hub, from: usize, to: usize) {
    for i in from..=to {
        hub.emit(&event(i, "grant.created"));
        // The fake upstream's own pace (a live stream), not a wait.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn ms_now() -> i64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()) as i64
}

fn parse_ms(t: &str) -> i64 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_lose_nothing_when_one_keeps_dropping() {
    const TOTAL: usize = 400;
    // Connection 2 stays; every other one is dropped after 15 events, so
    // one of the source's two connections drops and reconnects over and
    // over while the events flow.
    let (base, hub) = start_hub(|n| (n != 2).then_some(15)).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &base,
        "connections = 2\nconnection_stagger_ms = 100",
        false,
    );
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(10), "both connections open", || {
        hub.open() == 2
    })
    .await;
    emit(&hub, 1, TOTAL).await;
    wait_until(Duration::from_secs(20), "every event", || {
        stored(&data).len() >= TOTAL
    })
    .await;
    assert!(
        hub.made.load(std::sync::atomic::Ordering::SeqCst) >= 10,
        "the first connection was dropped again and again"
    );
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(
        &data,
        &(1..=TOTAL).map(|i| format!("e{i}")).collect::<Vec<_>>(),
    );
    let st = status(&data);
    assert_eq!(st["taken"], TOTAL as u64, "{st}");
    assert!(
        st["duplicates"].as_u64().unwrap() > 0,
        "both connections received: {st}"
    );
    assert_eq!(
        st["gaps_total"], 0,
        "one connection was receiving all along: no gap: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_active_nodes_lose_and_double_nothing_when_one_is_killed() {
    let Some(pg) = fresh_postgres("tk_active").await else {
        return;
    };
    const TOTAL: usize = 400;
    let (base, hub) = start_hub(|_| None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &base, "active_active = true", false);
    let a = start_serve(&dir.path().join("a"), &config, &pg.url).await;
    let b = start_serve(&dir.path().join("b"), &config, &pg.url).await;
    wait_until(Duration::from_secs(10), "both nodes connected", || {
        hub.open() == 2
    })
    .await;
    let (db, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Each node has confirmed the other was receiving when it started (a
    // node killed before it confirms it leaves a possible gap, rightly).
    common::wait_for(Duration::from_secs(10), "both nodes settled", async || {
        db.query_one(
            "SELECT count(*) FROM source_receivers WHERE receiving AND pending_ms IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 2
    })
    .await;
    emit(&hub, 1, TOTAL / 2).await;
    a.kill9();
    emit(&hub, TOTAL / 2 + 1, TOTAL).await;
    let count = || async {
        db
            .query_one(
                "SELECT count(*), count(DISTINCT e.id) FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = 'up'",
                &[],
            )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .unwrap()
    };
    common::wait_for(Duration::from_secs(20), "every event stored", async || {
        count().await.0 >= TOTAL as i64
    })
    .await;
    assert_eq!(b.terminate().code(), Some(0));
    assert_eq!(
        count().await,
        (TOTAL as i64, TOTAL as i64),
        "every event once, none twice"
    );
    let st = db
        .query_one("SELECT taken FROM sources WHERE name = 'up'", &[])
        .await
        .unwrap();
    // Both nodes add to one row; a node killed between a commit and its
    // counter write leaves that batch uncounted, never counted twice.
    let taken = st.get::<_, i64>(0);
    assert!(taken > TOTAL as i64 / 2 && taken <= TOTAL as i64, "{taken}");
    let gaps = db
        .query_one("SELECT count(*) FROM source_gaps", &[])
        .await
        .unwrap();
    assert_eq!(gaps.get::<_, i64>(0), 0, "node b was receiving all along");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_against_a_non_resumable_upstream_is_recorded_as_a_gap() {
    let (base, hub) = start_hub(|_| None).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", false);
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(10), "connected", || hub.open() == 1).await;
    emit(&hub, 1, 20).await;
    wait_until(Duration::from_secs(10), "the first events", || {
        stored(&data).len() >= 20
    })
    .await;
    let killed = ms_now();
    server.kill9();
    wait_until(Duration::from_secs(10), "the upstream saw the drop", || {
        hub.open() == 0
    })
    .await;
    // Sent while nobody was receiving: lost, and no backfill to fill it.
    emit(&hub, 21, 30).await;
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(10), "connected again", || {
        hub.open() == 1
    })
    .await;
    let resumed = ms_now();
    emit(&hub, 31, 50).await;
    wait_until(Duration::from_secs(10), "a gap recorded", || {
        status(&data)["gaps_total"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let st = status(&data);
    let gap = &st["gaps"][0];
    assert_eq!(gap["reason"], "restart", "{st}");
    assert_eq!(gap["resume"], "none", "nothing to resume from: {st}");
    let (start, end) = (
        parse_ms(gap["start"].as_str().unwrap()),
        parse_ms(gap["end"].as_str().unwrap()),
    );
    assert!(
        start <= killed,
        "the gap starts no later than the last moment known receiving: {st}"
    );
    assert!(killed - start < 5_000, "and not long before it: {st}");
    assert!(
        end >= killed && end <= resumed + 1_000,
        "it ends when receiving resumed: {st}"
    );
    // In the log's own stream, as a `source.gap` event.
    wait_until(Duration::from_secs(10), "the gap in _trailkeep", || {
        let conn = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
        conn.query_row(
            "SELECT count(*) FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = '_trailkeep' AND e.body LIKE '%\"source.gap\"%'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            >= 1
    })
    .await;
    let (series, _) = scrape(&server.url).await;
    assert_eq!(
        series.get("trailkeep_source_gaps_total{source=\"up\"}"),
        Some(&1.0),
        "{series:?}"
    );
    assert_eq!(server.terminate().code(), Some(0));
    let ids: HashSet<String> = stored(&data).into_iter().map(|r| r.1).collect();
    assert!(ids.contains("e20") && ids.contains("e50"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_overlap_catches_events_that_arrive_out_of_order() {
    // e1-e5 on the stream, then it drops; while disconnected e6 and e7
    // reach the audit endpoint, and e6 carries a time 300 ms *before*
    // e5's (it arrived out of order). A backfill from e5's time on
    // (no overlap) never sees it.
    let at = |i: usize, ms: u64| {
        json!({"id": format!("e{i}"), "type": "grant.created",
               "createdAt": format!("2026-11-23T10:00:{:02}.{:03}Z", ms / 1000, ms % 1000), "data": {"n": i}})
    };
    let log: Arc<Vec<Value>> = Arc::new(vec![
        at(1, 1000),
        at(2, 2000),
        at(3, 3000),
        at(4, 4000),
        at(6, 4700),
        at(5, 5000),
        at(7, 6000),
    ]);
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, l) = (connections.clone(), log.clone());
    let stream: Arc<StreamFn> = Arc::new(move |n, _| {
        c.store(n, std::sync::atomic::Ordering::SeqCst);
        let frames = if n == 1 {
            l.iter()
                .filter(|e| !matches!(e["id"].as_str(), Some("e6" | "e7")))
                .map(|e| frame(None, e))
                .collect()
        } else {
            Vec::new()
        };
        Script {
            frames,
            close: n == 1,
            delay: Duration::from_millis(5),
        }
    });
    let l = log.clone();
    let backfill: Arc<BackfillFn> = Arc::new(move |since| {
        let late = connections.load(std::sync::atomic::Ordering::SeqCst) >= 2;
        let entries: Vec<&Value> = l
            .iter()
            .filter(|e| late || !matches!(e["id"].as_str(), Some("e6" | "e7")))
            .filter(|e| {
                since
                    .as_ref()
                    .is_none_or(|s| parse_ms(e["createdAt"].as_str().unwrap()) >= parse_ms(s))
            })
            .collect();
        json!({"entries": entries})
    });
    let (base, _) = start_upstream(stream, backfill).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_serve(&data, &write_config(dir.path(), &base, "", true), "sqlite").await;
    wait_until(Duration::from_secs(10), "e7 from the backfill", || {
        data.join("trailkeep.db").metadata().is_ok() && stored(&data).iter().any(|r| r.1 == "e7")
    })
    .await;
    assert_eq!(server.terminate().code(), Some(0));
    assert_exactly_once(&data, &(1..=7).map(|i| format!("e{i}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_keeps_dropping_cannot_flood_the_log_with_gaps() {
    // Every connection gets one event and is dropped: each reconnect ends
    // a window nobody was receiving. They merge into one record, written
    // to `_trailkeep` once per gap_merge_ms, however many there are.
    let stream: Arc<StreamFn> = Arc::new(|n, _| Script {
        frames: vec![frame(None, &event(n, "grant.created"))],
        close: true,
        delay: Duration::from_millis(1),
    });
    let (base, seen) = start_upstream(stream, no_backfill()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "gap_merge_ms = 600000", false);
    let server = start_serve(&data, &config, "sqlite").await;
    wait_until(Duration::from_secs(20), "many gaps merged", || {
        data.join("trailkeep.db").metadata().is_ok()
            && status(&data)["gaps"][0]["merged"].as_u64().unwrap_or(0) >= 20
    })
    .await;
    assert!(seen.lock().unwrap().last_event_ids.len() >= 20);
    assert_eq!(server.terminate().code(), Some(0));
    let st = status(&data);
    assert_eq!(st["gaps_total"], 1, "one merged record: {st}");
    let conn = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    let logged: i64 = conn
        .query_row(
            "SELECT count(*) FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = '_trailkeep' AND e.body LIKE '%\"source.gap\"%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (1..=2).contains(&logged),
        "the record is logged when new and at most once more per window: {logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pages_by_time_until_no_later_time_comes() {
    // No cursor, and pages of at most two entries from `since` on: the
    // backfill must keep paging (each page starting at the latest time of
    // the last) past what it already has, and stop once a page brings
    // nothing later.
    let log: Arc<Vec<Value>> = Arc::new((1..=7).map(|i| event(i, "grant.created")).collect());
    let l = log.clone();
    let backfill: Arc<BackfillFn> = Arc::new(move |since| {
        let entries: Vec<&Value> = l
            .iter()
            .filter(|e| {
                since
                    .as_ref()
                    .is_none_or(|s| e["createdAt"].as_str().unwrap() >= s.as_str())
            })
            .take(2)
            .collect();
        json!({"entries": entries})
    });
    let stream: Arc<StreamFn> = Arc::new(|_, _| Script {
        frames: vec![],
        close: false,
        delay: Duration::ZERO,
    });
    let (base, seen) = start_upstream(stream, backfill).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &base, "", true);
    create_key(&data, "read"); // creates the store
    let out = std::process::Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .args([
            "sources",
            "backfill",
            "--since",
            "2026-11-23T10:00:02Z",
            "--json",
        ])
        .env("TEST_SSE_KEY", "secret123")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&data, &(2..=7).map(|i| format!("e{i}")).collect::<Vec<_>>());
    let since = seen.lock().unwrap().backfill_since.clone();
    assert_eq!(
        since.last().cloned().flatten().as_deref(),
        Some("2026-11-23T10:00:07Z"),
        "the last page started at the latest time and brought nothing later: {since:?}"
    );
    assert_eq!(since.len(), 6, "{since:?}");
}
