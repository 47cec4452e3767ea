//! SQL over the hot store and the archive together: one table, `events`,
//! read through DataFusion.
//!
//! - [`Engine::run`] answers one statement for one caller: read-only (no
//!   DDL, DML, `SET`, `COPY` or file and URL tables), over the streams the
//!   caller may see ([`Visible`], enforced in the scan, below the SQL),
//!   within [`QuerySettings`]' limits on rows, time and memory.
//! - `scan.rs` plans what a query reads from its filters (hot store SQL,
//!   archive objects pruned by seq, time and `dt` before any is fetched) and
//!   reads it; `bounds.rs` reads the filters; `decode.rs` makes rows;
//!   `output.rs` writes answers (table, JSON, NDJSON, CSV, Parquet, Arrow).
//!
//! Not here: proving anything (`verify` does; a query reads what is
//! stored, checking only each archive object's recorded SHA-256).

mod bounds;
mod decode;
mod functions;
pub mod output;
mod scan;
mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures_util::StreamExt as _;

pub use scan::Visible;
pub use settings::{QuerySettings, RawQuery};

use crate::objstore::Bucket;
use crate::store::{Store, StoreError};

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The SQL does not parse; `line` and `column` locate the problem when
    /// the parser said where.
    #[error("SQL: {message}")]
    Sql {
        /// The parser's message.
        message: String,
        /// 1-based line.
        line: Option<u64>,
        /// 1-based column.
        column: Option<u64>,
    },
    /// The SQL parses but cannot run as written (an unknown column or
    /// function, a type mismatch, a statement that would change
    /// something, a division by zero).
    #[error("{0}")]
    Invalid(String),
    /// The query went past a limit (`setting` names the key).
    #[error("{message} (limit [query] {setting} = {limit})")]
    Limit {
        /// What happened.
        message: String,
        /// The `[query]` key.
        setting: &'static str,
        /// Its value.
        limit: String,
    },
    /// The hot store failed.
    #[error("hot store: {0}")]
    Store(#[from] StoreError),
    /// The archive could not be read, or an object is not what the store
    /// recorded.
    #[error("archive: {0}")]
    Archive(String),
    /// A stored event could not be read as a row.
    #[error("{0}")]
    Corrupt(String),
    /// The engine failed (a bug, not the query's fault).
    #[error("query engine: {0}")]
    Internal(String),
}

impl QueryError {
    /// Whether the caller's query is at fault (HTTP 400) rather than a
    /// limit (422) or the server (5xx).
    pub fn is_bad_query(&self) -> bool {
        matches!(self, Self::Sql { .. } | Self::Invalid(_))
    }

    fn from_datafusion(e: DataFusionError, settings: &QuerySettings) -> Self {
        match e.find_root() {
            DataFusionError::External(inner) => {
                if let Some(q) = inner.downcast_ref::<QueryError>() {
                    return q.clone_shallow();
                }
                Self::Internal(inner.to_string())
            }
            DataFusionError::SQL(p, _) => {
                let message = p.to_string();
                let (line, column) = position(&message);
                let message = message.trim_start_matches("sql parser error: ");
                let message = message
                    .rfind(" at Line: ")
                    .map_or(message, |at| &message[..at]);
                Self::Sql {
                    message: message.to_owned(),
                    line,
                    column,
                }
            }
            DataFusionError::ResourcesExhausted(m) => Self::Limit {
                message: format!("the query needs more memory than allowed: {m}"),
                setting: "max_memory_mb",
                limit: settings.max_memory_mb.to_string(),
            },
            DataFusionError::Internal(m) => Self::Internal(m.clone()),
            DataFusionError::Plan(m)
            | DataFusionError::Execution(m)
            | DataFusionError::NotImplemented(m) => Self::Invalid(m.clone()),
            other => Self::Invalid(other.to_string()),
        }
    }

    /// A copy (the error types inside are not `Clone`).
    fn clone_shallow(&self) -> Self {
        match self {
            Self::Store(e) => Self::Archive(format!("hot store: {e}")),
            Self::Sql {
                message,
                line,
                column,
            } => Self::Sql {
                message: message.clone(),
                line: *line,
                column: *column,
            },
            Self::Invalid(m) => Self::Invalid(m.clone()),
            Self::Limit {
                message,
                setting,
                limit,
            } => Self::Limit {
                message: message.clone(),
                setting,
                limit: limit.clone(),
            },
            Self::Archive(m) => Self::Archive(m.clone()),
            Self::Corrupt(m) => Self::Corrupt(m.clone()),
            Self::Internal(m) => Self::Internal(m.clone()),
        }
    }
}

/// `Line: 1, Column: 8` in a parser message.
fn position(message: &str) -> (Option<u64>, Option<u64>) {
    let after = |key: &str| {
        let at = message.rfind(key)? + key.len();
        let digits: String = message[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    (after("Line: "), after("Column: "))
}

/// Most operators one statement may hold: a long chain (`1+1+…`) parses in
/// a loop but makes an expression tree that deep, and the planner walks it
/// recursively (a read key must not be able to overflow a worker's stack).
pub const MAX_OPERATORS: usize = 200;
/// Deepest nesting of parentheses.
pub const MAX_NESTING: usize = 32;

/// Refuses SQL whose expressions would nest too deep to plan, judged on
/// its tokens (a flat scan: nothing recursive runs before this).
fn depth_guard(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| QueryError::Sql {
            message: e.message.clone(),
            line: Some(e.location.line),
            column: Some(e.location.column),
        })?;
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    for t in &tokens {
        match &t.token {
            Token::LParen | Token::LBracket => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Arrow
            | Token::LongArrow
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => operators += 1,
            Token::Word(w)
                if matches!(
                    w.keyword,
                    Keyword::AND | Keyword::OR | Keyword::NOT | Keyword::CASE | Keyword::WHEN
                ) =>
            {
                operators += 1;
            }
            _ => {}
        }
    }
    let too = |what: String| {
        QueryError::Invalid(format!(
            "{what}: split the query, or use IN (…) for long lists of alternatives"
        ))
    };
    if deepest > MAX_NESTING {
        return Err(too(format!(
            "parentheses nest {deepest} deep, more than {MAX_NESTING}"
        )));
    }
    if operators > MAX_OPERATORS {
        return Err(too(format!(
            "the SQL has {operators} operators, more than {MAX_OPERATORS}"
        )));
    }
    Ok(())
}

/// What a query read, counted as it reads (a progress line shows them).
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Rows read from the hot store.
    pub hot_rows: AtomicU64,
    /// Archive objects the plan kept after pruning.
    pub planned_objects: AtomicU64,
    /// Their stored size, bytes.
    pub planned_bytes: AtomicU64,
    /// Archive objects read.
    pub cold_objects: AtomicU64,
    /// Bytes of them read (as stored, compressed).
    pub cold_bytes: AtomicU64,
    /// Rows read from them.
    pub cold_rows: AtomicU64,
}

/// A snapshot of [`ReadStats`], with the time taken and rows answered.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct QueryStats {
    /// Rows in the answer.
    pub rows: u64,
    /// Rows read from the hot store.
    pub hot_rows_read: u64,
    /// Archive objects read.
    pub objects_read: u64,
    /// Bytes of archive objects read (compressed, as stored).
    pub bytes_read: u64,
    /// Rows read from archive objects.
    pub cold_rows_read: u64,
    /// Wall-clock time, milliseconds.
    pub elapsed_ms: u64,
}

impl ReadStats {
    /// The counters now.
    pub fn snapshot(&self, rows: u64, elapsed: Duration) -> QueryStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueryStats {
            rows,
            hot_rows_read: g(&self.hot_rows),
            objects_read: g(&self.cold_objects),
            bytes_read: g(&self.cold_bytes),
            cold_rows_read: g(&self.cold_rows),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A query's answer: its rows (within `max_rows`) and what it read.
#[derive(Debug)]
pub struct Answer {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// What was read, and the time taken.
    pub stats: QueryStats,
}

/// Runs queries over one store and archive.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    bucket: Option<Bucket>,
    settings: QuerySettings,
    running: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `store` and, when given, the archive in `bucket`
    /// (without one, a query that needs archived rows fails naming them).
    pub fn new(store: Arc<dyn Store>, bucket: Option<Bucket>, settings: QuerySettings) -> Self {
        let running = Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent));
        Self {
            store,
            bucket,
            settings,
            running,
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> &QuerySettings {
        &self.settings
    }

    fn context(
        &self,
        visible: Visible,
        stats: Arc<ReadStats>,
    ) -> Result<SessionContext, QueryError> {
        let config = SessionConfig::new()
            .with_target_partitions(self.settings.threads)
            .with_information_schema(true)
            .with_batch_size(8192);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.settings.max_memory_mb.saturating_mul(1 << 20), 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let mut ctx = SessionContext::new_with_config_rt(config, runtime);
        datafusion_functions_json::register_all(&mut ctx)
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        for f in functions::all() {
            ctx.register_udf(f);
        }
        let table = scan::EventsTable {
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            visible,
            stats,
            partitions: self.settings.threads,
        };
        ctx.register_table("events", Arc::new(table))
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        Ok(ctx)
    }

    /// Answers `sql` for a caller who sees `visible`, counting what it
    /// reads into `stats` as it goes.
    ///
    /// # Errors
    /// [`QueryError`]: bad SQL (with its position), a limit, the store or
    /// the archive.
    pub async fn run(
        &self,
        sql: &str,
        visible: Visible,
        stats: Arc<ReadStats>,
    ) -> Result<Answer, QueryError> {
        let s = &self.settings;
        if sql.len() > s.max_sql_bytes {
            return Err(QueryError::Limit {
                message: format!("the SQL is {} bytes", sql.len()),
                setting: "max_sql_bytes",
                limit: s.max_sql_bytes.to_string(),
            });
        }
        depth_guard(sql)?;
        let started = Instant::now();
        let busy = || QueryError::Limit {
            message: "too many queries are running; try again shortly".into(),
            setting: "max_concurrent",
            limit: s.max_concurrent.to_string(),
        };
        let _permit = tokio::time::timeout(s.timeout, self.running.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let ctx = self.context(visible, stats.clone())?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let work = async {
            let df = ctx
                .sql_with_options(sql, options)
                .await
                .map_err(|e| QueryError::from_datafusion(e, s))?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| QueryError::from_datafusion(e, s))?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            while let Some(b) = stream.next().await {
                let b = b.map_err(|e| QueryError::from_datafusion(e, s))?;
                rows += b.num_rows();
                if rows > s.max_rows {
                    return Err(QueryError::Limit {
                        message: format!(
                            "the answer has more than {} rows: add a LIMIT, narrow the WHERE, or aggregate",
                            s.max_rows
                        ),
                        setting: "max_rows",
                        limit: s.max_rows.to_string(),
                    });
                }
                batches.push(b);
            }
            Ok((schema, batches, rows))
        };
        let (schema, batches, rows) =
            tokio::time::timeout(s.timeout, work)
                .await
                .map_err(|_| QueryError::Limit {
                    message: format!(
                        "the query ran longer than {} s and was stopped",
                        s.timeout.as_secs_f64()
                    ),
                    setting: "timeout",
                    limit: format!("\"{}s\"", s.timeout.as_secs()),
                })??;
        Ok(Answer {
            schema,
            batches,
            stats: stats.snapshot(rows as u64, started.elapsed()),
        })
    }
}

#[cfg(test)]
mod tests;
