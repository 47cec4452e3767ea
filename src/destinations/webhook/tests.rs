//! The webhook destination against a local receiver that checks the
//! Standard Webhooks headers and signature independently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::*;
use crate::destinations::OutEvent;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Receiver {
    script: Mutex<VecDeque<(u16, Option<&'static str>)>>,
    got: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    // Verify as a receiver would, from the spec: HMAC-SHA256 over id.ts.body.
    let key = STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp is now");
    r.got.lock().unwrap().push((headers, body));
    let (status, extra) = r.script.lock().unwrap().pop_front().unwrap_or((200, None));
    let mut resp = (StatusCode::from_u16(status).unwrap(), "receiver says so").into_response();
    if let Some(v) = extra {
        let name = if status / 100 == 3 {
            "location"
        } else {
            "retry-after"
        };
        resp.headers_mut().insert(name, v.parse().unwrap());
    }
    resp
}

async fn start(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver {
        script: Mutex::new(script.into()),
        got: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/hook"), r)
}

fn batch() -> Batch {
    Batch {
        destination: "hook".into(),
        stream: "auth".into(),
        start_seq: 4,
        end_seq: 6,
        events: (4..=6)
            .map(|seq| OutEvent {
                seq,
                id: format!("e{seq}"),
                event_type: "grant.created".into(),
                received: String::new(),
                json: format!(r#"{{"data":{{"n":{seq}}},"hash":"h","id":"e{seq}","seq":{seq},"time":"2026-01-01T00:00:00Z","type":"grant.created"}}"#),
            })
            .collect(),
    }
}

fn dest(url: &str, allow_private: bool, encoding: Encoding) -> WebhookDestination {
    WebhookDestination::new(
        url,
        &Secret::new(SECRET.into()),
        HttpClient::new(
            crate::net::Policy::new(allow_private, "[[destinations]] \"hook\""),
            Duration::from_secs(2),
        ),
        encoding,
    )
    .unwrap()
}

#[tokio::test]
async fn signed_batches_in_the_standard_webhooks_format() {
    let (url, r) = start(vec![]).await;
    dest(&url, true, Encoding::Trailkeep)
        .deliver(&batch())
        .await
        .unwrap();
    dest(&url, true, Encoding::Grantex)
        .deliver(&batch())
        .await
        .unwrap();
    let got = r.got.lock().unwrap();
    let (h, body) = &got[0];
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        h["webhook-id"],
        message_id("hook", "auth", 4, 6).as_str(),
        "stable per batch, so a retry can be deduplicated"
    );
    assert_eq!(got[1].0["webhook-id"], h["webhook-id"]);
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["type"], "trailkeep.events");
    assert_eq!(
        (
            v["data"]["start_seq"].as_u64(),
            v["data"]["end_seq"].as_u64()
        ),
        (Some(4), Some(6))
    );
    assert_eq!(v["data"]["events"][0]["id"], "e4");
    assert_eq!(
        v["data"]["events"][0]["hash"], "h",
        "chain fields in the trailkeep encoding"
    );
    let g: serde_json::Value = serde_json::from_slice(&got[1].1).unwrap();
    assert_eq!(
        g["data"]["events"][2],
        serde_json::json!({"id":"e6","type":"grant.created","createdAt":"2026-01-01T00:00:00.000Z","data":{"n":6}})
    );
}

#[tokio::test]
async fn responses_are_classified_and_redirects_not_followed() {
    let (url, r) = start(vec![
        (500, None),
        (429, Some("3")),
        (400, None),
        (302, Some("http://127.0.0.1:1/elsewhere")),
    ])
    .await;
    let d = dest(&url, true, Encoding::Trailkeep);
    assert!(matches!(
        d.deliver(&batch()).await,
        Err(DeliveryError::Retryable {
            retry_after: None,
            ..
        })
    ));
    let e = d.deliver(&batch()).await.unwrap_err();
    assert_eq!(
        e,
        DeliveryError::Retryable {
            message: "receiver answered HTTP 429".into(),
            retry_after: Some(Duration::from_secs(3)),
            detail: Some("HTTP 429: receiver says so".into()),
        }
    );
    assert!(matches!(
        d.deliver(&batch()).await,
        Err(DeliveryError::Permanent {
            status: Some(400),
            ..
        })
    ));
    assert!(
        matches!(
            d.deliver(&batch()).await,
            Err(DeliveryError::Permanent {
                status: Some(302),
                ..
            })
        ),
        "not followed"
    );
    assert_eq!(r.got.lock().unwrap().len(), 4);
    // A receiver slower than the timeout: retryable.
    let slow = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            // Never answers: slower than any timeout.
            std::future::pending::<()>().await;
            "late"
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, slow).await.unwrap() });
    let d2 = WebhookDestination::new(
        &slow_url,
        &Secret::new(SECRET.into()),
        HttpClient::new(
            crate::net::Policy::new(true, "d2"),
            Duration::from_millis(300),
        ),
        Encoding::Trailkeep,
    )
    .unwrap();
    let e = d2.deliver(&batch()).await.unwrap_err();
    assert!(
        matches!(e, DeliveryError::Retryable { .. }),
        "a timeout is retryable: {e}"
    );
    // Connection refused: retryable.
    let gone = dest("http://127.0.0.1:1/hook", true, Encoding::Trailkeep);
    assert!(matches!(
        gone.deliver(&batch()).await,
        Err(DeliveryError::Retryable { .. })
    ));
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let (url, r) = start(vec![]).await;
    let e = dest(&url, false, Encoding::Trailkeep)
        .deliver(&batch())
        .await
        .unwrap_err();
    let DeliveryError::Permanent { message, .. } = e else {
        panic!("permanent")
    };
    assert!(
        message.contains("127.0.0.1")
            && message.contains("loopback")
            && message.contains("allow_private = true")
            && message.contains("\"hook\""),
        "{message}"
    );
    assert!(r.got.lock().unwrap().is_empty(), "nothing was sent");
    for ip in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
    ] {
        assert!(is_private(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
        assert!(!is_private(ip.parse().unwrap()), "{ip}");
    }
}

/// Issue #13: `msg_{dest}_{stream}_…` collided when `_` was in both names.
#[test]
fn webhook_ids_are_unambiguous() {
    let a = message_id("a_b", "c", 1, 2);
    let b = message_id("a", "b_c", 1, 2);
    assert_ne!(a, b);
    assert_ne!(message_id("a", "b", 12, 3), message_id("a", "b", 1, 23));
    assert_eq!(a, message_id("a_b", "c", 1, 2), "stable");
    assert!(a.starts_with("msg_") && a.len() == 4 + 32, "{a}");
    assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn secrets_must_be_whsec_and_stay_hidden() {
    assert!(
        WebhookDestination::new(
            "https://e/h",
            &Secret::new("plain".into()),
            HttpClient::new(crate::net::Policy::new(false, "d"), Duration::from_secs(1)),
            Encoding::Trailkeep
        )
        .is_err()
    );
    let d = dest("https://example.com/h", false, Encoding::Trailkeep);
    assert!(!format!("{d:?}").contains("MfKQ"));
    // Spec example (standardwebhooks.com): the same inputs give the same signature.
    let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = sign(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/// The webhook in the destination conformance suite, against the receiver
/// above (which checks every signature).
struct WebhookSubject {
    tap: Arc<crate::destinations::conformance::Tap>,
    dest: WebhookDestination,
}

#[async_trait::async_trait]
impl crate::destinations::conformance::Subject for WebhookSubject {
    async fn start() -> Option<Self> {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::new(Receiver::default()));
        let tap = crate::destinations::conformance::Tap::serve(app, &["/hook"]).await;
        let dest = dest(&format!("{}/hook", tap.base), true, Encoding::Trailkeep);
        Some(Self { tap, dest })
    }

    fn destination(&self) -> &dyn Destination {
        &self.dest
    }

    async fn received(&self) -> Vec<crate::destinations::conformance::Payload> {
        self.tap.received()
    }

    fn decode(
        &self,
        p: &crate::destinations::conformance::Payload,
    ) -> crate::destinations::conformance::Decoded {
        let v: serde_json::Value = serde_json::from_slice(&p.bytes).unwrap();
        crate::destinations::conformance::Decoded {
            ids: v["data"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect(),
            size: p.bytes.len(),
        }
    }

    fn tap(&self) -> Option<&crate::destinations::conformance::Tap> {
        Some(&self.tap)
    }
}

mod conformance {
    use super::WebhookSubject;
    crate::http_destination_test_suite!(WebhookSubject);
}
