//! The driver's conformance suite, with a scripted test destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::node::NodeId;
use std::collections::VecDeque;
use std::time::Instant;

use async_trait::async_trait;

use super::*;
use crate::event::{Limits, validate};
use crate::store::AppendGroup;
use crate::store::sqlite::SqliteStore;

/// Records every attempt; answers from a script, then `Ok`. Checks on each
/// call that the cursor is not already past the batch (never ahead).
struct Scripted {
    store: Arc<dyn Store>,
    script: Mutex<VecDeque<Result<(), DeliveryError>>>,
    attempts: Mutex<Vec<(Batch, Instant)>>,
    accepted: Mutex<Vec<Batch>>,
    /// An operator's dead-letter retry re-sends a range behind the cursor.
    retrying: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Destination for Scripted {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let cursor = self
            .store
            .delivery_cursors()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.destination == batch.destination && c.stream == batch.stream)
            .map_or(0, |c| c.seq);
        if !self.retrying.load(std::sync::atomic::Ordering::SeqCst) {
            assert_eq!(
                cursor + 1,
                batch.start_seq,
                "the cursor is never ahead of an accepted batch"
            );
        }
        self.attempts
            .lock()
            .unwrap()
            .push((batch.clone(), Instant::now()));
        let r = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        if r.is_ok() {
            self.accepted.lock().unwrap().push(batch.clone());
        }
        r
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dest: Arc<Scripted>,
}

async fn rig(script: Vec<Result<(), DeliveryError>>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    let dest = Arc::new(Scripted {
        store: store.clone(),
        script: Mutex::new(script.into()),
        attempts: Mutex::default(),
        accepted: Mutex::default(),
        retrying: std::sync::atomic::AtomicBool::new(false),
    });
    Rig {
        _dir: dir,
        store,
        dest,
    }
}

async fn append(store: &dyn Store, stream: &str, types: &[&str], n: usize, pad: usize) {
    let received = format_received(time::OffsetDateTime::now_utc());
    let events = (0..n)
        .map(|i| {
            let t = types[i % types.len()];
            validate(
                i,
                serde_json::json!({"type": t, "data": {"i": i, "pad": "p".repeat(pad)}}),
                &received,
                &Limits::default(),
            )
            .unwrap()
        })
        .collect();
    store
        .append(vec![AppendGroup {
            sealed: None,
            stream: stream.into(),
            events,
        }])
        .await
        .unwrap();
}

fn settings() -> DriverSettings {
    DriverSettings {
        max_events: 100,
        max_age: Duration::ZERO,
        poll: Duration::from_millis(10),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..DriverSettings::new("test")
    }
}

/// Waits until `done` holds, polling, or panics naming `what` after 10 s.
async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the driver until `done` holds (or panics after 10 s), then stops it.
async fn drive(r: &Rig, s: DriverSettings, done: impl Fn(&Rig) -> bool) -> DriverHandle {
    let handle = DriverHandle::default();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        r.store.clone(),
        NodeId::random(),
        r.dest.clone(),
        s,
        handle.clone(),
        rx,
    ));
    wait_until("the driver's done condition", async || done(r)).await;
    tx.send(true).unwrap();
    task.await.unwrap();
    handle
}

fn delivered(r: &Rig) -> usize {
    r.dest
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.events.len())
        .sum()
}

async fn cursor(r: &Rig, stream: &str) -> u64 {
    r.store
        .delivery_cursors()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.stream == stream)
        .map_or(0, |c| c.seq)
}

#[tokio::test]
async fn batches_by_count_and_bytes_in_seq_order() {
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 250, 0).await;
    let h = drive(&r, settings(), |r| delivered(r) == 250).await;
    let sizes: Vec<usize> = r
        .dest
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.events.len())
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    let seqs: Vec<u64> = r
        .dest
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.seq))
        .collect();
    assert_eq!(
        seqs,
        (1..=250).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(
        r.dest.accepted.lock().unwrap()[0].events[0]
            .json
            .contains("\"hash\":"),
        "the stored event, chain fields included"
    );
    assert_eq!(cursor(&r, "s").await, 250);
    assert_eq!(h.status().delivered, 250);

    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 40, 1000).await;
    let s = DriverSettings {
        max_bytes: 10_000,
        ..settings()
    };
    drive(&r, s, |r| delivered(r) == 40).await;
    for b in r.dest.accepted.lock().unwrap().iter() {
        let bytes: usize = b.events.iter().map(|e| e.json.len()).sum();
        assert!(bytes <= 10_000 && !b.events.is_empty(), "{bytes}");
    }
    assert!(r.dest.accepted.lock().unwrap().len() >= 4);
}

/// A stream that is behind is delivered in runs of full batches (the next
/// read while one is in flight), each sent only after the previous
/// cursor is stored (`Scripted` checks it on every call), and a run ends
/// after `MAX_RUN` batches so another stream gets its turn even with
/// `concurrency` 1.
#[tokio::test]
async fn runs_of_full_batches_keep_order_and_let_other_streams_in() {
    let r = rig(vec![]).await;
    let long = MAX_RUN * 3;
    append(r.store.as_ref(), "a", &["a.b"], long * 10, 0).await;
    append(r.store.as_ref(), "b", &["a.b"], 5, 0).await;
    let s = DriverSettings {
        max_events: 10,
        ..settings()
    };
    drive(&r, s, |r| delivered(r) == long * 10 + 5).await;
    let accepted = r.dest.accepted.lock().unwrap().clone();
    let a: Vec<u64> = accepted
        .iter()
        .filter(|b| b.stream == "a")
        .flat_map(|b| b.events.iter().map(|e| e.seq))
        .collect();
    assert_eq!(
        a,
        (1..=(long * 10) as u64).collect::<Vec<_>>(),
        "in order, once"
    );
    let b_at = accepted.iter().position(|b| b.stream == "b").unwrap();
    assert!(
        b_at <= MAX_RUN,
        "stream b waited behind {b_at} batches of a (a run is at most {MAX_RUN})"
    );
    assert_eq!(cursor(&r, "a").await, (long * 10) as u64);
}

#[tokio::test]
async fn a_partial_batch_waits_for_max_age() {
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 130, 0).await;
    let s = DriverSettings {
        max_age: Duration::from_secs(3600),
        ..settings()
    };
    drive(&r, s, |r| delivered(r) >= 100).await;
    assert_eq!(
        delivered(&r),
        100,
        "the full batch went, the partial one waits"
    );
    assert_eq!(cursor(&r, "s").await, 100);
}

#[tokio::test]
async fn retryable_failures_are_retried_and_the_cursor_waits() {
    let retry = |after| DeliveryError::Retryable {
        message: "HTTP 503".into(),
        retry_after: after,
        detail: None,
    };
    let r = rig(vec![
        Err(retry(None)),
        Err(retry(Some(Duration::from_millis(300)))),
        Ok(()),
    ])
    .await;
    append(r.store.as_ref(), "s", &["a.b"], 10, 0).await;
    // Retry-After is honoured up to backoff_max.
    let s = DriverSettings {
        backoff_max: Duration::from_secs(1),
        ..settings()
    };
    let h = drive(&r, s, |r| delivered(r) == 10).await;
    let attempts = r.dest.attempts.lock().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|(b, _)| b.start_seq == 1 && b.end_seq == 10),
        "the same batch again"
    );
    let gap = attempts[2].1 - attempts[1].1;
    assert!(
        gap >= Duration::from_millis(300),
        "Retry-After is a floor: {gap:?}"
    );
    let st = h.status();
    assert_eq!((st.retries, st.delivered), (2, 10));
    assert!(st.last_error.unwrap().contains("503"));
}

/// Issue #13: a receiver's huge `Retry-After` stalled the destination (and
/// hot deletion with it) for good; it is capped at `backoff_max`.
#[tokio::test]
async fn a_huge_retry_after_is_capped_at_backoff_max() {
    let r = rig(vec![Err(DeliveryError::Retryable {
        message: "receiver answered HTTP 429".into(),
        retry_after: crate::destinations::parse_retry_after("99999999999"),
        detail: None,
    })])
    .await;
    append(r.store.as_ref(), "s", &["a.b"], 10, 0).await;
    let s = DriverSettings {
        backoff_max: Duration::from_millis(200),
        ..settings()
    };
    let started = Instant::now();
    drive(&r, s, |r| delivered(r) == 10).await;
    assert_eq!(delivered(&r), 10, "delivered after the capped wait");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Issue #13: `last_error` carried URLs with query tokens and receivers'
/// bodies; the body is the admin-only detail now.
#[tokio::test]
async fn last_error_has_no_query_token_and_the_body_is_the_detail() {
    let r = rig(vec![Err(DeliveryError::Retryable {
        message: "POST https://user:pw@hec.example/x?token=tok-123 failed".into(),
        retry_after: None,
        detail: Some("HTTP 503: body-excerpt".into()),
    })])
    .await;
    append(r.store.as_ref(), "s", &["a.b"], 3, 0).await;
    let h = drive(&r, settings(), |r| delivered(r) == 3).await;
    let st = h.status();
    let e = st.last_error.unwrap();
    assert!(!e.contains("tok-123") && !e.contains("pw@"), "{e}");
    assert!(e.contains("https://hec.example/x"), "{e}");
    assert_eq!(
        st.last_error_detail.as_deref(),
        Some("HTTP 503: body-excerpt")
    );
}

#[tokio::test]
async fn the_lease_is_renewed_while_a_batch_is_retried_longer_than_its_ttl() {
    // The receiver is down for 900 ms: three times the lease TTL.
    struct DownFor {
        since: Mutex<Option<Instant>>,
        accepted: Mutex<u32>,
    }
    #[async_trait]
    impl Destination for DownFor {
        async fn deliver(&self, _batch: &Batch) -> Result<(), DeliveryError> {
            let since = *self.since.lock().unwrap().get_or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_millis(900) {
                return Err(DeliveryError::Retryable {
                    message: "down".into(),
                    retry_after: None,
                    detail: None,
                });
            }
            *self.accepted.lock().unwrap() += 1;
            Ok(())
        }
    }
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 5, 0).await;
    let dest = Arc::new(DownFor {
        since: Mutex::default(),
        accepted: Mutex::default(),
    });
    let s = DriverSettings {
        lease_ttl: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(40),
        backoff_max: Duration::from_millis(60),
        ..settings()
    };
    let handle = DriverHandle::default();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        r.store.clone(),
        NodeId::random(),
        dest.clone(),
        s,
        handle.clone(),
        rx,
    ));
    wait_until("the cursor at 5", async || cursor(&r, "s").await >= 5).await;
    // Time for a second (duplicate) send, had the cursor write been fenced
    // off. Wall-clock on purpose: a window for something not to happen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(cursor(&r, "s").await, 5);
    assert_eq!(
        *dest.accepted.lock().unwrap(),
        1,
        "accepted once: the cursor write was not fenced off"
    );
    assert!(
        !handle
            .status()
            .last_error
            .unwrap_or_default()
            .contains("lease"),
        "no fencing error"
    );
}

#[tokio::test]
async fn a_stop_during_retries_leaves_the_cursor() {
    let retry = || {
        Err(DeliveryError::Retryable {
            message: "down".into(),
            retry_after: None,
            detail: None,
        })
    };
    let r = rig((0..1000).map(|_| retry()).collect()).await;
    append(r.store.as_ref(), "s", &["a.b"], 5, 0).await;
    drive(&r, settings(), |r| {
        r.dest.attempts.lock().unwrap().len() >= 3
    })
    .await;
    assert_eq!(
        cursor(&r, "s").await,
        0,
        "nothing accepted, nothing skipped"
    );
    // Restarted with the receiver back: delivered from the cursor.
    r.dest.script.lock().unwrap().clear();
    drive(&r, settings(), |r| delivered(r) == 5).await;
    assert_eq!(cursor(&r, "s").await, 5);
}

#[tokio::test]
async fn permanent_refusals_become_dead_letters_that_can_be_retried() {
    let refuse = DeliveryError::Permanent {
        status: Some(400),
        message: "HTTP 400: bad field".into(),
        detail: None,
    };
    let r = rig(vec![Err(refuse)]).await;
    append(r.store.as_ref(), "s", &["a.b"], 150, 0).await;
    let h = drive(&r, settings(), |r| delivered(r) == 50).await;
    assert_eq!(
        cursor(&r, "s").await,
        150,
        "the cursor moved past the dead letter"
    );
    assert_eq!(h.status().dead_letters, 1);
    let letters = r.store.dead_letters(Some("test"), false).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].start_seq, letters[0].end_seq, letters[0].status),
        (1, 100, Some(400))
    );
    assert!(letters[0].error.contains("bad field"));
    // The operator fixed the receiver and retries.
    r.dest
        .retrying
        .store(true, std::sync::atomic::Ordering::SeqCst);
    retry_dead_letter(r.store.as_ref(), r.dest.as_ref(), &settings(), &letters[0])
        .await
        .unwrap();
    assert!(
        r.store
            .dead_letters(Some("test"), false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(delivered(&r), 150);
}

#[tokio::test]
async fn filters_pick_streams_and_types_and_the_cursor_covers_all() {
    let r = rig(vec![]).await;
    append(
        r.store.as_ref(),
        "auth",
        &["grant.created", "token.issued", "grant.revoked"],
        30,
        0,
    )
    .await;
    append(r.store.as_ref(), "other", &["grant.created"], 10, 0).await;
    let types = ["grant.*".to_owned(), "!grant.revoked".to_owned()];
    let s = DriverSettings {
        filter: Filter::new(&["auth".to_owned()], &types).unwrap(),
        ..settings()
    };
    drive(&r, s, |r| delivered(r) == 10).await;
    let got: Vec<String> = r
        .dest
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.event_type.clone()))
        .collect();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|t| t == "grant.created"));
    assert_eq!(
        cursor(&r, "auth").await,
        30,
        "filtered events are passed, not retried"
    );
    assert_eq!(cursor(&r, "other").await, 0, "another stream is not taken");
}

#[tokio::test]
async fn a_paused_destination_sends_nothing_until_resumed() {
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 5, 0).await;
    let handle = DriverHandle::default();
    handle.set_paused(true);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        r.store.clone(),
        NodeId::random(),
        r.dest.clone(),
        settings(),
        handle.clone(),
        rx,
    ));
    // Wall-clock on purpose: "nothing is sent while paused" needs a window
    // (ten poll intervals) to hold in.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(delivered(&r), 0);
    handle.set_paused(false);
    wait_until("five deliveries after resume", async || delivered(&r) >= 5).await;
    tx.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(delivered(&r), 5);
}

/// The archive as a feed, as `server::ArchiveFeed` wires it.
struct Feed(crate::archive::Archiver);

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Feed")
    }
}

#[async_trait]
impl ColdFeed for Feed {
    async fn read(
        &self,
        stream: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Option<Vec<crate::store::StoredEvent>>, crate::destinations::driver::ColdFeedError>
    {
        let got = self.0.read_archived(stream, from_seq, max).await?;
        Ok(got.map(|v| v.into_iter().map(Into::into).collect()))
    }
}

#[tokio::test]
async fn a_destination_behind_the_hot_store_is_fed_from_the_archive() {
    use crate::archive::{ArchiveSettings, Archiver, Bucket, BucketOptions};
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["a.b"], 250, 0).await;
    // The operator let hot deletion pass this destination's (empty) cursor.
    r.store
        .put_delivery_cursor(
            DeliveryCursor {
                destination: "test".into(),
                stream: "s".into(),
                seq: 0,
                archive_past: true,
                delivered: 0,
            },
            None,
        )
        .await
        .unwrap();
    let url = url::Url::from_directory_path(r._dir.path().join("archive")).unwrap();
    let bucket = Bucket::open(url.as_str(), &BucketOptions::default()).unwrap();
    let signer = crate::chain::note::NoteSigner::from_seed("log.test", &[3; 32]).unwrap();
    let settings_a = ArchiveSettings {
        older_than: Duration::ZERO,
        segment_events: 100,
        ..ArchiveSettings::default()
    };
    crate::archive::conformance::clock_past_now().await;
    let archiver = Archiver::new(
        r.store.clone(),
        bucket.clone(),
        signer,
        "log.test".into(),
        settings_a,
    );
    let report = archiver
        .run(time::OffsetDateTime::now_utc(), None, &|_| {})
        .await
        .unwrap();
    assert_eq!(report.deleted, 250, "nothing left hot");
    append(r.store.as_ref(), "s", &["a.b"], 20, 0).await;
    let s = DriverSettings {
        archive: Some(Arc::new(Feed(archiver))),
        ..settings()
    };
    drive(&r, s, |r| delivered(r) == 270).await;
    let seqs: Vec<u64> = r
        .dest
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.seq))
        .collect();
    assert_eq!(
        seqs,
        (1..=270).collect::<Vec<_>>(),
        "archived then hot, in order, none skipped"
    );
    assert!(
        r.dest.accepted.lock().unwrap()[0].events[0]
            .json
            .contains("\"hash\":")
    );
}

#[tokio::test]
async fn streams_go_in_parallel_up_to_the_concurrency_limit() {
    struct Slow {
        inflight: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        order: Mutex<HashMap<String, Vec<u64>>>,
    }
    #[async_trait]
    impl Destination for Slow {
        async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.inflight.fetch_add(1, SeqCst) + 1;
            self.peak.fetch_max(now, SeqCst);
            // The fake's own pace (a slow receiver), so deliveries overlap.
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.order
                .lock()
                .unwrap()
                .entry(batch.stream.clone())
                .or_default()
                .push(batch.start_seq);
            self.inflight.fetch_sub(1, SeqCst);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
    for s in ["a", "b", "c", "d"] {
        append(store.as_ref(), s, &["x.y"], 30, 0).await;
    }
    for limit in [1usize, 3] {
        let dest = Arc::new(Slow {
            inflight: 0.into(),
            peak: 0.into(),
            order: Mutex::default(),
        });
        let s = DriverSettings {
            name: format!("c{limit}"),
            max_events: 10,
            concurrency: limit,
            ..settings()
        };
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(
            store.clone(),
            NodeId::random(),
            dest.clone(),
            s,
            DriverHandle::default(),
            rx,
        ));
        wait_until("twelve deliveries started", async || {
            dest.order
                .lock()
                .unwrap()
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= 12
        })
        .await;
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(
            dest.peak.load(std::sync::atomic::Ordering::SeqCst),
            limit,
            "limit {limit}"
        );
        for starts in dest.order.lock().unwrap().values() {
            assert_eq!(*starts, vec![1, 11, 21], "each stream in order");
        }
    }
}

#[test]
fn backoff_is_capped_full_jitter_with_a_floor() {
    let s = settings();
    for attempt in 0..30 {
        let d = backoff(&s, attempt, None);
        assert!(d <= s.backoff_max, "{d:?}");
    }
    assert!(backoff(&s, 3, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    let spread: std::collections::HashSet<u128> =
        (0..50).map(|_| backoff(&s, 10, None).as_micros()).collect();
    assert!(spread.len() > 10, "jittered");
}

/// Issue #14: a stored body that is not an event was read as an event with
/// an empty type: with a type filter it was skipped and the cursor moved
/// past it, silently. Now the destination stops at it and says where.
#[tokio::test]
async fn an_unreadable_stored_body_stops_the_destination_instead_of_being_skipped() {
    let r = rig(vec![]).await;
    append(r.store.as_ref(), "s", &["grant.created"], 5, 0).await;
    // Database write access: one body replaced by something that is not an event.
    let db = r._dir.path().join("hot.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("UPDATE events SET body = '[1,2]' WHERE seq = 3", [])
        .unwrap();
    let types = ["grant.*".to_owned()];
    let s = DriverSettings {
        filter: Filter::new(&["s".to_owned()], &types).unwrap(),
        ..settings()
    };
    let h = DriverHandle::default();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        r.store.clone(),
        NodeId::random(),
        r.dest.clone(),
        s,
        h.clone(),
        rx,
    ));
    wait_until("the driver's error", async || {
        h.status().last_error.is_some()
    })
    .await;
    tx.send(true).unwrap();
    task.await.unwrap();
    assert!(
        cursor(&r, "s").await < 3,
        "the cursor does not pass the unreadable event"
    );
    assert!(
        r.dest
            .accepted
            .lock()
            .unwrap()
            .iter()
            .all(|b| b.end_seq < 3),
        "nothing at or after it is delivered"
    );
    let err = h.status().last_error.unwrap_or_default();
    assert!(err.contains("stream s seq 3"), "{err}");
}

/// Issue #18: an idle driver is woken by a commit, not by its next poll:
/// with a poll of a minute, an event committed (and signalled) is
/// delivered at once; without the signal it waits for the poll.
#[tokio::test]
async fn a_commit_wakes_an_idle_driver() {
    let r = rig(vec![]).await;
    let (commit_tx, commit_rx) = watch::channel(0u64);
    let s = DriverSettings {
        poll: Duration::from_secs(60),
        commits: Some(commit_rx),
        ..settings()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(
        r.store.clone(),
        NodeId::random(),
        r.dest.clone(),
        s,
        DriverHandle::default(),
        stop_rx,
    ));
    // Its first round delivers what is there; then it is idle.
    append(r.store.as_ref(), "s", &["a.b"], 1, 0).await;
    wait_until("the first round", async || delivered(&r) == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for round in 2..=4 {
        append(r.store.as_ref(), "s", &["a.b"], 1, 0).await;
        let asked = Instant::now();
        commit_tx.send_modify(|n| *n += 1);
        wait_until("delivery after the commit signal", async || {
            delivered(&r) == round
        })
        .await;
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "woken by the commit, not the 60 s poll"
        );
    }
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// Issue #18: an outage shows in the log at WARN (retries were DEBUG only),
/// once per half minute rather than once per attempt, and the recovery at
/// INFO.
#[tokio::test]
async fn retries_are_logged_at_warn_rate_limited() {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let retry = || DeliveryError::Retryable {
        message: "connection refused".into(),
        retry_after: None,
        detail: None,
    };
    let r = rig(vec![Err(retry()), Err(retry()), Err(retry()), Ok(())]).await;
    append(r.store.as_ref(), "s", &["a.b"], 5, 0).await;
    drive(&r, settings(), |r| delivered(r) == 5).await;
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("delivery failed; retrying"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN for three quick retries:\n{log}");
    assert!(
        warns[0].contains("destination=test") && warns[0].contains("connection refused"),
        "names the destination and the cause: {}",
        warns[0]
    );
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("delivered after retries")
            && l.contains("retries=3")),
        "{log}"
    );
}
