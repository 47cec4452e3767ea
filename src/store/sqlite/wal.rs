//! WAL checkpoints off the writer thread (see [`WalControl`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{Result, StoreError, open_conn};

/// WAL frames (4 KiB pages) past which the writer finishes a checkpoint
/// itself: 64 MiB of WAL.
pub(super) const WAL_MAX_FRAMES: i64 = 16_384;

/// How far past [`WAL_MAX_FRAMES`] the WAL may grow while the background
/// checkpointer is mid-pass before the writer waits for that pass.
const WAL_HARD_FACTOR: i64 = 4;

/// Least time between two background checkpoints when writes keep coming.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

thread_local! {
    /// Frames in the WAL after this thread's last commit, from SQLite's WAL
    /// hook (it runs on the committing thread; each store's writer is a
    /// thread of its own).
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn record_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(i64::from(frames));
    Ok(())
}

/// Moves WAL checkpoints off the writer thread.
///
/// SQLite's default runs a checkpoint inside the commit that pushes the WAL
/// past 1,000 pages, on the writer's thread: copying pages to the database
/// file and fsyncing it took about a fifth of the writer's time under load
/// (perf). Here a second connection on its own low-priority thread runs
/// `PASSIVE` checkpoints after writes, concurrently with the next commits.
/// Durability is unchanged: a commit is durable once its WAL frames are
/// fsynced (`synchronous=FULL`), and a checkpoint only copies them into the
/// database file.
///
/// A passive checkpoint never waits for the writer, so under constant
/// writes it never catches up fully and the WAL cannot restart: it would
/// grow without bound (measured: 1.4 GB in 10 s), and every append past its
/// end costs the file system a block allocation. So once the WAL holds more
/// than [`WAL_MAX_FRAMES`] frames the writer, between two commits,
/// checkpoints the few frames written since the last background pass; with
/// nothing left behind, its next transaction starts the WAL over from the
/// beginning of the file. It never waits for a background pass in progress
/// (that thread runs at low priority and may be slow to get a core; it
/// starts no new pass until the writer had its turn) unless the WAL reaches
/// [`WAL_HARD_FACTOR`] times the bound.
pub(super) struct WalControl {
    wake: std::sync::mpsc::SyncSender<()>,
    /// Held while a checkpoint runs (SQLite allows one at a time).
    running: Arc<Mutex<()>>,
    /// Set while the writer waits to finish a checkpoint itself: the
    /// background thread starts no new pass meanwhile.
    yield_to_writer: Arc<std::sync::atomic::AtomicBool>,
    /// [`WAL_MAX_FRAMES`] (smaller in tests).
    max_frames: i64,
}

impl WalControl {
    /// Starts the checkpointer for the database at `path`; the writer's
    /// connection `conn` gets the WAL hook.
    pub(super) fn start(path: &Path, conn: &Connection, max_frames: i64) -> Result<Self> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // After the pragma: it installs a WAL hook of its own.
        conn.wal_hook(Some(record_wal_frames));
        let ckpt = open_conn(path)?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let running = Arc::new(Mutex::new(()));
        let yield_to_writer = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, y) = (running.clone(), yield_to_writer.clone());
        std::thread::Builder::new()
            .name("tk-sqlite-ckpt".into())
            .spawn(move || {
                lower_priority();
                while rx.recv().is_ok() {
                    if y.load(std::sync::atomic::Ordering::Acquire) {
                        continue;
                    }
                    {
                        let _g = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        checkpoint(&ckpt);
                    }
                    std::thread::sleep(CHECKPOINT_PAUSE);
                }
                // The writer is gone: one last pass leaves a short WAL.
                let _ = checkpoint(&ckpt);
            })
            .map_err(|e| {
                StoreError::backend_message(
                    "sqlite",
                    format!("cannot start checkpointer thread: {e}"),
                )
            })?;
        Ok(Self {
            wake,
            running,
            yield_to_writer,
            max_frames,
        })
    }

    /// Called by the writer after each job: finishes a checkpoint when the
    /// WAL grew past its bound, and wakes the background checkpointer.
    pub(super) fn after_write(&self, conn: &Connection) {
        let frames = WAL_FRAMES.get();
        if frames > self.max_frames {
            let guard = if frames > WAL_HARD_FACTOR * self.max_frames {
                Some(
                    self.running
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                )
            } else {
                self.running.try_lock().ok()
            };
            match guard {
                Some(_g) => {
                    self.yield_to_writer
                        .store(false, std::sync::atomic::Ordering::Release);
                    if checkpoint(conn).is_some_and(|(log, done)| done == log) {
                        // The next write transaction restarts the WAL.
                        metrics::counter!("trailkeep_sqlite_wal_restarts_total").increment(1);
                    }
                }
                // A background pass is running: let it be the last until we had our turn.
                None => self
                    .yield_to_writer
                    .store(true, std::sync::atomic::Ordering::Release),
            }
        }
        let _ = self.wake.try_send(());
    }
}

/// Lowers the calling thread's CPU priority (nice 19): on a small machine
/// the checkpointer should take the CPU the writer leaves, not compete with
/// it; if it falls behind, the writer finishes the checkpoint (see
/// [`WalControl`]). On Linux the nice value is per thread.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Runs a `PASSIVE` checkpoint; returns (frames in the WAL, frames now in
/// the database file), or `None` when it could not run (another checkpoint
/// held the lock) or failed, which is logged: the WAL keeps every committed
/// frame until a checkpoint succeeds, so nothing is lost, the WAL only grows.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match r {
        Ok((0, log, done)) => {
            metrics::gauge!("trailkeep_sqlite_wal_frames").set(log as f64);
            Some((log, done))
        }
        Ok(_) => None,
        Err(e) => {
            metrics::counter!("trailkeep_sqlite_checkpoint_errors_total").increment(1);
            tracing::error!(error = %crate::report::Chain(&e), "SQLite WAL checkpoint failed; committed events stay in the WAL");
            None
        }
    }
}
