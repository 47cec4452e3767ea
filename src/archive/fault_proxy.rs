//! A fault-injecting HTTP proxy for the archive tests: forwards requests to
//! a real S3 API server (moto) unchanged (Host kept, so signatures hold),
//! except those matching a rule, which get an error status, or are
//! forwarded and then answered too late (a timeout after a successful PUT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// What a matching request gets.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// This status and an S3 error body with this code.
    Status(u16, &'static str),
    /// Forwarded (so the write happens), answered after this delay.
    DelayAfterForward(Duration),
}

#[derive(Clone, Debug)]
struct Rule {
    method: Method,
    path_contains: &'static str,
    fault: Fault,
    times: usize,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    log: Vec<String>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    inner: Arc<Mutex<Inner>>,
}

/// A running proxy.
pub(crate) struct FaultProxy {
    pub(crate) url: String,
    inner: Arc<Mutex<Inner>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub(crate) async fn start(upstream: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            inner: inner.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            inner,
            _task: task,
        }
    }

    /// The next `times` requests with `method` whose path contains
    /// `path_contains` get `fault`.
    pub(crate) fn inject(
        &self,
        method: Method,
        path_contains: &'static str,
        fault: Fault,
        times: usize,
    ) {
        self.inner.lock().unwrap().rules.push(Rule {
            method,
            path_contains,
            fault,
            times,
        });
    }

    pub(crate) fn clear(&self) {
        self.inner.lock().unwrap().rules.clear();
    }

    /// `METHOD path -> outcome` for every request seen.
    pub(crate) fn log(&self) -> Vec<String> {
        self.inner.lock().unwrap().log.clone()
    }
}

async fn handle(State(p): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |x| x.as_str())
        .to_owned();
    let fault = {
        let mut inner = p.inner.lock().unwrap();
        let hit = inner
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == parts.method && path.contains(r.path_contains));
        let f = hit.map(|r| {
            r.times -= 1;
            r.fault.clone()
        });
        inner.log.push(format!("{} {path} -> {f:?}", parts.method));
        f
    };
    if let Some(Fault::Status(code, s3_code)) = fault {
        let status = StatusCode::from_u16(code).unwrap();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3_code}</Code><Message>injected</Message></Error>"
        );
        return (status, [("content-type", "application/xml")], xml).into_response();
    }
    let mut fwd = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for (k, v) in &parts.headers {
        if k != "content-length" {
            fwd = fwd.header(k, v);
        }
    }
    let up = fwd.body(body).send().await.unwrap();
    let status = up.status();
    let headers = up.headers().clone();
    let bytes = up.bytes().await.unwrap();
    if let Some(Fault::DelayAfterForward(d)) = fault {
        tokio::time::sleep(d).await;
    }
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    for (k, v) in &headers {
        // Content-Length stays: a HEAD's says the object's size.
        if k != "transfer-encoding" {
            r.headers_mut().insert(k, v.clone());
        }
    }
    r
}
