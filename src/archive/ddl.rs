//! External-table definitions for the cold archive (`trailkeep ddl`):
//! SQL that lets Athena, BigQuery, DuckDB, Trino and Spark read the
//! archived NDJSON objects where they lie (issue #16).
//!
//! Pure text generation: nothing here reads the bucket, the store or the
//! network, so what it prints depends only on its [`Request`]. It is not a
//! query engine (`trailkeep query` is) and it checks nothing: the hash
//! chain, the manifests and completeness are `trailkeep verify`'s.
//!
//! The layout it targets is today's ([`super::layout`]):
//! `{prefix}/{stream}/events/dt=YYYY-MM-DD/{first:020}-{last:020}.ndjson.gz|.zst`,
//! `dt` being the UTC day of the events' `received` stamp. The stream is a
//! plain folder, not a `stream=` partition, so each engine gets it the best
//! way it can (ARCHITECTURE.md, "Decisions": the archive layout and
//! warehouse engines):
//!
//! - DuckDB and Spark: one glob over every stream, the stream taken from
//!   each object's path;
//! - Athena: partition projection with `storage.location.template`
//!   `…/${stream}/events/dt=${dt}/` (stream `enum` when `--stream` names
//!   them, else `injected`: every query must then name its streams);
//! - BigQuery and Trino: Hive partitioning needs the partition keys right
//!   after a fixed prefix, so one table per stream (`--stream`, repeatable)
//!   and a view over all of them.
//!
//! Nothing from the URL's query (endpoint, region, service account file)
//! or user info goes into a location; no credential is ever printed.

use std::fmt::Write as _;

use crate::names::StreamName;
use crate::objstore::Compression;

/// The engine to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Amazon Athena (Hive DDL, OpenX JSON SerDe, partition projection).
    Athena,
    /// Google BigQuery external tables over Cloud Storage.
    Bigquery,
    /// DuckDB (`read_ndjson`).
    Duckdb,
    /// Trino's Hive connector.
    Trino,
    /// Apache Spark SQL (`USING json`).
    Spark,
}

impl Engine {
    /// The engine's name as `--engine` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Athena => "athena",
            Self::Bigquery => "bigquery",
            Self::Duckdb => "duckdb",
            Self::Trino => "trino",
            Self::Spark => "spark",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The engine.
    pub engine: Engine,
    /// The archive URL as configured (`file://`, `s3://`, `gs://`, `az://`).
    pub archive_url: &'a str,
    /// The table (or view) name; `schema.table` and `dataset.table` allowed.
    pub table: &'a str,
    /// Streams that get their own table (BigQuery, Trino; required there)
    /// or are listed in Athena's `enum` projection.
    pub streams: &'a [StreamName],
    /// First `dt` of Athena's date projection (`YYYY-MM-DD`).
    pub since: &'a str,
    /// The compression new objects get (`archive.compression`).
    pub compression: Compression,
    /// trailkeep's version, for the header.
    pub version: &'a str,
}

/// Why no definition could be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DdlError {
    /// The archive URL cannot be read, or names something an engine cannot
    /// read from.
    #[error("archive URL {url}: {message}")]
    Url {
        /// The URL without its query and user info.
        url: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The engine needs something the request lacks.
    #[error("{engine}: {message}")]
    Engine {
        /// The engine.
        engine: &'static str,
        /// What is missing and how to give it.
        message: String,
    },
    /// `--table` is not a plain SQL name.
    #[error(
        "table name {0:?} is not a plain SQL name: use letters, digits and _ (not starting with a digit), optionally qualified as schema.table"
    )]
    Table(String),
    /// `--since` is not a date.
    #[error("--since {0:?} is not a date: use YYYY-MM-DD")]
    Since(String),
}

/// Where the archive is, as the engines name it.
#[derive(Debug)]
struct Location {
    scheme: Scheme,
    /// Bucket or container (empty for `file://`).
    bucket: String,
    /// Key prefix (`file://`: the absolute directory), no trailing `/`.
    prefix: String,
    /// `scheme://bucket/prefix`, nothing from the query or user info.
    display: String,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    account: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    File,
    S3,
    Gs,
    Az,
}

impl Location {
    fn parse(url: &str) -> Result<Self, DdlError> {
        let bad = |display: String, message: String| DdlError::Url {
            url: display,
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            bad(
                "(unparsable)".to_owned(),
                format!("{e}; use file:///dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"),
            )
        })?;
        let scheme = match parsed.scheme() {
            "file" => Scheme::File,
            "s3" => Scheme::S3,
            "gs" => Scheme::Gs,
            "az" => Scheme::Az,
            other => {
                return Err(bad(
                    format!("{other}://…"),
                    format!(
                        "scheme {other:?} is not an archive scheme (file://, s3://, gs://, az://)"
                    ),
                ));
            }
        };
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        let query = |k: &str| {
            parsed
                .query_pairs()
                .find(|(q, _)| q == k)
                .map(|(_, v)| v.into_owned())
        };
        let (prefix, display) = if scheme == Scheme::File {
            let dir = parsed.to_file_path().map_err(|()| {
                bad(
                    "file://…".to_owned(),
                    "not a local absolute path: use file:///dir".to_owned(),
                )
            })?;
            let dir = dir.to_string_lossy().trim_end_matches('/').to_owned();
            let display = format!("file://{dir}");
            (dir, display)
        } else {
            if bucket.is_empty() {
                return Err(bad(
                    format!("{}://", parsed.scheme()),
                    "needs a bucket: scheme://bucket/prefix".to_owned(),
                ));
            }
            let prefix = parsed.path().trim_matches('/').to_owned();
            let display = if prefix.is_empty() {
                format!("{}://{bucket}", parsed.scheme())
            } else {
                format!("{}://{bucket}/{prefix}", parsed.scheme())
            };
            (prefix, display)
        };
        // A location goes into SQL string literals, globs and Athena's
        // template: refuse what any of them would read as syntax rather
        // than escape it differently for each engine.
        if let Some(c) = display
            .chars()
            .find(|c| c.is_control() || "'\"\\`*?[]{}$%".contains(*c))
        {
            return Err(bad(
                display.clone(),
                format!(
                    "{c:?} in the path would be read as SQL or glob syntax; move the archive to a prefix without it"
                ),
            ));
        }
        Ok(Self {
            scheme,
            bucket,
            prefix,
            display,
            endpoint: query("endpoint"),
            region: query("region"),
            path_style: query("path_style").as_deref() == Some("true"),
            account: query("account"),
        })
    }

    /// The archive root as `engine` addresses it, without a trailing `/`.
    fn root(&self, engine: Engine) -> Result<String, DdlError> {
        let join = |base: String| {
            if self.prefix.is_empty() {
                base
            } else {
                format!("{base}/{}", self.prefix)
            }
        };
        let refuse = |message: &str| DdlError::Url {
            url: self.display.clone(),
            message: format!("{} cannot read it: {message}", engine.name()),
        };
        Ok(match (engine, self.scheme) {
            (Engine::Duckdb, Scheme::File) => self.prefix.clone(),
            (_, Scheme::File) if engine == Engine::Athena || engine == Engine::Bigquery => {
                return Err(refuse(if engine == Engine::Athena {
                    "Athena reads Amazon S3 only; archive to s3:// (archive.url) or copy the archive there and pass --archive s3://bucket/prefix"
                } else {
                    "BigQuery external tables read Cloud Storage only; archive to gs:// or copy the archive there and pass --archive gs://bucket/prefix"
                }));
            }
            (_, Scheme::File) => format!("file://{}", self.prefix),
            (Engine::Athena, Scheme::S3) => join(format!("s3://{}", self.bucket)),
            (Engine::Athena, _) => {
                return Err(refuse(
                    "Athena reads Amazon S3 only; replicate the archive to an s3:// bucket and pass --archive s3://bucket/prefix",
                ));
            }
            (Engine::Bigquery, Scheme::Gs) => join(format!("gs://{}", self.bucket)),
            (Engine::Bigquery, _) => {
                return Err(refuse(
                    "BigQuery external tables read Cloud Storage only (gs://); copy the archive to a gs:// bucket (e.g. with Storage Transfer Service) and pass --archive gs://bucket/prefix",
                ));
            }
            (Engine::Spark, Scheme::S3) => join(format!("s3a://{}", self.bucket)),
            (_, Scheme::S3) => join(format!("s3://{}", self.bucket)),
            (_, Scheme::Gs) => join(format!("gs://{}", self.bucket)),
            (Engine::Duckdb, Scheme::Az) => join(format!("az://{}", self.bucket)),
            (_, Scheme::Az) => {
                let Some(account) = &self.account else {
                    return Err(refuse(
                        "it addresses Azure Blob as abfss://container@ACCOUNT.dfs.core.windows.net/: add ?account=ACCOUNT to the archive URL",
                    ));
                };
                let scheme = if engine == Engine::Spark {
                    "abfss"
                } else {
                    "abfs"
                };
                join(format!(
                    "{scheme}://{}@{account}.dfs.core.windows.net",
                    self.bucket
                ))
            }
        })
    }
}

/// The JSON keys of a stored event line ([`crate::event::stored::stored_json`]).
#[cfg(test)]
const KEYS: &[&str] = &[
    "actor", "data", "hash", "id", "prev", "received", "seq", "stream", "subject", "time", "type",
];

/// Returns the definition for `req`, ending in a newline.
///
/// # Errors
/// [`DdlError`] naming what is wrong: a URL an engine cannot read (Athena
/// needs s3://, BigQuery gs://), a missing `--stream` where the engine
/// needs one table per stream, a table name or date that is not plain.
pub fn generate(req: &Request<'_>) -> Result<String, DdlError> {
    let loc = Location::parse(req.archive_url)?;
    if !plain_table(req.table) {
        return Err(DdlError::Table(req.table.to_owned()));
    }
    if !is_date(req.since) {
        return Err(DdlError::Since(req.since.to_owned()));
    }
    if !req.streams.is_empty() && matches!(req.engine, Engine::Duckdb | Engine::Spark) {
        // Taking it silently would suggest a narrower table than printed.
        return Err(DdlError::Engine {
            engine: req.engine.name(),
            message: "reads every stream through one glob and takes no --stream: filter with WHERE stream = '…' (--stream is for athena, bigquery and trino)".to_owned(),
        });
    }
    let root = loc.root(req.engine)?;
    let mut out = header(req, &loc);
    match req.engine {
        Engine::Duckdb => duckdb(&mut out, req, &loc, &root),
        Engine::Athena => athena(&mut out, req, &root),
        Engine::Bigquery => bigquery(&mut out, req, &root)?,
        Engine::Trino => trino(&mut out, req, &root)?,
        Engine::Spark => spark(&mut out, req, &loc, &root),
    }
    Ok(out)
}

fn plain_table(t: &str) -> bool {
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() <= 3 && parts.iter().all(|p| part(p))
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `{table}_{stream}` with `.` and `-` of the stream as `_`.
fn stream_table(table: &str, stream: &StreamName) -> String {
    let s: String = stream
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{table}_{s}")
}

/// Per-stream table names, refusing two streams that would share one.
fn stream_tables<'a>(req: &Request<'a>) -> Result<Vec<(String, &'a StreamName)>, DdlError> {
    if req.streams.is_empty() {
        return Err(DdlError::Engine {
            engine: req.engine.name(),
            message: "needs --stream NAME (repeat it for each stream): its Hive partitioning must see the partition key right after a fixed prefix, and the stream is a folder before it, so each stream gets its own table and a view joins them (`trailkeep streams` lists the streams)".to_owned(),
        });
    }
    let mut out: Vec<(String, &StreamName)> = Vec::new();
    for s in req.streams {
        let t = stream_table(req.table, s);
        if let Some((_, other)) = out.iter().find(|(o, _)| *o == t) {
            if *other == s {
                continue;
            }
            return Err(DdlError::Engine {
                engine: req.engine.name(),
                message: format!(
                    "streams {other} and {s} would both be table {t}; generate them separately with different --table names"
                ),
            });
        }
        out.push((t, s));
    }
    Ok(out)
}

fn header(req: &Request<'_>, loc: &Location) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "-- trailkeep {} `ddl --engine {}`: the cold archive at {}",
        req.version,
        req.engine.name(),
        loc.display
    );
    h.push_str(
        "-- Layout read: {prefix}/{stream}/events/dt=YYYY-MM-DD/{first seq:020}-{last seq:020}.ndjson.gz|.zst\n\
         -- (manifests, checkpoints, _index/ and keys/ beside them are not rows).\n\
         -- One row per archived event, as stored and hashed:\n\
         --   stream      the stream (taken from the object's path)\n\
         --   seq         the event's position in its stream, gapless from 1\n\
         --   id, type    the producer's id (or the generated evt_…) and dotted type\n\
         --   time        the producer's time (RFC 3339, UTC; default: when received)\n\
         --   received    when trailkeep stored the event (UTC)\n\
         --   actor, subject, data  the producer's JSON values (NULL when absent)\n\
         --   prev, hash  the hash chain: check it with `trailkeep verify`, not SQL\n\
         --   dt          the UTC day of `received` (the object's dt= folder), NOT the day of `time`\n\
         -- Only archived events are here: newer ones (archive.older_than) are in the hot store.\n\
         -- Streams starting with _ (such as _audit) are trailkeep's own.\n\
         -- Cross-check per stream: count(*) = count(DISTINCT seq) = max(seq) when nothing is missing.\n",
    );
    h
}

fn duckdb(out: &mut String, req: &Request<'_>, loc: &Location, root: &str) {
    match loc.scheme {
        Scheme::File => {}
        Scheme::S3 => {
            out.push_str(
                "-- s3:// needs DuckDB's httpfs extension and credentials in a secret, for example:\n\
                 --   INSTALL httpfs; LOAD httpfs;\n",
            );
            let mut opts = vec!["TYPE s3".to_owned(), "PROVIDER credential_chain".to_owned()];
            if let Some(r) = &loc.region {
                opts.push(format!("REGION '{r}'"));
            }
            if let Some(e) = &loc.endpoint {
                let host = e
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                opts.push(format!("ENDPOINT '{host}'"));
                if e.starts_with("http://") {
                    opts.push("USE_SSL false".to_owned());
                }
            }
            if loc.path_style {
                opts.push("URL_STYLE 'path'".to_owned());
            }
            let _ = writeln!(out, "--   CREATE SECRET trailkeep_archive ({});", opts.join(", "));
            out.push_str("-- (credential_chain needs the aws extension; or give KEY_ID and SECRET yourself.)\n");
        }
        Scheme::Gs => out.push_str(
            "-- gs:// needs DuckDB's httpfs extension and a GCS HMAC key in a secret:\n\
             --   INSTALL httpfs; LOAD httpfs; CREATE SECRET (TYPE gcs, KEY_ID '…', SECRET '…');\n",
        ),
        Scheme::Az => out.push_str(
            "-- az:// needs DuckDB's azure extension and a secret naming the account:\n\
             --   INSTALL azure; LOAD azure; CREATE SECRET (TYPE azure, PROVIDER credential_chain, ACCOUNT_NAME '…');\n",
        ),
    }
    out.push_str(
        "-- Reads .ndjson.gz and .ndjson.zst alike (compression by file extension).\n\
         -- Filter on stream and dt to read fewer objects.\n",
    );
    let _ = write!(
        out,
        "CREATE OR REPLACE VIEW {table} AS\n\
         SELECT\n    \
             regexp_extract(filename, '/([^/]+)/events/dt=[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}/[^/]+$', 1) AS stream,\n    \
             CAST(seq AS BIGINT) AS seq,\n    \
             id,\n    \
             type,\n    \
             CAST(time AS TIMESTAMPTZ) AS time,\n    \
             CAST(received AS TIMESTAMPTZ) AS received,\n    \
             actor,\n    \
             subject,\n    \
             data,\n    \
             prev,\n    \
             hash,\n    \
             dt,\n    \
             filename AS object\n\
         FROM read_ndjson(\n    \
             '{root}/*/events/dt=*/*.ndjson.*',\n    \
             hive_partitioning = true,\n    \
             hive_types = {{'dt': 'DATE'}},\n    \
             filename = true,\n    \
             columns = {{'actor': 'JSON', 'data': 'JSON', 'hash': 'VARCHAR', 'id': 'VARCHAR', 'prev': 'VARCHAR', 'received': 'VARCHAR', 'seq': 'UBIGINT', 'subject': 'JSON', 'time': 'VARCHAR', 'type': 'VARCHAR'}}\n\
         );\n",
        table = req.table,
    );
}

fn athena(out: &mut String, req: &Request<'_>, root: &str) {
    // Partition projection, as documented in the Athena User Guide:
    // "Supported types for partition projection" (enum, date, injected)
    // and "Use dynamic ID partitioning" (injected: every query must give
    // the column static equality values), with `storage.location.template`
    // placing each projected partition at a custom path
    // (docs.aws.amazon.com/athena/latest/ug/partition-projection*.html).
    // Compression: Athena engine 3 reads GZIP and ZSTD text files (JSON
    // included) by file extension ("Hive table compression support by
    // file format", docs.aws.amazon.com/athena/latest/ug/compression-support-hive.html).
    out.push_str(
        "-- Athena: partition projection finds every (stream, dt) folder without MSCK or crawlers.\n\
         -- Objects may be .ndjson.gz or .ndjson.zst: Athena engine version 3 reads both (by file extension).\n\
         -- actor, subject and data are JSON text: json_extract_scalar(data, '$.key').\n\
         -- time and received are RFC 3339 text: from_iso8601_timestamp(received).\n",
    );
    let stream_props = if req.streams.is_empty() {
        out.push_str(
            "-- The stream is projected as `injected`: every query must name its streams,\n\
             --   WHERE stream = 'name' (or stream IN ('a', 'b')); regenerate with --stream NAME\n\
             --   (repeatable) to list them as an enum and allow queries over all streams.\n",
        );
        "  'projection.stream.type' = 'injected',\n".to_owned()
    } else {
        let names: Vec<&str> = req.streams.iter().map(StreamName::as_str).collect();
        format!(
            "  'projection.stream.type' = 'enum',\n  'projection.stream.values' = '{}',\n",
            names.join(",")
        )
    };
    let _ = writeln!(
        out,
        "-- dt is projected from {since} (--since) to today (NOW, UTC); filter on dt to list fewer folders.",
        since = req.since
    );
    let _ = write!(
        out,
        "CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n  \
           `seq` bigint,\n  \
           `id` string,\n  \
           `type` string,\n  \
           `time` string,\n  \
           `received` string,\n  \
           `actor` string,\n  \
           `subject` string,\n  \
           `data` string,\n  \
           `prev` string,\n  \
           `hash` string\n\
         )\n\
         PARTITIONED BY (`stream` string, `dt` string)\n\
         ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n\
         LOCATION '{root}/'\n\
         TBLPROPERTIES (\n  \
           'projection.enabled' = 'true',\n\
         {stream_props}  \
           'projection.dt.type' = 'date',\n  \
           'projection.dt.format' = 'yyyy-MM-dd',\n  \
           'projection.dt.range' = '{since},NOW',\n  \
           'projection.dt.interval' = '1',\n  \
           'projection.dt.interval.unit' = 'DAYS',\n  \
           'storage.location.template' = '{root}/${{stream}}/events/dt=${{dt}}/'\n\
         );\n",
        table = req.table,
        since = req.since,
    );
}

fn bigquery(out: &mut String, req: &Request<'_>, root: &str) -> Result<(), DdlError> {
    if !req.table.contains('.') {
        return Err(DdlError::Engine {
            engine: req.engine.name(),
            message: format!(
                "tables live in a dataset: pass --table DATASET.{} (or PROJECT.DATASET.{})",
                req.table, req.table
            ),
        });
    }
    let tables = stream_tables(req)?;
    out.push_str(
        "-- BigQuery: one external table per stream (Hive partitioning wants dt= right after a fixed\n\
         -- prefix, and the stream is a folder before it), and a view over all of them.\n\
         -- A stream archived later needs its own table: regenerate with every --stream.\n\
         -- BigQuery reads external NDJSON uncompressed or GZIP only: every object must be .ndjson.gz\n\
         -- (archive.compression = \"gzip\", the default); a .ndjson.zst object makes queries fail.\n",
    );
    if req.compression == Compression::Zstd {
        out.push_str(
            "-- WARNING: this configuration archives with zstd (archive.compression): BigQuery cannot read those objects.\n",
        );
    }
    out.push_str(
        "-- time and received are RFC 3339 text: TIMESTAMP(received). dt is the DATE of the folder.\n",
    );
    for (t, s) in &tables {
        let prefix = format!("{root}/{s}/events");
        let _ = write!(
            out,
            "\nCREATE OR REPLACE EXTERNAL TABLE `{t}` (\n  \
               seq INT64,\n  \
               stream STRING,\n  \
               id STRING,\n  \
               type STRING,\n  \
               time STRING,\n  \
               received STRING,\n  \
               actor JSON,\n  \
               subject JSON,\n  \
               data JSON,\n  \
               prev STRING,\n  \
               hash STRING\n\
             )\n\
             WITH PARTITION COLUMNS (dt DATE)\n\
             OPTIONS (\n  \
               format = 'NEWLINE_DELIMITED_JSON',\n  \
               compression = 'GZIP',\n  \
               uris = ['{prefix}/*'],\n  \
               hive_partition_uri_prefix = '{prefix}'\n\
             );\n"
        );
    }
    let selects: Vec<String> = tables
        .iter()
        .map(|(t, _)| format!("SELECT * FROM `{t}`"))
        .collect();
    let _ = write!(
        out,
        "\nCREATE OR REPLACE VIEW `{}` AS\n{};\n",
        req.table,
        selects.join("\nUNION ALL\n")
    );
    Ok(())
}

fn trino(out: &mut String, req: &Request<'_>, root: &str) -> Result<(), DdlError> {
    let tables = stream_tables(req)?;
    out.push_str(
        "-- Trino (Hive connector; run in a Hive catalog, e.g. USE hive.default): one table per stream\n\
         -- (its partitions must sit right under the table's location, and the stream is a folder\n\
         -- above dt=), and a view over all of them. OPENX_JSON keeps actor, subject and data as JSON\n\
         -- text: json_extract_scalar(data, '$.key'). Objects may be .ndjson.gz or .ndjson.zst\n\
         -- (compression by file extension).\n\
         -- New dt= days appear after CALL system.sync_partition_metadata again (schedule it daily).\n",
    );
    let cols = "  seq bigint,\n  stream varchar,\n  id varchar,\n  type varchar,\n  time varchar,\n  received varchar,\n  actor varchar,\n  subject varchar,\n  data varchar,\n  prev varchar,\n  hash varchar,\n  dt varchar\n";
    for (t, s) in &tables {
        let _ = write!(
            out,
            "\nCREATE TABLE IF NOT EXISTS {t} (\n{cols})\n\
             WITH (\n  \
               external_location = '{root}/{s}/events',\n  \
               format = 'OPENX_JSON',\n  \
               partitioned_by = ARRAY['dt']\n\
             );\n"
        );
    }
    for (t, _) in &tables {
        // `[catalog.][schema.]table`: the procedure lives in the catalog
        // and takes the schema and table apart.
        let parts: Vec<&str> = t.split('.').collect();
        let (catalog, schema, name) = match parts.as_slice() {
            [c, s, n] => (format!("{c}."), *s, *n),
            [s, n] => (String::new(), *s, *n),
            _ => (String::new(), "default", t.as_str()),
        };
        let _ = writeln!(
            out,
            "CALL {catalog}system.sync_partition_metadata('{schema}', '{name}', 'ADD');"
        );
    }
    let selects: Vec<String> = tables
        .iter()
        .map(|(t, _)| {
            format!(
                "SELECT seq, stream, id, type, from_iso8601_timestamp(time) AS time, from_iso8601_timestamp(received) AS received, actor, subject, data, prev, hash, CAST(dt AS date) AS dt FROM {t}"
            )
        })
        .collect();
    let _ = write!(
        out,
        "\nCREATE OR REPLACE VIEW {} AS\n{};\n",
        req.table,
        selects.join("\nUNION ALL\n")
    );
    Ok(())
}

fn spark(out: &mut String, req: &Request<'_>, loc: &Location, root: &str) {
    let files = format!("{}_files", req.table);
    out.push_str(
        "-- Spark SQL: one table over every stream's objects, and a view that takes stream and dt\n\
         -- from each object's path (Spark's partition discovery wants a single root above dt=,\n\
         -- and the stream is a folder above it). Reads .ndjson.gz and .ndjson.zst alike.\n\
         -- actor, subject and data are JSON text: get_json_object(data, '$.key').\n",
    );
    match loc.scheme {
        Scheme::S3 => out.push_str(
            "-- s3a:// needs hadoop-aws on the classpath and spark.hadoop.fs.s3a.* settings (endpoint,\n\
             -- path style access, credentials provider): credentials never belong in this SQL.\n",
        ),
        Scheme::Gs => out.push_str("-- gs:// needs the Cloud Storage connector for Hadoop.\n"),
        Scheme::Az => out.push_str("-- abfss:// needs hadoop-azure and the account's credentials in the Spark config.\n"),
        Scheme::File => {}
    }
    let _ = write!(
        out,
        "CREATE TABLE IF NOT EXISTS {files} (\n  \
           seq BIGINT,\n  \
           id STRING,\n  \
           type STRING,\n  \
           time STRING,\n  \
           received STRING,\n  \
           actor STRING,\n  \
           subject STRING,\n  \
           data STRING,\n  \
           prev STRING,\n  \
           hash STRING\n\
         )\n\
         USING json\n\
         OPTIONS (path '{root}/*/events/dt=*/*.ndjson.{{gz,zst}}');\n\
         \n\
         CREATE OR REPLACE VIEW {table} AS\n\
         SELECT\n  \
           regexp_extract(_metadata.file_path, '/([^/]+)/events/dt=[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}/[^/]+$', 1) AS stream,\n  \
           seq,\n  \
           id,\n  \
           type,\n  \
           to_timestamp(time) AS time,\n  \
           to_timestamp(received) AS received,\n  \
           actor,\n  \
           subject,\n  \
           data,\n  \
           prev,\n  \
           hash,\n  \
           to_date(regexp_extract(_metadata.file_path, '/events/dt=([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})/', 1)) AS dt,\n  \
           _metadata.file_path AS object\n\
         FROM {files};\n",
        table = req.table,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn streams(names: &[&str]) -> Vec<StreamName> {
        names
            .iter()
            .map(|n| StreamName::parse(n).unwrap())
            .collect()
    }

    fn gen_with(engine: Engine, url: &str, streams: &[StreamName]) -> Result<String, DdlError> {
        generate(&Request {
            engine,
            archive_url: url,
            // BigQuery tables live in a dataset.
            table: if engine == Engine::Bigquery {
                "ds.trailkeep_events"
            } else {
                "trailkeep_events"
            },
            streams,
            since: "2026-01-01",
            compression: Compression::Gzip,
            version: "9.9.9",
        })
    }

    const ALL: [Engine; 5] = [
        Engine::Athena,
        Engine::Bigquery,
        Engine::Duckdb,
        Engine::Trino,
        Engine::Spark,
    ];

    /// Every output names the version, the archive and what dt means, and
    /// never anything from the URL's query or user info.
    #[test]
    fn header_names_version_archive_and_dt_and_no_query_or_userinfo() {
        let s = streams(&["auth"]);
        for (engine, url, shown) in [
            (
                Engine::Athena,
                "s3://user:pw@bkt/pre/?region=eu-west-1&endpoint=https://e.example",
                "s3://bkt/pre",
            ),
            (
                Engine::Bigquery,
                "gs://bkt/pre?service_account=/etc/secret-sa.json",
                "gs://bkt/pre",
            ),
            (
                Engine::Duckdb,
                "s3://user:pw@bkt/pre?region=eu-west-1",
                "s3://bkt/pre",
            ),
            (
                Engine::Trino,
                "az://ctr/pre?account=acct&credentials=metadata",
                "az://ctr/pre",
            ),
            (
                Engine::Spark,
                "s3://bkt?endpoint=http://127.0.0.1:9000&path_style=true",
                "s3://bkt",
            ),
        ] {
            let per_stream = !matches!(engine, Engine::Duckdb | Engine::Spark);
            let out = gen_with(engine, url, if per_stream { &s } else { &[] }).unwrap();
            let first = out.lines().next().unwrap();
            assert!(first.starts_with("-- trailkeep 9.9.9 "), "{first}");
            assert!(
                first.ends_with(&format!("the cold archive at {shown}")),
                "{first}"
            );
            assert!(
                out.contains("dt          the UTC day of `received`"),
                "{out}"
            );
            for secret in [
                "pw",
                "user:",
                "secret-sa",
                "service_account",
                "credentials=",
            ] {
                assert!(
                    !out.contains(secret),
                    "{engine:?} printed {secret:?}:\n{out}"
                );
            }
        }
    }

    #[test]
    fn each_engine_addresses_the_archive_its_own_way() {
        let s = streams(&["auth", "billing.v2"]);
        let duck = gen_with(Engine::Duckdb, "file:///var/lib/tk/archive/", &[]).unwrap();
        assert!(
            duck.contains("'/var/lib/tk/archive/*/events/dt=*/*.ndjson.*'"),
            "{duck}"
        );
        let duck = gen_with(
            Engine::Duckdb,
            "s3://b/p?endpoint=http://127.0.0.1:9000&path_style=true",
            &[],
        )
        .unwrap();
        assert!(
            duck.contains("'s3://b/p/*/events/dt=*/*.ndjson.*'"),
            "{duck}"
        );
        assert!(
            duck.contains("ENDPOINT '127.0.0.1:9000', USE_SSL false, URL_STYLE 'path'"),
            "{duck}"
        );
        let spark = gen_with(Engine::Spark, "s3://b/p", &[]).unwrap();
        assert!(
            spark.contains("path 's3a://b/p/*/events/dt=*/*.ndjson.{gz,zst}'"),
            "{spark}"
        );
        let spark = gen_with(Engine::Spark, "az://c/p?account=acct", &[]).unwrap();
        assert!(
            spark.contains("abfss://c@acct.dfs.core.windows.net/p/*/events"),
            "{spark}"
        );
        let athena = gen_with(Engine::Athena, "s3://b/p", &s).unwrap();
        assert!(
            athena.contains("'storage.location.template' = 's3://b/p/${stream}/events/dt=${dt}/'"),
            "{athena}"
        );
        assert!(
            athena.contains("'projection.stream.values' = 'auth,billing.v2'"),
            "{athena}"
        );
        assert!(
            athena.contains("'projection.dt.range' = '2026-01-01,NOW'"),
            "{athena}"
        );
        let injected = gen_with(Engine::Athena, "s3://b", &[]).unwrap();
        assert!(
            injected.contains("'projection.stream.type' = 'injected'"),
            "{injected}"
        );
        assert!(injected.contains("LOCATION 's3://b/'"), "{injected}");
        let bq = gen_with(Engine::Bigquery, "gs://b/p", &s).unwrap();
        assert!(
            bq.contains("CREATE OR REPLACE EXTERNAL TABLE `ds.trailkeep_events_billing_v2`"),
            "{bq}"
        );
        assert!(
            bq.contains("hive_partition_uri_prefix = 'gs://b/p/billing.v2/events'"),
            "{bq}"
        );
        assert!(bq.contains("CREATE OR REPLACE VIEW `ds.trailkeep_events` AS\nSELECT * FROM `ds.trailkeep_events_auth`\nUNION ALL\nSELECT * FROM `ds.trailkeep_events_billing_v2`;"), "{bq}");
        let trino = gen_with(Engine::Trino, "s3://b/p", &s).unwrap();
        assert!(
            trino.contains("external_location = 's3://b/p/auth/events'"),
            "{trino}"
        );
        assert!(
            trino.contains(
                "CALL system.sync_partition_metadata('default', 'trailkeep_events_auth', 'ADD');"
            ),
            "{trino}"
        );
    }

    #[test]
    fn engines_refuse_what_they_cannot_read_and_say_how_to_fix_it() {
        let s = streams(&["auth"]);
        let e = gen_with(Engine::Bigquery, "s3://b/p?region=x", &s).expect_err("s3 for bigquery");
        let msg = e.to_string();
        assert!(
            msg.contains("s3://b/p") && msg.contains("gs://") && !msg.contains("region"),
            "{msg}"
        );
        let e = gen_with(Engine::Bigquery, "file:///a", &s).expect_err("file for bigquery");
        assert!(e.to_string().contains("Cloud Storage"), "{e}");
        let e = gen_with(Engine::Athena, "gs://b/p", &s).expect_err("gs for athena");
        assert!(e.to_string().contains("Amazon S3"), "{e}");
        for engine in [Engine::Bigquery, Engine::Trino] {
            let e = gen_with(engine, "gs://b/p", &[]).expect_err("no stream");
            assert!(e.to_string().contains("--stream NAME"), "{e}");
        }
        let e = gen_with(Engine::Trino, "az://c/p", &s).expect_err("no account");
        assert!(e.to_string().contains("?account="), "{e}");
        let e = gen_with(Engine::Spark, "s3://b/it's", &s).expect_err("quote in path");
        assert!(e.to_string().contains("SQL or glob syntax"), "{e}");
        let e = gen_with(Engine::Duckdb, "file:///a/*", &s).expect_err("glob in path");
        assert!(e.to_string().contains("'*'"), "{e}");
        for engine in [Engine::Duckdb, Engine::Spark] {
            let e = gen_with(engine, "file:///a", &s).expect_err("stream where one glob reads all");
            assert!(e.to_string().contains("WHERE stream ="), "{e}");
        }
        let e = gen_with(Engine::Duckdb, "http://x/y", &[]).expect_err("scheme");
        assert!(
            e.to_string().contains("file://, s3://, gs://, az://"),
            "{e}"
        );
        let e = gen_with(Engine::Bigquery, "gs://b", &streams(&["a.b", "a-b"])).expect_err("clash");
        assert!(e.to_string().contains("ds.trailkeep_events_a_b"), "{e}");
        let e = generate(&Request {
            engine: Engine::Bigquery,
            archive_url: "gs://b",
            table: "events",
            streams: &s,
            since: "2026-01-01",
            compression: Compression::Gzip,
            version: "1",
        })
        .expect_err("no dataset");
        assert!(e.to_string().contains("--table DATASET.events"), "{e}");
    }

    #[test]
    fn table_and_since_are_plain() {
        let one = streams(&["a"]);
        for engine in ALL {
            let r = |table: &str, since: &str| {
                generate(&Request {
                    engine,
                    archive_url: if engine == Engine::Bigquery {
                        "gs://b"
                    } else {
                        "s3://b"
                    },
                    table,
                    streams: if matches!(engine, Engine::Duckdb | Engine::Spark) {
                        &[]
                    } else {
                        &one
                    },
                    since,
                    compression: Compression::Gzip,
                    version: "1",
                })
            };
            assert!(matches!(
                r("x; DROP TABLE y", "2026-01-01"),
                Err(DdlError::Table(_))
            ));
            assert!(matches!(r("1x", "2026-01-01"), Err(DdlError::Table(_))));
            assert!(matches!(
                r("a.b.c.d", "2026-01-01"),
                Err(DdlError::Table(_))
            ));
            assert!(matches!(r("ok", "2026-1-1"), Err(DdlError::Since(_))));
            assert!(r("ds.events_1", "2026-01-01").is_ok(), "{engine:?}");
        }
    }

    #[test]
    fn bigquery_warns_when_the_archive_writes_zstd() {
        let out = generate(&Request {
            engine: Engine::Bigquery,
            archive_url: "gs://b",
            table: "ds.t",
            streams: &streams(&["a"]),
            since: "2026-01-01",
            compression: Compression::Zstd,
            version: "1",
        })
        .unwrap();
        assert!(
            out.contains("WARNING: this configuration archives with zstd"),
            "{out}"
        );
    }

    /// The stored line's keys (`stored_json`) are what the definitions name.
    #[test]
    fn keys_match_the_stored_line() {
        let ev = crate::event::validate(
            0,
            serde_json::json!({"id": "e1", "type": "t.x", "time": "2026-01-01T00:00:00Z", "actor": {"id": "u"}, "subject": "s", "data": {"k": 1}}),
            "2026-01-02T00:00:00.000000Z",
            &crate::event::Limits::default(),
        )
        .unwrap();
        let body = crate::event::canonical_string(&ev, "s", 1, crate::chain::ZERO_HASH_HEX);
        let line = crate::event::stored::stored_json(&body, &"0".repeat(64));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in &keys {
            assert!(KEYS.contains(k), "stored key {k} unknown to ddl");
        }
        let duck = gen_with(Engine::Duckdb, "file:///a", &[]).unwrap();
        for k in KEYS.iter().filter(|k| **k != "stream") {
            assert!(
                duck.contains(&format!("'{k}': '")),
                "duckdb columns lack {k}"
            );
        }
    }
}
