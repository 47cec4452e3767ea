//! BigQuery against a local receiver of the token exchange and
//! `tabledata.insertAll`, checking the JWT signature with the public key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;

use super::*;
use crate::destinations::OutEvent;

const KEY: &str = include_str!("../testdata/bq-test-key.pem");
const PUB: &[u8] = include_bytes!("../testdata/bq-test-key.pub.der");

#[derive(Default)]
struct Google {
    token_requests: Mutex<u32>,
    rows: Mutex<Vec<serde_json::Value>>,
    /// insertId values to refuse as invalid.
    invalid: Mutex<Vec<String>>,
    base: Mutex<String>,
}

async fn token(State(g): State<Arc<Google>>, body: String) -> axum::Json<serde_json::Value> {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let jwt = &form["assertion"];
    let (msg, sig) = jwt.rsplit_once('.').unwrap();
    let key =
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, PUB);
    key.verify(msg.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("RS256 signature");
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(msg.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], "writer@proj.iam.gserviceaccount.com");
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["aud"], format!("{}/token", g.base.lock().unwrap()));
    *g.token_requests.lock().unwrap() += 1;
    axum::Json(
        serde_json::json!({"access_token": "tok-1", "expires_in": 3600, "token_type": "Bearer"}),
    )
}

async fn insert_all(
    State(g): State<Arc<Google>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    assert_eq!(headers["authorization"], "Bearer tok-1");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let invalid = g.invalid.lock().unwrap().clone();
    let bad: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| invalid.iter().any(|i| r["insertId"] == i.as_str()))
        .map(|(i, _)| i)
        .collect();
    if !bad.is_empty() {
        // As BigQuery: the invalid rows, and every other row "stopped".
        let errors: Vec<serde_json::Value> = (0..rows.len())
            .map(|i| {
                let reason = if bad.contains(&i) { "invalid" } else { "stopped" };
                serde_json::json!({"index": i, "errors": [{"reason": reason, "location": "data", "message": "no such field"}]})
            })
            .collect();
        return axum::Json(
            serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}),
        );
    }
    for r in rows {
        let j = &r["json"];
        assert_eq!(r["insertId"], j["event_id"]);
        assert!(j["data"].is_string(), "data is a JSON string");
        assert!(j["created_at"].is_string() && j["event_type"].is_string());
        g.rows.lock().unwrap().push(r.clone());
    }
    axum::Json(serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse"}))
}

async fn start() -> (String, Arc<Google>) {
    let g = Arc::new(Google::default());
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token))
        .route(
            "/bigquery/v2/projects/p/datasets/d/tables/t/insertAll",
            axum::routing::post(insert_all),
        )
        .with_state(g.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    *g.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (base, g)
}

fn batch(from: u64, n: u64) -> Batch {
    Batch {
        destination: "bq".into(),
        stream: "s".into(),
        start_seq: from,
        end_seq: from + n - 1,
        events: (from..from + n)
            .map(|seq| OutEvent {
                seq,
                id: format!("evt_{seq}"),
                event_type: "grant.created".into(),
                received: String::new(),
                json: format!(r#"{{"data":{{"scopes":["a"],"n":{seq}}},"id":"evt_{seq}","time":"2026-11-23T10:00:00Z","type":"grant.created"}}"#),
            })
            .collect(),
    }
}

fn dest(base: &str) -> BigQuery {
    let account = serde_json::json!({"client_email": "writer@proj.iam.gserviceaccount.com", "private_key": KEY, "token_uri": format!("{base}/token")});
    let table = Table {
        project: "p".into(),
        dataset: "d".into(),
        table: "t".into(),
    };
    BigQuery::new(
        base,
        table,
        &account.to_string(),
        HttpClient::new(
            crate::net::Policy::new(true, "[[destinations]] \"bq\""),
            Duration::from_secs(5),
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn rows_stream_with_insert_ids_and_a_cached_token() {
    let (base, g) = start().await;
    let bq = dest(&base);
    bq.deliver(&batch(1, 3)).await.unwrap();
    bq.deliver(&batch(4, 2)).await.unwrap();
    assert_eq!(*g.token_requests.lock().unwrap(), 1, "the token is cached");
    let rows = g.rows.lock().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0]["json"],
        serde_json::json!({"event_id": "evt_1", "event_type": "grant.created", "created_at": "2026-11-23T10:00:00Z", "data": "{\"n\":1,\"scopes\":[\"a\"]}"})
    );
    assert!(!format!("{bq:?}").contains("PRIVATE"));
}

#[tokio::test]
async fn invalid_rows_are_dead_lettered_and_the_rest_inserted() {
    let (base, g) = start().await;
    g.invalid.lock().unwrap().push("evt_2".into());
    let e = dest(&base).deliver(&batch(1, 4)).await.unwrap_err();
    let DeliveryError::Permanent { message, .. } = e else {
        panic!("permanent: {e}")
    };
    assert!(
        message.contains("evt_2") && message.contains("1 rows"),
        "{message}"
    );
    let ids: Vec<String> = g
        .rows
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["insertId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        vec!["evt_1", "evt_3", "evt_4"],
        "the stopped rows went again at once"
    );
}

#[test]
fn a_bad_service_account_says_what_without_the_key() {
    let e = BigQuery::new("http://x", Table { project: "p".into(), dataset: "d".into(), table: "t".into() }, r#"{"client_email":"a","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#, HttpClient::new(crate::net::Policy::new(false, "bq"), Duration::from_secs(1))).expect_err("no usable key");
    let e = e.to_string();
    assert!(e.contains("private_key") && !e.contains("AAAA"), "{e}");
}

use crate::destinations::conformance::{Decoded, Limits, Payload, Subject, Tap};

const INSERT_PATH: &str = "/bigquery/v2/projects/p/datasets/d/tables/t/insertAll";

/// BigQuery in the destination conformance suite, against the token
/// exchange and `insert_all` above.
struct BigQuerySubject {
    tap: Arc<Tap>,
    dest: BigQuery,
}

#[async_trait::async_trait]
impl Subject for BigQuerySubject {
    async fn start() -> Option<Self> {
        let g = Arc::new(Google::default());
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route(INSERT_PATH, axum::routing::post(insert_all))
            .with_state(g.clone());
        let tap = Tap::serve(app, &[INSERT_PATH]).await;
        *g.base.lock().unwrap() = tap.base.clone();
        let dest = dest(&tap.base);
        Some(Self { tap, dest })
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn received(&self) -> Vec<Payload> {
        self.tap.received()
    }

    fn decode(&self, p: &Payload) -> Decoded {
        let v: serde_json::Value = serde_json::from_slice(&p.bytes).unwrap();
        Decoded {
            ids: v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["insertId"].as_str().unwrap().to_owned())
                .collect(),
            size: p.bytes.len(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_events: Some(MAX_ROWS),
            max_bytes: Some(MAX_REQUEST),
            max_entry_bytes: Some(MAX_ROW_BYTES),
        }
    }

    fn tap(&self) -> Option<&Tap> {
        Some(&self.tap)
    }
}

mod conformance {
    use super::BigQuerySubject;
    crate::http_destination_test_suite!(BigQuerySubject);
}
