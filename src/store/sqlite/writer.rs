//! The writer thread's append: one `BEGIN IMMEDIATE … COMMIT` per call,
//! on the shared append rules of [`crate::store::append`] (the cached
//! [`StreamHead`], seals, tile rows); only the SQL is here.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{backend, now};
use crate::chain::ZERO_HASH_HEX;
use crate::chain::tiles::TileId;
use crate::store::append::{Seals, StreamHead};
use crate::store::{Accepted, AppendGroup, GroupResult, Result, SealedEvent, StoreError};

/// The writer thread's state: the only writing connection and the streams
/// it has cached.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) streams: HashMap<String, StreamHead>,
}

impl Writer {
    pub(super) fn append(&mut self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        let out = self.append_tx(groups);
        if out.is_err() {
            // The cached heads and tiles may be ahead of what is on disk.
            self.streams.clear();
        }
        out
    }

    fn append_tx(&mut self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        let Writer { conn, streams } = self;
        // Failing to begin stores nothing: not ambiguous.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::RolledBack(format!("sqlite: {e}")))?;
        let (mut results, touched) = match write_groups(&tx, streams, groups) {
            Ok(r) => r,
            Err(StoreError::Backend { message, .. }) => {
                // A statement failed before COMMIT. Once the rollback is
                // confirmed nothing of this call is stored; a failed rollback
                // is ambiguous and poisons like a failed commit.
                tx.rollback()?;
                return Err(StoreError::RolledBack(format!("sqlite: {message}")));
            }
            // Corruption and the like: dropped (rolled back), and the caller poisons.
            Err(e) => return Err(e),
        };
        // The heads this call moves; if COMMIT fails, the database tells
        // whether they moved.
        let moved: Vec<(String, u64)> = touched
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.accepted.iter().any(|a| !a.duplicate))
            .filter_map(|(name, _)| streams.get(name).map(|st| (name.clone(), st.seq)))
            .collect();
        if let Err(e) = tx.commit() {
            // A failed COMMIT is ambiguous, but for a full disk: SQLITE_FULL
            // means a WAL write failed before the commit frame counted, and
            // if the database, read again once the transaction is gone,
            // shows none of its heads moved, nothing of it is stored and
            // the writer keeps serving. (An I/O error at sync stays
            // ambiguous: its frames may still surface at recovery.)
            let full = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
            if !full {
                return Err(e.into());
            }
            return match rolled_back(conn, &moved) {
                Ok(true) => Err(StoreError::RolledBack(format!(
                    "sqlite: commit failed and was rolled back: {e}"
                ))),
                _ => Err(e.into()),
            };
        }
        // Later groups of a stream in the same call report the final head.
        for (i, name) in touched.iter().enumerate() {
            if let Some(st) = streams.get(name) {
                results[i].head = st.head();
            }
        }
        Ok(results)
    }
}

/// Whether none of `moved`'s streams is at the head a failed commit would
/// have given it (all still below): the commit is then certainly undone.
pub(super) fn rolled_back(conn: &rusqlite::Connection, moved: &[(String, u64)]) -> Result<bool> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let mut q = conn.prepare_cached("SELECT head_seq FROM streams WHERE name = ?1")?;
    for (name, new_head) in moved {
        let head: Option<i64> = q.query_row([name], |r| r.get(0)).optional()?;
        if head.is_some_and(|h| h as u64 >= *new_head) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs every statement of one `append` call inside `tx` (no commit).
fn write_groups(
    tx: &rusqlite::Transaction<'_>,
    streams: &mut HashMap<String, StreamHead>,
    groups: Vec<AppendGroup>,
) -> Result<(Vec<GroupResult>, Vec<String>)> {
    let mut results = Vec::with_capacity(groups.len());
    let mut touched: Vec<String> = Vec::new();
    for group in groups {
        let st = load_stream(tx, streams, &group.stream)?;
        let mut accepted = Vec::with_capacity(group.events.len());
        {
            // Insert first and let the unique index (stream_id, id) detect a
            // repeated id: one index probe instead of a lookup plus an insert.
            // Only the rare duplicate pays for the lookup of the original.
            let mut insert = tx.prepare_cached(
                    "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (stream_id, id) DO NOTHING",
                )?;
            let mut find =
                tx.prepare_cached("SELECT seq, hash FROM events WHERE stream_id = ?1 AND id = ?2")?;
            let mut seals = Seals::new(group.sealed, st);
            for ev in group.events {
                let (seq, SealedEvent { body, hash, leaf }) =
                    st.chain(&ev, &group.stream, seals.next());
                let inserted = insert.execute(params![
                    st.id,
                    seq as i64,
                    ev.id,
                    ev.event_type,
                    ev.time,
                    ev.received,
                    hash,
                    body
                ])?;
                if inserted == 0 {
                    seals.broken();
                    let (seq, hash) = find.query_row(params![st.id, ev.id], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
                    })?;
                    accepted.push(Accepted {
                        id: ev.id,
                        seq,
                        hash,
                        duplicate: true,
                    });
                    continue;
                }
                st.advance(seq, &hash, leaf);
                accepted.push(Accepted {
                    id: ev.id,
                    seq,
                    hash,
                    duplicate: false,
                });
            }
        }
        let rows = st.tile_rows();
        if !rows.is_empty() {
            let mut up = tx.prepare_cached(
                    "INSERT INTO tiles (stream_id, level, idx, strip, data) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (stream_id, level, idx, strip) DO UPDATE SET data = excluded.data",
                )?;
            for (level, index, strip, bytes) in rows {
                up.execute(params![st.id, level, index as i64, strip, bytes])?;
            }
            tx.prepare_cached("UPDATE streams SET head_seq = ?2, head_hash = ?3 WHERE id = ?1")?
                .execute(params![st.id, st.seq as i64, st.hash])?;
        }
        touched.push(group.stream.clone());
        results.push(GroupResult {
            accepted,
            head: st.head(),
        });
    }
    Ok((results, touched))
}

/// Returns the cached state of `name`, (re)loading it when the stored head
/// differs from the cache (another process wrote, or a previous transaction
/// failed). Creates the stream when it does not exist.
fn load_stream<'a>(
    tx: &rusqlite::Transaction<'_>,
    streams: &'a mut HashMap<String, StreamHead>,
    name: &str,
) -> Result<&'a mut StreamHead> {
    let row = tx
        .prepare_cached("SELECT id, head_seq, head_hash FROM streams WHERE name = ?1")?
        .query_row([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let (id, head_seq, head_hash) = match row {
        Some(r) => r,
        None => {
            tx.prepare_cached(
                "INSERT INTO streams (name, head_seq, head_hash, created) VALUES (?1, 0, ?2, ?3)",
            )?
            .execute(params![name, ZERO_HASH_HEX, now()])?;
            (tx.last_insert_rowid(), 0, ZERO_HASH_HEX.to_owned())
        }
    };
    let fresh = streams
        .get(name)
        .is_some_and(|s| s.matches(id, head_seq, &head_hash));
    if !fresh {
        let mut failed = None;
        let head = StreamHead::resume(name, id, head_seq, head_hash, |t| {
            match read_tile(tx, id, t) {
                Ok(d) => d,
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        if let Some(e) = failed {
            return Err(backend(e));
        }
        streams.insert(name.to_owned(), head?);
    }
    streams
        .get_mut(name)
        .ok_or_else(|| StoreError::Corrupt(format!("stream {name} vanished from cache")))
}

/// Reads one tile as its strips concatenated; `None` when it has none.
///
/// # Errors
/// Backend errors; a strip out of place reads as a short tile, which callers
/// report as corruption.
pub(super) fn read_tile(
    c: &Connection,
    stream_id: i64,
    t: TileId,
) -> rusqlite::Result<Option<Vec<u8>>> {
    let mut q = c.prepare_cached("SELECT strip, data FROM tiles WHERE stream_id = ?1 AND level = ?2 AND idx = ?3 ORDER BY strip")?;
    let strips = q
        .query_map(params![stream_id, t.level, t.index as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(crate::chain::tiles::join_strips(strips))
}
