//! Extractors whose refusals are the JSON error shape, and the answers for
//! routes and methods that do not exist.
//!
//! axum's own `Query` and `Path` refuse with plain text; every answer of
//! this API is `{"error":{…}}`, so callers (and schemathesis) can rely on
//! one shape. Query structs deny unknown fields: `?from=2` on a route that
//! takes `from_seq` is a mistake to name, not to ignore.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use serde::de::DeserializeOwned;

use super::ApiError;

/// A query string, refused with `400 invalid_query` naming the parameter.
pub(super) struct Query<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let field = e.path().to_string();
                let mut err = ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "query string: {}; see GET /v1/openapi.json for this route's parameters",
                        e.inner()
                    ),
                );
                if field != "." {
                    err.field = Some(field);
                }
                err
            })
    }
}

/// A seq in a query string: at most `i64::MAX`, the highest seq a store
/// can hold (larger numbers are refused, not wrapped or clamped).
pub(super) fn seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = <Option<u64> as serde::Deserialize>::deserialize(d)?;
    match v {
        Some(n) if n > i64::MAX as u64 => Err(serde::de::Error::custom(format!(
            "{n} is past the highest seq a stream can hold ({})",
            i64::MAX
        ))),
        v => Ok(v),
    }
}

/// Path parameters, refused with `400 invalid_path`.
pub(super) struct Path<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The answer for a path no route takes.
pub(super) async fn no_route(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {}; GET /v1/openapi.json lists every route",
            uri.path()
        ),
    )
}

/// The answer for a method a route does not take (axum adds `Allow`).
pub(super) async fn wrong_method(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take this method; the Allow header lists those it takes",
            uri.path()
        ),
    )
}
