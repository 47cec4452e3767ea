//! Self-audit: every administrative act is an event in the log's reserved
//! stream [`AUDIT_STREAM`] (`_audit`), chained, checkpointed, archived and
//! verified like any other stream, so whoever holds an admin key cannot act
//! without leaving a record that `verify` protects.
//!
//! Recorded: keys created and revoked, archive runs, restores, destinations
//! paused and resumed, dead letters retried, the configuration loaded at
//! start, verifications and their result, and refused authentications
//! (counted, written once a minute when any occurred). Each names who acted
//! (`actor`: an API key id, `cli` with the OS user, or `server` for its own
//! schedule), never a token or secret.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

pub use crate::event::AUDIT_STREAM;
use crate::store::Store;

/// Who performed an act.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An API request made with this key id.
    Key(&'a str),
    /// The command line (the OS user is recorded).
    Cli,
    /// The server on its own schedule.
    Server,
}

impl Actor<'_> {
    fn to_json(self) -> Value {
        match self {
            Actor::Key(id) => json!({"kind": "key", "key_id": id}),
            Actor::Cli => json!({
                "kind": "cli",
                "user": std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default(),
            }),
            Actor::Server => json!({"kind": "server"}),
        }
    }
}

/// Records one act. A failure to record is logged and counted
/// (`trailkeep_audit_failures_total`) but does not undo the act: the act
/// has happened, and the store that refused the record is failing anyway.
pub async fn record(store: &dyn Store, event_type: &str, actor: Actor<'_>, data: Value) {
    if let Err(e) = record_required(store, event_type, actor, data).await {
        tracing::error!(error = %crate::report::Chain(&e), event_type, "cannot record an administrative act in _audit");
    }
}

/// Records an act that must not happen unrecorded: called *before* the act
/// (a key is created only once its record is durable). A crash between
/// the two leaves a record of an act that did not happen, the safe side.
///
/// # Errors
/// The append failed; the caller must not act.
pub async fn record_required(
    store: &dyn Store,
    event_type: &str,
    actor: Actor<'_>,
    mut data: Value,
) -> Result<(), crate::store::StoreError> {
    if let Value::Object(m) = &mut data {
        m.insert("actor".into(), actor.to_json());
    }
    let id = format!("audit:{}", ulid::Ulid::new());
    crate::selflog::append_own(store, AUDIT_STREAM, vec![(id, event_type, data)])
        .await
        .inspect_err(|_| metrics::counter!("trailkeep_audit_failures_total").increment(1))
}

/// Why a key could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Recording the act in `_audit` failed, so it was not done (create)
    /// or is unrecorded (revoke).
    #[error("{0}")]
    Unrecorded(&'static str, #[source] crate::store::StoreError),
    /// No active key has this id.
    #[error("no active key with id {0}")]
    NoSuchKey(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Creates a key and returns it with its token (to be shown once). The
/// act is recorded first: a key never exists without its record (a crash
/// in between leaves a record of a key never made).
///
/// # Errors
/// [`KeyError::Unrecorded`]: nothing was created; [`KeyError::Store`].
pub async fn create_key(
    store: &dyn Store,
    scope: crate::auth::Scope,
    stream: &str,
    actor: Actor<'_>,
) -> Result<(crate::store::KeyRecord, String), KeyError> {
    let now = crate::event::format_received(time::OffsetDateTime::now_utc());
    let (rec, token) = crate::auth::generate(scope, stream, &now);
    record_required(
        store,
        "key.created",
        actor,
        json!({"key_id": rec.id, "scope": rec.scope, "stream": rec.stream}),
    )
    .await
    .map_err(|e| {
        KeyError::Unrecorded("cannot record the new key in _audit; no key was created", e)
    })?;
    crate::failpoint::failpoint("key.create.recorded");
    if let Err(e) = store.create_key(rec.clone()).await {
        // The record above names a key that now does not exist.
        record(store, "key.create_failed", actor, json!({"key_id": rec.id})).await;
        return Err(e.into());
    }
    Ok((rec, token))
}

/// Revokes key `id`. Revoked first: a record saying "revoked" while the
/// key still works would mislead; a crash in between leaves the key
/// revoked (its `revoked` time is in the keys table) unrecorded.
///
/// # Errors
/// [`KeyError::NoSuchKey`]; [`KeyError::Unrecorded`]: revoked, but not
/// recorded; [`KeyError::Store`].
pub async fn revoke_key(store: &dyn Store, id: &str, actor: Actor<'_>) -> Result<(), KeyError> {
    let now = crate::event::format_received(time::OffsetDateTime::now_utc());
    if !store.revoke_key(id, &now).await? {
        return Err(KeyError::NoSuchKey(id.to_owned()));
    }
    crate::failpoint::failpoint("key.revoke.done");
    record_required(store, "key.revoked", actor, json!({"key_id": id}))
        .await
        .map_err(|e| KeyError::Unrecorded("key revoked, but recording it in _audit failed", e))
}

/// Refused authentications since the last flush: 401s by the key id the
/// token named (`-` when it named none), 403s by key id.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Refusals {
    /// Counts a 401 (`key_id`: the id part of a malformed or wrong token).
    pub fn unauthenticated(&self, key_id: Option<&str>) {
        self.add("unauthenticated", key_id.unwrap_or("-"));
    }

    /// Counts a 403 of key `key_id`.
    pub fn forbidden(&self, key_id: &str) {
        self.add("forbidden", key_id);
    }

    fn add(&self, kind: &'static str, key_id: &str) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded whatever a flood of made-up ids does.
        if c.len() < 1000 || c.contains_key(&(kind, key_id.to_owned())) {
            *c.entry((kind, key_id.to_owned())).or_default() += 1;
        } else {
            *c.entry((kind, "(others)".to_owned())).or_default() += 1;
        }
    }

    /// Records what was counted since the last flush as one `auth.refused`
    /// event, if anything was.
    pub async fn flush(&self, store: &dyn Store, window_secs: u64) {
        let taken = std::mem::take(
            &mut *self
                .counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if taken.is_empty() {
            return;
        }
        let by = |kind: &str| -> Value {
            taken
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, id), n)| (id.clone(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        record(
            store,
            "auth.refused",
            Actor::Server,
            json!({
                "window_seconds": window_secs,
                "unauthenticated": by("unauthenticated"),
                "forbidden": by("forbidden"),
            }),
        )
        .await;
    }
}

/// The `archive.run` record of a run's outcome: counts, or the error
/// (archive errors name keys and checksums, never credentials).
pub fn archive_run(run: &Result<crate::archive::RunReport, crate::archive::ArchiveError>) -> Value {
    match run {
        Ok(r) => json!({
            "ok": true,
            "cutoff": r.cutoff,
            "batches": r.batches.len(),
            "events_archived": r.events_archived,
            "deleted": r.deleted,
        }),
        Err(e) => json!({"ok": false, "error": crate::report::Chain(e).to_string()}),
    }
}
