//! The conformance suite every [`Store`] backend runs.
//!
//! Plain `async fn`s taking a factory that returns a fresh, empty store; a
//! backend's test module calls [`run_all`]. Each check asserts the contract in
//! `store/mod.rs`, so a backend that breaks it fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use super::{AppendGroup, KeyRecord, Store, StoreExt, StoredCheckpoint};
use crate::chain::merkle::{self, MemoryTree};
use crate::chain::{ZERO_HASH_HEX, event_hash, leaf_hash};
use crate::event::{Limits, NewEvent, validate};

fn ev(id: &str) -> NewEvent {
    validate(
        0,
        serde_json::json!({"id": id, "type": "test.event", "data": {"n": id}}),
        "2026-01-01T00:00:00.000000Z",
        &Limits::default(),
    )
    .unwrap()
}

fn group(stream: &str, ids: &[&str]) -> AppendGroup {
    AppendGroup {
        sealed: None,
        stream: stream.into(),
        events: ids.iter().map(|i| ev(i)).collect(),
    }
}

/// Returns the Merkle tree over the stored hashes of `events`.
fn tree_of(events: &[super::StoredEvent]) -> MemoryTree {
    let mut mem = MemoryTree::new();
    for e in events {
        let mut h = [0u8; 32];
        hex::decode_to_slice(&e.hash, &mut h).unwrap();
        mem.push(leaf_hash(&h));
    }
    mem
}

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S: Store, F: FnMut() -> S>(mut make: F) {
    appends_are_gapless_and_chained(&make()).await;
    duplicates_are_answered_not_stored(&make()).await;
    streams_are_independent(&make()).await;
    tiles_give_the_root_of_the_events(&make()).await;
    checkpoints_are_kept_per_size(&make()).await;
    keys_round_trip_and_revoke(&make()).await;
    source_state_and_rejected_round_trip(&make()).await;
    source_progress_adds_up_and_gaps_merge(&make()).await;
    leases_are_exclusive_expire_and_fence(&make()).await;
    archive_batches_guard_deletion_and_restore(&make()).await;
    delivery_cursors_round_trip(&make()).await;
    dead_letters_move_the_cursor_and_resolve(&make()).await;
    seals_never_change_what_is_stored(&make()).await;
    pages_never_pass_archived_seqs(&make()).await;
    scans_narrow_and_hot_ranges_find_islands(&make()).await;
}

fn sealed(stream: &str, ids: &[&str], after: super::Head) -> (AppendGroup, super::Head) {
    let mut g = group(stream, ids);
    let (s, end) = super::Sealed::compute(stream, &g.events, after);
    g.sealed = Some(s);
    (g, end)
}

/// A precomputed chain ([`super::Sealed`]) is a hint: stored bytes are the
/// same with or without it, a seal that starts anywhere but the true head is
/// ignored, and a duplicate id inside a sealed group (which stores nothing,
/// so the seal's later links are wrong) does not leak a wrong link.
pub async fn seals_never_change_what_is_stored<S: Store>(store: &S) {
    let zero = super::Head {
        seq: 0,
        hash: ZERO_HASH_HEX.into(),
    };
    // A right seal.
    let (g, end) = sealed("z", &["1", "2"], zero.clone());
    let r = store.append(vec![g]).await.unwrap();
    assert_eq!(r[0].head, end);
    // A stale seal (chained from the empty stream again): ignored.
    let (g, stale_end) = sealed("z", &["3"], zero.clone());
    let r = store.append(vec![g]).await.unwrap();
    assert_eq!(r[0].accepted[0].seq, 3);
    assert_ne!(r[0].head, stale_end, "a stale seal was stored");
    // A seal with a forged body but a right start would be taken by a store
    // that uses seals: only the batcher builds them. A duplicate in the
    // middle: "2" is stored already, "4" must link to "3", not to the
    // unstored sealed "2".
    let head = r[0].head.clone();
    let (g, _) = sealed("z", &["2", "4"], head);
    let r = store.append(vec![g]).await.unwrap();
    assert!(r[0].accepted[0].duplicate);
    assert_eq!(r[0].accepted[1].seq, 4);
    // Two sealed groups of one stream in one call, the second chained from
    // the first's predicted end.
    let (g1, mid) = sealed("z", &["5"], r[0].head.clone());
    let (g2, end) = sealed("z", &["6", "7"], mid);
    let r = store.append(vec![g1, g2]).await.unwrap();
    assert_eq!(r[1].head, end);
    assert_chain(store, "z", 7).await;
    // The same events unsealed in another stream give the same shape.
    store.append(vec![group("u", &["1", "2"])]).await.unwrap();
    let z = store.read_events("z", 1, 2).await.unwrap();
    let u = store.read_events("u", 1, 2).await.unwrap();
    assert_eq!(
        z[1].body.replace("\"stream\":\"z\"", ""),
        u[1].body
            .replace("\"stream\":\"u\"", "")
            .replace(&u[0].hash, &z[0].hash),
        "sealed and unsealed bodies differ"
    );
}

pub async fn dead_letters_move_the_cursor_and_resolve<S: Store>(store: &S) {
    use super::{DeadLetter, DeliveryCursor, StoreError};
    let letter = |s, e| DeadLetter {
        id: 0,
        destination: "hook".into(),
        stream: "s".into(),
        start_seq: s,
        end_seq: e,
        status: Some(400),
        error: "400 Bad Request: field x".into(),
        at: "2026-01-01T00:00:00.000000Z".into(),
        resolved: None,
    };
    let a = store
        .add_dead_letter(letter(1, 10), false, None)
        .await
        .unwrap();
    let b = store
        .add_dead_letter(letter(11, 20), false, None)
        .await
        .unwrap();
    assert!(b > a);
    let cur = store.delivery_cursors().await.unwrap();
    assert_eq!(
        cur,
        vec![DeliveryCursor {
            destination: "hook".into(),
            stream: "s".into(),
            seq: 20,
            archive_past: false,
            delivered: 0,
        }]
    );
    // A late dead letter for an older range never moves the cursor back.
    store
        .add_dead_letter(letter(5, 6), false, None)
        .await
        .unwrap();
    assert_eq!(store.delivery_cursors().await.unwrap()[0].seq, 20);
    let open = store.dead_letters(Some("hook"), false).await.unwrap();
    assert_eq!(
        open.iter()
            .map(|l| (l.start_seq, l.end_seq))
            .collect::<Vec<_>>(),
        vec![(1, 10), (11, 20), (5, 6)]
    );
    assert_eq!(open[0].status, Some(400));
    assert!(
        store
            .resolve_dead_letter(a, "2026-01-02T00:00:00.000000Z")
            .await
            .unwrap()
    );
    assert!(
        !store
            .resolve_dead_letter(a, "2026-01-03T00:00:00.000000Z")
            .await
            .unwrap(),
        "only once"
    );
    // The retry delivered 1..=10: counted once with the cursor's deliveries
    // (issue #15: `delivered` missed dead-letter retries).
    assert_eq!(store.delivery_cursors().await.unwrap()[0].delivered, 10);
    assert_eq!(store.dead_letters(None, false).await.unwrap().len(), 2);
    let all = store.dead_letters(None, true).await.unwrap();
    assert_eq!(
        all[0].resolved.as_deref(),
        Some("2026-01-02T00:00:00.000000Z")
    );
    assert!(
        store
            .dead_letters(Some("other"), true)
            .await
            .unwrap()
            .is_empty()
    );
    let lease = store
        .acquire_lease("destination:hook", "n1", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.release_lease(&lease).await.unwrap();
    let e = store
        .add_dead_letter(letter(21, 30), false, Some(&lease))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "{e}");
    assert_eq!(store.delivery_cursors().await.unwrap()[0].seq, 20);
}

fn batch_of(
    stream: &str,
    events: &[super::StoredEvent],
    start: u64,
    end: u64,
) -> super::ArchiveBatch {
    let last = events.iter().find(|e| e.seq == end).unwrap();
    super::ArchiveBatch {
        stream: stream.into(),
        start_seq: start,
        end_seq: end,
        count: end - start + 1,
        first_time: "2026-01-01T00:00:00.000000Z".into(),
        last_time: "2026-01-01T00:00:00.000000Z".into(),
        last_hash: last.hash.clone(),
        object_key: format!("{stream}/events/{start}-{end}"),
        object_sha256: "ab".repeat(32),
        object_size: 10,
        raw_size: 20,
        manifest_key: format!("{stream}/manifests/{start}-{end}"),
        manifest_sha256: "cd".repeat(32),
        created: "2026-01-02T00:00:00.000000Z".into(),
    }
}

/// `events` as restore brings them back (ids `{prefix}{seq - 1}`, as
/// appended by these checks).
fn as_restored(events: &[super::StoredEvent], prefix: &str) -> Vec<super::RestoredEvent> {
    events
        .iter()
        .map(|e| super::RestoredEvent {
            seq: e.seq,
            id: format!("{prefix}{}", e.seq - 1),
            event_type: "test.event".into(),
            time: "2026-01-01T00:00:00.000000Z".into(),
            received: "2026-01-01T00:00:00.000000Z".into(),
            hash: e.hash.clone(),
            body: e.body.clone(),
        })
        .collect()
}

pub async fn archive_batches_guard_deletion_and_restore<S: Store>(store: &S) {
    use super::StoreError;
    let ids: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.append(vec![group("s", &refs)]).await.unwrap();
    let all = store.read_events("s", 1, 100).await.unwrap();
    assert!(all.iter().all(|e| !e.restored));

    // Batches must start at 1, continue the last one, and stay below the head.
    let b1 = batch_of("s", &all, 1, 4);
    let mut wrong = b1.clone();
    wrong.start_seq = 2;
    wrong.count = 3;
    assert!(matches!(
        store.record_archive_batch(wrong, None).await,
        Err(StoreError::Corrupt(_))
    ));
    store.record_archive_batch(b1.clone(), None).await.unwrap();
    // Recording the same batch again (later) is a no-op; another at its start is refused.
    let mut again = b1.clone();
    again.created = "2026-02-01T00:00:00.000000Z".into();
    store.record_archive_batch(again, None).await.unwrap();
    let mut other = b1.clone();
    other.object_sha256 = "ef".repeat(32);
    let e = store.record_archive_batch(other, None).await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
    let mut gap = batch_of("s", &all, 6, 7);
    gap.count = 2;
    assert!(matches!(
        store.record_archive_batch(gap, None).await,
        Err(StoreError::Corrupt(_))
    ));
    let mut past_head = batch_of("s", &all, 5, 10);
    past_head.end_seq = 11;
    past_head.count = 7;
    assert!(matches!(
        store.record_archive_batch(past_head, None).await,
        Err(StoreError::Corrupt(_))
    ));
    store
        .record_archive_batch(batch_of("s", &all, 5, 6), None)
        .await
        .unwrap();

    let listed = store.archive_batches(Some("s"), 0, 10).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|b| (b.start_seq, b.end_seq))
            .collect::<Vec<_>>(),
        vec![(1, 4), (5, 6)]
    );
    assert_eq!(listed[0].created, b1.created, "the first recording stands");
    // Newest first, keyset-paged, across streams and for one.
    store.append(vec![group("t", &["t0", "t1"])]).await.unwrap();
    let t = store.read_events("t", 1, 10).await.unwrap();
    let mut tb = batch_of("t", &t, 1, 2);
    tb.created = "2026-01-03T00:00:00.000000Z".into();
    store.record_archive_batch(tb, None).await.unwrap();
    let order = |v: Vec<super::ArchiveBatch>| {
        v.into_iter()
            .map(|b| (b.stream, b.start_seq))
            .collect::<Vec<_>>()
    };
    let newest = store.archive_batches_newest(None, None, 10).await.unwrap();
    assert_eq!(
        order(newest.clone()),
        vec![("t".into(), 1), ("s".into(), 5), ("s".into(), 1)]
    );
    let first = store.archive_batches_newest(None, None, 2).await.unwrap();
    let rest = store
        .archive_batches_newest(None, Some(&super::BatchCursor::from(&first[1])), 2)
        .await
        .unwrap();
    assert_eq!(order(rest), vec![("s".into(), 1)]);
    let s_only = store
        .archive_batches_newest(Some("s"), None, 10)
        .await
        .unwrap();
    assert_eq!(order(s_only), vec![("s".into(), 5), ("s".into(), 1)]);
    assert_eq!(
        store.archive_batches(Some("s"), 5, 10).await.unwrap().len(),
        1
    );
    // Seqs past i64::MAX saturate; they used to wrap negative and list
    // (and read) everything from the start.
    for huge in [1u64 << 63, u64::MAX] {
        assert!(
            store
                .archive_batches(None, huge, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.read_events("s", huge, 10).await.unwrap().is_empty());
    }
    assert_eq!(
        store
            .last_archive_batch("s")
            .await
            .unwrap()
            .unwrap()
            .end_seq,
        6
    );
    assert!(store.last_archive_batch("nope").await.unwrap().is_none());
    let info = store.stream("s").await.unwrap().unwrap();
    assert_eq!((info.oldest_hot_seq, info.archived_seq), (Some(1), Some(6)));

    // Deletion never passes the archived seq, whatever the caller asks; it
    // goes in chunks, lowest first.
    let now = "2026-03-01T00:00:00.000000Z";
    assert_eq!(
        store.delete_archived("s", 100, now, 4, None).await.unwrap(),
        4
    );
    assert_eq!(store.read_events("s", 1, 1).await.unwrap()[0].seq, 5);
    assert_eq!(
        store
            .delete_archived("s", 100, now, 100, None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .delete_archived("s", 100, now, 100, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.read_events("s", 1, 100).await.unwrap().len(), 4);
    let info = store.stream("s").await.unwrap().unwrap();
    assert_eq!(
        (info.oldest_hot_seq, info.archived_seq, info.head_seq),
        (Some(7), Some(6), 10)
    );

    // Restore brings rows back, marked, skipping those present; never past the archive.
    let restored = as_restored(&all[1..3], "a");
    assert_eq!(
        store
            .restore_events("s", restored.clone(), now)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .restore_events("s", restored.clone(), now)
            .await
            .unwrap(),
        0
    );
    let back = store.read_events("s", 1, 100).await.unwrap();
    assert_eq!(
        back.iter()
            .map(|e| (e.seq, e.restored))
            .take(3)
            .collect::<Vec<_>>(),
        vec![(2, true), (3, true), (7, false)]
    );
    assert_eq!(
        back[0],
        super::StoredEvent {
            restored: true,
            ..all[1].clone()
        }
    );
    let mut beyond = restored[0].clone();
    beyond.seq = 8;
    assert!(matches!(
        store.restore_events("s", vec![beyond], now).await,
        Err(StoreError::Corrupt(_))
    ));
    // A restored row stays until it was restored before the cutoff.
    assert_eq!(
        store
            .delete_archived("s", 100, "2026-02-01T00:00:00.000000Z", 100, None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_archived("s", 100, "2026-04-01T00:00:00.000000Z", 100, None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.read_events("s", 1, 1).await.unwrap()[0].seq, 7);

    // Fenced writes.
    let lease = store
        .acquire_lease("archiver", "n1", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.release_lease(&lease).await.unwrap();
    let e = store
        .delete_archived("s", 100, now, 100, Some(&lease))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "{e}");
    let e = store
        .record_archive_batch(batch_of("s", &all, 7, 8), Some(&lease))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "{e}");
    assert_eq!(
        store
            .last_archive_batch("s")
            .await
            .unwrap()
            .unwrap()
            .end_seq,
        6
    );
}

/// A page is a run of consecutive seqs from the one asked for; an archived
/// seq that is no longer hot is answered with its range, where the hot
/// store goes on, and the objects holding it, never skipped.
pub async fn pages_never_pass_archived_seqs<S: Store>(store: &S) {
    use super::{ArchivedObject, EventPage};
    let ids: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    store.append(vec![group("s", &refs)]).await.unwrap();
    let all = store.read_events("s", 1, 100).await.unwrap();
    let info = store.stream("s").await.unwrap().unwrap();
    assert_eq!(
        info.head_received.as_deref(),
        Some("2026-01-01T00:00:00.000000Z"),
        "the head's receipt time is listed"
    );
    let seqs = |p: &EventPage| match p {
        EventPage::Events(e) => e.iter().map(|e| e.seq).collect::<Vec<_>>(),
        EventPage::Archived(r) => panic!("archived: {r:?}"),
    };
    // Nothing archived: pages as before, from 1 when asked for 0, and
    // empty past the head.
    assert_eq!(seqs(&store.read_page("s", 0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(seqs(&store.read_page("s", 9, 5).await.unwrap()), [9, 10]);
    assert!(seqs(&store.read_page("s", 11, 5).await.unwrap()).is_empty());
    assert!(seqs(&store.read_page("nope", 1, 5).await.unwrap()).is_empty());

    // 1-4 and 5-6 archived and deleted, 2-3 restored: hot holds 2, 3, 7-10.
    store
        .record_archive_batch(batch_of("s", &all, 1, 4), None)
        .await
        .unwrap();
    store
        .record_archive_batch(batch_of("s", &all, 5, 6), None)
        .await
        .unwrap();
    let now = "2026-03-01T00:00:00.000000Z";
    assert_eq!(
        store
            .delete_archived("s", 100, now, 100, None)
            .await
            .unwrap(),
        6
    );
    let restored = as_restored(&all[1..3], "p");
    store.restore_events("s", restored, now).await.unwrap();
    let object = |start: u64, end: u64| ArchivedObject {
        start_seq: start,
        end_seq: end,
        object_key: format!("s/events/{start}-{end}"),
        manifest_key: format!("s/manifests/{start}-{end}"),
    };
    let archived = |from: u64| async move {
        match store.read_page("s", from, 100).await.unwrap() {
            EventPage::Archived(r) => r,
            EventPage::Events(e) => panic!("seq {from}: events {e:?}"),
        }
    };
    let r = archived(1).await;
    assert_eq!(
        (r.from_seq, r.to_seq, r.next_hot_seq, r.oldest_hot_seq),
        (1, 1, Some(2), Some(2)),
        "{r:?}"
    );
    assert_eq!((r.archived_seq, r.head_seq), (6, 10));
    assert_eq!(r.objects, [object(1, 4)]);
    assert_eq!(
        archived(0).await,
        r,
        "0 reads from 1, which is archived: not from the oldest hot seq"
    );
    // The restored island is read up to its end, not on past the gap.
    assert_eq!(seqs(&store.read_page("s", 2, 100).await.unwrap()), [2, 3]);
    let r = archived(4).await;
    assert_eq!(
        (r.from_seq, r.to_seq, r.next_hot_seq),
        (4, 6, Some(7)),
        "{r:?}"
    );
    assert_eq!(r.objects, [object(1, 4), object(5, 6)]);
    assert_eq!(archived(6).await.objects, [object(5, 6)]);
    assert_eq!(
        seqs(&store.read_page("s", 7, 100).await.unwrap()),
        [7, 8, 9, 10]
    );
    assert_eq!(
        store
            .archive_batch_at("s", 4)
            .await
            .unwrap()
            .map(|b| b.end_seq),
        Some(4)
    );
    assert!(store.archive_batch_at("s", 7).await.unwrap().is_none());
    assert!(store.archive_batch_at("nope", 1).await.unwrap().is_none());
}

pub async fn delivery_cursors_round_trip<S: Store>(store: &S) {
    use super::DeliveryCursor;
    assert!(store.delivery_cursors().await.unwrap().is_empty());
    let c = |d: &str, s: &str, seq, past, delivered| DeliveryCursor {
        destination: d.into(),
        stream: s.into(),
        seq,
        archive_past: past,
        delivered,
    };
    store
        .put_delivery_cursor(c("b", "s", 3, false, 3), None)
        .await
        .unwrap();
    store
        .put_delivery_cursor(c("a", "s", 1, true, 1), None)
        .await
        .unwrap();
    store
        .put_delivery_cursor(c("b", "s", 5, false, 2), None)
        .await
        .unwrap();
    // A move that delivered nothing (a skip) keeps the total.
    store
        .put_delivery_cursor(c("b", "s", 9, false, 0), None)
        .await
        .unwrap();
    // Issue #15: `delivered` is the stored total (it restarted from zero
    // with the process), each move adding what it delivered.
    assert_eq!(
        store.delivery_cursors().await.unwrap(),
        vec![c("a", "s", 1, true, 1), c("b", "s", 9, false, 5)]
    );
}

pub async fn leases_are_exclusive_expire_and_fence<S: Store>(store: &S) {
    use super::SourceState;
    use std::time::Duration;
    let ttl = Duration::from_millis(300);
    let a = store
        .acquire_lease("job", "node-a", ttl)
        .await
        .unwrap()
        .expect("free lease is granted");
    assert!(
        store
            .acquire_lease("job", "node-b", ttl)
            .await
            .unwrap()
            .is_none(),
        "held by a: b waits"
    );
    let renewed = store
        .acquire_lease("job", "node-a", ttl)
        .await
        .unwrap()
        .expect("the holder renews");
    assert_eq!(renewed.token, a.token, "a renewal keeps the token");
    assert!(renewed.expires_ms >= a.expires_ms);
    let st = SourceState {
        name: "s".into(),
        stream: "x".into(),
        updated: "t".into(),
        ..Default::default()
    };
    store
        .put_source_state(st.clone(), Some(&renewed))
        .await
        .unwrap();
    // Wall-clock on purpose: the lease expires by the store's clock.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = store
        .acquire_lease("job", "node-b", ttl)
        .await
        .unwrap()
        .expect("an expired lease can be taken");
    assert!(b.token > a.token, "a new holder gets a larger token");
    let fenced = store.put_source_state(st.clone(), Some(&renewed)).await;
    assert!(
        matches!(fenced, Err(super::StoreError::Fenced(_))),
        "the old holder is fenced: {fenced:?}"
    );
    store.put_source_state(st.clone(), Some(&b)).await.unwrap();
    store.release_lease(&b).await.unwrap();
    let a2 = store
        .acquire_lease("job", "node-a", ttl)
        .await
        .unwrap()
        .expect("a released lease is free at once");
    assert!(a2.token > b.token, "tokens keep growing after a release");
    assert!(matches!(
        store.put_source_state(st, Some(&b)).await,
        Err(super::StoreError::Fenced(_))
    ));
}

pub async fn source_state_and_rejected_round_trip<S: Store>(store: &S) {
    use super::{RejectedEvent, SourceState};
    assert!(store.source_states().await.unwrap().is_empty());
    let mut st = SourceState {
        name: "up".into(),
        stream: "s".into(),
        connected: true,
        taken: 5,
        updated: "t1".into(),
        ..Default::default()
    };
    store.put_source_state(st.clone(), None).await.unwrap();
    st.last_event_id = Some("41".into());
    st.taken = 7;
    st.connected = false;
    store.put_source_state(st.clone(), None).await.unwrap();
    assert_eq!(
        store.source_states().await.unwrap(),
        vec![st],
        "the second write replaces the first"
    );
    let rej = |source: &str, n: u32| RejectedEvent {
        source: source.into(),
        at: "t".into(),
        position: format!("event {n}"),
        reason: "not JSON".into(),
        raw: "{".into(),
    };
    store.add_rejected(rej("up", 1)).await.unwrap();
    store.add_rejected(rej("other", 2)).await.unwrap();
    store.add_rejected(rej("up", 3)).await.unwrap();
    let up = store.rejected(Some("up"), 10).await.unwrap();
    assert_eq!(
        up.iter().map(|r| r.position.as_str()).collect::<Vec<_>>(),
        vec!["event 1", "event 3"]
    );
    assert_eq!(
        store.rejected(None, 2).await.unwrap().len(),
        2,
        "limit applies"
    );
}

pub async fn source_progress_adds_up_and_gaps_merge<S: Store>(store: &S) {
    use super::{GapRecorded, SourceGap, SourceProgress, SourceReceiver};
    let p = |taken: u64, time: &str| SourceProgress {
        name: "up".into(),
        stream: "s".into(),
        taken,
        duplicates: 1,
        last_event_time: Some(time.into()),
        updated: "t".into(),
        ..Default::default()
    };
    // A state an older version left "connected" is not, once written.
    store
        .put_source_state(
            super::SourceState {
                name: "up".into(),
                stream: "s".into(),
                connected: true,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    // Two writers (connections, nodes) each add their own counts: none is
    // lost, and the event time only moves forward (by instant).
    store
        .add_source_progress(p(3, "2026-01-01T00:00:05Z"), None)
        .await
        .unwrap();
    store
        .add_source_progress(p(4, "2026-01-01T00:00:04.9Z"), None)
        .await
        .unwrap();
    let mut with_id = p(0, "2026-01-01T00:00:05.5Z");
    with_id.last_event_id = Some("9".into());
    with_id.last_error = Some(("boom".into(), "t2".into()));
    store.add_source_progress(with_id, None).await.unwrap();
    let st = &store.source_states().await.unwrap()[0];
    assert_eq!((st.taken, st.duplicates), (7, 3));
    assert_eq!(
        st.last_event_time.as_deref(),
        Some("2026-01-01T00:00:05.5Z")
    );
    assert_eq!(st.last_event_id.as_deref(), Some("9"));
    assert_eq!(st.last_error.as_deref(), Some("boom"));
    assert!(!st.connected, "no node is receiving");
    // A live receiving record makes the source connected.
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let rec = SourceReceiver {
        source: "up".into(),
        node: "n1".into(),
        receiving: true,
        since_ms: now - 10_000,
        until_ms: now,
        ended: "disconnected".into(),
        pending_ms: Some(now - 20_000),
    };
    store.put_source_receiver(rec.clone()).await.unwrap();
    store
        .put_source_receiver(SourceReceiver {
            node: "n2".into(),
            receiving: false,
            ..rec.clone()
        })
        .await
        .unwrap();
    assert!(store.source_states().await.unwrap()[0].connected);
    let recs = store.source_receivers("up").await.unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0], rec, "round trip");
    store
        .put_source_receiver(SourceReceiver {
            receiving: false,
            ..rec
        })
        .await
        .unwrap();
    assert!(!store.source_states().await.unwrap()[0].connected);
    // Gaps: a new record, one covered by it (another node's view), one
    // within the merge window (merged), one beyond it (a new record).
    let gap = |start_ms: i64, end_ms: i64| SourceGap {
        source: "up".into(),
        start: format!("s{start_ms}"),
        end: format!("e{end_ms}"),
        reason: "disconnected".into(),
        resume: "none".into(),
        merged: 1,
        start_ms,
        end_ms,
    };
    assert_eq!(
        store.record_source_gap(gap(1000, 2000), 500).await.unwrap(),
        GapRecorded::New
    );
    assert_eq!(
        store.record_source_gap(gap(1200, 2000), 500).await.unwrap(),
        GapRecorded::Covered
    );
    assert_eq!(
        store.record_source_gap(gap(2400, 3000), 500).await.unwrap(),
        GapRecorded::Merged
    );
    assert_eq!(
        store.record_source_gap(gap(9000, 9100), 500).await.unwrap(),
        GapRecorded::New
    );
    store
        .record_source_gap(
            SourceGap {
                source: "other".into(),
                ..gap(1, 2)
            },
            500,
        )
        .await
        .unwrap();
    let gaps = store.source_gaps("up", 10).await.unwrap();
    assert_eq!(
        gaps.iter()
            .map(|g| (g.start_ms, g.end_ms, g.merged))
            .collect::<Vec<_>>(),
        vec![(9000, 9100, 1), (1000, 3000, 2)],
        "newest first, the merged one spanning both"
    );
    assert_eq!(gaps[1].end, "e3000");
    let st = &store.source_states().await.unwrap()[0];
    assert_eq!((st.gaps_total, st.gaps.len()), (2, 2));
    // Logging: both are due; once logged, a record is due again only when
    // it grew and its last log is older than the window.
    assert_eq!(store.gaps_to_log("up", 0).await.unwrap().len(), 2);
    store.gap_logged("up", 1000, 3000, 100).await.unwrap();
    store.gap_logged("up", 9000, 9100, 100).await.unwrap();
    assert!(store.gaps_to_log("up", 1_000_000).await.unwrap().is_empty());
    store.record_source_gap(gap(9200, 9300), 500).await.unwrap();
    assert!(
        store.gaps_to_log("up", 50).await.unwrap().is_empty(),
        "logged too recently"
    );
    let due = store.gaps_to_log("up", 101).await.unwrap();
    assert_eq!(due.iter().map(|g| g.end_ms).collect::<Vec<_>>(), vec![9300]);
}

/// Checks the chain of `stream` from seq 1: gapless, linked, hashes match bodies.
pub async fn assert_chain<S: Store>(store: &S, stream: &str, expected_len: u64) {
    let events = store.read_events(stream, 1, usize::MAX >> 1).await.unwrap();
    assert_eq!(events.len() as u64, expected_len, "stream {stream} length");
    let mut prev = ZERO_HASH_HEX.to_owned();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless seq");
        assert_eq!(
            hex::encode(event_hash(e.body.as_bytes())),
            e.hash,
            "hash of body at seq {}",
            e.seq
        );
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["prev"], prev.as_str(), "link at seq {}", e.seq);
        assert_eq!(v["seq"], e.seq, "body seq");
        assert_eq!(v["stream"], stream);
        prev = e.hash.clone();
    }
    let info = store.stream(stream).await.unwrap().unwrap();
    assert_eq!(info.head_seq, expected_len);
    assert_eq!(info.head_hash, prev);
}

pub async fn appends_are_gapless_and_chained<S: Store>(store: &S) {
    let r = store
        .append(vec![group("a", &["1", "2", "3"])])
        .await
        .unwrap();
    assert_eq!(
        r[0].accepted.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(r[0].accepted.iter().all(|a| !a.duplicate));
    assert_eq!(r[0].head.seq, 3);
    let r2 = store
        .append(vec![group("a", &["4"]), group("a", &["5", "6"])])
        .await
        .unwrap();
    assert_eq!(r2[0].accepted[0].seq, 4);
    assert_eq!(
        r2[1].accepted.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(r2[1].head.seq, 6);
    assert_chain(store, "a", 6).await;
    let page = store.read_events("a", 3, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    let info = store.stream("a").await.unwrap().unwrap();
    assert_eq!(info.oldest_hot_seq, Some(1));
}

pub async fn duplicates_are_answered_not_stored<S: Store>(store: &S) {
    let first = store.append(vec![group("d", &["x", "y"])]).await.unwrap();
    let again = store
        .append(vec![group("d", &["y", "z", "z"])])
        .await
        .unwrap();
    let a = &again[0].accepted;
    assert!(a[0].duplicate && a[0].seq == 2 && a[0].hash == first[0].accepted[1].hash);
    assert!(!a[1].duplicate && a[1].seq == 3);
    assert!(
        a[2].duplicate && a[2].seq == 3,
        "a repeat inside one call is a duplicate of the first"
    );
    assert_chain(store, "d", 3).await;
}

pub async fn streams_are_independent<S: Store>(store: &S) {
    let r = store
        .append(vec![
            group("s1", &["a"]),
            group("s2", &["a"]),
            group("s1", &["b"]),
        ])
        .await
        .unwrap();
    assert_eq!(
        (
            r[0].accepted[0].seq,
            r[1].accepted[0].seq,
            r[2].accepted[0].seq
        ),
        (1, 1, 2)
    );
    assert!(
        !r[1].accepted[0].duplicate,
        "ids are unique per stream, not globally"
    );
    assert_chain(store, "s1", 2).await;
    assert_chain(store, "s2", 1).await;
    let names: Vec<String> = store
        .streams()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["s1", "s2"]);
}

pub async fn tiles_give_the_root_of_the_events<S: Store>(store: &S) {
    // Cross tile boundaries (256) with uneven batches.
    let mut n = 0u32;
    for batch in [1usize, 255, 1, 300, 70] {
        let ids: Vec<String> = (0..batch)
            .map(|_| {
                n += 1;
                format!("t{n}")
            })
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        store.append(vec![group("tiles", &refs)]).await.unwrap();
    }
    let events = store.read_events("tiles", 1, 10_000).await.unwrap();
    let mem = tree_of(&events);
    for size in [1u64, 256, 257, 600, events.len() as u64] {
        let from_tiles = store
            .with_tiles("tiles", |r| merkle::root(&super::ReaderSource(r), size))
            .await
            .unwrap();
        assert_eq!(
            from_tiles,
            merkle::root(&mem, size).unwrap_or_else(|e| match e {}),
            "root at size {size}"
        );
    }
}

pub async fn checkpoints_are_kept_per_size<S: Store>(store: &S) {
    store.append(vec![group("c", &["1"])]).await.unwrap();
    assert!(store.latest_checkpoint("c").await.unwrap().is_none());
    assert_eq!(
        store.streams_behind_checkpoint().await.unwrap(),
        vec!["c"],
        "events and no checkpoint: behind"
    );
    let cp = |size: u64, note: &str| StoredCheckpoint {
        size,
        root: "r".into(),
        note: note.into(),
        created: "t".into(),
    };
    store.put_checkpoint("c", cp(1, "one")).await.unwrap();
    store.put_checkpoint("c", cp(1, "again")).await.unwrap();
    store.put_checkpoint("c", cp(5, "five")).await.unwrap();
    store.put_checkpoint("c", cp(3, "three")).await.unwrap();
    let latest = store.latest_checkpoint("c").await.unwrap().unwrap();
    assert_eq!((latest.size, latest.note.as_str()), (5, "five"));
    assert!(
        store.streams_behind_checkpoint().await.unwrap().is_empty(),
        "a checkpoint at or past the head: not behind"
    );
    store
        .append(vec![group("c", &["2", "3", "4", "5", "6"])])
        .await
        .unwrap();
    assert_eq!(
        store.streams_behind_checkpoint().await.unwrap(),
        vec!["c"],
        "head 6 past checkpoint 5"
    );
    assert!(
        store.put_checkpoint("nope", cp(1, "x")).await.is_err(),
        "unknown stream refused"
    );
}

pub async fn keys_round_trip_and_revoke<S: Store>(store: &S) {
    let k = KeyRecord {
        id: "k1".into(),
        scope: "read".into(),
        stream: "*".into(),
        secret_hash: [9u8; 32],
        created: "2026-01-01T00:00:00Z".into(),
        revoked: None,
    };
    store.create_key(k.clone()).await.unwrap();
    assert_eq!(store.get_key("k1").await.unwrap(), Some(k.clone()));
    assert_eq!(store.list_keys().await.unwrap(), vec![k]);
    assert!(
        store
            .revoke_key("k1", "2026-01-02T00:00:00Z")
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_key("k1", "2026-01-03T00:00:00Z")
            .await
            .unwrap(),
        "second revoke is a no-op"
    );
    assert_eq!(
        store
            .get_key("k1")
            .await
            .unwrap()
            .unwrap()
            .revoked
            .as_deref(),
        Some("2026-01-02T00:00:00Z")
    );
    assert!(store.get_key("missing").await.unwrap().is_none());
}

/// Appends random commits (groups over a few streams, ids from a small pool
/// so that repeats happen within and across commits) and checks, against a
/// model: every stream is gapless and chained from seq 1, each id got one
/// seq, and a repeated id was answered with its original seq and hash.
pub async fn random_appends_keep_the_invariants<S: Store>(
    store: &S,
    commits: &[Vec<(u8, Vec<u8>)>],
) {
    use std::collections::HashMap;
    let mut model: HashMap<(String, String), (u64, String)> = HashMap::new();
    let mut lengths: HashMap<String, u64> = HashMap::new();
    for commit in commits {
        let groups: Vec<AppendGroup> = commit
            .iter()
            .map(|(s, ids)| {
                let names: Vec<String> = ids.iter().map(|i| format!("id{i}")).collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                group(&format!("p{s}"), &refs)
            })
            .collect();
        let results = store.append(groups.clone()).await.unwrap();
        for (g, r) in groups.iter().zip(results) {
            for (ev, a) in g.events.iter().zip(r.accepted) {
                let key = (g.stream.clone(), ev.id.clone());
                match model.get(&key) {
                    Some((seq, hash)) => {
                        assert!(a.duplicate, "{key:?} repeated but not marked duplicate");
                        assert_eq!(
                            (&a.seq, &a.hash),
                            (seq, hash),
                            "{key:?} answered with another seq or hash"
                        );
                    }
                    None => {
                        assert!(!a.duplicate, "{key:?} is new");
                        let len = lengths.entry(g.stream.clone()).or_default();
                        *len += 1;
                        assert_eq!(a.seq, *len, "{key:?} seq");
                        model.insert(key, (a.seq, a.hash));
                    }
                }
            }
        }
    }
    for (stream, len) in &lengths {
        assert_chain(store, stream, *len).await;
    }
}

/// Appends, reopens the same store, appends again: the chain and tiles continue.
pub async fn reopen_keeps_chain<S: Store, F: FnMut() -> S>(mut open: F) {
    let ids: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    {
        let s = open();
        s.append(vec![group("r", &refs[..200])]).await.unwrap();
    }
    let s = open();
    s.append(vec![group("r", &refs[150..])]).await.unwrap();
    assert_chain(&s, "r", 300).await;
    let mem = tree_of(&s.read_events("r", 1, 1000).await.unwrap());
    let root = s
        .with_tiles("r", |r| merkle::root(&super::ReaderSource(r), 300))
        .await
        .unwrap();
    assert_eq!(root, mem.root());
}

/// A query's scan ([`super::EventScan`]) narrows by seq, time text, type
/// and count, and [`super::EventStore::hot_ranges`] finds the runs the hot
/// store holds, restored islands included.
pub async fn scans_narrow_and_hot_ranges_find_islands<S: Store>(store: &S) {
    use super::EventScan;
    let events: Vec<NewEvent> = (0..10)
        .map(|i| {
            validate(
                i,
                serde_json::json!({
                    "id": format!("q{i}"),
                    "type": if i % 2 == 0 { "a.even" } else { "a.odd" },
                    "time": format!("2026-01-0{}T00:00:00.5Z", i % 5 + 1),
                }),
                &format!("2026-02-0{}T00:00:00.000000Z", i / 3 + 1),
                &Limits::default(),
            )
            .unwrap()
        })
        .collect();
    store
        .append(vec![AppendGroup {
            sealed: None,
            stream: "s".into(),
            events,
        }])
        .await
        .unwrap();
    let all = EventScan {
        stream: "s".into(),
        from_seq: 1,
        to_seq: u64::MAX,
        limit: 100,
        ..EventScan::default()
    };
    let seqs = |scan: EventScan| async move {
        store
            .scan_events(&scan)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(all.clone()).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(
        seqs(EventScan {
            from_seq: 3,
            to_seq: 5,
            ..all.clone()
        })
        .await,
        [3, 4, 5]
    );
    assert_eq!(
        seqs(EventScan {
            limit: 2,
            ..all.clone()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        seqs(EventScan {
            types: Some(vec!["a.odd".into()]),
            ..all.clone()
        })
        .await,
        [2, 4, 6, 8, 10]
    );
    assert!(
        seqs(EventScan {
            types: Some(vec![]),
            ..all.clone()
        })
        .await
        .is_empty(),
        "no type allowed: nothing"
    );
    // time of seq n is 2026-01-0{(n-1)%5+1}T00:00:00.5Z.
    assert_eq!(
        seqs(EventScan {
            time_from: Some("2026-01-02T00:00:00".into()),
            time_before: Some("2026-01-03T00:00:00".into()),
            ..all.clone()
        })
        .await,
        [2, 7]
    );
    // received of seq n is 2026-02-0{(n-1)/3+1}.
    assert_eq!(
        seqs(EventScan {
            received_from: Some("2026-02-02T00:00:00".into()),
            received_before: Some("2026-02-03T00:00:00".into()),
            ..all.clone()
        })
        .await,
        [4, 5, 6]
    );
    assert!(
        seqs(EventScan {
            stream: "nope".into(),
            ..all.clone()
        })
        .await
        .is_empty()
    );

    assert_eq!(store.hot_ranges("s", 1, 100).await.unwrap(), [(1, 10)]);
    assert_eq!(store.hot_ranges("s", 4, 6).await.unwrap(), [(4, 6)]);
    assert!(store.hot_ranges("nope", 1, 100).await.unwrap().is_empty());
    let rows = store.read_events("s", 1, 100).await.unwrap();
    store
        .record_archive_batch(batch_of("s", &rows, 1, 8), None)
        .await
        .unwrap();
    let now = "2026-03-01T00:00:00.000000Z";
    store.delete_archived("s", 8, now, 100, None).await.unwrap();
    assert_eq!(store.hot_ranges("s", 1, 100).await.unwrap(), [(9, 10)]);
    store
        .restore_events("s", as_restored(&rows[1..3], "q"), now)
        .await
        .unwrap();
    store
        .restore_events("s", as_restored(&rows[5..6], "q"), now)
        .await
        .unwrap();
    assert_eq!(
        store.hot_ranges("s", 1, 100).await.unwrap(),
        [(2, 3), (6, 6), (9, 10)]
    );
    assert_eq!(
        store.hot_ranges("s", 3, 9).await.unwrap(),
        [(3, 3), (6, 6), (9, 9)]
    );
    let restored = store
        .scan_events(&EventScan {
            from_seq: 2,
            to_seq: 3,
            ..all
        })
        .await
        .unwrap();
    assert!(restored.iter().all(|e| e.restored), "{restored:?}");
}
