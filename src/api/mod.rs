//! The HTTP API (axum): ingest, reads, checkpoints, proofs, verify, health
//! and metrics. Shapes follow DESIGN.md "Interfaces" exactly; scripts rely
//! on them.
//!
//! Every `/v1` route but `/v1/public-key` needs `Authorization: Bearer
//! <token>`: 401 without a valid key, 403 when the key's scope or stream
//! does not allow the call. Each handler names its target ([`Target`]) and
//! [`crate::auth::allows`] decides; listings are narrowed with
//! [`crate::auth::sees`], so a key bound to one stream never learns another
//! stream's name, head, lag, batches, dead letters or errors. Authentication
//! comes before any body is parsed.

pub(crate) mod archive;
mod body;
mod cluster;
pub(crate) mod destinations;
mod error;
mod extract;
mod ingest;
mod limits;
mod openapi;
mod peer;
mod query;
pub(crate) mod read;
pub use read::{EventEvidence, Tier, event_evidence, prove_inclusion};
mod scrape;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::{Modify as _, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Archived, ErrorBody, ErrorDetail, Extra};
pub use limits::RateLimits;

pub use peer::{FORWARD_WINDOW, PURPOSE as PEER_KEY_PURPOSE, PeerKey, Replays};

use crate::auth::{Authenticator, Scope, Target, allows};
use crate::chain::note::NoteVerifier;
use crate::event::Limits;
use crate::ingest::Appender;
use crate::names::StreamName;
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
    /// Whether per-stream series (stream names as labels) are exported
    /// (`[metrics] stream_labels`).
    pub stream_labels: bool,
    /// When the store-derived gauges were last read (`/metrics` reads
    /// them at most once a second, one scrape at a time).
    pub scraped: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// The archiver (runs on demand through the API as well).
    pub archiver: Arc<crate::archive::Archiver>,
    /// Configured destinations and their running drivers.
    pub destinations: Vec<DestinationEntry>,
    /// Per-key rate limits and the body timeout.
    pub rate: RateLimits,
    /// Refused authentications, flushed to `_audit` once a minute.
    pub refusals: Arc<crate::audit::Refusals>,
    /// SQL over hot and archived events (`POST /v1/query`).
    pub query: crate::query::Engine,
    /// Stream ownership, on a store several nodes share (PostgreSQL).
    pub cluster: Option<ClusterRoute>,
}

/// What the ingest route needs to send a request for a stream another
/// node owns on to that node (`[cluster] non_owner`).
pub struct ClusterRoute {
    /// Who owns which shard, as this node last learnt it.
    pub owners: Arc<crate::store::cluster::Owners>,
    /// Forward, redirect or commit here.
    pub mode: crate::config::NonOwner,
    /// This node's id (sent as `Trailkeep-Forwarded-By`).
    pub node: String,
    /// `[cluster] lease_ttl_ms`: a node whose heartbeat is older is not
    /// alive (`GET /v1/cluster`).
    pub lease_ttl: std::time::Duration,
    /// The forwarding client: no redirects, bounded time.
    pub client: reqwest::Client,
    /// Signs forwards and their answers (see [`PeerKey`]).
    pub peer: PeerKey,
    /// Forwards already taken (each is taken once).
    pub replays: Replays,
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

/// Returns the router with every route, and the OpenAPI description built
/// from the same handlers.
pub fn router(state: AppState) -> Router {
    let (router, mut api) = routes().split_for_parts();
    openapi::Shared.modify(&mut api);
    let description: Arc<str> = api
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        .into();
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let d = description.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], d.to_string()) }
            }),
        )
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::wrong_method)
        .layer(axum::middleware::from_fn(scrape::track))
        .with_state(state)
}

/// The OpenAPI description alone (`trailkeep openapi`, tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = routes().into_openapi();
    openapi::Shared.modify(&mut api);
    api
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(read::list_streams))
        .routes(routes!(ingest::post_events, read::get_events))
        .routes(routes!(read::get_checkpoint))
        .routes(routes!(read::inclusion))
        .routes(routes!(read::consistency))
        .routes(routes!(read::public_key))
        .routes(routes!(read::verify))
        .routes(routes!(read::sources))
        .routes(routes!(read::rejected))
        .routes(routes!(destinations::status))
        .routes(routes!(destinations::pause))
        .routes(routes!(destinations::resume))
        .routes(routes!(destinations::dead_letters))
        .routes(routes!(destinations::retry))
        .routes(routes!(archive::list))
        .routes(routes!(archive::run))
        .routes(routes!(archive::restore))
        .routes(routes!(query::query))
        .routes(routes!(cluster::cluster))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: fails once a commit failed (restart to recover).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = String, content_type = "text/plain"),
    (status = 503, description = "A commit failed; the writer refuses appends", body = String, content_type = "text/plain")))]
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

/// Prometheus exposition: every series with `# HELP` and `# TYPE`; stream
/// names only with `[metrics] stream_labels = true`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(st: State<AppState>) -> impl IntoResponse {
    scrape::metrics(st).await
}

/// Authenticates the request: the active key its bearer token proves.
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<KeyRecord, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        st.refusals.unauthenticated(None);
        return Err(ApiError::unauthorized());
    };
    let key = st
        .auth
        .authenticate(token.trim())
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::Unauthenticated => {
                // The id part only (public), never the secret.
                st.refusals
                    .unauthenticated(crate::auth::parse_token(token.trim()).map(|(id, _)| id));
                ApiError::unauthorized()
            }
            crate::auth::AuthError::Store(e) => ApiError::internal(&e),
        })?;
    st.rate.request(&key.id)?;
    Ok(key)
}

/// Reads a request body of at most `max` bytes within the body timeout;
/// a larger one is refused with 413 and `too_large()` as the message (which
/// names the limit and how to stay under it).
async fn read_body(
    st: &AppState,
    body: axum::body::Body,
    max: usize,
    too_large: impl FnOnce() -> String,
) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(st.rate.body_timeout, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms ([server] body_timeout_ms)",
                st.rate.body_timeout.as_millis()
            ),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            too_large(),
        )),
        Ok(Ok(b)) => Ok(b),
    }
}

/// `8388608 bytes (8 MiB)`: a limit as configured, and as people read it.
fn bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{n} bytes ({} MiB)", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{n} bytes ({} KiB)", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Authenticates the request and checks, with [`allows`] (the one place
/// that decides), that its key grants `needed` on `target`.
async fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    needed: Scope,
    target: Target<'_>,
) -> Result<KeyRecord, ApiError> {
    let key = authenticate(st, headers).await?;
    permit(st, &key, needed, target)?;
    Ok(key)
}

/// Checks an authenticated key against a target found after lookup (a dead
/// letter's stream, say).
fn permit(
    st: &AppState,
    key: &KeyRecord,
    needed: Scope,
    target: Target<'_>,
) -> Result<(), ApiError> {
    if allows(key, needed, target) {
        return Ok(());
    }
    st.refusals.forbidden(&key.id);
    let what = match target {
        Target::Stream(s) => format!("{} on stream {s}", needed.as_str()),
        Target::AllStreams => format!("{} on every stream (a key for '*')", needed.as_str()),
        Target::Listing => needed.as_str().to_owned(),
    };
    Err(ApiError::forbidden(&what))
}

/// A `limit` query parameter: 1 to 10000, `default` when absent.
fn limit_param(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=10_000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError {
            field: Some("limit".into()),
            ..ApiError::bad_request("invalid_query", "limit must be between 1 and 10000")
        })
    }
}

fn name_error(e: &crate::names::NameError) -> ApiError {
    ApiError {
        field: Some("stream".into()),
        ..ApiError::bad_request(e.code(), e.to_string())
    }
}

/// A stream named in a path or query: any valid name, the log's own
/// included (a key for `*` reads `_trailkeep` and `_audit`).
fn stream_name(stream: &str) -> Result<StreamName, ApiError> {
    StreamName::parse(stream).map_err(|e| name_error(&e))
}

/// A stream a producer appends to: valid and not the log's own.
fn producer_stream(stream: &str) -> Result<StreamName, ApiError> {
    StreamName::producer(stream).map_err(|e| name_error(&e))
}
