//! Destination endpoints: status (read), pause, resume, dead letters and
//! their retry (admin).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::extract::Path;
use super::{ApiError, AppState, DestinationEntry, ErrorBody, authorize, permit};
use crate::auth::{Scope, Target, sees};
use crate::destinations::StreamLag;
use crate::store::{DeadLetter, KeyRecord};

/// `GET /v1/destinations`.
#[derive(Serialize, ToSchema)]
pub(super) struct DestinationList {
    /// The destinations that take a stream the key may see.
    destinations: Vec<DestinationStatus>,
}

/// One destination's delivery status.
#[derive(Serialize, ToSchema)]
pub(crate) struct DestinationStatus {
    /// Its configured name.
    pub(crate) name: String,
    /// Its type (`s3`, `datadog`, `webhook`, …).
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub(crate) kind: String,
    /// Whether an operator paused it.
    pub(crate) paused: bool,
    /// Events accepted by the destination from the streams the key may
    /// see, in total (kept in the store across restarts; operators'
    /// dead-letter retries included).
    pub(crate) delivered: u64,
    /// Batches accepted since this process started (on this node).
    pub(crate) batches: u64,
    /// Failed attempts that were retried, since this process started (on
    /// this node).
    pub(crate) retries: u64,
    /// Open dead letters of the streams the key may see.
    pub(crate) dead_letters: usize,
    /// Last failure, without credentials, query strings or receiver bodies
    /// (admin keys only; null for others).
    pub(crate) last_error: Option<String>,
    /// When it happened (admin keys only).
    pub(crate) last_error_at: Option<String>,
    /// The receiver's status and a redacted excerpt (admin keys only).
    pub(crate) last_error_detail: Option<String>,
    /// Events not yet delivered, all streams the key may see.
    pub(crate) lag_events: u64,
    /// Age of the oldest undelivered event, seconds.
    pub(crate) lag_seconds: f64,
    /// Per stream.
    pub(crate) streams: Vec<StreamLag>,
}

/// A pause or resume done.
#[derive(Serialize, ToSchema)]
pub(super) struct Switched {
    /// The destination.
    name: String,
    /// Whether it is now paused.
    paused: bool,
}

/// `GET /v1/destinations/{name}/dead-letters`.
#[derive(Serialize, ToSchema)]
pub(super) struct DeadLetterList {
    /// The destination.
    name: String,
    /// Its dead letters (open and resolved) of the streams the key may see.
    dead_letters: Vec<DeadLetter>,
}

/// A dead letter delivered by an operator's retry.
#[derive(Serialize, ToSchema)]
pub(super) struct Retried {
    /// The destination.
    name: String,
    /// The dead letter.
    id: i64,
    /// Always true: a failed retry answers 502.
    resolved: bool,
}

/// Whether `key` may see destination `d`: a key for `*` sees all; a key
/// bound to a stream sees the destinations that take that stream.
fn visible(key: &KeyRecord, d: &DestinationEntry) -> bool {
    key.stream == "*" || d.config.driver.filter.stream(&key.stream)
}

/// The destination `name`, if `key` may see it (else 404, as for a name
/// that does not exist: names of other streams' destinations do not leak).
fn find<'a>(
    st: &'a AppState,
    key: &KeyRecord,
    name: &str,
) -> Result<&'a DestinationEntry, ApiError> {
    st.destinations
        .iter()
        .find(|d| d.config.driver.name == name && visible(key, d))
        .ok_or_else(|| ApiError::not_found(format!("destination {name}")))
}

/// Pausing or resuming a destination acts on every stream it serves: a key
/// bound to a stream may switch only a destination that serves that stream
/// alone.
fn may_switch(st: &AppState, key: &KeyRecord, d: &DestinationEntry) -> Result<(), ApiError> {
    if d.config.driver.filter.only_stream() == Some(key.stream.as_str()) {
        return permit(st, key, Scope::Admin, Target::Stream(&key.stream));
    }
    permit(st, key, Scope::Admin, Target::AllStreams)
}

/// Every destination the key may see: delivered, lag, dead letters and
/// (admin keys) the last error.
#[utoipa::path(get, path = "/v1/destinations", tag = "destinations", security(("bearer" = [])),
    responses((status = 200, body = DestinationList)))]
pub(super) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<DestinationList>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    Ok(Json(DestinationList {
        destinations: statuses(&st, &key).await?,
    }))
}

/// Every destination `key` may see, with what it may see of each: the
/// API's `GET /v1/destinations` and the console's Destinations page.
///
/// # Errors
/// 500 when the store cannot be read.
pub(crate) async fn statuses(
    st: &AppState,
    key: &KeyRecord,
) -> Result<Vec<DestinationStatus>, ApiError> {
    // Receivers' errors can name hosts and echo any stream's data the
    // destination serves: admin keys only, and a key bound to a stream
    // only for a destination that serves that stream alone.
    let admin = key.scope == Scope::Admin.as_str();
    let cursors = st
        .store
        .delivery_cursors()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut out = Vec::new();
    for d in st.destinations.iter().filter(|d| visible(key, d)) {
        let name = &d.config.driver.name;
        let mut lags = crate::destinations::lags(st.store.as_ref(), name, &d.config.driver.filter)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        lags.retain(|l| sees(key, &l.stream));
        let open = st
            .store
            .dead_letters(Some(name), false)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .iter()
            .filter(|l| sees(key, &l.stream))
            .count();
        let delivered = cursors
            .iter()
            .filter(|c| c.destination == *name && sees(key, &c.stream))
            .map(|c| c.delivered)
            .sum();
        let mut s = d.handle.status();
        let errors_visible = admin
            && (key.stream == "*"
                || d.config.driver.filter.only_stream() == Some(key.stream.as_str()));
        if !errors_visible {
            s.last_error = None;
            s.last_error_at = None;
            s.last_error_detail = None;
        }
        out.push(DestinationStatus {
            name: name.clone(),
            kind: d.config.type_name().to_owned(),
            paused: s.paused,
            delivered,
            batches: s.batches,
            retries: s.retries,
            dead_letters: open,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            last_error_detail: s.last_error_detail,
            lag_events: lags.iter().map(|l| l.lag_events).sum::<u64>(),
            lag_seconds: lags
                .iter()
                .filter_map(|l| l.lag_seconds)
                .fold(0.0_f64, f64::max),
            streams: lags,
        });
    }
    Ok(out)
}

/// Stops delivery to a destination (admin; a key for `*` unless the
/// destination takes the key's stream only).
#[utoipa::path(post, path = "/v1/destinations/{name}/pause", tag = "destinations",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Destination name", pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, body = Switched),
        (status = 404, description = "No such destination (or not visible to this key)", body = ErrorBody)))]
pub(super) async fn pause(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Switched>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    switch(&st, &key, &name, true).await?;
    Ok(Json(Switched { name, paused: true }))
}

/// Pauses (`paused`) or resumes destination `name` for `key`, recording
/// it in `_audit`: the API's pause and resume and the console's buttons.
///
/// # Errors
/// 404 for a destination the key does not see; 403 when it may not
/// switch it ([`may_switch`]).
pub(crate) async fn switch(
    st: &AppState,
    key: &KeyRecord,
    name: &str,
    paused: bool,
) -> Result<(), ApiError> {
    permit(st, key, Scope::Admin, Target::Listing)?;
    let d = find(st, key, name)?;
    may_switch(st, key, d)?;
    d.handle.set_paused(paused);
    crate::audit::record(
        st.store.as_ref(),
        if paused {
            "destination.paused"
        } else {
            "destination.resumed"
        },
        crate::audit::Actor::Key(&key.id),
        json!({"destination": name}),
    )
    .await;
    Ok(())
}

/// Whether `key` may pause and resume destination `name` (the console
/// shows the buttons only then).
pub(crate) fn may_switch_named(st: &AppState, key: &KeyRecord, name: &str) -> bool {
    let Ok(d) = find(st, key, name) else {
        return false;
    };
    let needs = if d.config.driver.filter.only_stream() == Some(key.stream.as_str()) {
        Target::Stream(&key.stream)
    } else {
        Target::AllStreams
    };
    crate::auth::allows(key, Scope::Admin, needs)
}

/// Restarts delivery to a destination (admin; a key for `*` unless the
/// destination takes the key's stream only).
#[utoipa::path(post, path = "/v1/destinations/{name}/resume", tag = "destinations",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Destination name", pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, body = Switched),
        (status = 404, description = "No such destination (or not visible to this key)", body = ErrorBody)))]
pub(super) async fn resume(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Switched>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    switch(&st, &key, &name, false).await?;
    Ok(Json(Switched {
        name,
        paused: false,
    }))
}

/// A destination's dead letters: batches it refused permanently (admin).
#[utoipa::path(get, path = "/v1/destinations/{name}/dead-letters", tag = "destinations",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Destination name", pattern = r"^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, body = DeadLetterList),
        (status = 404, description = "No such destination (or not visible to this key)", body = ErrorBody)))]
pub(super) async fn dead_letters(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let letters = letters(&st, &key, &name).await?;
    Ok(Json(DeadLetterList {
        name,
        dead_letters: letters,
    }))
}

/// Destination `name`'s dead letters (open and resolved) of the streams
/// `key` sees, oldest first (admin).
///
/// # Errors
/// 403 for a key that is not admin; 404 for a destination it does not see.
pub(crate) async fn letters(
    st: &AppState,
    key: &KeyRecord,
    name: &str,
) -> Result<Vec<DeadLetter>, ApiError> {
    permit(st, key, Scope::Admin, Target::Listing)?;
    find(st, key, name)?;
    let mut letters = st
        .store
        .dead_letters(Some(name), true)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    letters.retain(|l| sees(key, &l.stream));
    Ok(letters)
}

/// Sends an open dead letter again (admin).
#[utoipa::path(post, path = "/v1/destinations/{name}/dead-letters/{id}/retry",
    tag = "destinations", security(("bearer" = [])),
    params(("name" = String, Path, description = "Destination name", pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        ("id" = i64, Path, description = "Dead letter id")),
    responses(
        (status = 200, body = Retried),
        (status = 404, description = "No such open dead letter", body = ErrorBody),
        (status = 502, description = "The destination refused it again", body = ErrorBody)))]
pub(super) async fn retry(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<Retried>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    retry_letter(&st, &key, &name, id).await?;
    Ok(Json(Retried {
        name,
        id,
        resolved: true,
    }))
}

/// Sends open dead letter `id` of destination `name` again for `key`
/// (admin), recording it in `_audit`.
///
/// # Errors
/// 404 for a letter or destination the key does not see, or one already
/// resolved; 502 when the destination refuses it again (the message says
/// how, without credentials).
pub(crate) async fn retry_letter(
    st: &AppState,
    key: &KeyRecord,
    name: &str,
    id: i64,
) -> Result<(), ApiError> {
    permit(st, key, Scope::Admin, Target::Listing)?;
    let d = find(st, key, name)?;
    let letter = st
        .store
        .dead_letters(Some(name), false)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .find(|l| l.id == id && sees(key, &l.stream))
        .ok_or_else(|| {
            ApiError::not_found(format!("open dead letter {id} of destination {name}"))
        })?;
    let delivered = crate::destinations::driver::retry_dead_letter(
        st.store.as_ref(),
        d.dest.as_ref(),
        &d.config.driver,
        &letter,
    )
    .await;
    crate::audit::record(
        st.store.as_ref(),
        "dead_letter.retried",
        crate::audit::Actor::Key(&key.id),
        json!({"destination": name, "id": id, "stream": letter.stream, "delivered": delivered.is_ok()}),
    )
    .await;
    delivered.map_err(|e| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "delivery_failed", e))
}
