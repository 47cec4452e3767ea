//! Where a source runs on a cluster: on the node that owns its target
//! stream's shard ([`crate::store::cluster`]), so that its commits land on
//! the stream's cached tail instead of invalidating the owner's (every
//! commit from elsewhere costs both nodes a head reload, counted as
//! `trailkeep_append_conflicts_total{reason="head"}`).
//!
//! This is placement, not the guard: one node at a time still runs a
//! source because it holds the lease `source:NAME`, and every state write
//! is fenced by that lease. Placement only decides when a node asks for
//! the lease and when the holder gives it up:
//!
//! - a node takes the free lease when it owns the stream, when no live
//!   node owns it, or when the owner does not ask for it (below), so a
//!   source never stops because of ownership;
//! - an owner that finds the lease held elsewhere *claims* the source
//!   (the lease `source-claim:NAME`, renewed while it waits);
//! - the holder hands over only when the stream's owner, as its own view
//!   says, holds that claim: it stops pulling, lands what is in flight,
//!   writes its position, and only then releases the lease, so two nodes
//!   never pull at once. An owner that cannot run the source (not
//!   configured there, failing) never claims it, or lets its claim
//!   expire, and the source stays where it runs.
//!
//! Single-node stores (SQLite) have no cluster and never come here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::cluster::{ClusterStore, Owner, Owners};

/// How often a holder running away from its stream's owner looks for the
/// owner's claim, and how often a claiming owner asks for the lease: the
/// longest a handover waits on either side.
pub(crate) const HANDOVER_POLL: Duration = Duration::from_millis(500);

/// Where a source should run, as this node's ownership view says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// This node owns the target stream.
    Here,
    /// Another live node (this id) owns it.
    Elsewhere(String),
    /// No live node owns it (starting, or failing over): anywhere.
    Anywhere,
}

impl From<Owner> for Place {
    fn from(o: Owner) -> Self {
        match o {
            Owner::Me => Self::Here,
            Owner::Other { node, .. } => Self::Elsewhere(node),
            Owner::Nobody => Self::Anywhere,
        }
    }
}

/// Whether a node that does not hold the source's lease may take it (it
/// is granted only when free or expired): unless another node owns the
/// stream and has claimed the source (`claimant`: who holds the claim).
pub(crate) fn may_take(place: &Place, claimant: Option<&str>) -> bool {
    match place {
        Place::Here | Place::Anywhere => true,
        Place::Elsewhere(owner) => claimant != Some(owner.as_str()),
    }
}

/// Whether the node holding the source's lease must hand it over: only to
/// the stream's owner, and only once that owner has claimed it (it is
/// ready to take it; one that never asks leaves the source here).
pub(crate) fn must_hand_over(place: &Place, claimant: Option<&str>) -> bool {
    matches!(place, Place::Elsewhere(owner) if claimant == Some(owner.as_str()))
}

/// One source's view of where it should run.
pub(crate) struct Placement {
    cluster: Arc<dyn ClusterStore>,
    owners: Arc<Owners>,
    changes: watch::Receiver<u64>,
    stream: String,
    /// The claim lease's name.
    pub(crate) claim: String,
}

impl Placement {
    pub(crate) fn new(cluster: Arc<dyn ClusterStore>, source: &str, stream: &str) -> Self {
        let owners = cluster.owners();
        let changes = owners.subscribe();
        Self {
            cluster,
            owners,
            changes,
            stream: stream.to_owned(),
            claim: format!("source-claim:{source}"),
        }
    }

    /// Where the source should run now.
    pub(crate) fn place(&self) -> Place {
        self.owners.owner(&self.stream).into()
    }

    /// Who holds the claim now. A failed read counts as nobody: the
    /// holder keeps running, a standby may take a free lease (the source
    /// never stops over a read).
    pub(crate) async fn claimant(&self) -> Option<String> {
        match self.cluster.current_lease(&self.claim).await {
            Ok(l) => l.map(|l| l.holder),
            Err(e) => {
                tracing::warn!(lease = %self.claim, error = %crate::report::Chain(&e), "cannot read the source's claim; taken as none");
                None
            }
        }
    }

    /// Waits until the ownership view may have changed. Cancel-safe.
    pub(crate) async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits (at most `max`) for the shard keeper's first answer, so a
    /// node that starts does not take a source its stream's owner runs
    /// only to hand it back a round later.
    pub(crate) async fn wait_known(&mut self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while !self.owners.known() {
            tokio::select! {
                () = self.changed() => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_taken_where_its_stream_is_owned_and_handed_only_to_a_claiming_owner() {
        let b = Place::Elsewhere("b".into());
        // The owner, or anyone while nobody owns the stream, takes a free lease.
        assert!(may_take(&Place::Here, None));
        assert!(may_take(&Place::Here, Some("b")));
        assert!(may_take(&Place::Anywhere, Some("b")));
        // A non-owner stands back while the owner claims it...
        assert!(!may_take(&b, Some("b")));
        // ...and takes it when the owner does not (it cannot run it, or
        // died): a source never stops because of ownership.
        assert!(may_take(&b, None));
        assert!(
            may_take(&b, Some("c")),
            "a claim by a node that is not the owner"
        );
        // The holder hands over only to the owner, once it claims.
        assert!(must_hand_over(&b, Some("b")));
        assert!(!must_hand_over(&b, None), "an owner that does not ask");
        assert!(!must_hand_over(&b, Some("c")));
        assert!(
            !must_hand_over(&Place::Here, Some("b")),
            "this node owns it"
        );
        assert!(
            !must_hand_over(&Place::Anywhere, Some("b")),
            "nobody owns it"
        );
    }

    #[test]
    fn ownership_maps_to_a_place() {
        assert_eq!(Place::from(Owner::Me), Place::Here);
        assert_eq!(Place::from(Owner::Nobody), Place::Anywhere);
        assert_eq!(
            Place::from(Owner::Other {
                node: "b".into(),
                url: None
            }),
            Place::Elsewhere("b".into())
        );
    }
}
