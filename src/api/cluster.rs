//! `GET /v1/cluster` (admin, a key for `*`): the nodes sharing the store
//! and who owns which shard, read fresh from the store so that every node
//! gives the same answer ([`crate::shards::status`]). Not here: taking or
//! moving shards (the shard keeper does, [`crate::shards`]).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState, ErrorBody, authorize};
use crate::auth::{Scope, Target};
use crate::shards::ClusterStatus;

/// What a single-node store answers: there is no cluster to show.
const NO_CLUSTER: &str = "this server's store is SQLite: one node, no cluster; nodes share streams only on a PostgreSQL store (store = \"postgres://…\")";

/// The nodes sharing this store and the owner of each shard (admin, `*`).
///
/// Read from the store when asked, so every node gives the same answer:
/// each node's advertised URL, last heartbeat and whether it is alive (a
/// heartbeat younger than the answering node's `[cluster] lease_ttl_ms`),
/// how many shards it owns; each shard's owner (null while nobody holds
/// it), epoch and lease expiry. Admin scope and a key for `*` (the cluster
/// serves every stream). On a SQLite store (one node, no cluster) the
/// answer is 404 `no_cluster`.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every node with a heartbeat and every shard", body = ClusterStatus),
        (status = 404, description = "`no_cluster`: the store is SQLite (one node); nodes share streams only on PostgreSQL", body = ErrorBody)))]
pub(super) async fn cluster(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ClusterStatus>, ApiError> {
    authorize(&st, &headers, Scope::Admin, Target::AllStreams).await?;
    let (Some(route), Some(store)) = (&st.cluster, st.store.cluster()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_cluster",
            NO_CLUSTER,
        ));
    };
    let status = crate::shards::status(store.as_ref(), Some(&route.node), route.lease_ttl)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(status))
}
