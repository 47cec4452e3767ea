//! Signing in with an API key, and out.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::session::{self, COOKIE, LOGIN_COOKIE};
use super::{UiState, Viewer, layout};
use crate::auth::Scope;

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

fn login_page(next: &str, token: &str, error: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "Sign in with an API key (" code { "trailkeep keys create --scope read" } "). The console acts as that key: an admin key sees every action, a read key none, a key bound to a stream that stream only." }
            @if let Some(e) = error { p class="error" role="alert" id="login-error" { (e) } }
            form method="post" action="/ui/login" class="signin" {
                input type="hidden" name="login" value=(token);
                input type="hidden" name="next" value=(next);
                label for="token" { "API key" }
                input id="token" name="token" type="password" autocomplete="off" required spellcheck="false" aria-describedby="token-help";
                p id="token-help" class="help" { "The key is checked once and never stored in the browser; the session ends after 30 idle minutes, 12 hours, sign-out, or when the key is revoked." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `GET /ui/login`: the form, with a fresh double-submit token.
pub(super) async fn form(State(ui): State<UiState>, Query(q): Query<NextQuery>) -> Response {
    let token = session::random_token();
    let next = session::safe_next(q.next.as_deref()).to_owned();
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(LOGIN_COOKIE, &token, ui.secure, session::IDLE),
        )],
        login_page(&next, &token, None),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    token: String,
    login: String,
    next: Option<String>,
}

/// `POST /ui/login`: checks the key, opens a session, records the sign-in
/// in `_audit`.
pub(super) async fn sign_in(
    State(ui): State<UiState>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let next = session::safe_next(f.next.as_deref()).to_owned();
    let fresh = session::random_token();
    let again = |status: StatusCode, msg: &str| {
        (
            status,
            [(
                header::SET_COOKIE,
                session::set_cookie(LOGIN_COOKIE, &fresh, ui.secure, session::IDLE),
            )],
            login_page(&next, &fresh, Some(msg)),
        )
            .into_response()
    };
    let double_submit =
        session::cookie(&headers, LOGIN_COOKIE).is_some_and(|c| session::same(c, &f.login));
    if !double_submit || !session::same_origin(&headers) {
        return again(
            StatusCode::FORBIDDEN,
            "This sign-in form is stale or did not come from this console. Try again.",
        );
    }
    let token = f.token.trim();
    let key = match ui.app.auth.authenticate(token).await {
        Ok(k) => k,
        Err(crate::auth::AuthError::Unauthenticated) => {
            ui.app
                .refusals
                .unauthenticated(crate::auth::parse_token(token).map(|(id, _)| id));
            return again(
                StatusCode::UNAUTHORIZED,
                "That is not an active API key. Check that you pasted the whole token (tk_…); a revoked key cannot sign in.",
            );
        }
        Err(crate::auth::AuthError::Store(e)) => return super::failure(&e),
    };
    if key.scope == Scope::Ingest.as_str() {
        ui.app.refusals.forbidden(&key.id);
        return again(
            StatusCode::FORBIDDEN,
            "An ingest key may only append events; sign in with a read or admin key.",
        );
    }
    if let Err(e) = ui.app.rate.request(&key.id) {
        return e.into_response();
    }
    let cookie = ui.sessions.open(&key.id);
    crate::audit::record(
        ui.app.store.as_ref(),
        "console.signed_in",
        crate::audit::Actor::Key(&key.id),
        serde_json::json!({"scope": key.scope, "stream": key.stream}),
    )
    .await;
    let mut res = Redirect::to(&next).into_response();
    let h = res.headers_mut();
    for c in [
        session::set_cookie(COOKIE, &cookie, ui.secure, session::ABSOLUTE),
        session::set_cookie(LOGIN_COOKIE, "", ui.secure, std::time::Duration::ZERO),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    csrf: String,
}

/// `POST /ui/logout`.
pub(super) async fn sign_out(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = super::check_form(&viewer, &headers, &f.csrf) {
        return r;
    }
    if let Some(t) = session::cookie(&headers, COOKIE) {
        ui.sessions.close(t);
    }
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(COOKIE, "", ui.secure, std::time::Duration::ZERO),
        )],
        Redirect::to("/ui/login"),
    )
        .into_response()
}
