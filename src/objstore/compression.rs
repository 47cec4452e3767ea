//! Compression of stored objects (gzip, zstd) and bounded decompression:
//! a corrupt or hostile object must not exhaust memory.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Compression of stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (RFC 1952), level 6: what the seed tools read.
    #[default]
    Gzip,
    /// zstd, level 3.
    Zstd,
}

impl Compression {
    /// File name extension after `.ndjson`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "gz",
            Self::Zstd => "zst",
        }
    }

    /// Name as written in manifests and the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// Parses a config or manifest value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// Decompresses an object, refusing to grow past `max_raw` bytes
/// (a corrupt or hostile object must not exhaust memory).
///
/// # Errors
/// A message naming what is wrong with the stream.
pub fn decompress(bytes: &[u8], c: Compression, max_raw: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len() * 8);
    let r: Box<dyn Read + '_> = match c {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(bytes).map_err(|e| format!("zstd: {e}"))?)
        }
    };
    let n = r
        .take(max_raw + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", c.name()))?;
    if n as u64 > max_raw {
        return Err(format!("{} stream inflates past {max_raw} bytes", c.name()));
    }
    Ok(out)
}

/// Decompresses on a separate thread, sending chunks of whole lines (about
/// 1 MiB each, passed through `map` on that thread) as they come; an `Err`
/// ends the stream (corrupt data, or more than `max_raw` bytes).
pub fn decompress_chunks<T: Send + 'static>(
    bytes: bytes::Bytes,
    c: Compression,
    max_raw: u64,
    map: impl Fn(Vec<u8>) -> T + Send + 'static,
) -> tokio::sync::mpsc::Receiver<Result<T, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let run = || -> Result<(), String> {
            let r: Box<dyn Read> = match c {
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&bytes[..])),
                Compression::Zstd => Box::new(
                    zstd::stream::read::Decoder::new(&bytes[..])
                        .map_err(|e| format!("zstd: {e}"))?,
                ),
            };
            let mut r = r.take(max_raw + 1);
            let mut total = 0u64;
            let mut carry: Vec<u8> = Vec::new();
            loop {
                let mut buf = std::mem::take(&mut carry);
                let start = buf.len();
                buf.resize(start + (1 << 20), 0);
                let mut filled = start;
                while filled < buf.len() {
                    let k = r
                        .read(&mut buf[filled..])
                        .map_err(|e| format!("{}: {e}", c.name()))?;
                    if k == 0 {
                        break;
                    }
                    filled += k;
                }
                total += (filled - start) as u64;
                if total > max_raw {
                    return Err(format!("{} stream inflates past {max_raw} bytes", c.name()));
                }
                buf.truncate(filled);
                let eof = filled < start + (1 << 20);
                if !eof {
                    match buf.iter().rposition(|b| *b == b'\n') {
                        Some(cut) => carry = buf.split_off(cut + 1),
                        None => {
                            // One line longer than the buffer: keep reading.
                            carry = buf;
                            continue;
                        }
                    }
                }
                if !buf.is_empty() && tx.blocking_send(Ok(map(buf))).is_err() {
                    return Ok(()); // the reader stopped
                }
                if eof {
                    return Ok(());
                }
            }
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}
