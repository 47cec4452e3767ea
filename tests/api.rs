//! HTTP API tests through `router().oneshot(..)` on a real SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use trailkeep::auth::{Scope, generate};
use trailkeep::chain::checkpoint::Checkpoint;
use trailkeep::chain::merkle::{verify_consistency, verify_inclusion};
use trailkeep::chain::note::{NoteVerifier, open};
use trailkeep::chain::{Hash, leaf_hash};
use trailkeep::config::{Overrides, RawConfig};
use trailkeep::server::{Running, start};

struct Harness {
    _dir: tempfile::TempDir,
    running: Running,
}

impl Harness {
    async fn new(extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[checkpoint]\ninterval_ms = 50\n{extra_config}");
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
        Self { _dir: dir, running }
    }

    async fn key(&self, scope: Scope, stream: &str) -> String {
        let (rec, token) = generate(scope, stream, "2026-01-01T00:00:00Z");
        self.running.state.store.create_key(rec).await.unwrap();
        token
    }

    /// Sends a request through the router: status, headers, body.
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .running
            .router()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, String) {
        let ct: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        let (status, _, bytes) = self.send(method, uri, token, &ct, body).await;
        (status, String::from_utf8(bytes).unwrap())
    }

    /// POSTs `body` to `stream` with `headers`; the answer as JSON.
    async fn post_with(
        &self,
        stream: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let uri = format!("/v1/streams/{stream}/events");
        let (status, headers, bytes) = self.send("POST", &uri, Some(token), headers, body).await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, v)
    }

    async fn post(&self, stream: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, b) = self
            .call(
                "POST",
                &format!("/v1/streams/{stream}/events"),
                Some(token),
                Some("application/json"),
                body.to_string(),
            )
            .await;
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    }

    async fn get_json(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        let (s, b) = self
            .call("GET", uri, Some(token), None, Body::empty())
            .await;
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

#[tokio::test]
async fn posts_one_array_and_ndjson_then_reads_back() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    let (s, one) = h
        .post("auth", &ingest, json!({"type":"login.ok","id":"a1"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(one["stream"], "auth");
    assert_eq!(one["accepted"][0]["seq"], 1);
    assert_eq!(one["accepted"][0]["duplicate"], false);
    assert_eq!(one["head"]["seq"], 1);
    let (s, arr) = h
        .post(
            "auth",
            &ingest,
            json!([{"type":"a"},{"type":"b","createdAt":"2026-01-01T00:00:00Z"}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(arr["accepted"].as_array().unwrap().len(), 2);
    assert_eq!(arr["head"]["seq"], 3);
    let nd = "{\"type\":\"c\"}\n{\"type\":\"d\",\"id\":\"a1\"}\n";
    let (s, b) = h
        .call(
            "POST",
            "/v1/streams/auth/events",
            Some(&ingest),
            Some("application/x-ndjson"),
            nd,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["accepted"][0]["seq"], 4);
    assert_eq!(
        v["accepted"][1]["duplicate"], true,
        "a1 repeated is answered, not stored"
    );
    assert_eq!(v["accepted"][1]["seq"], 1);
    assert_eq!(v["accepted"][1]["hash"], one["accepted"][0]["hash"]);

    let (s, text) = h
        .call(
            "GET",
            "/v1/streams/auth/events?from_seq=2&limit=2",
            Some(&read),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[1]["time"], "2026-01-01T00:00:00Z");
    assert_eq!(lines[1]["prev"], lines[0]["hash"]);
    let (s, streams) = h.get_json("/v1/streams", &read).await;
    assert_eq!(s, StatusCode::OK);
    let auth = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "auth")
        .unwrap();
    assert_eq!(auth["head_seq"], 4);
    assert_eq!(auth["oldest_hot_seq"], 1);
}

/// Regression: reading back an event whose actor has an `id` put the hash
/// inside the actor instead of at the top level.
#[tokio::test]
async fn read_back_events_carry_their_hash_at_the_top_level() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    let (_, posted) = h
        .post(
            "r",
            &ingest,
            json!({"type":"grant.created","actor":{"id":"user_1"},"data":{"id":"x"}}),
        )
        .await;
    let (_, text) = h
        .call(
            "GET",
            "/v1/streams/r/events",
            Some(&read),
            None,
            Body::empty(),
        )
        .await;
    let ev: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(ev["hash"], posted["accepted"][0]["hash"]);
    assert_eq!(ev["actor"], json!({"id":"user_1"}));
    assert_eq!(ev["data"], json!({"id":"x"}));
    // What a reader gets hashes back to the hash it carries.
    let mut without = ev.as_object().unwrap().clone();
    without.remove("hash");
    let canonical = serde_json_canonicalizer::to_string(&Value::Object(without)).unwrap();
    assert_eq!(
        hex::encode(trailkeep::chain::event_hash(canonical.as_bytes())),
        ev["hash"].as_str().unwrap()
    );
}

#[tokio::test]
async fn an_invalid_event_refuses_the_whole_request_and_stores_nothing() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    h.post("s", &ingest, json!({"type":"first"})).await;
    let (s, err) = h
        .post(
            "s",
            &ingest,
            json!([{"type":"ok"},{"type":"ok","seq":9},{"type":"ok"}]),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["index"], 1);
    assert_eq!(err["error"]["field"], "seq");
    assert_eq!(err["error"]["code"], "forbidden_field");
    let (s, err) = h
        .post("s", &ingest, json!([{"type":"ok"},{"nope":1}]))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        (
            err["error"]["index"].as_u64(),
            err["error"]["field"].as_str()
        ),
        (Some(1), Some("nope"))
    );
    let (_, streams) = h.get_json("/v1/streams", &read).await;
    assert_eq!(
        streams["streams"][0]["head_seq"], 1,
        "nothing from refused requests was stored"
    );
    let (s, _) = h
        .post("bad%20stream%21", &ingest, json!({"type":"x"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Each limit answers 413, and (issue #15: it said `request body exceeds
/// 8388608 bytes` and left the operator to find which setting that was)
/// names its `[ingest]` setting and value.
#[tokio::test]
async fn limits_answer_413_naming_the_setting_and_its_value() {
    let h = Harness::new(
        "[ingest]\nmax_event_bytes = 2048\nmax_request_bytes = 8192\nmax_events_per_request = 5\n",
    )
    .await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let big_event = json!({"type":"x","data":{"p":"y".repeat(3000)}}).to_string();
    let six = Value::Array((0..6).map(|_| json!({"type":"x"})).collect()).to_string();
    for (body, code, index, setting, value) in [
        (
            big_event,
            "event_too_large",
            Some(0),
            "[ingest] max_event_bytes",
            "2048",
        ),
        (
            six,
            "too_many_events",
            None,
            "[ingest] max_events_per_request",
            "5",
        ),
        (
            " ".repeat(9000),
            "request_too_large",
            None,
            "[ingest] max_request_bytes",
            "8192 bytes (8 KiB)",
        ),
    ] {
        let (s, _, e) = h
            .post_with("s", &ingest, &[("content-type", "application/json")], body)
            .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        assert_eq!(e["error"]["index"].as_u64(), index, "{e}");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains(setting) && m.contains(value), "{code}: {m}");
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Issue #15: what log shippers send (gzip'd NDJSON, `application/jsonl`)
/// was parsed as plain JSON and refused at line 1 or 2. Every coding a
/// client may send is decoded, every NDJSON type read as NDJSON.
#[tokio::test]
async fn compressed_bodies_and_every_ndjson_type_are_understood() {
    use std::io::Write as _;
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let nd = b"{\"type\":\"a.b\"}\n{\"type\":\"c.d\",\"data\":{\"n\":1}}\n";
    let zlib = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(nd).unwrap();
        e.finish().unwrap()
    };
    let zstd = zstd::encode_all(&nd[..], 3).unwrap();
    let mut head = 0;
    for (ct, ce, body) in [
        ("application/x-ndjson", Some("gzip"), gzip(nd)),
        ("application/x-ndjson", Some("x-gzip"), gzip(nd)),
        ("application/x-ndjson", Some("deflate"), zlib),
        ("application/x-ndjson", Some("zstd"), zstd),
        ("application/jsonl", None, nd.to_vec()),
        ("application/x-jsonlines", None, nd.to_vec()),
        (
            "application/jsonlines; charset=utf-8",
            Some("identity"),
            nd.to_vec(),
        ),
        ("application/jsonl", Some("gzip"), gzip(nd)),
    ] {
        let mut headers = vec![("content-type", ct)];
        headers.extend(ce.map(|ce| ("content-encoding", ce)));
        let (s, _, v) = h.post_with("ship", &ingest, &headers, body).await;
        assert_eq!(s, StatusCode::OK, "{ct} {ce:?}: {v}");
        head += 2;
        assert_eq!(v["head"]["seq"], head, "{ct} {ce:?}: both lines stored");
    }
    // A JSON array, gzip'd.
    let arr = json!([{"type":"a"},{"type":"b"}]).to_string();
    let (s, _, v) = h
        .post_with(
            "ship",
            &ingest,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            gzip(arr.as_bytes()),
        )
        .await;
    assert_eq!(
        (s, v["head"]["seq"].as_u64()),
        (StatusCode::OK, Some(head + 2)),
        "{v}"
    );
    // Content-Encoding that the bytes are not: 400 naming the coding.
    let (s, _, v) = h
        .post_with(
            "ship",
            &ingest,
            &[
                ("content-type", "application/x-ndjson"),
                ("content-encoding", "gzip"),
            ],
            nd.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (Some("invalid_encoding"), Some("Content-Encoding"))
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("gzip"),
        "{v}"
    );
}

/// Issue #15: a coding trailkeep does not decode is refused with 415
/// naming the codings it takes (and `Accept-Encoding`, RFC 7694), not
/// parsed as JSON.
#[tokio::test]
async fn an_unknown_content_encoding_is_415_naming_the_supported_ones() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    for ce in ["br", "compress", "gzip, zstd"] {
        let (s, headers, v) = h
            .post_with(
                "s",
                &ingest,
                &[("content-encoding", ce)],
                json!({"type":"x"}).to_string(),
            )
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ce}: {v}");
        assert_eq!(v["error"]["code"], "unsupported_encoding");
        let m = v["error"]["message"].as_str().unwrap();
        for name in ["gzip", "deflate", "zstd"] {
            assert!(m.contains(name), "{ce}: {m}");
        }
        assert!(
            headers["accept-encoding"]
                .to_str()
                .unwrap()
                .contains("gzip"),
            "{headers:?}"
        );
    }
}

/// Issue #15: NDJSON posted as `application/json` was answered `trailing
/// characters at line 2 column 1` with no hint; JSON posted as NDJSON
/// likewise. Each names the content type to send.
#[tokio::test]
async fn ndjson_sent_as_json_and_json_sent_as_ndjson_are_told_the_type_to_send() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let cases = [
        (
            "application/json",
            "{\"type\":\"a\"}\n{\"type\":\"b\"}\n",
            "invalid_json",
            "application/x-ndjson",
        ),
        (
            "application/x-ndjson",
            "[{\"type\":\"a\"},{\"type\":\"b\"}]\n",
            "not_an_object",
            "application/json",
        ),
        (
            "application/x-ndjson",
            "{\n  \"type\": \"a\"\n}\n",
            "invalid_json",
            "application/json",
        ),
    ];
    for (ct, body, code, hint) in cases {
        let (s, _, v) = h
            .post_with("s", &ingest, &[("content-type", ct)], body)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(&format!("Content-Type: {hint}")), "{ct}: {m}");
    }
    // Broken JSON on one line is no NDJSON: no such hint.
    let (_, _, v) = h
        .post_with(
            "s",
            &ingest,
            &[("content-type", "application/json")],
            "{\"type\":\"a\"} x",
        )
        .await;
    assert!(
        !v["error"]["message"].as_str().unwrap().contains("NDJSON"),
        "{v}"
    );
}

#[tokio::test]
async fn keys_are_scoped_by_kind_and_stream() {
    let h = Harness::new("").await;
    let ingest_a = h.key(Scope::Ingest, "a").await;
    let read_a = h.key(Scope::Read, "a").await;
    let admin = h.key(Scope::Admin, "*").await;
    assert_eq!(
        h.post("a", &ingest_a, json!({"type":"x"})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.post("b", &ingest_a, json!({"type":"x"})).await.0,
        StatusCode::FORBIDDEN,
        "key for a writes no other stream"
    );
    assert_eq!(
        h.post("a", &read_a, json!({"type":"x"})).await.0,
        StatusCode::FORBIDDEN,
        "read key cannot ingest"
    );
    assert_eq!(
        h.get_json("/v1/streams/a/events", &ingest_a).await.0,
        StatusCode::FORBIDDEN,
        "ingest key cannot read"
    );
    assert_eq!(
        h.post("b", &admin, json!({"type":"x"})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.get_json("/v1/streams/b/events", &read_a).await.0,
        StatusCode::FORBIDDEN,
        "key for a reads no other stream"
    );
    let (_, listed) = h.get_json("/v1/streams", &read_a).await;
    assert_eq!(
        listed["streams"].as_array().unwrap().len(),
        1,
        "listing shows only the key's stream: {listed}"
    );
    let (s, _) = h
        .call("GET", "/v1/streams", None, None, Body::empty())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let forged = format!("{}x", &read_a[..read_a.len() - 1]);
    assert_eq!(
        h.get_json("/v1/streams", &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get_json("/v1/streams", "tk_garbage").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Revocation reaches the running server within the cache TTL.
    let id = &read_a[3..19];
    assert!(h.running.state.store.revoke_key(id, "now").await.unwrap());
    // Wall-clock on purpose: the claim is "within the key cache's TTL",
    // and that TTL runs on the server's clock.
    tokio::time::sleep(trailkeep::auth::KEY_CACHE_TTL + std::time::Duration::from_millis(100))
        .await;
    assert_eq!(
        h.get_json("/v1/streams", &read_a).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Errors never echo the token.
    let (_, body) = h
        .call("GET", "/v1/streams", Some(&forged), None, Body::empty())
        .await;
    assert!(!body.contains(&forged[20..]), "{body}");
}

fn b64hash(v: &Value) -> Hash {
    STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn checkpoints_are_signed_and_proofs_verify_against_them() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    let events: Vec<Value> = (0..300)
        .map(|i| json!({"type":"t","id":format!("e{i}")}))
        .collect();
    let (_, posted) = h.post("p", &ingest, Value::Array(events)).await;
    let (s, pk) = h
        .call("GET", "/v1/public-key", Some(&ingest), None, Body::empty())
        .await;
    assert_eq!(s, StatusCode::OK);
    let verifier = NoteVerifier::parse(pk.trim()).unwrap();
    let note = common::poll(
        std::time::Duration::from_secs(20),
        "a checkpoint of stream p",
        async || {
            let (s, b) = h
                .call(
                    "GET",
                    "/v1/streams/p/checkpoint",
                    Some(&read),
                    None,
                    Body::empty(),
                )
                .await;
            (s == StatusCode::OK).then_some(b)
        },
    )
    .await;
    let cp =
        Checkpoint::parse(open(&note, &verifier).expect("checkpoint signature verifies")).unwrap();
    assert_eq!(cp.origin, "trailkeep.local/p");
    assert_eq!(cp.size, 300);
    for seq in [1u64, 150, 257, 300] {
        let (s, proof) = h
            .get_json(
                &format!("/v1/streams/p/proof/inclusion?seq={seq}&size=300"),
                &read,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{proof}");
        let hashes: Vec<Hash> = proof["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(b64hash)
            .collect();
        let event_hash: Hash = hex::decode(
            posted["accepted"][(seq - 1) as usize]["hash"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
        .try_into()
        .unwrap();
        let leaf = leaf_hash(&event_hash);
        assert_eq!(b64hash(&proof["leaf_hash"]), leaf);
        assert!(
            verify_inclusion(&leaf, seq - 1, 300, &hashes, &cp.root),
            "inclusion of seq {seq}"
        );
    }
    let (_, c) = h
        .get_json("/v1/streams/p/proof/consistency?from=100&to=300", &read)
        .await;
    let hashes: Vec<Hash> = c["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64hash)
        .collect();
    assert!(verify_consistency(
        100,
        300,
        &b64hash(&c["from_root"]),
        &cp.root,
        &hashes
    ));
    let (s, e) = h
        .get_json("/v1/streams/p/proof/inclusion?seq=301&size=300", &read)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["field"], "seq");
    let (s, _) = h
        .get_json("/v1/streams/p/proof/consistency?from=5&to=999", &read)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .get_json("/v1/streams/nope/proof/inclusion?seq=1", &read)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn verify_endpoint_is_admin_only_and_reports() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let admin = h.key(Scope::Admin, "*").await;
    h.post("v", &ingest, json!([{"type":"a"},{"type":"b"}]))
        .await;
    let (s, _) = h
        .call("POST", "/v1/verify", Some(&ingest), None, Body::empty())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = h
        .call(
            "POST",
            "/v1/verify",
            Some(&admin),
            Some("application/json"),
            r#"{"stream":"v"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(r["events"], 2);
}

#[tokio::test]
async fn a_failed_commit_poisons_the_writer_and_readiness() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    assert_eq!(
        h.post("x", &ingest, json!({"type":"ok"})).await.0,
        StatusCode::OK
    );
    let (s, _) = h.call("GET", "/readyz", None, None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    // Inject a real SQLite failure inside the write transaction.
    let db = h._dir.path().join("data").join(trailkeep::server::DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Inject a real SQLite failure at COMMIT (the ambiguous case): a deferred
    // foreign key is only checked when the transaction commits.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; \
         CREATE TABLE fk_parent (id INTEGER PRIMARY KEY); \
         CREATE TABLE fk_child (pid INTEGER REFERENCES fk_parent(id) DEFERRABLE INITIALLY DEFERRED); \
         CREATE TRIGGER boom AFTER INSERT ON events WHEN NEW.type = 'boom' BEGIN INSERT INTO fk_child VALUES (42); END;",
    )
    .unwrap();
    let (s, e) = h
        .post("x", &ingest, json!([{"type":"fine"},{"type":"boom"}]))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    // Issue #14: the backend's text (SQL, constraint names, paths) stays in
    // the server log; the client gets the fixed message.
    assert_eq!(
        e["error"]["message"],
        "the log is not accepting writes: a commit failed; restart to recover",
        "{e}"
    );
    let (s, _) = h.call("GET", "/readyz", None, None, Body::empty()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    conn.execute_batch("DROP TRIGGER boom;").unwrap();
    let (s, _) = h.post("x", &ingest, json!({"type":"ok"})).await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "nothing more is acknowledged after a failed commit"
    );
    let (_, text) = h
        .call(
            "GET",
            "/v1/streams/x/events",
            Some(&read),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(
        text.lines().count(),
        1,
        "the failed request stored nothing: {text}"
    );
}

/// A statement that fails before COMMIT is rolled back for certain: the
/// request is refused (503), nothing of it is stored, and the writer keeps
/// serving: only an ambiguous (commit-time) failure poisons.
#[tokio::test]
async fn a_rolled_back_write_is_refused_without_poisoning() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    assert_eq!(
        h.post("y", &ingest, json!({"type":"ok"})).await.0,
        StatusCode::OK
    );
    let db = h._dir.path().join("data").join(trailkeep::server::DB_FILE);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.type = 'boom' BEGIN SELECT RAISE(FAIL, 'injected'); END;").unwrap();
    let (s, e) = h
        .post("y", &ingest, json!([{"type":"fine"},{"type":"boom"}]))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(
        e["error"]["message"], "not stored (the commit was rolled back); retry",
        "the backend's text ('injected', SQL) is not sent to the client: {e}"
    );
    let (s, _) = h.call("GET", "/readyz", None, None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "a certain rollback does not poison");
    conn.execute_batch("DROP TRIGGER boom;").unwrap();
    let (s, ok) = h.post("y", &ingest, json!({"type":"ok"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ok["accepted"][0]["seq"], 2,
        "the refused events took no seq"
    );
    let (_, text) = h
        .call(
            "GET",
            "/v1/streams/y/events",
            Some(&read),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(
        text.lines().count(),
        2,
        "nothing of the refused request was stored: {text}"
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    h.post("m", &ingest, json!({"type":"x"})).await;
    let (s, body) = h.call("GET", "/healthz", None, None, Body::empty()).await;
    assert_eq!((s, body.trim()), (StatusCode::OK, "ok"));
    let (s, m) = h.call("GET", "/metrics", None, None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(m.contains("trailkeep_events_appended_total"), "{m}");
}

/// Issues #12 and #13: names starting with `.` or `_` belong to the log (its
/// own stream `_trailkeep` holds its checkpoints), and `.`/`..` would climb
/// out of an object key: producers cannot write there, nothing is stored.
#[tokio::test]
async fn reserved_and_dot_stream_names_are_refused_at_ingest() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    for (stream, code) in [
        ("_trailkeep", "reserved_stream"),
        ("_audit", "reserved_stream"),
        (".hidden", "reserved_stream"),
        (".", "invalid_stream"),
        ("..", "invalid_stream"),
    ] {
        let (s, body) = h.post(stream, &ingest, json!({"type": "x.y"})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{stream}: {body}");
        assert_eq!(body["error"]["code"], code, "{stream}: {body}");
        assert_eq!(body["error"]["field"], "stream", "{stream}: {body}");
    }
    let (_, streams) = h.get_json("/v1/streams", &read).await;
    let names: Vec<&str> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| ![".hidden", ".", ".."].contains(n)),
        "nothing stored: {names:?}"
    );
    let (_, audit) = h
        .get_json("/v1/streams/_audit/events?from_seq=1", &read)
        .await;
    assert!(
        !audit.to_string().contains("x.y"),
        "_audit holds the log's own records only: {audit}"
    );
    let (_, own) = h
        .get_json("/v1/streams/_trailkeep/events?from_seq=1", &read)
        .await;
    assert!(
        !own.to_string().contains("x.y"),
        "nothing of the refused requests reached the log's own stream: {own}"
    );
}

/// Issue #18: numbers are kept when RFC 8785 writes them with the same
/// value (integers past 2^53 among them; they were refused), stored in
/// that form and chained; a number it would change is refused naming the
/// event, the path, the number and what it would become (a long fraction
/// was silently rounded).
#[tokio::test]
async fn numbers_are_stored_as_sent_or_refused_naming_them() {
    let h = Harness::new("").await;
    let ingest = h.key(Scope::Ingest, "*").await;
    let read = h.key(Scope::Read, "*").await;
    let kept = r#"{"id":"n1","type":"budget.threshold","data":{"big":9007199254740994,"huge":1152921504606847000,"max":1e21,"ratio":4.50}}"#;
    let (s, b) = h
        .call(
            "POST",
            "/v1/streams/n/events",
            Some(&ingest),
            Some("application/json"),
            kept,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, text) = h
        .call(
            "GET",
            "/v1/streams/n/events",
            Some(&read),
            None,
            Body::empty(),
        )
        .await;
    assert!(
        text.contains(
            r#""data":{"big":9007199254740994,"huge":1152921504606847000,"max":1e+21,"ratio":4.5}"#
        ),
        "{text}"
    );
    for (body, index, field, says) in [
        (
            r#"[{"type":"a"},{"type":"a","data":{"l":[{"n":9007199254740993}]}}]"#,
            1,
            "data.l[0].n",
            "number 9007199254740993 would be stored as 9007199254740992",
        ),
        (
            r#"{"type":"a","actor":{"score":0.1000000000000000000001}}"#,
            0,
            "actor.score",
            "number 0.1000000000000000000001 would be stored as 0.1",
        ),
    ] {
        let (s, b) = h
            .call(
                "POST",
                "/v1/streams/n/events",
                Some(&ingest),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let err: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(err["error"]["code"], "unsafe_number", "{b}");
        assert_eq!(err["error"]["index"], index, "{b}");
        assert_eq!(err["error"]["field"], field, "{b}");
        assert!(
            err["error"]["message"].as_str().unwrap().starts_with(says),
            "{b}"
        );
    }
    let (_, streams) = h.get_json("/v1/streams", &read).await;
    assert_eq!(
        streams["streams"][0]["head_seq"], 1,
        "refused requests stored nothing"
    );
}

/// `POST /v1/query` with `key`: status and body as JSON (or text).
async fn query(h: &Harness, key: &str, body: Value) -> (StatusCode, http::HeaderMap, Value) {
    let (s, headers, b) = h
        .send(
            "POST",
            "/v1/query",
            Some(key),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into()));
    (s, headers, v)
}

#[tokio::test]
async fn sql_over_http_shows_a_stream_bound_key_only_its_stream() {
    let h = Harness::new("[query]\nmax_rows = 50\n").await;
    let ing = h.key(Scope::Ingest, "*").await;
    for s in ["app", "secret"] {
        let events: Vec<Value> = (0..5)
            .map(|i| json!({"type": "grant.created", "data": {"principalId": format!("{s}-{i}")}}))
            .collect();
        assert_eq!(h.post(s, &ing, json!(events)).await.0, StatusCode::OK);
    }
    let app = h.key(Scope::Read, "app").await;
    for sql in [
        "SELECT stream, data FROM events",
        "SELECT stream, data FROM events WHERE stream = 'secret'",
        "SELECT stream, data FROM events UNION ALL SELECT stream, data FROM events WHERE stream <> 'app'",
        "SELECT stream, data FROM (SELECT * FROM events WHERE stream IN ('secret')) x",
        "SELECT e.stream, e.data FROM events e JOIN events f ON e.seq = f.seq WHERE f.stream = 'secret'",
        "SELECT table_name AS stream, table_schema AS data FROM information_schema.tables",
        "SELECT name AS stream, value AS data FROM information_schema.df_settings WHERE value LIKE '%secret%'",
    ] {
        let (s, _, v) = query(&h, &app, json!({ "sql": sql })).await;
        assert_eq!(s, StatusCode::OK, "{sql}: {v}");
        assert!(!v.to_string().contains("secret"), "{sql} leaked: {v}");
    }
    let (_, _, v) = query(&h, &app, json!({"sql": "SELECT count(*) AS n FROM events"})).await;
    assert_eq!(v["rows"][0]["n"], 5, "{v}");
    let all = h.key(Scope::Read, "*").await;
    let (_, _, v) = query(
        &h,
        &all,
        json!({"sql": "SELECT count(*) AS n FROM events WHERE stream IN ('app', 'secret')"}),
    )
    .await;
    assert_eq!(v["rows"][0]["n"], 10, "{v}");

    let (s, _, v) = query(&h, &ing, json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an ingest key cannot query: {v}");
    let (s, _, v) = query(
        &h,
        &app,
        json!({"sql": "SELECT *\n  FROM events WHER seq = 1"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_sql");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("found: seq (line 2, column 20)"),
        "{v}"
    );
    let (s, _, v) = query(&h, &app, json!({"sql": "DELETE FROM events"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query")),
        "{v}"
    );
    let (s, _, v) = query(
        &h,
        &app,
        json!({"sql": "SELECT a.seq FROM events a, events b, events c"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_rows = 50"),
        "{v}"
    );
    let (s, _, v) = query(&h, &app, json!({"sql": "SELECT 1", "format": "xml"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ndjson"),
        "names the formats: {v}"
    );

    let (s, headers, v) = query(
        &h,
        &app,
        json!({"sql": "SELECT seq FROM events ORDER BY seq", "format": "csv"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, Value::String("seq\n1\n2\n3\n4\n5\n".into()));
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(headers["trailkeep-rows"], "5");
    assert_eq!(headers["trailkeep-hot-rows-read"], "5");
}
