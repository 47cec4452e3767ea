//! Streams owned by nodes, for a store several nodes share (PostgreSQL,
//! issue #19): the shard map, this node's view of who owns which shard,
//! and the calls the shard keeper ([`crate::shards`]) makes.
//!
//! Ownership is a performance contract, not the correctness guard: the
//! owner of a shard is the only node that normally appends to its streams,
//! so it can keep their heads cached and pipeline commits; every append
//! still compares each head (seq, hash) and the owner's epoch in the same
//! statement that writes, so a stale owner or any other writer can only be
//! refused, never fork a chain or leave a gap.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::Digest as _;

use super::{Lease, Result};

/// Shard leases are named this, then the shard number (`shard:0042`).
pub const SHARD_LEASE_PREFIX: &str = "shard:";

/// The shard of `stream` among `shards`: the first four bytes of the
/// SHA-256 of its name, modulo the count (every node computes the same).
pub fn shard_of(stream: &str, shards: u32) -> u32 {
    let h = sha2::Sha256::digest(stream.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % shards.max(1)
}

/// How long a node may go without a heartbeat before the store forgets it
/// (when it holds no lease): long enough to read what happened to it.
pub const FORGET_NODES_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The lease name of `shard`.
pub fn lease_name(shard: u32) -> String {
    format!("{SHARD_LEASE_PREFIX}{shard:04}")
}

/// The shard a lease name stands for.
pub fn shard_of_lease(name: &str) -> Option<u32> {
    name.strip_prefix(SHARD_LEASE_PREFIX)?.parse().ok()
}

/// A node registered in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node: String,
    /// The URL other nodes forward requests to (None: it does not take them).
    pub url: Option<String>,
    /// Its last heartbeat (ms since the epoch, the store's clock).
    pub seen_ms: i64,
}

/// What the store records of the cluster at one moment (one snapshot):
/// read by `GET /v1/cluster` and `trailkeep cluster`, not by the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// The store's clock when it was read (ms since the epoch).
    pub now_ms: i64,
    /// Every node with a heartbeat row, live or not, by id.
    pub nodes: Vec<NodeInfo>,
    /// Every shard lease ever taken (expired and released ones too), by
    /// name.
    pub leases: Vec<Lease>,
}

/// Who owns a stream, as this node last learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node (its lease is current).
    Me,
    /// Another live node, reachable at `url` when it advertises one.
    Other {
        /// Its node id.
        node: String,
        /// Its advertised URL.
        url: Option<String>,
    },
    /// No live node holds the shard (starting, or failing over).
    Nobody,
}

#[derive(Default)]
struct View {
    /// Shards this node holds, with their leases.
    mine: HashMap<u32, Lease>,
    /// Until when `mine` may be believed without a new answer from the store.
    valid_until: Option<Instant>,
    /// Shards other live nodes hold: node and URL.
    others: HashMap<u32, (String, Option<String>)>,
}

/// This node's view of shard ownership; written by the shard keeper, read
/// by the append path (fences), the API (forwarding) and the sources
/// (which run where their stream is owned).
pub struct Owners {
    shards: u32,
    view: RwLock<View>,
    /// Bumped whenever who owns a shard may have changed in this view
    /// (and on the keeper's first answer), so that a source can follow its
    /// stream's owner without polling.
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("shards", &self.shards)
            .field("mine", &self.mine_count())
            .finish_non_exhaustive()
    }
}

impl Owners {
    /// A view of `shards` shards in which nobody owns anything yet.
    pub fn new(shards: u32) -> Self {
        Self {
            shards: shards.max(1),
            view: RwLock::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// Returns a receiver that is marked changed whenever this view's
    /// answer to [`Owners::owner`] may have changed (a view believed past
    /// its TTL is not announced: ask again after a while).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the keeper has answered at least once (before that, every
    /// stream is [`Owner::Nobody`]'s).
    pub fn known(&self) -> bool {
        self.read().valid_until.is_some()
    }

    fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard of `stream`.
    pub fn shard_of(&self, stream: &str) -> u32 {
        shard_of(stream, self.shards)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's lease on the shard of `stream`, while it is believed
    /// held (granted or renewed less than one TTL ago).
    pub fn fence(&self, stream: &str) -> Option<Lease> {
        let v = self.read();
        if v.valid_until.is_none_or(|t| t <= Instant::now()) {
            return None;
        }
        v.mine.get(&self.shard_of(stream)).cloned()
    }

    /// Who owns `stream`.
    pub fn owner(&self, stream: &str) -> Owner {
        let shard = self.shard_of(stream);
        let v = self.read();
        if v.valid_until.is_some_and(|t| t > Instant::now()) && v.mine.contains_key(&shard) {
            return Owner::Me;
        }
        match v.others.get(&shard) {
            Some((node, url)) => Owner::Other {
                node: node.clone(),
                url: url.clone(),
            },
            None => Owner::Nobody,
        }
    }

    /// How many shards this node holds now.
    pub fn mine_count(&self) -> usize {
        let v = self.read();
        if v.valid_until.is_some_and(|t| t > Instant::now()) {
            v.mine.len()
        } else {
            0
        }
    }

    /// The keeper's news: the leases this node holds now (believed for
    /// `ttl` from `at`, when the store answered) and the shards other live
    /// nodes hold.
    pub fn set(
        &self,
        mine: Vec<Lease>,
        at: Instant,
        ttl: Duration,
        others: HashMap<u32, (String, Option<String>)>,
    ) {
        let mine = mine
            .into_iter()
            .filter_map(|l| shard_of_lease(&l.name).map(|s| (s, l)))
            .collect();
        let mut v = self.write();
        let moved = v.valid_until.is_none_or(|t| t <= Instant::now())
            || !same_keys(&v.mine, &mine)
            || v.others.len() != others.len()
            || others
                .iter()
                .any(|(s, (node, _))| v.others.get(s).is_none_or(|(n, _)| n != node));
        *v = View {
            mine,
            valid_until: Some(at + ttl),
            others,
        };
        drop(v);
        if moved {
            self.announce();
        }
    }

    /// Forgets this node's hold on `shard` (an append found the lease or
    /// the stream's epoch moved on): until the keeper learns otherwise,
    /// this node appends to it as a non-owner.
    pub fn lost(&self, shard: u32) {
        let removed = self.write().mine.remove(&shard).is_some();
        if removed {
            self.announce();
        }
    }

    /// [`Owners::lost`], unless the view holds `shard` with another epoch
    /// than `token` (the keeper renewed or retook it since the refused
    /// call was sent).
    pub fn lost_if(&self, shard: u32, token: i64) {
        let mut v = self.write();
        if v.mine.get(&shard).is_some_and(|l| l.token == token) {
            v.mine.remove(&shard);
            drop(v);
            self.announce();
        }
    }

    /// Forgets every hold (shutting down).
    pub fn clear(&self) {
        let mut v = self.write();
        v.mine.clear();
        v.valid_until = None;
        drop(v);
        self.announce();
    }
}

fn same_keys(a: &HashMap<u32, Lease>, b: &HashMap<u32, Lease>) -> bool {
    a.len() == b.len() && a.keys().all(|k| b.contains_key(k))
}

/// The store calls of a store several nodes share.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// This node's ownership view, shared with the store's append path.
    fn owners(&self) -> Arc<Owners>;

    /// Records this node's heartbeat (and the URL other nodes forward to)
    /// and returns the store's clock (ms) and every node whose heartbeat is
    /// younger than `ttl`, this one included.
    ///
    /// # Errors
    /// Backend errors.
    async fn heartbeat(
        &self,
        node: &str,
        url: Option<&str>,
        ttl: Duration,
    ) -> Result<(i64, Vec<NodeInfo>)>;

    /// Every shard lease ever taken (expired ones too).
    ///
    /// # Errors
    /// Backend errors.
    async fn shard_leases(&self) -> Result<Vec<Lease>>;

    /// Takes or renews each named lease for `holder` (as
    /// [`super::LeaseStore::acquire_lease`], in one statement); returns the
    /// ones granted.
    ///
    /// # Errors
    /// Backend errors.
    async fn acquire_leases(
        &self,
        names: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Vec<Lease>>;

    /// Gives up the named leases `holder` holds, so other nodes can take
    /// them at once.
    ///
    /// # Errors
    /// Backend errors.
    async fn release_leases(&self, names: &[String], holder: &str) -> Result<()>;

    /// Returns the lease `name` while someone holds it (not released, not
    /// expired by the store's clock); `None` otherwise. A read: nothing is
    /// taken or renewed.
    ///
    /// # Errors
    /// Backend errors.
    async fn current_lease(&self, name: &str) -> Result<Option<Lease>>;

    /// Removes `node`'s heartbeat (a graceful shutdown).
    ///
    /// # Errors
    /// Backend errors.
    async fn leave(&self, node: &str) -> Result<()>;

    /// Returns every node's heartbeat (dead ones too) and every shard
    /// lease, read in one snapshot with the store's clock: the same answer
    /// whichever node asks, and no write. Works on a read-only connection.
    ///
    /// # Errors
    /// Backend errors.
    async fn snapshot(&self) -> Result<ClusterSnapshot>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("payments", 64), shard_of("payments", 64));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(shard_of(&format!("s{i}"), 64));
        }
        assert_eq!(seen.len(), 64, "1,000 names reach every shard");
        assert_eq!(shard_of_lease(&lease_name(7)), Some(7));
        assert_eq!(shard_of_lease("source:x"), None);
    }

    #[test]
    fn a_view_announces_only_ownership_that_moved() {
        let o = Owners::new(4);
        let mut rx = o.subscribe();
        assert!(!o.known(), "nothing learnt yet");
        let lease = |s: u32, token: i64| Lease {
            name: lease_name(s),
            holder: "n1".into(),
            token,
            expires_ms: 0,
        };
        let ttl = Duration::from_secs(60);
        let others = || HashMap::from([(2, ("n2".to_owned(), None))]);
        o.set(vec![lease(1, 3)], Instant::now(), ttl, others());
        assert!(o.known());
        assert!(rx.has_changed().unwrap(), "the first answer is news");
        rx.mark_unchanged();
        // A renewal (a new expiry, even a new token) moves nothing.
        o.set(vec![lease(1, 4)], Instant::now(), ttl, others());
        assert!(!rx.has_changed().unwrap(), "a renewal is no news");
        // Another node takes shard 3; this node gives shard 1 up.
        let mut more = others();
        more.insert(3, ("n3".to_owned(), None));
        o.set(vec![lease(1, 4)], Instant::now(), ttl, more.clone());
        assert!(rx.has_changed().unwrap(), "another owner");
        rx.mark_unchanged();
        o.set(Vec::new(), Instant::now(), ttl, more.clone());
        assert!(rx.has_changed().unwrap(), "a shard given up");
        rx.mark_unchanged();
        o.set(vec![lease(0, 1)], Instant::now(), ttl, more);
        rx.mark_unchanged();
        o.lost(0);
        assert!(rx.has_changed().unwrap(), "a refused append drops a shard");
        rx.mark_unchanged();
        o.lost(0);
        assert!(!rx.has_changed().unwrap(), "nothing to drop: no news");
        o.clear();
        assert!(rx.has_changed().unwrap(), "shutting down");
    }

    #[test]
    fn a_view_is_believed_only_for_its_ttl() {
        let o = Owners::new(4);
        let s = (0..100)
            .map(|i| format!("s{i}"))
            .find(|s| o.shard_of(s) == 1)
            .unwrap();
        let lease = Lease {
            name: lease_name(1),
            holder: "n1".into(),
            token: 3,
            expires_ms: 0,
        };
        o.set(
            vec![lease.clone()],
            Instant::now(),
            Duration::from_secs(60),
            HashMap::new(),
        );
        assert_eq!(o.owner(&s), Owner::Me);
        assert_eq!(o.fence(&s), Some(lease.clone()));
        o.set(
            vec![lease],
            Instant::now() - Duration::from_secs(61),
            Duration::from_secs(60),
            HashMap::from([(1, ("n2".to_owned(), Some("http://n2".to_owned())))]),
        );
        assert_eq!(o.fence(&s), None, "an old answer is not believed");
        assert_eq!(
            o.owner(&s),
            Owner::Other {
                node: "n2".into(),
                url: Some("http://n2".into())
            }
        );
        o.set(
            vec![Lease {
                name: lease_name(1),
                holder: "n1".into(),
                token: 4,
                expires_ms: 0,
            }],
            Instant::now(),
            Duration::from_secs(60),
            HashMap::new(),
        );
        o.lost_if(1, 3);
        assert_eq!(
            o.mine_count(),
            1,
            "a refusal of an older epoch keeps the renewed hold"
        );
        o.lost_if(1, 4);
        assert_eq!(o.mine_count(), 0);
    }
}
