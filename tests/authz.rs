//! Authorization by object, on every route (issue #13): every route × scope
//! × stream binding, through the real router on a real SQLite store.
//!
//! Two streams, `alpha` and `bravo`; destinations `dest-a` (alpha only),
//! `dest-b` (bravo only) and `shared` (both); sources `src-a` and `src-b`
//! with rejected events; dead letters on `shared` for both streams and on
//! `dest-b`. A key bound to `alpha` must act on alpha only and never see
//! `bravo`, `dest-b` or `src-b` in any answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use trailkeep::auth::{Scope, generate};
use trailkeep::config::{Overrides, RawConfig};
use trailkeep::server::{Running, start};
use trailkeep::store::{DeadLetter, RejectedEvent, SourceState};

/// What a route acts on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum On {
    /// Public: no token needed.
    Public,
    /// Stream alpha.
    Alpha,
    /// Stream bravo.
    Bravo,
    /// Every stream (needs a key for `*`).
    All,
    /// A listing, narrowed to the key's streams.
    List,
}

struct Route {
    method: &'static str,
    uri: String,
    body: &'static str,
    scope: Scope,
    on: On,
}

fn r(method: &'static str, uri: &str, body: &'static str, scope: Scope, on: On) -> Route {
    Route {
        method,
        uri: uri.to_owned(),
        body,
        scope,
        on,
    }
}

fn scope_ok(key: Scope, needed: Scope) -> bool {
    key == Scope::Admin || key == needed
}

struct World {
    _dir: tempfile::TempDir,
    running: Running,
}

impl World {
    async fn new() -> (Self, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let dest = |name: &str, streams: &str| {
            format!(
                "[[destinations]]\nname = \"{name}\"\ntype = \"file\"\npath = \"{}\"\nstreams = [{streams}]\nmax_age_ms = 50\n",
                out.join(format!("{name}.ndjson")).display()
            )
        };
        let text = format!(
            "[checkpoint]\ninterval_ms = 50\n{}{}{}",
            dest("dest-a", "\"alpha\""),
            dest("dest-b", "\"bravo\""),
            dest("shared", "\"*\"")
        );
        let config = RawConfig::parse(&text)
            .unwrap()
            .validate(&Overrides {
                data_dir: Some(dir.path().join("data")),
                listen: None,
                store: None,
                archive: None,
            })
            .unwrap();
        let running = start(&config).await.unwrap();
        let w = Self { _dir: dir, running };
        let ingest = w.key(Scope::Ingest, "*").await;
        for s in ["alpha", "bravo"] {
            let (st, b) = w
                .call(
                    "POST",
                    &format!("/v1/streams/{s}/events"),
                    Some(&ingest),
                    &json!([{"type": "login.ok", "data": {"who": format!("{s}-user")}}, {"type": "x"}])
                        .to_string(),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{b}");
        }
        let store = &w.running.state.store;
        for (name, stream) in [("src-a", "alpha"), ("src-b", "bravo")] {
            store
                .put_source_state(
                    SourceState {
                        name: name.into(),
                        stream: stream.into(),
                        connected: false,
                        last_event_id: None,
                        last_event_time: None,
                        taken: 0,
                        duplicates: 0,
                        rejected: 1,
                        filtered: 0,
                        reconnects: 0,
                        last_error: None,
                        last_error_at: None,
                        updated: "2026-01-01T00:00:00Z".into(),
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
            store
                .add_rejected(RejectedEvent {
                    source: name.into(),
                    at: "2026-01-01T00:00:00Z".into(),
                    position: "1".into(),
                    reason: "bad".into(),
                    raw: format!("{{\"from\":\"{stream}\"}}"),
                })
                .await
                .unwrap();
        }
        let letter = |destination: &str, stream: &str| DeadLetter {
            id: 0,
            destination: destination.into(),
            stream: stream.into(),
            start_seq: 1,
            end_seq: 1,
            status: Some(400),
            error: format!("{stream} refused"),
            at: "2026-01-01T00:00:00Z".into(),
            resolved: None,
        };
        store
            .add_dead_letter(letter("shared", "alpha"), false, None)
            .await
            .unwrap();
        let shared_bravo = store
            .add_dead_letter(letter("shared", "bravo"), false, None)
            .await
            .unwrap();
        let b_letter = store
            .add_dead_letter(letter("dest-b", "bravo"), false, None)
            .await
            .unwrap();
        // Checkpoints for both streams.
        common::wait_for(
            std::time::Duration::from_secs(20),
            "checkpoints of alpha and bravo",
            async || {
                let a = store.latest_checkpoint("alpha").await.unwrap();
                let b = store.latest_checkpoint("bravo").await.unwrap();
                a.is_some() && b.is_some()
            },
        )
        .await;
        (w, shared_bravo, b_letter)
    }

    async fn key(&self, scope: Scope, stream: &str) -> String {
        let (rec, token) = generate(scope, stream, "2026-01-01T00:00:00Z");
        self.running.state.store.create_key(rec).await.unwrap();
        token
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = self
            .running
            .router()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn routes(shared_bravo: i64, b_letter: i64) -> Vec<Route> {
    use On::*;
    use Scope::*;
    vec![
        r("GET", "/healthz", "", Read, Public),
        r("GET", "/readyz", "", Read, Public),
        r("GET", "/metrics", "", Read, Public),
        r("GET", "/v1/public-key", "", Read, Public),
        r("GET", "/v1/streams", "", Read, List),
        r(
            "POST",
            "/v1/streams/alpha/events",
            r#"{"type":"t"}"#,
            Ingest,
            Alpha,
        ),
        r(
            "POST",
            "/v1/streams/bravo/events",
            r#"{"type":"t"}"#,
            Ingest,
            Bravo,
        ),
        r("GET", "/v1/streams/alpha/events", "", Read, Alpha),
        r("GET", "/v1/streams/bravo/events", "", Read, Bravo),
        r("GET", "/v1/streams/alpha/checkpoint", "", Read, Alpha),
        r("GET", "/v1/streams/bravo/checkpoint", "", Read, Bravo),
        r(
            "GET",
            "/v1/streams/bravo/proof/inclusion?seq=1",
            "",
            Read,
            Bravo,
        ),
        r(
            "GET",
            "/v1/streams/bravo/proof/consistency?from=1",
            "",
            Read,
            Bravo,
        ),
        r(
            "GET",
            "/v1/streams/alpha/proof/inclusion?seq=1",
            "",
            Read,
            Alpha,
        ),
        r("POST", "/v1/verify", "", Admin, List),
        r("POST", "/v1/verify", r#"{"stream":"bravo"}"#, Admin, Bravo),
        r("POST", "/v1/verify", r#"{"stream":"alpha"}"#, Admin, Alpha),
        r("GET", "/v1/sources", "", Read, List),
        r("GET", "/v1/sources/rejected", "", Admin, List),
        r("GET", "/v1/sources/rejected?source=src-b", "", Admin, Bravo),
        r("GET", "/v1/sources/rejected?source=src-a", "", Admin, Alpha),
        r("GET", "/v1/destinations", "", Read, List),
        r("POST", "/v1/destinations/dest-a/pause", "", Admin, Alpha),
        r("POST", "/v1/destinations/dest-a/resume", "", Admin, Alpha),
        r("POST", "/v1/destinations/dest-b/pause", "", Admin, Bravo),
        r("POST", "/v1/destinations/dest-b/resume", "", Admin, Bravo),
        r("POST", "/v1/destinations/shared/pause", "", Admin, All),
        r("POST", "/v1/destinations/shared/resume", "", Admin, All),
        r(
            "GET",
            "/v1/destinations/shared/dead-letters",
            "",
            Admin,
            List,
        ),
        r(
            "GET",
            "/v1/destinations/dest-b/dead-letters",
            "",
            Admin,
            Bravo,
        ),
        r("GET", "/v1/archives", "", Admin, List),
        r("GET", "/v1/archives?stream=bravo", "", Admin, Bravo),
        r("GET", "/v1/archives?stream=alpha", "", Admin, Alpha),
        r("POST", "/v1/archive/run", "", Admin, All),
        r(
            "POST",
            "/v1/streams/bravo/restore?from=1&to=1",
            "",
            Admin,
            Bravo,
        ),
        r(
            "POST",
            "/v1/streams/alpha/restore?from=1&to=1",
            "",
            Admin,
            Alpha,
        ),
        // Last: a retry that succeeds resolves the letter.
        r(
            "POST",
            &format!("/v1/destinations/dest-b/dead-letters/{b_letter}/retry"),
            "",
            Admin,
            Bravo,
        ),
        r(
            "POST",
            &format!("/v1/destinations/shared/dead-letters/{shared_bravo}/retry"),
            "",
            Admin,
            Bravo,
        ),
    ]
}

/// Every route × scope × binding: refused exactly when the key's scope or
/// stream does not allow it, and nothing of `bravo` in what a key bound to
/// `alpha` is shown.
#[tokio::test]
async fn every_route_by_scope_and_binding() {
    let (w, shared_bravo, b_letter) = World::new().await;
    let mut keys = Vec::new();
    for binding in ["alpha", "*"] {
        for scope in [Scope::Ingest, Scope::Read, Scope::Admin] {
            keys.push((scope, binding, w.key(scope, binding).await));
        }
    }
    let mut failures = Vec::new();
    for route in routes(shared_bravo, b_letter) {
        // No token: 401 everywhere but the public routes.
        let (s, body) = w.call(route.method, &route.uri, None, route.body).await;
        let anon_ok = route.on == On::Public;
        if anon_ok != (s == StatusCode::OK) || (!anon_ok && s != StatusCode::UNAUTHORIZED) {
            failures.push(format!(
                "{} {} without a token: {s} {body}",
                route.method, route.uri
            ));
        }
        for (scope, binding, token) in &keys {
            let (s, body) = w
                .call(route.method, &route.uri, Some(token), route.body)
                .await;
            let bound = *binding != "*";
            let allowed = match route.on {
                On::Public => true,
                On::Alpha | On::List => scope_ok(*scope, route.scope),
                On::Bravo | On::All => scope_ok(*scope, route.scope) && !bound,
            };
            let who = format!(
                "{} {} as {}@{binding}",
                route.method,
                route.uri,
                scope.as_str()
            );
            if allowed {
                if matches!(
                    s,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
                ) || s.is_server_error()
                {
                    failures.push(format!("{who}: refused or failed: {s} {body}"));
                }
            } else if !scope_ok(*scope, route.scope) || !matches!(route.on, On::Bravo) {
                // Wrong scope, or every stream asked of a bound key: 403.
                if s != StatusCode::FORBIDDEN {
                    failures.push(format!("{who}: want 403, got {s} {body}"));
                }
            } else if !matches!(s, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                // Another stream's object: 403, or 404 when naming it
                // would tell that it exists (a destination, a source).
                failures.push(format!("{who}: want 403 or 404, got {s} {body}"));
            }
            // A refusal may echo the name the caller sent; an answer must
            // not carry another stream's anything.
            if bound && route.on != On::Public && s.is_success() {
                for marker in ["bravo", "dest-b", "src-b"] {
                    if body.contains(marker) {
                        failures.push(format!("{who}: shows {marker:?}: {body}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What the listings show a key bound to `alpha`, and what read keys never
/// see (receivers' errors).
#[tokio::test]
async fn listings_show_a_bound_key_its_own_streams_only() {
    let (w, _, _) = World::new().await;
    let read_a = w.key(Scope::Read, "alpha").await;
    let admin_a = w.key(Scope::Admin, "alpha").await;
    let (_, d) = w.call("GET", "/v1/destinations", Some(&read_a), "").await;
    let d: Value = serde_json::from_str(&d).unwrap();
    let names: Vec<&str> = d["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dest-a", "shared"], "{d:#}");
    let shared = &d["destinations"][1];
    assert_eq!(shared["streams"].as_array().unwrap().len(), 1, "{d:#}");
    assert_eq!(shared["streams"][0]["stream"], "alpha", "{d:#}");
    assert_eq!(shared["dead_letters"], 1, "alpha's letter only: {d:#}");
    let (_, l) = w
        .call(
            "GET",
            "/v1/destinations/shared/dead-letters",
            Some(&admin_a),
            "",
        )
        .await;
    let l: Value = serde_json::from_str(&l).unwrap();
    assert_eq!(l["dead_letters"].as_array().unwrap().len(), 1, "{l:#}");
    let (_, rej) = w
        .call("GET", "/v1/sources/rejected", Some(&admin_a), "")
        .await;
    let rej: Value = serde_json::from_str(&rej).unwrap();
    assert_eq!(rej["rejected"].as_array().unwrap().len(), 1, "{rej:#}");
    assert_eq!(rej["rejected"][0]["source"], "src-a");
    // Receivers' errors of a destination that also serves other streams
    // can echo their data: a bound admin sees errors of its own
    // stream's destinations only; a `*` admin sees all.
    for d in &w.running.state.destinations {
        let name = d.config.driver.name.clone();
        d.handle
            .record_error_for_test(&format!("{name} failed: bravo-user's record"));
    }
    let admin_all = w.key(Scope::Admin, "*").await;
    let errors = async |key: &str| {
        let (_, d) = w.call("GET", "/v1/destinations", Some(key), "").await;
        let d: Value = serde_json::from_str(&d).unwrap();
        d["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_owned(),
                    !x["last_error"].is_null() && !x["last_error_detail"].is_null(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        errors(&admin_a).await,
        [("dest-a".to_owned(), true), ("shared".to_owned(), false)]
    );
    assert!(errors(&admin_all).await.iter().all(|(_, e)| *e));
    assert!(errors(&read_a).await.iter().all(|(_, e)| !*e));
    // A bound admin's verify covers its stream only.
    let (s, v) = w.call("POST", "/v1/verify", Some(&admin_a), "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.contains("alpha") && !v.contains("bravo"), "{v}");
}

/// `POST /v1/verify` authenticates before it reads the body, and
/// `/v1/public-key` answers without a token.
#[tokio::test]
async fn verify_authenticates_before_parsing_and_the_public_key_is_public() {
    let (w, _, _) = World::new().await;
    let (s, body) = w.call("POST", "/v1/verify", None, "{not json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let read = w.key(Scope::Read, "*").await;
    let (s, body) = w.call("POST", "/v1/verify", Some(&read), "{not json").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, pk) = w.call("GET", "/v1/public-key", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        trailkeep::chain::note::NoteVerifier::parse(pk.trim()).is_ok(),
        "{pk}"
    );
}

/// Seqs above 2^63 read nothing (they used to wrap to negative and read
/// the stream from its start).
#[tokio::test]
async fn huge_seqs_are_refused_not_wrapped() {
    // Seqs past i64::MAX once wrapped to negative numbers in SQL; the API
    // now refuses them with the parameter named (the store still
    // saturates, see the conformance suite).
    let (w, _, _) = World::new().await;
    let read = w.key(Scope::Read, "*").await;
    for big in [1u64 << 63, u64::MAX] {
        let (s, body) = w
            .call(
                "GET",
                &format!("/v1/streams/alpha/events?from_seq={big}"),
                Some(&read),
                "",
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("\"field\":\"from_seq\""), "{body}");
    }
}
