//! The HTTP API (axum): ingest, reads, checkpoints, proofs, verify, health
//! and metrics. Shapes follow DESIGN.md "Interfaces" exactly; scripts rely
//! on them.
//!
//! Every `/v1` route needs `Authorization: Bearer <token>`: 401 without a
//! valid key, 403 when the key's scope or stream does not allow the call.

mod archive;
mod destinations;
mod error;
mod ingest;
mod read;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::auth::{Authenticator, Scope, allows};
use crate::chain::note::NoteVerifier;
use crate::event::Limits;
use crate::ingest::Appender;
use crate::store::{KeyRecord, Store};

/// What every handler shares; cloned per request, so it is an `Arc`.
pub type AppState = std::sync::Arc<Shared>;

/// The contents of [`AppState`].
pub struct Shared {
    /// The hot store.
    pub store: Arc<dyn Store>,
    /// The append path.
    pub appender: Appender,
    /// API key checks.
    pub auth: Authenticator,
    /// Request limits.
    pub limits: Limits,
    /// The checkpoint verifier key.
    pub verifier: NoteVerifier,
    /// The log name (checkpoint origin prefix).
    pub log_name: String,
    /// Prometheus exposition.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The archiver (runs on demand through the API as well).
    pub archiver: Arc<crate::archive::Archiver>,
    /// Configured destinations and their running drivers.
    pub destinations: Vec<DestinationEntry>,
}

/// One configured destination, as the API sees it.
pub struct DestinationEntry {
    /// Its configuration.
    pub config: crate::destinations::config::DestinationConfig,
    /// Its driver's status and pause switch.
    pub handle: crate::destinations::driver::DriverHandle,
    /// The destination (for an operator's dead-letter retry).
    pub dest: Arc<dyn crate::destinations::Destination>,
}

/// Returns the router with every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/streams", get(read::list_streams))
        .route(
            "/v1/streams/{stream}/events",
            post(ingest::post_events).get(read::get_events),
        )
        .route("/v1/streams/{stream}/checkpoint", get(read::get_checkpoint))
        .route("/v1/streams/{stream}/proof/inclusion", get(read::inclusion))
        .route(
            "/v1/streams/{stream}/proof/consistency",
            get(read::consistency),
        )
        .route("/v1/public-key", get(read::public_key))
        .route("/v1/verify", post(read::verify))
        .route("/v1/sources", get(read::sources))
        .route("/v1/destinations", get(destinations::status))
        .route("/v1/destinations/{name}/pause", post(destinations::pause))
        .route("/v1/destinations/{name}/resume", post(destinations::resume))
        .route(
            "/v1/destinations/{name}/dead-letters",
            get(destinations::dead_letters),
        )
        .route(
            "/v1/destinations/{name}/dead-letters/{id}/retry",
            post(destinations::retry),
        )
        .route("/v1/archives", get(archive::list))
        .route("/v1/archive/run", post(archive::run))
        .route("/v1/streams/{stream}/restore", post(archive::restore))
        .route("/v1/sources/rejected", get(read::rejected))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if st.appender.is_poisoned() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: a commit failed and the writer refuses appends; restart to recover\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

/// Authenticates the request and checks that the key allows `needed` on `stream`.
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    needed: Scope,
    stream: Option<&str>,
) -> Result<KeyRecord, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let key = st
        .auth
        .authenticate(token.trim())
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::Unauthenticated => ApiError::unauthorized(),
            crate::auth::AuthError::Store(e) => ApiError::internal(&e),
        })?;
    if !allows(&key, needed, stream) {
        let what = match stream {
            Some(s) => format!("{} on stream {s}", needed.as_str()),
            None => needed.as_str().to_owned(),
        };
        return Err(ApiError::forbidden(&what));
    }
    Ok(key)
}

fn check_stream(stream: &str) -> Result<(), ApiError> {
    if crate::event::valid_stream_name(stream) {
        Ok(())
    } else {
        Err(ApiError {
            field: Some("stream".into()),
            ..ApiError::bad_request(
                "invalid_stream",
                "stream names are 1-128 of A-Z a-z 0-9 . _ - (and not . or ..)",
            )
        })
    }
}
