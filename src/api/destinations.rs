//! Destination endpoints: status (read), pause, resume, dead letters and
//! their retry (admin).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{ApiError, AppState, DestinationEntry, authorize, permit};
use crate::auth::{Scope, Target, sees};
use crate::store::KeyRecord;

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

/// `GET /v1/destinations`.
pub(super) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    // Receivers' errors can name hosts and echo other streams' data: admin
    // keys only.
    let admin = key.scope == Scope::Admin.as_str();
    let mut out = Vec::new();
    for d in st.destinations.iter().filter(|d| visible(&key, d)) {
        let name = &d.config.driver.name;
        let mut lags = crate::destinations::lags(st.store.as_ref(), name, &d.config.driver.filter)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        lags.retain(|l| sees(&key, &l.stream));
        let open = st
            .store
            .dead_letters(Some(name), false)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .iter()
            .filter(|l| sees(&key, &l.stream))
            .count();
        let mut s = d.handle.status();
        if !admin {
            s.last_error = None;
            s.last_error_at = None;
            s.last_error_detail = None;
        }
        out.push(json!({
            "name": name,
            "type": d.config.type_name(),
            "paused": s.paused,
            "delivered": s.delivered,
            "batches": s.batches,
            "retries": s.retries,
            "dead_letters": open,
            "last_error": s.last_error,
            "last_error_at": s.last_error_at,
            "last_error_detail": s.last_error_detail,
            "lag_events": lags.iter().map(|l| l.lag_events).sum::<u64>(),
            "lag_seconds": lags.iter().filter_map(|l| l.lag_seconds).fold(0.0_f64, f64::max),
            "streams": lags,
        }));
    }
    Ok(Json(json!({ "destinations": out })))
}

/// `POST /v1/destinations/{name}/pause`.
pub(super) async fn pause(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let d = find(&st, &key, &name)?;
    may_switch(&st, &key, d)?;
    d.handle.set_paused(true);
    crate::audit::record(
        st.store.as_ref(),
        "destination.paused",
        crate::audit::Actor::Key(&key.id),
        json!({"destination": name}),
    )
    .await;
    Ok(Json(json!({"name": name, "paused": true})))
}

/// `POST /v1/destinations/{name}/resume`.
pub(super) async fn resume(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let d = find(&st, &key, &name)?;
    may_switch(&st, &key, d)?;
    d.handle.set_paused(false);
    crate::audit::record(
        st.store.as_ref(),
        "destination.resumed",
        crate::audit::Actor::Key(&key.id),
        json!({"destination": name}),
    )
    .await;
    Ok(Json(json!({"name": name, "paused": false})))
}

/// `GET /v1/destinations/{name}/dead-letters`.
pub(super) async fn dead_letters(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    find(&st, &key, &name)?;
    let mut letters = st
        .store
        .dead_letters(Some(&name), true)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    letters.retain(|l| sees(&key, &l.stream));
    Ok(Json(json!({"name": name, "dead_letters": letters})))
}

/// `POST /v1/destinations/{name}/dead-letters/{id}/retry`.
pub(super) async fn retry(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let d = find(&st, &key, &name)?;
    let letter = st
        .store
        .dead_letters(Some(&name), false)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .find(|l| l.id == id && sees(&key, &l.stream))
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
    delivered
        .map_err(|e| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "delivery_failed", e))?;
    Ok(Json(json!({"name": name, "id": id, "resolved": true})))
}
