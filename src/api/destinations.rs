//! Destination endpoints: status (read), pause, resume, dead letters and
//! their retry (admin).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::{ApiError, AppState, DestinationEntry, authorize};
use crate::auth::Scope;

fn find<'a>(st: &'a AppState, name: &str) -> Result<&'a DestinationEntry, ApiError> {
    st.destinations
        .iter()
        .find(|d| d.config.driver.name == name)
        .ok_or_else(|| ApiError::not_found(format!("destination {name}")))
}

/// `GET /v1/destinations`.
pub(super) async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers, Scope::Read, None).await?;
    let mut out = Vec::new();
    for d in &st.destinations {
        let name = &d.config.driver.name;
        let lags = crate::destinations::lags(st.store.as_ref(), name, &d.config.driver.filter)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let open = st
            .store
            .dead_letters(Some(name), false)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .len();
        let s = d.handle.status();
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
    authorize(&st, &headers, Scope::Admin, None).await?;
    find(&st, &name)?.handle.set_paused(true);
    Ok(Json(json!({"name": name, "paused": true})))
}

/// `POST /v1/destinations/{name}/resume`.
pub(super) async fn resume(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers, Scope::Admin, None).await?;
    find(&st, &name)?.handle.set_paused(false);
    Ok(Json(json!({"name": name, "paused": false})))
}

/// `GET /v1/destinations/{name}/dead-letters`.
pub(super) async fn dead_letters(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers, Scope::Admin, None).await?;
    find(&st, &name)?;
    let letters = st
        .store
        .dead_letters(Some(&name), true)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({"name": name, "dead_letters": letters})))
}

/// `POST /v1/destinations/{name}/dead-letters/{id}/retry`.
pub(super) async fn retry(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers, Scope::Admin, None).await?;
    let d = find(&st, &name)?;
    let letter = st
        .store
        .dead_letters(Some(&name), false)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| {
            ApiError::not_found(format!("open dead letter {id} of destination {name}"))
        })?;
    crate::destinations::driver::retry_dead_letter(
        st.store.as_ref(),
        d.dest.as_ref(),
        &d.config.driver,
        &letter,
    )
    .await
    .map_err(|e| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "delivery_failed", e))?;
    Ok(Json(json!({"name": name, "id": id, "resolved": true})))
}
