//! One append call as one PostgreSQL transaction, on the shared append
//! rules of [`crate::store::append`]; only the SQL is here.

use std::collections::HashMap;

use super::{PostgresStore, backend};
use crate::chain::ZERO_HASH_HEX;
use crate::chain::tiles::{TileId, join_strips};
use crate::event::format_received;
use crate::store::append::StreamHead;
use crate::store::{Accepted, AppendGroup, GroupResult, Head, Result, StoreError};

impl PostgresStore {
    /// One transaction for the whole call. Groups are merged per stream (a
    /// commit from 64 single-event requests to 4 streams costs 4 rounds of
    /// statements, not 64), and the streams' head rows are locked in name
    /// order, so two nodes never wait on each other in a cycle (deadlock).
    pub(super) async fn append_tx(
        &self,
        groups: Vec<AppendGroup>,
        taken: &mut HashMap<String, StreamHead>,
    ) -> Result<Vec<GroupResult>> {
        let mut per_stream: std::collections::BTreeMap<&str, Vec<(usize, usize)>> =
            std::collections::BTreeMap::new();
        for (gi, g) in groups.iter().enumerate() {
            let refs = per_stream.entry(g.stream.as_str()).or_default();
            refs.extend((0..g.events.len()).map(|ei| (gi, ei)));
        }
        let mut slots: Vec<Vec<Option<Accepted>>> =
            groups.iter().map(|g| vec![None; g.events.len()]).collect();
        let mut heads: HashMap<&str, Head> = HashMap::new();
        // Until COMMIT is sent the server cannot commit this transaction, so
        // any error before it stores nothing (even on a dropped connection).
        let rolled = |e: StoreError| match e {
            StoreError::Backend { message, .. } => {
                StoreError::RolledBack(format!("postgres: {message}"))
            }
            other => other,
        };
        let mut client = self.client().await.map_err(rolled)?;
        let tx = client
            .transaction()
            .await
            .map_err(backend)
            .map_err(rolled)?;
        let written: Result<()> = async {
        for (stream, refs) in &per_stream {
            let stream: &str = stream;
            let now = format_received(time::OffsetDateTime::now_utc());
            tx.execute(
                "INSERT INTO streams (name, head_seq, head_hash, created) VALUES ($1, 0, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&stream, &ZERO_HASH_HEX, &now],
            )
            .await
            .map_err(backend)?;
            let row = tx
                .query_one(
                    "SELECT id, head_seq, head_hash FROM streams WHERE name = $1 FOR NO KEY UPDATE",
                    &[&stream],
                )
                .await
                .map_err(backend)?;
            let (id, head_seq, head_hash): (i64, i64, String) =
                (row.get(0), row.get(1), row.get(2));
            let head_seq = head_seq as u64;
            let cached = taken.remove(stream).or_else(|| {
                self.cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(stream)
            });
            let mut st = match cached {
                Some(c) if c.matches(id, head_seq, &head_hash) => c,
                _ => {
                    let mut fetched = HashMap::new();
                    for tid in StreamHead::tiles_to_read(head_seq) {
                        if let Some(d) = read_tile(&tx, id, tid).await? {
                            fetched.insert(tid, d);
                        }
                    }
                    StreamHead::resume(stream, id, head_seq, head_hash, |t| fetched.remove(&t))?
                }
            };
            // Ids already stored, found in one query under the row lock.
            let ids: Vec<&str> = refs
                .iter()
                .map(|&(gi, ei)| groups[gi].events[ei].id.as_str())
                .collect();
            let mut known: HashMap<String, (u64, String)> = HashMap::new();
            for r in tx
                .query(
                    "SELECT id, seq, hash FROM events WHERE stream_id = $1 AND id = ANY($2)",
                    &[&id, &ids],
                )
                .await
                .map_err(backend)?
            {
                known.insert(r.get(0), (r.get::<_, i64>(1) as u64, r.get(2)));
            }
            let (mut seqs, mut eids, mut types, mut times, mut receiveds, mut hashes, mut bodies) = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for &(gi, ei) in refs {
                let ev = &groups[gi].events[ei];
                if let Some((seq, hash)) = known.get(&ev.id) {
                    slots[gi][ei] = Some(Accepted {
                        id: ev.id.clone(),
                        seq: *seq,
                        hash: hash.clone(),
                        duplicate: true,
                    });
                    continue;
                }
                // This store takes no seals (`uses_seals` is false): the
                // head it predicts is only certain under the row lock.
                let (seq, sealed) = st.chain(ev, stream, None);
                st.advance(seq, &sealed.hash, sealed.leaf);
                known.insert(ev.id.clone(), (seq, sealed.hash.clone()));
                slots[gi][ei] = Some(Accepted {
                    id: ev.id.clone(),
                    seq,
                    hash: sealed.hash.clone(),
                    duplicate: false,
                });
                seqs.push(seq as i64);
                eids.push(ev.id.as_str());
                types.push(ev.event_type.as_str());
                times.push(ev.time.as_str());
                receiveds.push(ev.received.as_str());
                hashes.push(sealed.hash);
                bodies.push(sealed.body);
            }
            let rows = st.tile_rows();
            if !rows.is_empty() {
                tx.execute(
                    "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) \
                     SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
                    &[&id, &seqs, &eids, &types, &times, &receiveds, &hashes, &bodies],
                )
                .await
                .map_err(backend)?;
                // Every changed strip in one statement (a strip appears once
                // per append, so ON CONFLICT touches each row at most once).
                let (mut levels, mut idxs, mut strips, mut datas) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (level, index, strip, bytes) in rows {
                    levels.push(level as i32);
                    idxs.push(index as i64);
                    strips.push(strip);
                    datas.push(bytes);
                }
                tx.execute(
                    "INSERT INTO tiles (stream_id, level, idx, strip, data) \
                     SELECT $1, * FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::bytea[]) \
                     ON CONFLICT (stream_id, level, idx, strip) DO UPDATE SET data = excluded.data",
                    &[&id, &levels, &idxs, &strips, &datas],
                )
                .await
                .map_err(backend)?;
                tx.execute(
                    "UPDATE streams SET head_seq = $2, head_hash = $3 WHERE id = $1",
                    &[&id, &(st.seq as i64), &st.hash],
                )
                .await
                .map_err(backend)?;
            }
            heads.insert(stream, st.head());
            taken.insert(stream.to_owned(), st);
        }
        Ok(())
        }
        .await;
        written.map_err(rolled)?;
        // A failed COMMIT is ambiguous: it may or may not have been applied.
        tx.commit().await.map_err(backend)?;
        groups
            .iter()
            .zip(slots)
            .map(|(g, slot)| {
                let accepted = slot
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        StoreError::Corrupt("an event of the call got no result".into())
                    })?;
                let head = heads.get(g.stream.as_str()).cloned().unwrap_or(Head {
                    seq: 0,
                    hash: ZERO_HASH_HEX.into(),
                });
                Ok(GroupResult { accepted, head })
            })
            .collect()
    }
}

pub(super) async fn read_tile(
    c: &impl deadpool_postgres::GenericClient,
    stream_id: i64,
    t: TileId,
) -> Result<Option<Vec<u8>>> {
    let rows = c
        .query(
            "SELECT strip, data FROM tiles WHERE stream_id = $1 AND level = $2 AND idx = $3 ORDER BY strip",
            &[&stream_id, &(t.level as i32), &(t.index as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(join_strips(
        rows.into_iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1))),
    ))
}
