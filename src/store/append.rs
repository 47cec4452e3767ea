//! The append rules every backend shares: a stream's cached head and
//! frontier tiles, when that cache still describes the stored row, how the
//! next event is chained (the batcher's seal when it starts at the true
//! head, else [`SealedEvent::compute`]), and which tile strips an append
//! changes. Only the SQL is left to each backend.

use crate::chain::Hash;
use crate::chain::tiles::{TileId, TileWriter, changed_strips, partial_tiles};

use super::{Head, Result, Sealed, SealedEvent, StoreError};
use crate::event::NewEvent;

/// One stream as a backend caches it between commits.
pub(crate) struct StreamHead {
    /// The backend's row id of the stream.
    pub(crate) id: i64,
    /// Seq of the last stored event (0 for none).
    pub(crate) seq: u64,
    /// Its hash (the zero hash for none).
    pub(crate) hash: String,
    tiles: TileWriter,
    /// Leaves of the events chained since the last [`StreamHead::tile_rows`].
    leaves: Vec<Hash>,
}

/// One changed tile strip: level, index, strip number, bytes.
pub(crate) type TileRow = (u32, u64, i64, Vec<u8>);

impl StreamHead {
    /// Rebuilds the state of a stream stored at (`seq`, `hash`) from its
    /// partial tiles, as `read` returns them.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the tiles do not fit the size.
    pub(crate) fn resume(
        name: &str,
        id: i64,
        seq: u64,
        hash: String,
        read: impl FnMut(TileId) -> Option<Vec<u8>>,
    ) -> Result<Self> {
        let tiles = TileWriter::resume(seq, read)
            .map_err(|e| StoreError::Corrupt(format!("stream {name}: {e}")))?;
        Ok(Self {
            id,
            seq,
            hash,
            tiles,
            leaves: Vec::new(),
        })
    }

    /// The tiles [`StreamHead::resume`] reads for a stream of `seq` events.
    pub(crate) fn tiles_to_read(seq: u64) -> impl Iterator<Item = TileId> {
        partial_tiles(seq).into_iter().map(|(t, _)| t)
    }

    /// Whether this cache still describes the stored row: the same stream
    /// at the same head. Anything else (another node or process wrote, a
    /// commit failed after the cache moved) means reloading.
    pub(crate) fn matches(&self, id: i64, seq: u64, hash: &str) -> bool {
        self.id == id && self.seq == seq && self.hash == hash
    }

    /// The head.
    pub(crate) fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// The chain data of `ev` as the next event of `stream`: `pre` (the
    /// batcher's seal) when given, else computed here. Does not move the
    /// head; [`StreamHead::advance`] does once the event is stored.
    pub(crate) fn chain(
        &self,
        ev: &NewEvent,
        stream: &str,
        pre: Option<SealedEvent>,
    ) -> (u64, SealedEvent) {
        let seq = self.seq + 1;
        let s = pre.unwrap_or_else(|| SealedEvent::compute(ev, stream, seq, &self.hash));
        (seq, s)
    }

    /// Moves the head to a stored event.
    pub(crate) fn advance(&mut self, seq: u64, hash: &str, leaf: Hash) {
        self.seq = seq;
        self.hash.clear();
        self.hash.push_str(hash);
        self.leaves.push(leaf);
    }

    /// The tile strips the events stored since the last call change (to
    /// write in the same transaction as the events), empty when none was.
    pub(crate) fn tile_rows(&mut self) -> Vec<TileRow> {
        if self.leaves.is_empty() {
            return Vec::new();
        }
        let leaves = std::mem::take(&mut self.leaves);
        let mut out = Vec::new();
        for t in self.tiles.append(&leaves) {
            for (strip, bytes) in changed_strips(&t) {
                out.push((t.id.level, t.id.index, strip, bytes.to_vec()));
            }
        }
        out
    }
}

/// The batcher's seal of one group, taken event by event while it holds.
pub(crate) struct Seals(Option<std::vec::IntoIter<SealedEvent>>);

impl Seals {
    /// Takes `sealed` when it starts at `head`'s true head (counted in
    /// `trailkeep_sealed_groups_total{used}`), else nothing.
    pub(crate) fn new(sealed: Option<Sealed>, head: &StreamHead) -> Self {
        let offered = sealed.is_some();
        let taken = sealed
            .filter(|s| s.after.seq == head.seq && s.after.hash == head.hash)
            .map(|s| s.events.into_iter());
        if offered {
            let used = if taken.is_some() { "yes" } else { "no" };
            metrics::counter!("trailkeep_sealed_groups_total", "used" => used).increment(1);
        }
        Self(taken)
    }

    /// The next event's seal, while the seal still holds.
    pub(crate) fn next(&mut self) -> Option<SealedEvent> {
        self.0.as_mut().and_then(Iterator::next)
    }

    /// A duplicate stored nothing: the rest of the seal chains from an event
    /// that is not in the log, so none of it is used.
    pub(crate) fn broken(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::chain::ZERO_HASH_HEX;

    fn ev(id: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            event_type: "t".into(),
            time: "2026-01-01T00:00:00Z".into(),
            received: "2026-01-01T00:00:00Z".into(),
            actor: None,
            subject: None,
            data: None,
        }
    }

    #[test]
    fn a_seal_is_used_only_from_the_true_head_and_not_after_a_duplicate() {
        let head = StreamHead::resume("s", 1, 0, ZERO_HASH_HEX.into(), |_| None).unwrap();
        let evs = [ev("a"), ev("b")];
        let (sealed, _) = Sealed::compute("s", &evs, head.head());
        let mut wrong = sealed.clone();
        wrong.after.seq = 5;
        assert!(
            Seals::new(Some(wrong), &head).next().is_none(),
            "a seal from another head is not used"
        );
        let mut s = Seals::new(Some(sealed.clone()), &head);
        assert_eq!(s.next().unwrap().hash, sealed.events[0].hash);
        s.broken();
        assert!(
            s.next().is_none(),
            "nothing of a seal is used after a duplicate"
        );
    }

    #[test]
    fn chaining_matches_the_batchers_seal_and_moves_the_head_only_on_advance() {
        let mut head = StreamHead::resume("s", 1, 0, ZERO_HASH_HEX.into(), |_| None).unwrap();
        let evs = [ev("a"), ev("b")];
        let (sealed, predicted) = Sealed::compute("s", &evs, head.head());
        for (e, want) in evs.iter().zip(&sealed.events) {
            let (seq, s) = head.chain(e, "s", None);
            assert_eq!(s.hash, want.hash, "computed here = sealed by the batcher");
            assert_eq!(head.seq, seq - 1, "chain() does not move the head");
            head.advance(seq, &s.hash, s.leaf);
        }
        assert_eq!(head.head(), predicted);
        assert!(head.matches(1, 2, &predicted.hash));
        assert!(!head.matches(2, 2, &predicted.hash));
        assert!(!head.matches(1, 1, &predicted.hash));
        let rows = head.tile_rows();
        assert_eq!(rows.len(), 1, "two leaves change one strip of one tile");
        assert_eq!(rows[0].3.len(), 64);
        assert!(head.tile_rows().is_empty(), "nothing new, nothing to write");
    }
}
