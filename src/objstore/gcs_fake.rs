//! A small in-test fake of the Google Cloud Storage XML API subset that
//! `object_store` uses: PUT (with `x-goog-if-generation-match: 0` for
//! create-only), GET, HEAD, DELETE, and `list-type=2` listing.
//!
//! No local GCS emulator honours create-only preconditions, so the GCS
//! backend is tested against this; it follows the public XML API
//! (<https://cloud.google.com/storage/docs/xml-api/reference-methods>).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
struct Obj {
    data: Bytes,
    generation: u64,
    modified: time::OffsetDateTime,
}

#[derive(Clone, Default)]
struct Fake {
    objects: Arc<Mutex<BTreeMap<String, Obj>>>,
    /// Ignore `x-goog-if-generation-match` (as stores that overwrite do).
    overwrite: bool,
}

/// A running fake; `base_url` goes into the service account file.
pub(crate) struct GcsFake {
    pub(crate) base_url: String,
    _task: tokio::task::JoinHandle<()>,
}

impl GcsFake {
    pub(crate) async fn start() -> Self {
        Self::serve(Fake::default()).await
    }

    /// A fake that accepts every create-only write (silently overwrites).
    pub(crate) async fn start_overwriting() -> Self {
        Self::serve(Fake {
            overwrite: true,
            ..Fake::default()
        })
        .await
    }

    async fn serve(objects: Fake) -> Self {
        let app = axum::Router::new()
            .route("/{bucket}", axum::routing::get(list))
            .route("/{bucket}/{*key}", axum::routing::any(object))
            .with_state(objects);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url: format!("http://{addr}"),
            _task: task,
        }
    }

    /// Writes a service account file that points `object_store` here.
    pub(crate) fn service_account(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("gcs-fake-account.json");
        let v = serde_json::json!({
            "gcs_base_url": self.base_url,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }
}

fn http_date(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&f).unwrap()
}

async fn object(
    State(fake): State<Fake>,
    method: Method,
    Path((_bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // axum has already percent-decoded the key (`%2F` is `/`).
    let mut map = fake.objects.lock().unwrap();
    match method {
        Method::PUT => {
            let want = headers
                .get("x-goog-if-generation-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let current = map.get(&key).map_or(0, |o| o.generation);
            if let Some(w) = want.filter(|_| !fake.overwrite)
                && w.parse::<u64>().ok() != Some(current)
            {
                return (
                    StatusCode::PRECONDITION_FAILED,
                    "<Error><Code>PreconditionFailed</Code></Error>",
                )
                    .into_response();
            }
            let generation = current + 1;
            map.insert(
                key,
                Obj {
                    data: body,
                    generation,
                    modified: time::OffsetDateTime::now_utc(),
                },
            );
            (
                StatusCode::OK,
                [
                    (header::ETAG.as_str(), format!("\"g{generation}\"")),
                    ("x-goog-generation", generation.to_string()),
                ],
            )
                .into_response()
        }
        Method::GET | Method::HEAD => match map.get(&key) {
            None => (
                StatusCode::NOT_FOUND,
                "<Error><Code>NoSuchKey</Code></Error>",
            )
                .into_response(),
            Some(o) => {
                let mut r = (
                    StatusCode::OK,
                    [
                        (header::ETAG.as_str(), format!("\"g{}\"", o.generation)),
                        (header::LAST_MODIFIED.as_str(), http_date(o.modified)),
                        ("x-goog-generation", o.generation.to_string()),
                    ],
                    if method == Method::GET {
                        o.data.clone()
                    } else {
                        Bytes::new()
                    },
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, o.data.len().into());
                r
            }
        },
        Method::DELETE => match map.remove(&key) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn list(
    State(fake): State<Fake>,
    Path(_bucket): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let map = fake.objects.lock().unwrap();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    for (k, o) in map
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
    {
        let modified = o
            .modified
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        xml.push_str(&format!(
            "<Contents><Key>{}</Key><Size>{}</Size><LastModified>{modified}</LastModified><ETag>\"g{}\"</ETag></Contents>",
            escape(k),
            o.data.len(),
            o.generation
        ));
    }
    xml.push_str("</ListBucketResult>");
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
