//! The cold archive: hot events older than the retention window move to
//! object storage as compressed NDJSON with signed manifests, and leave the
//! hot store only after both are confirmed and the batch is recorded.
//!
//! - [`layout`]: the cold layout's keys (the bucket itself, create-only
//!   writes and the probe are [`crate::objstore`], a layer below);
//! - [`segment`]: encoding objects;
//! - [`manifest`]: the signed manifest format;
//! - [`index`]: the signed, chained index of every stream (completeness);
//! - [`archiver`]: one archive run (select → encode → put → confirm →
//!   record → delete), crash-safe at every step;
//! - [`restore`]: archived ranges back into the hot store;
//! - [`verify`]: offline verification from the bucket and a public key;
//! - [`ddl`]: external-table definitions that let warehouse engines
//!   (Athena, BigQuery, DuckDB, Trino, Spark) read the archive in place.
//!
//! Depends on `objstore`, `store` and `chain`; nothing but `server`/`cli`/`api`
//! depends on it (destinations get archived events through
//! `destinations::driver::ColdFeed`, wired by `server`).

pub mod archiver;
#[cfg(test)]
pub mod conformance;
pub mod ddl;
#[cfg(test)]
mod fault_proxy;
pub mod index;
pub mod layout;
pub mod manifest;
pub mod restore;
pub mod segment;
pub mod verify;

use std::time::Duration;

pub use crate::objstore::{
    Bucket, BucketOptions, Compression, ObjStoreError, ProbeResult, PutOutcome,
};
pub use archiver::{ArchiveSettings, Archiver, RunReport};

use crate::store::StoreError;

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive URL or its options are wrong.
    #[error("archive location: {0}")]
    Location(String),
    /// The object store failed, or refused to overwrite (see
    /// [`ObjStoreError`]).
    #[error(transparent)]
    Bucket(#[from] ObjStoreError),
    /// The store overwrites on create-only writes and single-writer mode is off.
    #[error(
        "{0} accepted a second create-only write of the same key (it silently overwrites), so it cannot guarantee that archive objects are never replaced; refusing to archive there. Use a store that honours If-None-Match, or set archive.single_writer = true if exactly one archiver ever writes to it"
    )]
    NotCreateOnly(String),
    /// The hot store's events do not chain (verify says where).
    #[error("stream {stream}: seq {seq}: {message}; not archived (run `trailkeep verify`)")]
    Chain {
        /// Stream.
        stream: String,
        /// Seq.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// The hot store failed.
    #[error(transparent)]
    Hot(#[from] StoreError),
    /// The hot store holds a stream name that cannot become an object key
    /// (only a database edited by hand can); nothing was written for it.
    #[error("stored stream name refused")]
    Name(#[from] crate::names::NameError),
    /// Another process holds the archiver lease.
    #[error(
        "another archiver is running (the archiver lease is held by another node or process); try again later"
    )]
    Busy,
    /// Encoding failed.
    #[error("encoding")]
    Encode(#[from] std::io::Error),
}

impl ArchiveError {
    /// Whether a retry may succeed: retryable bucket and hot-store errors,
    /// and a read-back that did not match (an eventually consistent
    /// listing, a torn read).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Bucket(e) => e.is_transient(),
            Self::Hot(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A duration the settings and flags refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number followed by a unit.
    #[error("{0:?} is not a duration such as 90d, 12h, 30m, 45s")]
    Malformed(String),
    /// Past [`MAX_DURATION`] (it is subtracted from the clock).
    #[error("{0:?} is longer than 1000 years (365000d); no audit record is that old")]
    TooLong(String),
}

/// Parses a duration such as `90d`, `12h`, `30m`, `45s` or `500ms`.
///
/// # Errors
/// [`DurationError`], saying what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let malformed = || DurationError::Malformed(s.to_owned());
    let n: u64 = n.parse().map_err(|_| malformed())?;
    let d = match unit {
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        _ => None,
    }
    .ok_or_else(malformed)?;
    // Subtracted from the clock by its callers: a duration reaching before
    // year 1 would overflow the date arithmetic.
    if d > MAX_DURATION {
        return Err(DurationError::TooLong(s.to_owned()));
    }
    Ok(d)
}

/// Formats a duration as [`parse_duration`] reads it, in its largest
/// whole unit: `30d`, `12h`, `90s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    match s {
        s if s > 0 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s > 0 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The longest duration [`parse_duration`] takes.
pub const MAX_DURATION: Duration = Duration::from_secs(365_000 * 86_400);

pub(crate) use crate::failpoint::failpoint;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for text in ["90d", "12h", "30m", "45s", "0s", "250ms", "1500ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "d", "5y", "-1d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Found by schemathesis: `older_than=10000000d` overflowed the
        // clock arithmetic and killed the request.
        assert_eq!(parse_duration("365000d").unwrap(), MAX_DURATION);
        for long in ["365001d", "10000000d", "99999999999999h"] {
            let e = parse_duration(long).expect_err(long);
            assert!(
                matches!(&e, DurationError::TooLong(_)) && e.to_string().contains("1000 years"),
                "{e}"
            );
        }
    }
}
