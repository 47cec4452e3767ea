//! The `file` destination: NDJSON appended to a file and fsynced before the
//! batch counts as accepted, rotated by size (`name.ndjson` →
//! `name.ndjson.1`, `.2`, … up to `keep`).

use std::io::Write as _;
use std::path::PathBuf;

use async_trait::async_trait;

use super::{Batch, DeliveryError, Destination};

/// Appends batches to a file.
#[derive(Debug, Clone)]
pub struct FileDestination {
    path: PathBuf,
    rotate_bytes: u64,
    keep: usize,
    encoding: super::encoding::Encoding,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl FileDestination {
    /// Appends to `path`; rotates when it would pass `rotate_bytes`, keeping
    /// `keep` rotated files.
    pub fn new(path: PathBuf, rotate_bytes: u64, keep: usize) -> Self {
        Self {
            path,
            rotate_bytes,
            keep: keep.max(1),
            encoding: super::encoding::Encoding::Trailkeep,
            lock: std::sync::Arc::default(),
        }
    }

    /// Writes events in `encoding`.
    #[must_use]
    pub fn with_encoding(mut self, encoding: super::encoding::Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn append(&self, body: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + body.len() as u64 > self.rotate_bytes {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if std::fs::metadata(&from).is_ok() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(body)?;
        f.sync_data()?;
        if let Some(dir) = self.path.parent() {
            // The directory entry too, for a newly created or rotated file.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[async_trait]
impl Destination for FileDestination {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let mut body = Vec::with_capacity(batch.events.iter().map(|e| e.json.len() + 1).sum());
        for e in &batch.events {
            body.extend_from_slice(super::encoding::encode(&e.json, self.encoding).as_bytes());
            body.push(b'\n');
        }
        let _guard = self.lock.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append(&body))
            .await
            .map_err(|e| DeliveryError::Retryable {
                message: e.to_string(),
                retry_after: None,
                detail: None,
            })?
            .map_err(|e| DeliveryError::Retryable {
                message: format!("{}: {e}", self.path.display()),
                retry_after: None,
                detail: None,
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::OutEvent;
    use super::*;

    fn batch(from: u64, n: u64) -> Batch {
        Batch {
            destination: "f".into(),
            stream: "s".into(),
            start_seq: from,
            end_seq: from + n - 1,
            events: (from..from + n)
                .map(|seq| OutEvent {
                    seq,
                    id: format!("e{seq}"),
                    event_type: "a.b".into(),
                    received: String::new(),
                    json: format!("{{\"id\":\"e{seq}\",\"seq\":{seq}}}"),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn appends_ndjson_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/audit.ndjson");
        let f = FileDestination::new(path.clone(), 200, 2);
        f.deliver(&batch(1, 3)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.starts_with("{\"id\":\"e1\""));
        for i in 0..10 {
            f.deliver(&batch(4 + i * 3, 3)).await.unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert!(std::fs::metadata(dir.path().join("out/audit.ndjson.1")).is_ok());
        assert!(std::fs::metadata(dir.path().join("out/audit.ndjson.2")).is_ok());
        assert!(
            std::fs::metadata(dir.path().join("out/audit.ndjson.3")).is_err(),
            "keeps 2"
        );
        let last: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert!(last.last().unwrap().contains("\"seq\":33"));
    }

    #[tokio::test]
    async fn an_unwritable_path_is_retryable() {
        let f = FileDestination::new(PathBuf::from("/proc/nope/audit.ndjson"), 1 << 20, 1);
        let e = f.deliver(&batch(1, 1)).await.unwrap_err();
        assert!(matches!(e, DeliveryError::Retryable { .. }), "{e}");
    }

    use crate::destinations::conformance::{Decoded, Payload, Subject};

    /// The file destination in the conformance suite. The receiver is the
    /// file: each delivery's payload is the bytes it appended.
    struct FileSubject {
        _dir: tempfile::TempDir,
        dest: Appends,
    }

    /// Notes where each accepted delivery's bytes end in the file.
    struct Appends {
        inner: FileDestination,
        path: PathBuf,
        ends: std::sync::Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl Destination for Appends {
        async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
            self.inner.deliver(batch).await?;
            let len = std::fs::metadata(&self.path).unwrap().len();
            self.ends.lock().unwrap().push(len);
            Ok(())
        }
    }

    #[async_trait]
    impl Subject for FileSubject {
        async fn start() -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.ndjson");
            let dest = Appends {
                inner: FileDestination::new(path.clone(), 1 << 30, 1),
                path,
                ends: std::sync::Mutex::default(),
            };
            Some(Self { _dir: dir, dest })
        }

        fn destination(&self) -> &dyn Destination {
            &self.dest
        }

        async fn received(&self) -> Vec<Payload> {
            let all = std::fs::read(&self.dest.path).unwrap_or_default();
            let mut start = 0;
            let mut out = Vec::new();
            for &end in self.dest.ends.lock().unwrap().iter() {
                let end = usize::try_from(end).unwrap();
                out.push(Payload {
                    at: "audit.ndjson".into(),
                    bytes: all[start..end].to_vec(),
                });
                start = end;
            }
            out
        }

        fn decode(&self, p: &Payload) -> Decoded {
            Decoded {
                ids: String::from_utf8_lossy(&p.bytes)
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["id"].as_str().unwrap().to_owned()
                    })
                    .collect(),
                size: p.bytes.len(),
            }
        }
    }

    mod conformance {
        use super::FileSubject;
        crate::stored_destination_test_suite!(FileSubject);
    }
}
