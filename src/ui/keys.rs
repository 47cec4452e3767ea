//! Keys (admin): list, create (the token shown once), revoke. A key bound
//! to a stream manages keys of that stream only, and creates no key for
//! `*`: nobody gets more through the console than they hold.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{UiState, Viewer, problem};
use crate::auth::{Scope, sees};

fn admin_only(viewer: &Viewer) -> Result<(), Response> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(problem(
            StatusCode::FORBIDDEN,
            "Admin only",
            "Managing keys needs an admin key. Sign in with one to see this page.",
        ))
    }
}

/// `GET /ui/keys`.
pub(super) async fn page(State(ui): State<UiState>, viewer: Viewer) -> Response {
    if let Err(r) = admin_only(&viewer) {
        return r;
    }
    render(&ui, &viewer, None).await
}

async fn render(ui: &UiState, viewer: &Viewer, created: Option<(String, String)>) -> Response {
    let mut keys = match ui.app.store.list_keys().await {
        Ok(k) => k,
        Err(e) => return super::failure(&e),
    };
    keys.retain(|k| sees(&viewer.key, &k.stream));
    keys.sort_by(|a, b| b.created.cmp(&a.created));
    let bound = viewer.key.stream != "*";
    let content = html! {
        h1 { "Keys" }
        @if let Some((id, token)) = &created {
            section class="notice" role="status" aria-labelledby="created-h" {
                h2 id="created-h" { "Key " code { (id) } " created" }
                p { "Copy the token now: it is shown only this once and cannot be recovered." }
                label for="new-token" { "Token" }
                input id="new-token" type="text" readonly value=(token) class="token";
            }
        }
        section aria-labelledby="create-h" {
            h2 id="create-h" { "Create a key" }
            form method="post" action="/ui/keys" class="inline" data-confirm="Create this key? It works as soon as it is shown." {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="scope" { "Scope" }
                select id="scope" name="scope" {
                    option value="read" { "read: reads events, checkpoints, proofs" }
                    option value="ingest" { "ingest: appends events only" }
                    option value="admin" { "admin: everything" }
                }
                label for="stream" { "Stream" }
                @if bound {
                    input id="stream" name="stream" type="text" readonly value=(viewer.key.stream);
                } @else {
                    input id="stream" name="stream" type="text" value="*" required aria-describedby="stream-help";
                    span id="stream-help" class="help" { "A stream name, or * for every stream." }
                }
                button type="submit" { "Create key" }
            }
        }
        section aria-labelledby="list-h" {
            h2 id="list-h" { "Keys" }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Scope" } th scope="col" { "Stream" }
                        th scope="col" { "Created" } th scope="col" { "State" } th scope="col" { span class="visually-hidden" { "Action" } }
                    } }
                    tbody {
                        @for k in &keys {
                            tr id=(format!("key-{}", k.id)) {
                                th scope="row" { code { (k.id) } }
                                td { (k.scope) }
                                td { code { (k.stream) } }
                                td { (super::overview::when(&k.created)) }
                                td { @if let Some(r) = &k.revoked { "revoked " (super::overview::when(r)) } @else { "active" } }
                                td {
                                    @if k.revoked.is_none() {
                                        form method="post" action=(format!("/ui/keys/{}/revoke", k.id))
                                            data-confirm=(format!("Revoke key {}? Everything using it stops working within a second.", k.id)) {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            button type="submit" class="danger" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    super::page(viewer, "Keys", "/ui/keys", content)
}

#[derive(Deserialize)]
pub(super) struct Create {
    csrf: String,
    scope: String,
    stream: String,
}

/// `POST /ui/keys`.
pub(super) async fn create(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(f): Form<Create>,
) -> Response {
    if let Err(r) = admin_only(&viewer).and_then(|()| super::check_form(&viewer, &headers, &f.csrf))
    {
        return r;
    }
    let scope = match f.scope.as_str() {
        "read" => Scope::Read,
        "ingest" => Scope::Ingest,
        "admin" => Scope::Admin,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Unknown scope",
                "The scope must be read, ingest or admin.",
            );
        }
    };
    let stream = f.stream.trim();
    if stream != "*"
        && let Err(e) = crate::names::StreamName::producer(stream)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "Bad stream name",
            &format!("Stream: {e} (or * for every stream)."),
        );
    }
    if !sees(&viewer.key, stream) {
        ui.app.refusals.forbidden(&viewer.key.id);
        return problem(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your key is bound to one stream: it creates keys for that stream only.",
        );
    }
    match crate::audit::create_key(
        ui.app.store.as_ref(),
        scope,
        stream,
        crate::audit::Actor::Key(&viewer.key.id),
    )
    .await
    {
        Ok((rec, token)) => render(&ui, &viewer, Some((rec.id, token))).await,
        Err(e) => super::failure(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct Csrf {
    csrf: String,
}

/// `POST /ui/keys/{id}/revoke`.
pub(super) async fn revoke(
    State(ui): State<UiState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    if let Err(r) = admin_only(&viewer).and_then(|()| super::check_form(&viewer, &headers, &f.csrf))
    {
        return r;
    }
    // A key the viewer may not see is answered as one that does not exist.
    let target = match ui.app.store.get_key(&id).await {
        Ok(k) => k.filter(|k| sees(&viewer.key, &k.stream)),
        Err(e) => return super::failure(&e),
    };
    if target.is_none() {
        return problem(
            StatusCode::NOT_FOUND,
            "No such key",
            &format!("There is no key {id} that you manage."),
        );
    }
    match crate::audit::revoke_key(
        ui.app.store.as_ref(),
        &id,
        crate::audit::Actor::Key(&viewer.key.id),
    )
    .await
    {
        Ok(()) => {
            ui.sessions.close_key(&id);
            Redirect::to(&format!("/ui/keys#key-{id}")).into_response()
        }
        Err(e @ crate::audit::KeyError::Unrecorded(..)) => {
            // Revoked, but the act is not in `_audit`: say so, never hide it.
            ui.sessions.close_key(&id);
            tracing::error!(error = %crate::report::Chain(&e), key_id = %id, "key revoked from the console, not recorded in _audit");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Revoked, but not recorded",
                &format!(
                    "Key {id} is revoked and no longer works, but recording the revocation in _audit failed; the server log has the cause. Check the store."
                ),
            )
        }
        Err(crate::audit::KeyError::NoSuchKey(_)) => problem(
            StatusCode::CONFLICT,
            "Already revoked",
            &format!("Key {id} is already revoked."),
        ),
        Err(e) => super::failure(&e),
    }
}
