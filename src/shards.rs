//! Keeping shards: the background task that gives each node of a shared
//! store (PostgreSQL) its share of the shards, so that each stream has one
//! node that normally appends to it (issue #19; the store side is
//! [`crate::store::cluster`]).
//!
//! Every third of the lease TTL the keeper records this node's heartbeat,
//! reads the live nodes and every shard lease, and then:
//! - renews the shards it holds, up to its fair share (`ceil(shards /
//!   live nodes)`), and gives up the rest at once, so a node that joins
//!   finds free shards on its next round;
//! - takes free shards (never taken, released, or expired: their owner
//!   stopped renewing) up to its share, preferring those that rendezvous
//!   hashing assigns to it, so that ownership does not move back and
//!   forth between rounds.
//!
//! After a `kill -9`, the dead node's shards are free once their leases
//! expire: failover takes at most one TTL plus one round (TTL/3). Until
//! then, requests for those streams are committed by whichever node
//! receives them (the append's compare-and-set keeps that correct), so no
//! write waits for the failover.
//!
//! The gauge `trailkeep_shards_owned` shows how many shards this node holds;
//! [`status`] reads the whole cluster from the store (`GET /v1/cluster`,
//! `trailkeep cluster`) by the same rules the keeper uses (a node is alive
//! while its heartbeat is younger than the TTL, a shard is owned while its
//! lease has not expired).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;
use tokio::time::Instant;

use crate::node::NodeId;
use crate::store::cluster::{ClusterSnapshot, ClusterStore, NodeInfo, lease_name, shard_of_lease};
use crate::store::{Lease, Result};

/// Keeps this node's share of the shards; see the module docs.
pub struct ShardKeeper {
    cluster: Arc<dyn ClusterStore>,
    node: NodeId,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ShardKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardKeeper")
            .field("node", &self.node.as_str())
            .finish_non_exhaustive()
    }
}

impl ShardKeeper {
    /// Runs one round now (a failure is logged: the node then owns
    /// nothing and commits as a non-owner), then one every `ttl / 3`.
    pub async fn start(
        cluster: Arc<dyn ClusterStore>,
        node: NodeId,
        url: Option<String>,
        ttl: Duration,
    ) -> Self {
        let keeper = Round {
            cluster: cluster.clone(),
            node: node.as_str().to_owned(),
            url,
            ttl,
        };
        keeper.run_logged().await;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                keeper.run_logged().await;
            }
        });
        Self {
            cluster,
            node,
            task,
        }
    }

    /// Stops, gives up every shard this node holds and removes its
    /// heartbeat, so the other nodes take its shards on their next round
    /// instead of after the TTL.
    pub async fn stop(mut self) {
        self.task.abort();
        // A round under way must not take back what is given up below.
        let _ = (&mut self.task).await;
        let owners = self.cluster.owners();
        owners.clear();
        let names: Vec<String> = (0..owners.shards()).map(lease_name).collect();
        if let Err(e) = self
            .cluster
            .release_leases(&names, self.node.as_str())
            .await
        {
            tracing::warn!(error = %crate::report::Chain(&e), "cannot give up the shard leases; they will expire");
        }
        if let Err(e) = self.cluster.leave(self.node.as_str()).await {
            tracing::warn!(error = %crate::report::Chain(&e), "cannot remove this node's heartbeat; it will expire");
        }
        metrics::gauge!("trailkeep_shards_owned").set(0.0);
    }
}

impl Drop for ShardKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One node's round; see the module docs.
struct Round {
    cluster: Arc<dyn ClusterStore>,
    node: String,
    url: Option<String>,
    ttl: Duration,
}

impl Round {
    async fn run_logged(&self) {
        let before = self.cluster.owners().mine_count();
        match self.run().await {
            Ok(now) => {
                if now != before {
                    tracing::info!(shards = now, before, "shard ownership changed");
                }
                metrics::gauge!("trailkeep_shards_owned").set(now as f64);
            }
            Err(e) => {
                tracing::warn!(error = %crate::report::Chain(&e), "cannot renew shard ownership; will retry (appends go on, as a non-owner once the leases run out)");
            }
        }
    }

    /// Returns how many shards this node holds afterwards.
    async fn run(&self) -> Result<usize> {
        let asked = Instant::now();
        let owners = self.cluster.owners();
        let shards = owners.shards();
        let (now_ms, nodes) = self
            .cluster
            .heartbeat(&self.node, self.url.as_deref(), self.ttl)
            .await?;
        let leases = self.cluster.shard_leases().await?;
        let plan = plan(&self.node, shards, &nodes, &leases, now_ms);
        if !plan.release.is_empty() {
            // Stop using them before giving them up.
            for name in &plan.release {
                if let Some(s) = shard_of_lease(name) {
                    owners.lost(s);
                }
            }
            self.cluster
                .release_leases(&plan.release, &self.node)
                .await?;
        }
        let granted = self
            .cluster
            .acquire_leases(&plan.want, &self.node, self.ttl)
            .await?;
        let urls: HashMap<&str, Option<String>> = nodes
            .iter()
            .map(|n| (n.node.as_str(), n.url.clone()))
            .collect();
        let others = leases
            .iter()
            .filter(|l| l.holder != self.node && l.expires_ms > now_ms)
            .filter_map(|l| {
                let url = urls.get(l.holder.as_str())?;
                Some((shard_of_lease(&l.name)?, (l.holder.clone(), url.clone())))
            })
            .collect();
        let n = granted.len();
        owners.set(granted, asked.into_std(), self.ttl, others);
        Ok(n)
    }
}

/// What one round asks of the store.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// Leases to take or renew.
    want: Vec<String>,
    /// Leases to give up.
    release: Vec<String>,
}

/// Decides a round: keep up to the fair share of what this node holds,
/// give up the rest, take free shards up to the share (rendezvous-preferred
/// first).
fn plan(me: &str, shards: u32, nodes: &[NodeInfo], leases: &[Lease], now_ms: i64) -> Plan {
    let live: Vec<&str> = {
        let mut v: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        if !v.contains(&me) {
            v.push(me);
        }
        v
    };
    let share = (shards as usize).div_ceil(live.len().max(1));
    let by_name: HashMap<&str, &Lease> = leases.iter().map(|l| (l.name.as_str(), l)).collect();
    let held_by = |s: u32| -> Option<&str> {
        by_name
            .get(lease_name(s).as_str())
            .filter(|l| l.expires_ms > now_ms)
            .map(|l| l.holder.as_str())
    };
    // Rendezvous order: the shards whose top-scoring live node is this
    // one first, then by how high this node scores.
    let score = |node: &str, s: u32| -> u64 {
        let h = sha2::Sha256::digest(format!("{node}/{s}").as_bytes());
        u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    };
    let preferred = |s: u32| live.iter().max_by_key(|n| score(n, s)).copied() == Some(me);
    let mut mine: Vec<u32> = (0..shards).filter(|s| held_by(*s) == Some(me)).collect();
    mine.sort_by_key(|s| (!preferred(*s), std::cmp::Reverse(score(me, *s))));
    let release: Vec<String> = mine.iter().skip(share).map(|s| lease_name(*s)).collect();
    mine.truncate(share);
    // A shard whose holder stopped beating is not free until its lease
    // expires: the store would refuse to hand it over before.
    let mut free: Vec<u32> = (0..shards).filter(|s| held_by(*s).is_none()).collect();
    free.sort_by_key(|s| (!preferred(*s), std::cmp::Reverse(score(me, *s))));
    let room = share.saturating_sub(mine.len());
    let want = mine
        .iter()
        .copied()
        .chain(free.into_iter().take(room))
        .map(lease_name)
        .collect();
    Plan { want, release }
}

/// The cluster as the store records it: `GET /v1/cluster` and
/// `trailkeep cluster --json` answer this.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node that answered (null from `trailkeep cluster`, which reads
    /// the store itself).
    pub node: Option<String>,
    /// The store's clock when it was read (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub now: String,
    /// A node is alive while its last heartbeat is younger than this: the
    /// `[cluster] lease_ttl_ms` of the node (or config) that answered.
    pub lease_ttl_ms: u64,
    /// How many shards streams hash into (fixed when the schema was
    /// created).
    pub shard_count: u32,
    /// How many shards have an owner now; the others are not taken yet or
    /// failing over (their streams are committed by whichever node
    /// receives them).
    pub shards_owned: u32,
    /// Every node with a heartbeat, alive or not (and any holder of a
    /// current shard lease without one), by id. A node stopped with
    /// SIGTERM removes itself; one that died stays, not alive.
    pub nodes: Vec<NodeStatus>,
    /// Every shard, by number.
    pub shards: Vec<ShardStatus>,
}

/// One node of the cluster status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// Its id (the `node.id` file of its data directory).
    pub id: String,
    /// The URL other nodes forward its streams' requests to (null: it
    /// advertises none, and other nodes commit its streams themselves).
    pub url: Option<String>,
    /// Its last heartbeat (RFC 3339, UTC; null: it holds a lease but has
    /// no heartbeat row).
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    /// How long ago that was, in ms by the store's clock.
    pub age_ms: Option<u64>,
    /// Whether its heartbeat is younger than `lease_ttl_ms`.
    pub alive: bool,
    /// How many shards it holds a current lease on (a node that died keeps
    /// its shards until their leases expire).
    pub shards_owned: u32,
}

/// One shard of the cluster status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ShardStatus {
    /// Its number (the lease is `shard:NNNN`).
    pub shard: u32,
    /// The node holding its lease now (null: never taken, released, or
    /// expired).
    pub owner: Option<String>,
    /// The lease token: the owner's epoch, which its appends carry; it
    /// grows by one each time the shard changes hands (null: never
    /// taken).
    #[schema(minimum = 1)]
    pub epoch: Option<i64>,
    /// When the lease expires unless renewed, or expired (RFC 3339, UTC;
    /// null: never taken, or released).
    #[schema(format = DateTime)]
    pub expires: Option<String>,
}

/// Returns the cluster as the store records it now, read fresh (never
/// this node's cached view), so every node gives the same answer. `node`
/// is the node answering, `ttl` the heartbeat age up to which a node is
/// alive.
///
/// # Errors
/// Backend errors.
pub async fn status(
    cluster: &dyn ClusterStore,
    node: Option<&str>,
    ttl: Duration,
) -> Result<ClusterStatus> {
    let snapshot = cluster.snapshot().await?;
    Ok(summarize(&snapshot, cluster.owners().shards(), node, ttl))
}

/// [`status`] from a snapshot: pure.
fn summarize(
    snap: &ClusterSnapshot,
    shards: u32,
    node: Option<&str>,
    ttl: Duration,
) -> ClusterStatus {
    let now = snap.now_ms;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let by_name: HashMap<&str, &Lease> = snap.leases.iter().map(|l| (l.name.as_str(), l)).collect();
    let shard_list: Vec<ShardStatus> = (0..shards)
        .map(|s| {
            let lease = by_name.get(lease_name(s).as_str());
            ShardStatus {
                shard: s,
                // The keeper's rule: held while the lease has not expired.
                owner: lease
                    .filter(|l| l.expires_ms > now)
                    .map(|l| l.holder.clone()),
                epoch: lease.map(|l| l.token),
                // A released lease is expired at 0: no time to show.
                expires: lease
                    .filter(|l| l.expires_ms > 0)
                    .map(|l| rfc3339(l.expires_ms)),
            }
        })
        .collect();
    let mut owned: HashMap<&str, u32> = HashMap::new();
    for owner in shard_list.iter().filter_map(|s| s.owner.as_deref()) {
        *owned.entry(owner).or_default() += 1;
    }
    let mut nodes: Vec<NodeStatus> = snap
        .nodes
        .iter()
        .map(|n| NodeStatus {
            id: n.node.clone(),
            url: n.url.clone(),
            last_seen: Some(rfc3339(n.seen_ms)),
            age_ms: Some(u64::try_from(now.saturating_sub(n.seen_ms)).unwrap_or(0)),
            // The heartbeat's rule (`ClusterStore::heartbeat`).
            alive: n.seen_ms > now.saturating_sub(ttl_ms),
            shards_owned: owned.get(n.node.as_str()).copied().unwrap_or(0),
        })
        .collect();
    // An owner without a heartbeat row (removed by hand, say) is listed
    // too, so that the nodes' counts add up to `shards_owned`.
    for (id, count) in &owned {
        if !nodes.iter().any(|n| n.id == *id) {
            nodes.push(NodeStatus {
                id: (*id).to_owned(),
                url: None,
                last_seen: None,
                age_ms: None,
                alive: false,
                shards_owned: *count,
            });
        }
    }
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    ClusterStatus {
        node: node.map(str::to_owned),
        now: rfc3339(now),
        lease_ttl_ms: u64::try_from(ttl_ms).unwrap_or(0),
        shard_count: shards,
        shards_owned: owned.values().sum(),
        nodes,
        shards: shard_list,
    }
}

/// `ms` since the epoch as RFC 3339 in UTC, to the millisecond.
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(n: &str) -> NodeInfo {
        NodeInfo {
            node: n.into(),
            url: None,
            seen_ms: 0,
        }
    }

    fn lease(s: u32, holder: &str, expires_ms: i64) -> Lease {
        Lease {
            name: lease_name(s),
            holder: holder.into(),
            token: 1,
            expires_ms,
        }
    }

    #[test]
    fn a_lone_node_takes_every_shard() {
        let p = plan("a", 8, &[node("a")], &[], 1000);
        assert_eq!(p.want.len(), 8);
        assert!(p.release.is_empty());
    }

    #[test]
    fn a_node_that_joins_gets_half_after_the_holder_gives_half_up() {
        let all: Vec<Lease> = (0..8).map(|s| lease(s, "a", 5000)).collect();
        let nodes = [node("a"), node("b")];
        let pa = plan("a", 8, &nodes, &all, 1000);
        assert_eq!(pa.want.len(), 4, "a keeps its share");
        assert_eq!(pa.release.len(), 4, "and gives up the rest");
        let pb = plan("b", 8, &nodes, &all, 1000);
        assert!(pb.want.is_empty(), "b takes nothing still held");
        // After a's release (expires_ms = 0):
        let after: Vec<Lease> = all
            .iter()
            .map(|l| {
                if pa.release.contains(&l.name) {
                    Lease {
                        expires_ms: 0,
                        ..l.clone()
                    }
                } else {
                    l.clone()
                }
            })
            .collect();
        let pb = plan("b", 8, &nodes, &after, 1000);
        let mut got = pb.want.clone();
        got.sort();
        let mut released = pa.release.clone();
        released.sort();
        assert_eq!(got, released, "b takes exactly what a gave up");
    }

    #[test]
    fn a_dead_nodes_shards_are_taken_once_their_leases_expire() {
        let leases: Vec<Lease> = (0..4)
            .map(|s| lease(s, "a", 5000))
            .chain((4..8).map(|s| lease(s, "dead", 2000)))
            .collect();
        let alive = [node("a")];
        let before = plan("a", 8, &alive, &leases, 1500);
        assert_eq!(before.want.len(), 4, "not before they expire");
        let after = plan("a", 8, &alive, &leases, 2500);
        assert_eq!(after.want.len(), 8, "all of them after");
    }

    #[test]
    fn three_nodes_cover_every_shard_without_overlap() {
        let nodes = [node("a"), node("b"), node("c")];
        let mut leases: Vec<Lease> = Vec::new();
        // Rounds in turn until stable.
        for _ in 0..4 {
            for me in ["a", "b", "c"] {
                let p = plan(me, 64, &nodes, &leases, 1000);
                leases.retain(|l| !(p.release.contains(&l.name) && l.holder == me));
                for w in p.want {
                    if !leases.iter().any(|l| l.name == w) {
                        leases.push(Lease {
                            name: w,
                            holder: me.into(),
                            token: 1,
                            expires_ms: 5000,
                        });
                    }
                }
            }
        }
        assert_eq!(leases.len(), 64, "every shard owned");
        for me in ["a", "b", "c"] {
            let n = leases.iter().filter(|l| l.holder == me).count();
            assert!(
                (20..=22).contains(&n),
                "{me} holds {n}: at most the share, ceil(64 / 3)"
            );
        }
    }

    #[test]
    fn a_status_names_owners_by_the_keepers_rules_and_counts_add_up() {
        let now = 1_800_000_000_000;
        let beat = |n: &str, seen_ms: i64| NodeInfo {
            node: n.into(),
            url: Some(format!("http://{n}")),
            seen_ms,
        };
        let lease = |s: u32, holder: &str, token: i64, expires_ms: i64| Lease {
            name: lease_name(s),
            holder: holder.into(),
            token,
            expires_ms,
        };
        let snap = ClusterSnapshot {
            now_ms: now,
            nodes: vec![beat("b", now - 7000), beat("a", now - 100)],
            leases: vec![
                lease(0, "a", 3, now + 5000),
                lease(1, "b", 2, now + 1),
                lease(2, "a", 4, now),
                lease(3, "a", 5, 0),
                lease(4, "ghost", 1, now + 5000),
            ],
        };
        let st = summarize(&snap, 6, Some("a"), Duration::from_millis(6000));
        assert_eq!(st.node.as_deref(), Some("a"));
        assert_eq!(st.now, "2027-01-15T08:00:00Z");
        assert_eq!((st.shard_count, st.lease_ttl_ms), (6, 6000));
        let owners: Vec<Option<&str>> = st.shards.iter().map(|s| s.owner.as_deref()).collect();
        assert_eq!(
            owners,
            [Some("a"), Some("b"), None, None, Some("ghost"), None],
            "owned while the lease has not expired (at `now` it has)"
        );
        assert_eq!(
            st.shards.iter().map(|s| s.epoch).collect::<Vec<_>>(),
            [Some(3), Some(2), Some(4), Some(5), Some(1), None]
        );
        assert_eq!(
            st.shards[0].expires.as_deref(),
            Some("2027-01-15T08:00:05Z")
        );
        assert_eq!(st.shards[3].expires, None, "released: no time");
        assert_eq!(st.shards[5].expires, None, "never taken");
        let nodes: Vec<(&str, bool, u32, Option<u64>)> = st
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.alive, n.shards_owned, n.age_ms))
            .collect();
        assert_eq!(
            nodes,
            [
                ("a", true, 1, Some(100)),
                ("b", false, 1, Some(7000)),
                ("ghost", false, 1, None)
            ],
            "by id; a heartbeat older than the TTL is not alive; an owner without one is listed"
        );
        assert_eq!(st.shards_owned, 3);
        assert_eq!(
            st.nodes.iter().map(|n| n.shards_owned).sum::<u32>(),
            st.shards_owned
        );
        assert_eq!(
            st.nodes[0].last_seen.as_deref(),
            Some("2027-01-15T07:59:59.9Z")
        );
    }
}
