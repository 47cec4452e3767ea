//! `[query]`: the limits every query runs within.

use std::time::Duration;

use serde::Deserialize;

use crate::setting::SettingError;

/// `[query]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// Rows one answer may hold (default 100000); past it the query stops
    /// with an error (add a LIMIT or aggregate).
    pub max_rows: Option<usize>,
    /// How long one query may run, ms (default 60000).
    pub timeout_ms: Option<u64>,
    /// Memory one query's operators may hold, MiB (default 512); nothing
    /// spills to disk.
    pub max_memory_mb: Option<usize>,
    /// Partitions (threads' worth of work) one query reads with (default 2).
    pub threads: Option<usize>,
    /// Queries running at once on this process (default 2); more wait, up
    /// to `timeout_ms`.
    pub max_concurrent: Option<usize>,
    /// Longest SQL text, bytes (default 65536).
    pub max_sql_bytes: Option<usize>,
}

/// The validated `[query]` table.
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// Rows one answer may hold.
    pub max_rows: usize,
    /// How long one query may run.
    pub timeout: Duration,
    /// Memory one query may hold, MiB.
    pub max_memory_mb: usize,
    /// Partitions one query reads with.
    pub threads: usize,
    /// Queries at once.
    pub max_concurrent: usize,
    /// Longest SQL, bytes.
    pub max_sql_bytes: usize,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            timeout: Duration::from_secs(60),
            max_memory_mb: 512,
            threads: 2,
            max_concurrent: 2,
            max_sql_bytes: 64 * 1024,
        }
    }
}

impl RawQuery {
    /// Checks every key; the error names the key (relative to `[query]`).
    ///
    /// # Errors
    /// The first key out of range.
    pub fn validate(self) -> Result<QuerySettings, SettingError> {
        let d = QuerySettings::default();
        let within = |key: &str, v: Option<usize>, default: usize, lo: usize, hi: usize| {
            let v = v.unwrap_or(default);
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(SettingError::new(
                    key,
                    format!("must be between {lo} and {hi}, not {v}"),
                ))
            }
        };
        let timeout_ms = self.timeout_ms.unwrap_or(60_000);
        if !(100..=3_600_000).contains(&timeout_ms) {
            return Err(SettingError::new(
                "timeout_ms",
                format!("must be between 100 and 3600000 (an hour), not {timeout_ms}"),
            ));
        }
        Ok(QuerySettings {
            max_rows: within("max_rows", self.max_rows, d.max_rows, 1, 100_000_000)?,
            timeout: Duration::from_millis(timeout_ms),
            max_memory_mb: within(
                "max_memory_mb",
                self.max_memory_mb,
                d.max_memory_mb,
                16,
                1 << 20,
            )?,
            threads: within("threads", self.threads, d.threads, 1, 256)?,
            max_concurrent: within(
                "max_concurrent",
                self.max_concurrent,
                d.max_concurrent,
                1,
                1024,
            )?,
            max_sql_bytes: within(
                "max_sql_bytes",
                self.max_sql_bytes,
                d.max_sql_bytes,
                64,
                16 << 20,
            )?,
        })
    }
}
