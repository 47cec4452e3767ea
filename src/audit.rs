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
