//! Day-2 operations (issue #15): `/metrics` after a scenario, and the
//! alert rules, dashboard and example config in `deploy/`, checked with
//! Prometheus's own `promtool` (Debian `prometheus`; scripts/test.sh
//! installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, create_key, poll, scrape, wait_for};
use trailkeep::telemetry::catalog::{self, Kind};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs promtool; its absence fails the test (CI must run it).
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: install Debian's `prometheus` package (scripts/test.sh does)");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn value(series: &BTreeMap<String, f64>, name: &str) -> f64 {
    *series
        .get(name)
        .unwrap_or_else(|| panic!("no series {name} in {series:#?}"))
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = repo("deploy/prometheus/trailkeep-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "promtool check rules: {out}");
    let tests = repo("deploy/prometheus/trailkeep-alerts.test.yml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok, "promtool test rules: {out}");
}

/// A rule or panel naming a metric trailkeep does not export would never
/// fire or draw: every `trailkeep_…` name in `deploy/` is in the catalogue.
#[test]
fn deploy_names_only_metrics_that_exist() {
    let mut named = 0;
    for file in [
        "deploy/prometheus/trailkeep-alerts.yml",
        "deploy/prometheus/trailkeep-alerts.test.yml",
        "deploy/grafana/trailkeep.json",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("trailkeep_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| matches!(catalog::find(b).map(|m| m.kind), Some(Kind::Histogram(_))))
                .unwrap_or(name);
            assert!(
                catalog::find(base).is_some(),
                "{file} names {name}, which trailkeep does not export"
            );
            named += 1;
            rest = &tail[end..];
        }
    }
    assert!(named > 30, "the deploy files name metrics ({named})");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/trailkeep.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

#[test]
fn example_config_is_valid() {
    let text = std::fs::read_to_string(repo("deploy/trailkeep.toml")).unwrap();
    let cfg = trailkeep::config::RawConfig::parse(&text)
        .unwrap()
        .validate(&trailkeep::config::Overrides::default())
        .unwrap();
    assert_eq!(cfg.destinations.len(), 2);
    assert_eq!(cfg.verify_interval, Some(Duration::from_secs(86_400)));
}

/// Every catalogued series is there from the start with HELP and TYPE;
/// after a scenario (events in, refused requests, delivery, an archive
/// run, a verification) each moved by exactly what happened; `delivered`
/// survives a restart; `promtool check metrics` finds nothing to lint; and
/// no stream name appears unless the operator allows it.
#[tokio::test]
async fn metrics_move_by_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out.ndjson");
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\nstreams = [\"app\"]\nmax_age_ms = 20\n",
            out.display()
        ),
    )
    .unwrap();
    let admin = create_key(&data, "admin");
    let ingest = create_key(&data, "ingest");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]).await;
    let url = server.url.clone();

    let (start, text) = scrape(&url).await;
    for m in catalog::METRICS {
        // Series whose labels are known at start (outcomes, configured
        // destinations) are there at once; a route, source, stream or lease
        // label appears with its first use.
        if m.labels
            .iter()
            .any(|(k, v)| v.is_empty() && *k != "destination")
        {
            continue;
        }
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        assert!(
            text.contains(&format!("# HELP {} ", m.name))
                && text.contains(&format!("# TYPE {} {kind}", m.name)),
            "{} is not there from the start as a {kind} with its HELP:\n{text}",
            m.name
        );
    }
    assert_eq!(value(&start, "trailkeep_writer_poisoned"), 0.0);
    assert_eq!(value(&start, "trailkeep_verify_last_ok"), -1.0);
    assert_eq!(
        value(
            &start,
            "trailkeep_destination_delivered_total{destination=\"f\"}"
        ),
        0.0
    );

    let c = reqwest::Client::new();
    let post = |token: &str, body: &'static str| {
        c.post(format!("{url}/v1/streams/app/events"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    let ok = post(
        &ingest,
        "{\"type\":\"a\"}\n{\"type\":\"b\"}\n{\"type\":\"c\",\"id\":\"x1\"}\n",
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    // The same id again: a duplicate, not a new event.
    assert_eq!(
        post(&ingest, "{\"type\":\"c\",\"id\":\"x1\"}\n")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(post(&ingest, "not json\n").await.unwrap().status(), 400);
    assert_eq!(
        post("tk_nope", "{\"type\":\"a\"}\n")
            .await
            .unwrap()
            .status(),
        401
    );

    // Delivered to the file destination: lag back to 0.
    let after = poll(
        Duration::from_secs(20),
        "delivery of the 3 events",
        async || {
            let (m, _) = scrape(&url).await;
            (value(
                &m,
                "trailkeep_destination_delivered_total{destination=\"f\"}",
            ) == 3.0
                && value(&m, "trailkeep_destination_lag_events{destination=\"f\"}") == 0.0)
                .then_some(m)
        },
    )
    .await;
    let delta = |name: &str| value(&after, name) - start.get(name).copied().unwrap_or(0.0);
    assert_eq!(
        delta("trailkeep_ingest_requests_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        delta("trailkeep_ingest_requests_total{outcome=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        delta("trailkeep_ingest_requests_total{outcome=\"unauthorized\"}"),
        1.0
    );
    assert_eq!(delta("trailkeep_events_duplicate_total"), 1.0);
    // The three bodies read (the unauthenticated one never is).
    let bodies = "{\"type\":\"a\"}\n{\"type\":\"b\"}\n{\"type\":\"c\",\"id\":\"x1\"}\n".len()
        + "{\"type\":\"c\",\"id\":\"x1\"}\n".len()
        + "not json\n".len();
    assert_eq!(delta("trailkeep_ingest_bytes_total"), bodies as f64);
    assert!(
        delta("trailkeep_events_appended_total") >= 3.0,
        "3 events, and the log's own records"
    );
    assert!(value(&after, "trailkeep_last_append_timestamp_seconds") > 1.7e9);
    assert_eq!(
        delta(
            "trailkeep_http_requests_total{route=\"/v1/streams/{stream}/events\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        delta(
            "trailkeep_http_requests_total{route=\"/v1/streams/{stream}/events\",method=\"POST\",status=\"400\"}"
        ),
        1.0
    );
    assert!(delta("trailkeep_commit_seconds_count") >= 1.0);
    assert_eq!(
        value(
            &after,
            "trailkeep_destination_dead_letters_open{destination=\"f\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&after, "trailkeep_streams"),
        start["trailkeep_streams"] + 1.0
    );

    // An archive run and a verification through the API.
    let run = c
        .post(format!("{url}/v1/archive/run"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 200, "{}", run.text().await.unwrap());
    let v = c
        .post(format!("{url}/v1/verify"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), 200);
    let (m, text) = scrape(&url).await;
    assert_eq!(
        value(&m, "trailkeep_archive_runs_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "trailkeep_archive_runs_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(value(&m, "trailkeep_archive_run_seconds_count"), 1.0);
    assert!(value(&m, "trailkeep_archive_last_success_timestamp_seconds") > 1.7e9);
    assert_eq!(
        value(&m, "trailkeep_verify_runs_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(value(&m, "trailkeep_verify_last_ok"), 1.0);
    assert_eq!(value(&m, "trailkeep_verify_last_problems"), 0.0);
    assert!(
        !text.contains("stream=\""),
        "no stream name without [metrics] stream_labels:\n{text}"
    );
    let (ok, lint) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "promtool check metrics:\n{lint}");

    // `delivered` is the stored total: it survives a restart (issue #15:
    // it restarted from zero with the process).
    assert!(server.terminate().success());
    std::fs::write(
        &cfg,
        format!(
            "[metrics]\nstream_labels = true\n[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"{}\"\nstreams = [\"app\"]\nmax_age_ms = 20\n",
            out.display()
        ),
    )
    .unwrap();
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]).await;
    let (m, _) = scrape(&server.url).await;
    assert_eq!(
        value(
            &m,
            "trailkeep_destination_delivered_total{destination=\"f\"}"
        ),
        3.0
    );
    let status = common::get_json(&format!("{}/v1/destinations", server.url), &admin).await;
    assert_eq!(status["destinations"][0]["delivered"], 3, "{status}");
    // With stream labels allowed, per-stream series appear.
    wait_for(Duration::from_secs(10), "a checkpoint of app", async || {
        let (m, _) = scrape(&server.url).await;
        m.get("trailkeep_stream_head_seq{stream=\"app\"}") == Some(&3.0)
            && m.get("trailkeep_stream_checkpoint_size{stream=\"app\"}") == Some(&3.0)
    })
    .await;
}

/// `[verify] interval`: the server verifies the whole hot store on its
/// own; a body changed behind its back (database write access) turns
/// `trailkeep_verify_last_ok` to 0 with the problem counted, which is what
/// the `TrailkeepVerificationFailed` alert watches, and the log says so.
#[tokio::test]
async fn scheduled_verification_reports_tampering_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("cfg.toml");
    std::fs::write(&cfg, "[verify]\ninterval = \"1s\"\n").unwrap();
    let ingest = create_key(&data, "ingest");
    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/streams/t/events", server.url))
        .bearer_auth(&ingest)
        .json(&serde_json::json!([{"type": "a", "id": "e1"}, {"type": "b", "id": "e2"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for(
        Duration::from_secs(20),
        "a clean scheduled verification",
        async || {
            let (m, _) = scrape(&server.url).await;
            m.get("trailkeep_verify_runs_total{outcome=\"ok\"}") >= Some(&1.0)
                && m.get("trailkeep_verify_last_ok") == Some(&1.0)
        },
    )
    .await;
    let c = rusqlite::Connection::open(data.join("trailkeep.db")).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let changed = c
        .execute(
            "UPDATE events SET body = replace(body, '\"type\":\"b\"', '\"type\":\"c\"') \
             WHERE stream_id = (SELECT id FROM streams WHERE name = 't') AND seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let m = poll(
        Duration::from_secs(20),
        "a failed scheduled verification",
        async || {
            let (m, _) = scrape(&server.url).await;
            (m.get("trailkeep_verify_last_ok") == Some(&0.0)).then_some(m)
        },
    )
    .await;
    assert!(value(&m, "trailkeep_verify_runs_total{outcome=\"problems\"}") >= 1.0);
    assert!(value(&m, "trailkeep_verify_last_problems") >= 1.0);
    assert!(value(&m, "trailkeep_verify_last_timestamp_seconds") > 1.7e9);
    common::wait_until(Duration::from_secs(10), "the error in the log", || {
        server.log.contains("scheduled verification found problems")
    })
    .await;
}

/// `/metrics` needs no key, and anyone can send requests: invented methods,
/// random paths, stream names. None of them becomes a label value, so no
/// client can grow the series kept in memory (or learn a stream's name).
#[tokio::test]
async fn clients_cannot_add_series() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ingest = create_key(&data, "ingest");
    let server = Server::start(&data, &[]).await;
    let c = reqwest::Client::new();
    let warm = |i: usize| {
        let c = c.clone();
        let url = server.url.clone();
        let ingest = ingest.clone();
        async move {
            let m = reqwest::Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            c.request(m, format!("{url}/x/{i}")).send().await.unwrap();
            c.get(format!("{url}/v1/streams/secret-{i}/events"))
                .send()
                .await
                .unwrap();
            c.post(format!("{url}/v1/streams/secret-{i}/events"))
                .bearer_auth(&ingest)
                .json(&serde_json::json!({"type": "a"}))
                .send()
                .await
                .unwrap();
        }
    };
    warm(0).await;
    // The first scrape adds `/metrics`'s own series.
    scrape(&server.url).await;
    let (before, _) = scrape(&server.url).await;
    for i in 1..40 {
        warm(i).await;
    }
    let (after, text) = scrape(&server.url).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no new series"
    );
    assert!(!text.contains("secret-"), "no stream name:\n{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
}
