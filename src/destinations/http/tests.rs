//! Splunk HEC and Datadog against local receivers that check the wire
//! format from each vendor's public documentation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::*;
use crate::destinations::OutEvent;

#[derive(Default)]
struct Hec {
    events: Mutex<Vec<serde_json::Value>>,
    channels: Mutex<Vec<String>>,
    ack_polls: Mutex<u32>,
    fail_with: Mutex<Option<u16>>,
}

async fn hec_event(
    State(h): State<Arc<Hec>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    assert_eq!(headers["authorization"], "Splunk hec-token-1");
    if let Some(s) = h.fail_with.lock().unwrap().take() {
        return (
            StatusCode::from_u16(s).unwrap(),
            r#"{"text":"Server is busy","code":9}"#,
        )
            .into_response();
    }
    // Concatenated JSON objects, one per event.
    let stream = serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>();
    let mut n = 0;
    for v in stream {
        let v = v.unwrap();
        assert!(v["time"].is_f64() || v["time"].is_u64(), "{v}");
        assert_eq!(v["sourcetype"], "_json");
        assert_eq!(v["index"], "audit");
        assert_eq!(v["host"], "node-1");
        h.events.lock().unwrap().push(v["event"].clone());
        n += 1;
    }
    assert!(n > 0);
    match headers.get("x-splunk-request-channel") {
        Some(c) => {
            h.channels
                .lock()
                .unwrap()
                .push(c.to_str().unwrap().to_owned());
            axum::Json(serde_json::json!({"text": "Success", "code": 0, "ackId": 7}))
                .into_response()
        }
        None => axum::Json(serde_json::json!({"text": "Success", "code": 0})).into_response(),
    }
}

async fn hec_ack(
    State(h): State<Arc<Hec>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"acks": [7]}));
    assert_eq!(Some(&q["channel"]), h.channels.lock().unwrap().last());
    let mut polls = h.ack_polls.lock().unwrap();
    *polls += 1;
    axum::Json(serde_json::json!({"acks": {"7": *polls >= 2}}))
}

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn batch(n: u64, pad: usize) -> Batch {
    Batch {
        destination: "d".into(),
        stream: "auth".into(),
        start_seq: 1,
        end_seq: n,
        events: (1..=n)
            .map(|seq| OutEvent {
                seq,
                id: format!("e{seq}"),
                event_type: "grant.created".into(),
                received: String::new(),
                json: format!(r#"{{"data":{{"p":"{}"}},"hash":"h","id":"e{seq}","seq":{seq},"time":"2026-11-23T10:00:00.5Z","type":"grant.created"}}"#, "x".repeat(pad)),
            })
            .collect(),
    }
}

/// The receivers here listen on loopback.
fn local() -> crate::net::Policy {
    crate::net::Policy::new(true, "[[destinations]] \"test\"")
}

fn hec_settings(ack: bool) -> HecSettings {
    HecSettings {
        host: Some("node-1".into()),
        index: Some("audit".into()),
        ack,
        ack_timeout: Duration::from_secs(5),
        ..HecSettings::default()
    }
}

#[tokio::test]
async fn splunk_hec_events_and_indexer_acknowledgement() {
    let h = Arc::new(Hec::default());
    let app = axum::Router::new()
        .route("/services/collector/event", axum::routing::post(hec_event))
        .route("/services/collector/ack", axum::routing::post(hec_ack))
        .with_state(h.clone());
    let url = serve(app).await;
    let plain = SplunkHec::new(
        &url,
        Secret::new("hec-token-1".into()),
        hec_settings(false),
        Encoding::Trailkeep,
        HttpClient::new(local(), Duration::from_secs(2)),
    );
    plain.deliver(&batch(3, 0)).await.unwrap();
    assert_eq!(h.events.lock().unwrap().len(), 3);
    assert_eq!(h.events.lock().unwrap()[0]["id"], "e1");
    let acked = SplunkHec::new(
        &url,
        Secret::new("hec-token-1".into()),
        hec_settings(true),
        Encoding::Grantex,
        HttpClient::new(local(), Duration::from_secs(2)),
    );
    acked.deliver(&batch(2, 0)).await.unwrap();
    assert!(
        *h.ack_polls.lock().unwrap() >= 2,
        "accepted only once the ack said true"
    );
    assert_eq!(
        h.events.lock().unwrap()[3]["createdAt"],
        "2026-11-23T10:00:00.500Z",
        "grantex encoding: createdAt as toISOString writes it"
    );
    *h.fail_with.lock().unwrap() = Some(503);
    assert!(matches!(
        plain.deliver(&batch(1, 0)).await,
        Err(DeliveryError::Retryable { .. })
    ));
    *h.fail_with.lock().unwrap() = Some(400);
    assert!(matches!(
        plain.deliver(&batch(1, 0)).await,
        Err(DeliveryError::Permanent {
            status: Some(400),
            ..
        })
    ));
    // The body's time is the event time in epoch seconds.
    let body = plain.body(&batch(1, 0));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["time"].as_f64().unwrap(),
        1_795_428_000.5,
        "2026-11-23T10:00:00.5Z"
    );
}

#[derive(Default)]
struct Dd {
    requests: Mutex<Vec<Vec<serde_json::Value>>>,
}

async fn dd_logs(State(d): State<Arc<Dd>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    assert_eq!(headers["dd-api-key"], "dd-key-1");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/json");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert!(raw.len() <= 5_000_000);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&raw).unwrap();
    assert!(entries.len() <= 1000);
    for e in &entries {
        assert_eq!(e["ddsource"], "trailkeep");
        assert_eq!(e["service"], "audit-svc");
        assert!(
            e["ddtags"]
                .as_str()
                .unwrap()
                .starts_with("type:grant.created,stream:auth,env:test"),
            "{e}"
        );
        let m: serde_json::Value = serde_json::from_str(e["message"].as_str().unwrap()).unwrap();
        assert!(m["id"].as_str().unwrap().starts_with('e'));
    }
    d.requests.lock().unwrap().push(entries);
    StatusCode::ACCEPTED
}

#[tokio::test]
async fn datadog_logs_gzip_entries_within_the_intake_limits() {
    let d = Arc::new(Dd::default());
    let app = axum::Router::new()
        .route("/api/v2/logs", axum::routing::post(dd_logs))
        .with_state(d.clone());
    let url = serve(app).await;
    let settings = DatadogSettings {
        service: Some("audit-svc".into()),
        tags: vec!["env:test".into()],
        ..DatadogSettings::default()
    };
    let dd = DatadogLogs::new(
        &url,
        Secret::new("dd-key-1".into()),
        settings,
        Encoding::Trailkeep,
        HttpClient::new(local(), Duration::from_secs(5)),
    );
    dd.deliver(&batch(2500, 0)).await.unwrap();
    let sizes: Vec<usize> = d.requests.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1000, 1000, 500], "1,000 entries per request");
    d.requests.lock().unwrap().clear();
    dd.deliver(&batch(12, 600_000)).await.unwrap();
    assert!(d.requests.lock().unwrap().len() >= 2, "5 MB per request");
    assert_eq!(
        d.requests
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum::<usize>(),
        12
    );
    let e = dd.deliver(&batch(1, 1_100_000)).await.unwrap_err();
    assert!(
        matches!(e, DeliveryError::Permanent { .. }),
        "an entry over 1 MB: {e}"
    );
}

/// Each destination builds its HTTP client once: five batches reuse one
/// keep-alive connection (a client per batch opened five).
#[tokio::test]
async fn each_destination_reuses_its_connection_across_batches() {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use axum::extract::ConnectInfo;

    let peers: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let (p1, p2) = (peers.clone(), peers.clone());
    let app = axum::Router::new()
        .route(
            "/api/v2/logs",
            axum::routing::post(move |ConnectInfo(a): ConnectInfo<SocketAddr>| async move {
                p1.lock().unwrap().insert(a);
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/services/collector/event",
            axum::routing::post(move |ConnectInfo(a): ConnectInfo<SocketAddr>| async move {
                p2.lock().unwrap().insert(a);
                (StatusCode::OK, r#"{"text":"Success","code":0}"#)
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    let dd = DatadogLogs::new(
        &url,
        Secret::new("dd-key-1".into()),
        DatadogSettings::default(),
        Encoding::Trailkeep,
        HttpClient::new(local(), Duration::from_secs(5)),
    );
    for _ in 0..5 {
        dd.deliver(&batch(3, 0)).await.unwrap();
    }
    assert_eq!(peers.lock().unwrap().len(), 1, "Datadog: one connection");
    peers.lock().unwrap().clear();
    let hec = SplunkHec::new(
        &url,
        Secret::new("hec-token-1".into()),
        hec_settings(false),
        Encoding::Trailkeep,
        HttpClient::new(local(), Duration::from_secs(2)),
    );
    for _ in 0..5 {
        hec.deliver(&batch(3, 0)).await.unwrap();
    }
    assert_eq!(peers.lock().unwrap().len(), 1, "HEC: one connection");
}

use crate::destinations::conformance::{Decoded, Limits, Payload, Subject, Tap};

/// Splunk HEC in the destination conformance suite, against `hec_event`.
struct HecSubject {
    tap: Arc<Tap>,
    dest: SplunkHec,
}

#[async_trait::async_trait]
impl Subject for HecSubject {
    async fn start() -> Option<Self> {
        let app = axum::Router::new()
            .route("/services/collector/event", axum::routing::post(hec_event))
            .route("/services/collector/ack", axum::routing::post(hec_ack))
            .with_state(Arc::new(Hec::default()));
        let tap = Tap::serve(app, &["/services/collector/event"]).await;
        let dest = SplunkHec::new(
            &tap.base,
            Secret::new("hec-token-1".into()),
            hec_settings(false),
            Encoding::Trailkeep,
            HttpClient::new(local(), Duration::from_secs(5)),
        );
        Some(Self { tap, dest })
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn received(&self) -> Vec<Payload> {
        self.tap.received()
    }

    fn decode(&self, p: &Payload) -> Decoded {
        Decoded {
            ids: serde_json::Deserializer::from_slice(&p.bytes)
                .into_iter::<serde_json::Value>()
                .map(|v| v.unwrap()["event"]["id"].as_str().unwrap().to_owned())
                .collect(),
            size: p.bytes.len(),
        }
    }

    fn tap(&self) -> Option<&Tap> {
        Some(&self.tap)
    }
}

mod hec_conformance {
    use super::HecSubject;
    crate::http_destination_test_suite!(HecSubject);
}

/// Datadog Logs in the destination conformance suite, against `dd_logs`.
struct DatadogSubject {
    tap: Arc<Tap>,
    dest: DatadogLogs,
}

#[async_trait::async_trait]
impl Subject for DatadogSubject {
    async fn start() -> Option<Self> {
        let app = axum::Router::new()
            .route("/api/v2/logs", axum::routing::post(dd_logs))
            .with_state(Arc::new(Dd::default()));
        let tap = Tap::serve(app, &["/api/v2/logs"]).await;
        let dest = DatadogLogs::new(
            &tap.base,
            Secret::new("dd-key-1".into()),
            DatadogSettings {
                service: Some("audit-svc".into()),
                tags: vec!["env:test".into()],
                ..DatadogSettings::default()
            },
            Encoding::Trailkeep,
            HttpClient::new(local(), Duration::from_secs(10)),
        );
        Some(Self { tap, dest })
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn received(&self) -> Vec<Payload> {
        self.tap.received()
    }

    /// The limits apply to the uncompressed array.
    fn decode(&self, p: &Payload) -> Decoded {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&p.bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&raw).unwrap();
        Decoded {
            ids: entries
                .iter()
                .map(|e| {
                    let m: serde_json::Value =
                        serde_json::from_str(e["message"].as_str().unwrap()).unwrap();
                    m["id"].as_str().unwrap().to_owned()
                })
                .collect(),
            size: raw.len(),
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_events: Some(DD_MAX_ENTRIES),
            max_bytes: Some(DD_MAX_REQUEST),
            max_entry_bytes: Some(DD_MAX_ENTRY),
        }
    }

    fn tap(&self) -> Option<&Tap> {
        Some(&self.tap)
    }
}

mod datadog_conformance {
    use super::DatadogSubject;
    crate::http_destination_test_suite!(DatadogSubject);
}
