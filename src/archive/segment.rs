//! Archive objects: one stored event per NDJSON line (hash included),
//! compressed with gzip or zstd.
//!
//! Encoding is deterministic (gzip header without name or mtime, fixed
//! levels), so a run retried after a crash produces the same bytes and a
//! create-only write that finds the object already there can compare
//! checksums.

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::chain::merkle::MemoryTree;
use crate::chain::{Hash, leaf_hash};
pub use crate::objstore::compression::{Compression, decompress, decompress_chunks};

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

/// Compresses on its own thread, fed in chunks, so reading and checking
/// the next events overlaps with compressing the previous ones (the
/// compressor is the slowest stage; see BENCHMARKS.md).
struct Piped {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<std::io::Result<Vec<u8>>>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl Piped {
    fn new(c: Compression) -> std::io::Result<Self> {
        let mut enc = Encoder::new(c)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let worker = std::thread::Builder::new()
            .name("trailkeep-compress".into())
            .spawn(move || {
                while let Ok(chunk) = rx.recv() {
                    enc.write_all(&chunk)?;
                }
                enc.finish()
            })?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(worker),
            buf: Vec::with_capacity(CHUNK + 4096),
        })
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| std::io::Error::other("compressor closed"))?;
        if tx.send(chunk).is_err() {
            // The worker stopped: its error comes from finish().
            return self.join().map(|_| ());
        }
        Ok(())
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn join(&mut self) -> std::io::Result<Vec<u8>> {
        self.tx = None;
        match self.worker.take() {
            Some(w) => w
                .join()
                .map_err(|_| std::io::Error::other("compressor thread panicked"))?,
            None => Err(std::io::Error::other("compressor already finished")),
        }
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.join()
    }
}

impl Encoder {
    fn new(c: Compression) -> std::io::Result<Self> {
        Ok(match c {
            Compression::Gzip => Self::Gzip(
                flate2::GzBuilder::new()
                    .write(Vec::with_capacity(1 << 20), flate2::Compression::new(6)),
            ),
            Compression::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(
                Vec::with_capacity(1 << 20),
                3,
            )?),
        })
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write_all(b),
            Self::Zstd(e) => e.write_all(b),
        }
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

/// A finished archive object and what its manifest records about it.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The compressed object.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, hex.
    pub sha256: String,
    /// NDJSON size before compression.
    pub raw_size: u64,
    /// First seq.
    pub start_seq: u64,
    /// Last seq.
    pub end_seq: u64,
    /// The earliest `time` of the segment's events (manifest v2's
    /// `firstTime`: producers' times are not in seq order).
    pub first_time: String,
    /// The latest `time` of the segment's events (`lastTime`).
    pub last_time: String,
    /// Hash of the event before `start_seq` (64 zeros for seq 1).
    pub prev_hash: String,
    /// Hash of the last event.
    pub last_hash: String,
    /// RFC 9162 Merkle tree hash over the range's event hashes, hex.
    pub merkle_root: String,
}

/// Builds one segment, event by event, in seq order.
pub struct SegmentBuilder {
    enc: Piped,
    tree: MemoryTree,
    raw_size: u64,
    start_seq: u64,
    end_seq: u64,
    first_time: String,
    last_time: String,
    prev_hash: String,
    last_hash: String,
    line: Vec<u8>,
}

impl SegmentBuilder {
    /// Starts a segment whose first event follows `prev_hash`.
    ///
    /// # Errors
    /// When the compressor cannot start.
    pub fn new(compression: Compression, prev_hash: &str) -> std::io::Result<Self> {
        Ok(Self {
            enc: Piped::new(compression)?,
            tree: MemoryTree::new(),
            raw_size: 0,
            start_seq: 0,
            end_seq: 0,
            first_time: String::new(),
            last_time: String::new(),
            prev_hash: prev_hash.to_owned(),
            last_hash: prev_hash.to_owned(),
            line: Vec::with_capacity(4096),
        })
    }

    /// Events added so far.
    pub fn count(&self) -> u64 {
        self.tree.size()
    }

    /// Uncompressed bytes so far.
    pub fn raw_size(&self) -> u64 {
        self.raw_size
    }

    /// Adds one event: its stored JSON line (hash included), its hash and
    /// its `time`. The caller has checked hash and link.
    ///
    /// # Errors
    /// Compressor errors.
    pub fn push(&mut self, seq: u64, hash: &Hash, line: &str, time: &str) -> std::io::Result<()> {
        if self.tree.size() == 0 {
            self.start_seq = seq;
            time.clone_into(&mut self.first_time);
            time.clone_into(&mut self.last_time);
        } else if crate::event::cmp_time(time, &self.first_time).is_lt() {
            time.clone_into(&mut self.first_time);
        } else if crate::event::cmp_time(time, &self.last_time).is_gt() {
            time.clone_into(&mut self.last_time);
        }
        self.end_seq = seq;
        self.last_hash = hex::encode(hash);
        self.tree.push(leaf_hash(hash));
        self.line.clear();
        self.line.extend_from_slice(line.as_bytes());
        self.line.push(b'\n');
        self.raw_size += self.line.len() as u64;
        self.enc.write_all(&self.line)
    }

    /// Finishes the object.
    ///
    /// # Errors
    /// Compressor errors.
    pub fn finish(self) -> std::io::Result<Segment> {
        let bytes = self.enc.finish()?;
        Ok(Segment {
            sha256: hex::encode(Sha256::digest(&bytes)),
            bytes,
            raw_size: self.raw_size,
            start_seq: self.start_seq,
            end_seq: self.end_seq,
            first_time: self.first_time,
            last_time: self.last_time,
            prev_hash: self.prev_hash,
            last_hash: self.last_hash,
            merkle_root: hex::encode(self.tree.root()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::chain::event_hash;

    fn build(c: Compression) -> Segment {
        let mut b = SegmentBuilder::new(c, crate::chain::ZERO_HASH_HEX).unwrap();
        for seq in 1..=100u64 {
            let line = format!("{{\"hash\":\"x\",\"seq\":{seq}}}");
            b.push(
                seq,
                &event_hash(line.as_bytes()),
                &line,
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        }
        b.finish().unwrap()
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        for c in [Compression::Gzip, Compression::Zstd] {
            let (a, b) = (build(c), build(c));
            assert_eq!(a.bytes, b.bytes, "{c:?}");
            assert_eq!(a.sha256, b.sha256);
            assert_eq!((a.start_seq, a.end_seq), (1, 100));
            let raw = decompress(&a.bytes, c, 1 << 20).unwrap();
            assert_eq!(raw.len() as u64, a.raw_size);
            let lines: Vec<&str> = std::str::from_utf8(&raw).unwrap().lines().collect();
            assert_eq!(lines.len(), 100);
            assert_eq!(lines[41], "{\"hash\":\"x\",\"seq\":42}");
        }
        assert_ne!(
            build(Compression::Gzip).sha256,
            build(Compression::Zstd).sha256
        );
    }

    #[tokio::test]
    async fn chunked_decompression_keeps_lines_whole() {
        let mut b = SegmentBuilder::new(Compression::Zstd, crate::chain::ZERO_HASH_HEX).unwrap();
        let long = "x".repeat(3 << 20);
        for seq in 1..=2000u64 {
            let line = if seq == 1000 {
                format!("{{\"long\":\"{long}\"}}")
            } else {
                format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "p".repeat(700))
            };
            b.push(seq, &event_hash(line.as_bytes()), &line, "t")
                .unwrap();
        }
        let s = b.finish().unwrap();
        let mut rx = decompress_chunks(
            s.bytes.clone().into(),
            Compression::Zstd,
            s.raw_size + 1,
            |c| c,
        );
        let mut lines = Vec::new();
        while let Some(c) = rx.recv().await {
            let c = c.unwrap();
            assert_eq!(c.last(), Some(&b'\n'), "chunks end at a line end");
            lines.extend(String::from_utf8(c).unwrap().lines().map(str::len));
        }
        assert_eq!(lines.len(), 2000);
        assert_eq!(lines[999], long.len() + 11);
        let mut rx = decompress_chunks(s.bytes.into(), Compression::Zstd, 1000, |c| c);
        let mut last = None;
        while let Some(c) = rx.recv().await {
            last = Some(c);
        }
        assert!(last.unwrap().unwrap_err().contains("inflates past"));
    }

    #[test]
    fn decompression_is_bounded_and_rejects_garbage() {
        let s = build(Compression::Gzip);
        let e = decompress(&s.bytes, Compression::Gzip, 100).unwrap_err();
        assert!(e.contains("inflates past 100"), "{e}");
        let mut bad = s.bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(decompress(&bad, Compression::Gzip, 1 << 20).is_err());
        assert!(decompress(b"not zstd", Compression::Zstd, 1 << 20).is_err());
    }
}
