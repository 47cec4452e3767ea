//! The operations pages' routes and what they share: Archive, Destinations,
//! Sources and Verify. Their state (destination lag samples, verification
//! jobs) rides on the routes as an extension, so the console's own state
//! stays as it is.
//!
//! Every page acts through the API's own functions
//! (`crate::api::{archive, destinations, read}`), so the console and the
//! API decide alike: same scopes, same per-stream narrowing, same
//! redaction, same `_audit` records.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};

use super::{UiState, Viewer, archive, destinations, lags, problem, sources, verify};
use crate::api::{ApiError, AppState};

/// The operations pages' state.
pub(super) struct Ops {
    pub(super) lags: lags::Lags,
    pub(super) jobs: verify::Jobs,
}

pub(super) type OpsState = Arc<Ops>;

/// The routes of Archive, Destinations, Sources and Verify.
pub(super) fn routes(app: &AppState) -> Router<UiState> {
    let ops = Arc::new(Ops {
        lags: lags::Lags::start(app),
        jobs: verify::Jobs::default(),
    });
    Router::new()
        .route("/ui/archive", get(archive::page))
        .route("/ui/archive/run", post(archive::run))
        .route("/ui/archive/restore", post(archive::restore))
        .route("/ui/destinations", get(destinations::list))
        .route("/ui/destinations/{name}", get(destinations::detail))
        .route("/ui/destinations/{name}/pause", post(destinations::pause))
        .route("/ui/destinations/{name}/resume", post(destinations::resume))
        .route(
            "/ui/destinations/{name}/dead-letters/{id}/retry",
            post(destinations::retry),
        )
        .route("/ui/sources", get(sources::page))
        .route("/ui/verify", get(verify::page).post(verify::start))
        .layer(axum::Extension(ops))
}

/// A refusal or failure of the API's logic as a console page: its status
/// and message (the API's messages name no secret, and no stream the key
/// may not see).
pub(super) fn api_problem(e: &ApiError) -> Response {
    let title = match e.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::BAD_REQUEST => "Not accepted",
        StatusCode::CONFLICT => "Refused",
        s if s.is_server_error() => "It did not work",
        _ => "Refused",
    };
    problem(e.status, title, &upper_first(&e.message))
}

/// The message with a capital first letter, as a sentence on a page.
pub(super) fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Admin scope, or a 403 page naming what needs it.
pub(super) fn admin_only(viewer: &Viewer, what: &str) -> Result<(), Response> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "Admin only",
            &format!("{what} needs an admin key. Sign in with one to do this."),
        ))
    }
}

/// `1.5 MiB`: a size as people read it.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `/ui/x?a=1&b=2`, the values URL-encoded; empty values left out.
pub(super) fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", s.finish())
    } else {
        path.to_owned()
    }
}

/// A duration in seconds as people read it: `45 s`, `12 min`, `3.5 h`.
pub(super) fn secs(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_links_and_durations_read_well() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(
            link("/ui/a", &[("x", ""), ("y", "a b&c")]),
            "/ui/a?y=a+b%26c"
        );
        assert_eq!(link("/ui/a", &[("x", "")]), "/ui/a");
        assert_eq!(secs(5.0), "5 s");
        assert_eq!(secs(600.0), "10 min");
        assert_eq!(upper_first("archive failed"), "Archive failed");
    }
}
