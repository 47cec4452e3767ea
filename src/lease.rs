//! Keeping a named lease: the one place that takes, renews, gives up and
//! reports the leases that let one node at a time run a job (the
//! checkpointer, the archiver, each destination, each source).
//!
//! A [`LeaseKeeper`] asks the store for the lease at once and then every
//! third of its TTL in a background task, whether it holds it (a renewal,
//! same token) or not (a standby node taking it over once it is free or
//! expired). [`LeaseKeeper::held`] answers with the lease as of the last
//! answer, and no longer once its TTL has passed since that answer without
//! a renewal (a store that cannot be reached does not leave a node
//! believing it still holds a lease another node may have taken).
//!
//! The lease is an optimisation, not the guard: every write a job makes
//! under it is fenced by its token in the same transaction (see
//! [`crate::store::StoreError::Fenced`]), so a node that lost its lease
//! without noticing can only fail, never write over its successor.
//!
//! Changes are logged once here (taken, lost) and shown as the gauge
//! `trailkeep_lease_held{lease}` (1 while held by this node).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::node::NodeId;
use crate::store::{Lease, LeaseStore, Result};

/// What the keeper last learnt: the lease and when the store granted it.
type Held = Option<(Lease, Instant)>;

/// Keeps one named lease for one node; see the module docs.
pub struct LeaseKeeper {
    store: Arc<dyn LeaseStore>,
    name: String,
    ttl: Duration,
    state: watch::Receiver<Held>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    /// Starts keeping `name` for `node`: asks once now (a failure is logged
    /// and counts as not held), then every `ttl / 3`.
    pub async fn keep(
        store: Arc<dyn LeaseStore>,
        name: &str,
        node: &NodeId,
        ttl: Duration,
    ) -> Self {
        let first = match store.acquire_lease(name, node.as_str(), ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %name, error = %crate::report::Chain(&e), "cannot take the lease; will retry");
                None
            }
        };
        Self::start(store, name, node, ttl, first)
    }

    /// Takes `name` for `node` now and keeps it; `None` when another node
    /// holds it (nothing is kept then).
    ///
    /// # Errors
    /// The store's error on the first attempt.
    pub async fn take(
        store: Arc<dyn LeaseStore>,
        name: &str,
        node: &NodeId,
        ttl: Duration,
    ) -> Result<Option<Self>> {
        let Some(first) = store.acquire_lease(name, node.as_str(), ttl).await? else {
            return Ok(None);
        };
        Ok(Some(Self::start(store, name, node, ttl, Some(first))))
    }

    fn start(
        store: Arc<dyn LeaseStore>,
        name: &str,
        node: &NodeId,
        ttl: Duration,
        first: Option<Lease>,
    ) -> Self {
        let now = Instant::now();
        report(name, None, first.as_ref());
        let (tx, rx) = watch::channel(first.map(|l| (l, now)));
        let task = tokio::spawn(renew(
            store.clone(),
            name.to_owned(),
            node.as_str().to_owned(),
            ttl,
            tx,
        ));
        Self {
            store,
            name: name.to_owned(),
            ttl,
            state: rx,
            task,
        }
    }

    /// The lease, while this node holds it: granted or renewed by the
    /// store less than one TTL ago.
    pub fn held(&self) -> Option<Lease> {
        current(&self.state.borrow(), self.ttl)
    }

    /// Waits until what [`LeaseKeeper::held`] answers may have changed: a
    /// new answer from the store, or the TTL running out without one.
    /// Cancel-safe.
    pub async fn changed(&mut self) {
        let deadline = self
            .state
            .borrow()
            .as_ref()
            .map(|(_, at)| *at + self.ttl)
            .filter(|d| *d > Instant::now());
        let state = &mut self.state;
        // The keeper's task ends only with the keeper; if it is gone, only
        // the TTL can still change the answer.
        let news = async move {
            if state.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    () = news => {}
                    () = tokio::time::sleep_until(d) => {}
                }
            }
            None => news.await,
        }
    }

    /// Stops renewing and gives the lease up (if still held), so another
    /// node can take it at once rather than after it expires.
    pub async fn release(self) {
        self.task.abort();
        let held = self.state.borrow().as_ref().map(|(l, _)| l.clone());
        if let Some(l) = held
            && let Err(e) = self.store.release_lease(&l).await
        {
            tracing::warn!(lease = %self.name, error = %crate::report::Chain(&e), "cannot give the lease up; it will expire");
        }
        metrics::gauge!("trailkeep_lease_held", "lease" => self.name.clone()).set(0.0);
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn current(held: &Held, ttl: Duration) -> Option<Lease> {
    held.as_ref()
        .filter(|(_, at)| at.elapsed() < ttl)
        .map(|(l, _)| l.clone())
}

/// Logs and shows a change of holder.
fn report(name: &str, before: Option<&Lease>, now: Option<&Lease>) {
    match (before, now) {
        (None, Some(l)) => {
            tracing::info!(lease = %name, token = l.token, "took the lease");
        }
        (Some(b), Some(l)) if b.token != l.token => {
            tracing::warn!(lease = %name, token = l.token, "lease was lost and taken again");
        }
        (Some(_), None) => tracing::warn!(lease = %name, "lost the lease; standing by"),
        _ => {}
    }
    let v = if now.is_some() { 1.0 } else { 0.0 };
    metrics::gauge!("trailkeep_lease_held", "lease" => name.to_owned()).set(v);
}

async fn renew(
    store: Arc<dyn LeaseStore>,
    name: String,
    holder: String,
    ttl: Duration,
    tx: watch::Sender<Held>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let asked = Instant::now();
        let before = current(&tx.borrow(), ttl);
        match store.acquire_lease(&name, &holder, ttl).await {
            Ok(got) => {
                report(&name, before.as_ref(), got.as_ref());
                tx.send_replace(got.map(|l| (l, asked)));
            }
            Err(e) => {
                // Keep the last answer: it still holds until its TTL runs
                // out (`held` stops answering then).
                tracing::warn!(lease = %name, error = %crate::report::Chain(&e), "cannot renew the lease; will retry");
                if before.is_none() {
                    report(&name, None, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn store() -> (tempfile::TempDir, Arc<dyn LeaseStore>) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("hot.db")).unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_release_hands_over_at_once() {
        let (_d, store) = store().await;
        let ttl = Duration::from_secs(30);
        let (a, b) = (NodeId::random(), NodeId::random());
        let ka = LeaseKeeper::take(store.clone(), "job", &a, ttl)
            .await
            .unwrap()
            .expect("free lease is taken");
        assert_eq!(ka.held().unwrap().holder, a.as_str());
        assert!(
            LeaseKeeper::take(store.clone(), "job", &b, ttl)
                .await
                .unwrap()
                .is_none(),
            "a held lease is not taken by another node"
        );
        let kb = LeaseKeeper::keep(store.clone(), "job", &b, ttl).await;
        assert!(kb.held().is_none(), "a standby does not hold it");
        ka.release().await;
        let kb2 = LeaseKeeper::take(store.clone(), "job", &b, ttl)
            .await
            .unwrap()
            .expect("released lease is free at once");
        assert_eq!(kb2.held().unwrap().holder, b.as_str());
        drop(kb);
    }

    #[tokio::test]
    async fn renewal_keeps_the_token_and_a_standby_takes_over_after_expiry() {
        let (_d, store) = store().await;
        let ttl = Duration::from_millis(600);
        let (a, b) = (NodeId::random(), NodeId::random());
        let ka = LeaseKeeper::take(store.clone(), "job", &a, ttl)
            .await
            .unwrap()
            .unwrap();
        let token = ka.held().unwrap().token;
        let mut kb = LeaseKeeper::keep(store.clone(), "job", &b, ttl).await;
        // Two TTLs: A renews, so B never gets it and A's token stays.
        // Wall-clock on purpose: leases expire by the store's clock, and
        // "B never gets it" needs a window to hold in.
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(ka.held().unwrap().token, token, "renewal keeps the token");
        assert!(kb.held().is_none());
        // A dies without releasing: B takes over within about one TTL.
        drop(ka);
        let start = Instant::now();
        while kb.held().is_none() {
            tokio::time::timeout(ttl * 3, kb.changed())
                .await
                .expect("standby notices a change");
        }
        assert!(start.elapsed() < ttl * 3, "took {:?}", start.elapsed());
        assert!(
            kb.held().unwrap().token > token,
            "a new holder gets a larger token"
        );
    }

    #[tokio::test]
    async fn a_lease_not_renewed_within_its_ttl_is_no_longer_held() {
        let (_d, store) = store().await;
        let ttl = Duration::from_millis(300);
        let k = LeaseKeeper::take(store.clone(), "job", &NodeId::random(), ttl)
            .await
            .unwrap()
            .unwrap();
        // Stop the renewals, as a store that cannot be reached would.
        k.task.abort();
        assert!(k.held().is_some());
        let mut k = k;
        tokio::time::timeout(ttl * 2, k.changed())
            .await
            .expect("changed() wakes when the TTL runs out");
        assert!(
            k.held().is_none(),
            "an unrenewed lease is not believed held"
        );
    }
}
