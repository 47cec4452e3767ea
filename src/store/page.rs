//! Reading a stream page by page without passing archived seqs in silence.
//!
//! The hot store holds a stream's recent events; older ones are archived
//! and deleted from it (and restored ranges come back as islands). A plain
//! `seq >= from` read skips whatever is no longer hot, so a reader paging a
//! stream from seq 1 would see an empty or shortened stream and believe
//! it. [`read_page`] answers either a run of consecutive seqs starting
//! exactly at the seq asked for, or the archived range that starts there
//! ([`ArchivedRange`]): where the hot store continues, and which archive
//! objects hold the rest. The HTTP read (`410 archived`) and the `events`
//! command both page with it.
//!
//! Not here: reading the archive itself (`archive::restore`).

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, StoreExt as _, StoredEvent};

/// How many archive objects an [`ArchivedRange`] names at most.
const MAX_OBJECTS: usize = 10;

/// One page of a stream, as [`super::StoreExt::read_page`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPage {
    /// Events with consecutive seqs from the seq asked for (empty: it is
    /// past the head). The page ends early where the hot store has a gap
    /// (the end of a restored range); the next page names the gap.
    Events(Vec<StoredEvent>),
    /// The seq asked for is archived and not in the hot store.
    Archived(ArchivedRange),
}

/// Seqs a reader asked for that are archived and no longer in the hot store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchivedRange {
    /// The stream.
    pub stream: String,
    /// First seq of the range: the seq asked for.
    pub from_seq: u64,
    /// Last seq of the range: the seqs `from_seq..=to_seq` are all archived
    /// and none is in the hot store.
    pub to_seq: u64,
    /// The stream's highest archived seq.
    pub archived_seq: u64,
    /// The stream's oldest seq in the hot store (None: nothing is hot).
    pub oldest_hot_seq: Option<u64>,
    /// The first hot seq after the range: read from here to go on with the
    /// events still hot (None: nothing after the range is hot yet).
    pub next_hot_seq: Option<u64>,
    /// The stream's head seq.
    pub head_seq: u64,
    /// The archive objects holding the range, from `from_seq` on, in seq
    /// order (at most ten; `GET /v1/archives` lists them all).
    pub objects: Vec<ArchivedObject>,
}

impl ArchivedRange {
    /// `seq 4 is` or `seqs 4-6 are`.
    pub fn seqs_are(&self) -> String {
        if self.from_seq == self.to_seq {
            format!("seq {} is", self.from_seq)
        } else {
            format!("seqs {}-{} are", self.from_seq, self.to_seq)
        }
    }

    /// The command that brings the range back into the hot store.
    pub fn restore_command(&self) -> String {
        format!(
            "trailkeep restore --stream {} --from {} --to {}",
            self.stream, self.from_seq, self.to_seq
        )
    }

    /// The HTTP request that does the same (an admin key).
    pub fn restore_request(&self) -> String {
        format!(
            "POST /v1/streams/{}/restore?from={}&to={}",
            self.stream, self.from_seq, self.to_seq
        )
    }
}

/// An archive object (and its manifest) holding part of an [`ArchivedRange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchivedObject {
    /// First seq in the object.
    pub start_seq: u64,
    /// Last seq in the object.
    pub end_seq: u64,
    /// Object key, relative to the archive's prefix (compressed NDJSON).
    pub object_key: String,
    /// Its signed manifest's key, relative to the archive's prefix.
    pub manifest_key: String,
}

/// See [`super::StoreExt::read_page`].
pub(super) async fn read_page<S: Store + ?Sized>(
    store: &S,
    stream: &str,
    from_seq: u64,
    limit: usize,
) -> Result<EventPage> {
    let from = from_seq.max(1);
    let mut rows = store.read_events(stream, from, limit).await?;
    // The run of consecutive seqs from `from`: a restored range ends
    // before the next hot seq, and what lies between is the next page's.
    let run = rows
        .iter()
        .zip(from..)
        .take_while(|(r, want)| r.seq == *want)
        .count();
    if run > 0 {
        rows.truncate(run);
        return Ok(EventPage::Events(rows));
    }
    // `from` is not hot. Deletion passes only seqs already recorded as
    // archived, and the batches are read after the events, so a seq the
    // read missed for deletion is at most this archived seq. (One index
    // lookup: a reader following the head asks this on every idle poll.)
    let next_hot = rows.first().map(|r| r.seq);
    let archived = store.last_archive_batch(stream).await?.map(|b| b.end_seq);
    match archived {
        Some(archived) if from <= archived => {
            let info = store.stream(stream).await?;
            let to_seq = next_hot.map_or(archived, |n| (n - 1).min(archived));
            let mut objects = Vec::new();
            if let Some(first) = store.archive_batch_at(stream, from).await? {
                let more = store
                    .archive_batches(Some(stream), first.end_seq + 1, MAX_OBJECTS - 1)
                    .await?;
                objects.extend(
                    std::iter::once(first)
                        .chain(more.into_iter().filter(|b| b.start_seq <= to_seq))
                        .map(|b| ArchivedObject {
                            start_seq: b.start_seq,
                            end_seq: b.end_seq,
                            object_key: b.object_key,
                            manifest_key: b.manifest_key,
                        }),
                );
            }
            Ok(EventPage::Archived(ArchivedRange {
                stream: stream.to_owned(),
                from_seq: from,
                to_seq,
                archived_seq: archived,
                oldest_hot_seq: info.as_ref().and_then(|i| i.oldest_hot_seq),
                next_hot_seq: next_hot,
                head_seq: info.map_or(archived, |i| i.head_seq),
                objects,
            }))
        }
        // Past the head: nothing yet.
        _ if next_hot.is_none() => Ok(EventPage::Events(Vec::new())),
        // A hole in the hot store that no archive batch explains: only a
        // store edited behind the log's back has one.
        _ => Err(StoreError::Corrupt(format!(
            "stream {stream}: seqs {from}-{} are neither in the hot store nor archived; run trailkeep verify",
            next_hot.map_or(from, |n| n - 1)
        ))),
    }
}
