//! The operator and auditor console at `/ui/`: server-rendered HTML
//! (maud, checked at compile time), a stylesheet and small JavaScript
//! modules of our own, all embedded in the binary (no CDN, no build step).
//!
//! Signing in with an API key opens a session (`session.rs`); every page
//! then acts as that key, through the same [`crate::auth::allows`] /
//! [`crate::auth::sees`] checks as the API: a read key sees no admin
//! control, a stream-bound key no other stream's name. Every response
//! carries a strict Content-Security-Policy (no inline script or style,
//! nothing from another origin); every state-changing form carries the
//! session's CSRF token and must come from this origin.

// A handler's error is the page it answers (`Response`, 128 bytes): boxing
// it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

mod archive;
mod assets;
mod destinations;
mod events;
mod keys;
mod lags;
mod layout;
mod ops;
mod overview;
mod rates;
mod session;
mod signin;
mod sources;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use crate::api::AppState;
use crate::auth::Scope;
use crate::store::KeyRecord;

/// The console's state: the API's, plus sessions.
pub(crate) struct Console {
    app: AppState,
    sessions: session::Sessions,
    /// Cookies get `Secure` (the server speaks TLS).
    secure: bool,
    rates: rates::Rates,
}

type UiState = Arc<Console>;

/// The Content-Security-Policy of every console response: scripts, styles,
/// images and fetches from this origin only; no inline script or style, no
/// framing, forms post back here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, under `/ui`. `secure`: the server speaks TLS
/// (session cookies get `Secure`).
pub fn router(app: AppState, secure: bool) -> Router {
    let rates = rates::Rates::start(&app);
    let ops = ops::routes(&app);
    let console = Arc::new(Console {
        app,
        sessions: session::Sessions::default(),
        secure,
        rates,
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/login", get(signin::form).post(signin::sign_in))
        .route("/ui/logout", post(signin::sign_out))
        .route("/ui/events", get(events::list))
        .route("/ui/events/{stream}/{seq}", get(events::event))
        .route(
            "/ui/events/{stream}/{seq}/evidence.json",
            get(events::evidence),
        )
        .route("/ui/keys", get(keys::page).post(keys::create))
        .route("/ui/keys/{id}/revoke", post(keys::revoke))
        .route("/ui/assets/{name}", get(assets::serve))
        .merge(ops)
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` with every
    // form POST, and `check_form` refuses them all. `same-origin` keeps
    // the Referer from every other site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// The header app.js sends with a page's background refresh.
const REFRESH_HEADER: &str = "x-console-refresh";

/// The signed-in key behind a console request.
pub(crate) struct Viewer {
    key: KeyRecord,
    csrf: String,
}

impl Viewer {
    fn is_admin(&self) -> bool {
        self.key.scope == Scope::Admin.as_str()
    }
}

impl FromRequestParts<UiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &UiState) -> Result<Self, Response> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|_| parts.method == axum::http::Method::GET)
                .unwrap_or("/ui/");
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish();
            Redirect::to(&format!("/ui/login?{q}")).into_response()
        };
        let Some(token) = session::cookie(&parts.headers, session::COOKIE) else {
            return Err(to_login());
        };
        // app.js marks its background refreshes: they are not use, so an
        // open tab left alone still idles out.
        let refresh = parts.headers.contains_key(REFRESH_HEADER);
        let Some(opened) = ui.sessions.get(token, !refresh) else {
            return Err(to_login());
        };
        match ui.app.auth.active(&opened.key_id).await {
            Ok(key) => {
                // The API's per-key request limit holds here too.
                if let Err(e) = ui.app.rate.request(&key.id) {
                    return Err(e.into_response());
                }
                Ok(Viewer {
                    key,
                    csrf: opened.csrf,
                })
            }
            Err(crate::auth::AuthError::Unauthenticated) => {
                ui.sessions.close_key(&opened.key_id);
                Err(to_login())
            }
            Err(crate::auth::AuthError::Store(e)) => Err(failure(&e)),
        }
    }
}

/// A checked form post: from this origin, with the session's CSRF token.
fn check_form(
    viewer: &Viewer,
    headers: &axum::http::HeaderMap,
    csrf: &str,
) -> Result<(), Response> {
    if session::same_origin(headers) && session::same(csrf, &viewer.csrf) {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this console's own page (its security token is missing or stale). Reload the page and try again.",
        ))
    }
}

/// An error page; the cause goes to the log, never the page.
fn failure(e: &dyn std::error::Error) -> Response {
    tracing::error!(error = %crate::report::Chain(e), "console request failed");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not answer this page; the cause is in its log. Try again, or check /readyz.",
    )
}

/// A plain page with a status, for errors.
fn problem(status: StatusCode, title: &str, message: &str) -> Response {
    let body = layout::bare(
        title,
        html! {
            h1 { (title) }
            p role="alert" { (message) }
            p { a href="/ui/" { "Back to the overview" } }
        },
    );
    (status, body).into_response()
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in the console.",
    )
}

/// Renders a page for `viewer` with the console's navigation.
fn page(viewer: &Viewer, title: &str, current: &str, content: Markup) -> Response {
    layout::page(viewer, title, current, None, content).into_response()
}

/// [`page`] with a JavaScript module of its own (`assets/{module}.js`,
/// started by `app.js`).
fn page_with_module(
    viewer: &Viewer,
    title: &str,
    current: &str,
    module: &str,
    content: Markup,
) -> Response {
    layout::page(viewer, title, current, Some(module), content).into_response()
}
