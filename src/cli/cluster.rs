//! `trailkeep cluster`: the nodes sharing a PostgreSQL store and who owns
//! which shard, as `GET /v1/cluster` answers it, read from the store
//! (read-only) or a server (`--server`, an admin key for `*`). Printed as
//! a node table and an 8-wide grid of shard owners, or `--json`.
//!
//! Not here: the rules (alive, owned), which are [`crate::shards::status`]'s.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use super::reader::{Reader, Remote};
use crate::config::StoreLocation;
use crate::shards::ClusterStatus;

/// Why a SQLite store has nothing to show.
const NO_CLUSTER: &str = "a single-node store has no cluster: the store is SQLite (one node); nodes share streams only on a PostgreSQL store (--store postgres://… or store = \"postgres://…\" in the config)";

/// Arguments of `cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Print the JSON of `GET /v1/cluster` (every node, every shard with
    /// its owner, epoch and lease expiry) instead of tables.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
    /// Where to read.
    #[command(flatten)]
    pub remote: Remote,
}

pub(super) async fn run(
    args: &ClusterArgs,
    config: impl FnOnce() -> anyhow::Result<crate::config::Config>,
) -> anyhow::Result<ExitCode> {
    let mut ttl = Duration::ZERO;
    let reader = Reader::open(&args.remote, || {
        let config = config()?;
        if config.store == StoreLocation::Sqlite {
            bail!(NO_CLUSTER);
        }
        ttl = config.cluster.lease_ttl;
        Ok(config)
    })
    .await?;
    let status: ClusterStatus = match reader {
        Reader::Store(store) => {
            let cluster = store.cluster().context(NO_CLUSTER)?;
            crate::shards::status(cluster.as_ref(), None, ttl)
                .await
                .context("reading the cluster from the store")?
        }
        Reader::Server(c) => c.get_json("/v1/cluster").await?,
    };
    if args.json {
        super::print_json(&serde_json::to_value(&status)?)?;
    } else {
        super::write_stdout(format_args!("{}", tables(&status)));
    }
    Ok(ExitCode::SUCCESS)
}

/// The letter(s) standing for the `i`th node in the shard grid: `A`-`Z`,
/// then `AA`, `AB`, ….
fn label(i: usize) -> String {
    let letter = |n: usize| char::from(b'A' + (n % 26) as u8);
    if i < 26 {
        letter(i).to_string()
    } else {
        format!("{}{}", label(i / 26 - 1), letter(i))
    }
}

/// `ms` as people read an age: `850ms`, `4.2s`, `5m12s`, `3h02m`, `2d05h`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{:02}h", s / 86_400, (s / 3600) % 24),
    }
}

/// A summary line, the node table and the shard grid.
fn tables(st: &ClusterStatus) -> String {
    let alive = st.nodes.iter().filter(|n| n.alive).count();
    let mut out = format!(
        "{} node(s), {alive} alive; {} of {} shards owned; store clock {}{}\n\n",
        st.nodes.len(),
        st.shards_owned,
        st.shard_count,
        super::printable(&st.now),
        st.node
            .as_deref()
            .map(|n| format!(" (answered by {})", super::printable(n)))
            .unwrap_or_default(),
    );
    let header = ["", "NODE", "ALIVE", "SHARDS", "LAST SEEN", "AGE", "URL"];
    let rows: Vec<[String; 7]> = st
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            [
                label(i),
                super::printable(&n.id),
                if n.alive { "yes" } else { "no" }.to_owned(),
                n.shards_owned.to_string(),
                n.last_seen
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), super::printable),
                n.age_ms.map_or_else(|| "-".to_owned(), age),
                n.url
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), super::printable),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |c: [&str; 7]| {
        let l = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:<w4$}  {:>w5$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5],
        );
        format!("{}\n", l.trim_end())
    };
    out.push_str(&line(header));
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]));
    }
    if rows.is_empty() {
        out.push_str("(no node has started on this store yet)\n");
    }
    // The grid: 8 shards a row, each cell its owner's letter.
    let letters: std::collections::HashMap<&str, String> = st
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), label(i)))
        .collect();
    let cells: Vec<String> = st
        .shards
        .iter()
        .map(|s| {
            s.owner
                .as_deref()
                .and_then(|o| letters.get(o).cloned())
                .unwrap_or_else(|| ".".to_owned())
        })
        .collect();
    let cell = cells.iter().map(String::len).max().unwrap_or(1).max(2);
    let num = st.shard_count.saturating_sub(1).to_string().len().max(5);
    out.push_str(&format!("\n{:>num$}", "SHARD"));
    for i in 0..8.min(cells.len()) {
        out.push_str(&format!(" {:>cell$}", format!("+{i}")));
    }
    out.push('\n');
    for (row, chunk) in cells.chunks(8).enumerate() {
        out.push_str(&format!("{:>num$}", row * 8));
        for c in chunk {
            out.push_str(&format!(" {c:>cell$}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::{NodeStatus, ShardStatus};

    #[test]
    fn labels_and_ages_read_as_people_expect() {
        assert_eq!(
            [0, 1, 25, 26, 27, 52].map(label),
            ["A", "B", "Z", "AA", "AB", "BA"]
        );
        assert_eq!(
            [850, 4_250, 312_000, 10_920_000, 190_000_000].map(age),
            ["850ms", "4.2s", "5m12s", "3h02m", "2d04h"]
        );
    }

    #[test]
    fn the_tables_list_nodes_and_each_shards_owner() {
        let node = |id: &str, alive, owned, url: Option<&str>| NodeStatus {
            id: id.into(),
            url: url.map(Into::into),
            last_seen: Some("2026-12-03T08:00:00.5Z".into()),
            age_ms: Some(if alive { 500 } else { 65_000 }),
            alive,
            shards_owned: owned,
        };
        let owner = |s: u32| match s {
            0..6 => Some("node-a"),
            6..8 => None,
            _ => Some("node-b"),
        };
        let st = ClusterStatus {
            node: Some("node-a".into()),
            now: "2026-12-03T08:00:01Z".into(),
            lease_ttl_ms: 6000,
            shard_count: 10,
            shards_owned: 8,
            nodes: vec![
                node("node-a", true, 6, Some("http://10.0.0.5:7470")),
                node("node-b", false, 2, None),
            ],
            shards: (0..10)
                .map(|s| ShardStatus {
                    shard: s,
                    owner: owner(s).map(Into::into),
                    epoch: Some(1),
                    expires: None,
                })
                .collect(),
        };
        assert_eq!(
            tables(&st),
            "2 node(s), 1 alive; 8 of 10 shards owned; store clock 2026-12-03T08:00:01Z (answered by node-a)\n\
             \n   NODE    ALIVE  SHARDS  LAST SEEN                 AGE  URL\n\
             A  node-a  yes         6  2026-12-03T08:00:00.5Z  500ms  http://10.0.0.5:7470\n\
             B  node-b  no          2  2026-12-03T08:00:00.5Z  1m05s  -\n\
             \nSHARD +0 +1 +2 +3 +4 +5 +6 +7\n\
             \x20   0  A  A  A  A  A  A  .  .\n\
             \x20   8  B  B\n"
        );
    }
}
