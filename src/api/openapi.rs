//! The OpenAPI 3.1 description of the HTTP API, served at
//! `GET /v1/openapi.json`.
//!
//! Generated from the code: every handler carries a `#[utoipa::path]`
//! annotation and [`super::router`] registers routes *from* those
//! annotations (`utoipa_axum::routes!`), so a route cannot exist without
//! its description, nor the other way round. Response bodies are the types
//! the handlers serialize. The answers every route shares (the JSON error
//! shape for 400, 401, 403, 429, 500) are added here once, by
//! [`Shared`], instead of on each handler.

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;

/// The description's fixed parts; paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "trailkeep",
        description = "A durable, hash-chained audit-event log with signed checkpoints. \
Every /v1 route but /v1/public-key and /v1/openapi.json needs `Authorization: Bearer <token>`; \
a key has a scope (ingest, read, admin) and is bound to one stream or to `*`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorBody, Event, EventBatch)),
    tags(
        (name = "ingest", description = "Appending events"),
        (name = "read", description = "Streams, events, checkpoints and proofs"),
        (name = "verify", description = "Checking the chain and the archive"),
        (name = "sources", description = "SSE sources and what they refused"),
        (name = "destinations", description = "Delivery status, pause, dead letters"),
        (name = "archive", description = "Cold storage: batches, runs, restores"),
        (name = "cluster", description = "Nodes sharing a PostgreSQL store and the shards each owns"),
        (name = "operations", description = "Health, readiness, metrics, this description")
    )
)]
pub(super) struct ApiDoc;

/// An event as a producer sends it (`POST /v1/streams/{stream}/events`).
/// The log adds `stream`, `seq`, `received`, `prev` and `hash`; sending any
/// of them is refused, as is any other field (put application fields under
/// `data`).
#[derive(ToSchema)]
#[allow(dead_code)] // described, never built: the parser reads bytes directly
pub(super) struct Event {
    /// Unique per stream; a repeated id is answered as a duplicate and not
    /// stored again. Default: a new ULID.
    #[schema(min_length = 1, max_length = 128, pattern = r#"^[!#-\[\]-~]+$"#)]
    id: Option<String>,
    /// A dotted name such as `grant.created`.
    #[schema(
        rename = "type",
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )]
    event_type: String,
    /// When it happened (RFC 3339). Alias: `createdAt`. Default: receipt.
    #[schema(format = DateTime)]
    time: Option<String>,
    /// Who acted: a string or an object.
    #[schema(value_type = Option<Object>)]
    actor: Option<serde_json::Value>,
    /// What was acted on: a string or an object.
    #[schema(value_type = Option<Object>)]
    subject: Option<serde_json::Value>,
    /// Application fields.
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

/// One event, or an array of them stored in order in one commit.
pub(super) struct EventBatch;

impl utoipa::PartialSchema for EventBatch {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name("Event"))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("Event"))
                    .min_items(Some(1)),
            )
            .into()
    }
}

impl ToSchema for EventBatch {}

/// Adds, once the router has collected the paths, what every operation
/// shares: the bearer scheme, and the error
/// answers each kind of operation can give.
pub(super) struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `trailkeep keys create`"))
                    .build(),
            ),
        );
        for (path, item) in &mut openapi.paths.paths {
            let v1 = path.starts_with("/v1/");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_errors(op, v1);
            }
        }
    }
}

fn add_errors(op: &mut Operation, v1: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let takes_input =
        op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
    let mut add = |status: &str, why: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(why)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    };
    if takes_input {
        add("400", "The request is malformed; `error.field` names what");
    }
    if secured {
        add("401", "No valid API key");
        add("403", "The key's scope or stream does not allow this");
        add("429", "The key's rate limit is spent; see Retry-After");
    }
    if v1 {
        add("500", "An internal error; the server log has the detail");
    }
}
