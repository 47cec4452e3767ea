//! This process's identity as a lease holder.
//!
//! `serve` claims its data directory (an exclusive lock the kernel releases
//! when the process dies, even by `kill -9`) and adopts the directory's
//! persistent id, so a node restarted after a crash takes its leases back at
//! once instead of waiting for them to expire. Every other process
//! (`archive run`, tests) uses a random id, so it never shares a lease with
//! a running node. The id is passed to whatever takes leases (checkpointer,
//! sources, destination drivers, archiver): no process-wide state.

use std::path::Path;
use std::sync::Arc;

/// File holding a serve node's persistent id, inside the data directory.
pub const NODE_ID_FILE: &str = "node.id";
/// Lock file: one `serve` per data directory.
pub const NODE_LOCK_FILE: &str = "node.lock";

/// A lease holder's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A fresh id for a process that is not a data directory's node.
    pub fn random() -> Self {
        let mut b = [0u8; 6];
        let _ = getrandom::fill(&mut b);
        Self(format!("node-{}-{}", std::process::id(), hex::encode(b)).into())
    }

    /// The id as leases record it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes `dir` for this process (a second claim, by any process, fails
    /// while the returned lock file is open) and returns the directory's
    /// persistent id, creating it on first use.
    ///
    /// # Errors
    /// The directory is claimed by another process, or unreadable.
    pub fn claim(dir: &Path) -> std::io::Result<(Self, std::fs::File)> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(NODE_LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(
                    "another trailkeep serve is running on it",
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let path = dir.join(NODE_ID_FILE);
        let id = match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Self(s.trim().into()),
            _ => {
                let id = Self::random();
                std::fs::write(&path, format!("{id}\n"))?;
                id
            }
        };
        Ok((id, lock))
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_directory_keeps_its_id_and_admits_one_claim() {
        let dir = tempfile::tempdir().unwrap();
        let (a, lock) = NodeId::claim(dir.path()).unwrap();
        let e = NodeId::claim(dir.path()).expect_err("second claim");
        assert!(e.to_string().contains("another trailkeep serve"), "{e}");
        drop(lock);
        let (b, _lock) = NodeId::claim(dir.path()).unwrap();
        assert_eq!(a, b, "the persistent id survives a restart");
        assert_ne!(NodeId::random(), NodeId::random());
        assert!(a.as_str().starts_with("node-"));
    }
}
