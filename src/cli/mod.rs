//! The `trailkeep` command line (clap). Every flag also reads
//! `TRAILKEEP_<FLAG>` from the environment. Exit codes: 0 success,
//! 1 verification found a problem, 2 usage, configuration or I/O error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// `println!` for the commands below: a reader that went away (`| head`)
/// ends the process quietly, as `SIGPIPE` ends `cat` (see [`write_stdout`]).
macro_rules! println {
    () => { $crate::cli::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!`, as [`println!`] above.
#[allow(unused_macros)]
macro_rules! print {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*)) };
}

mod archive;
#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_archive;
#[cfg(feature = "bench")]
mod bench_child;
#[cfg(feature = "bench")]
mod bench_destinations;
#[cfg(feature = "bench")]
mod bench_e2e;
#[cfg(feature = "bench")]
mod bench_latency;
#[cfg(feature = "bench")]
mod bench_postgres;
#[cfg(feature = "bench")]
mod bench_query;
mod check_config;
mod checkpoints;
mod cluster;
mod copy;
mod ddl;
mod destinations;
mod events;
mod keys;
mod query;
mod reader;
mod sources;
mod streams;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides, RawConfig};

/// trailkeep: a durable, hash-chained audit-event log.
#[derive(Debug, Parser)]
#[command(name = "trailkeep", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (SQLite store, signing key).
    #[arg(long, global = true, env = "TRAILKEEP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; flags win over it.
    #[arg(long, global = true, env = "TRAILKEEP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Hot store: `sqlite` (default, in the data directory) or a postgres:// URL.
    #[arg(
        long,
        global = true,
        env = "TRAILKEEP_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// Cold archive URL (file://, s3://, gs://, az://); default
    /// `file://DATA_DIR/archive` or `archive.url` from the config.
    #[arg(long, global = true, env = "TRAILKEEP_ARCHIVE", value_name = "URL")]
    pub archive: Option<String>,
    /// Log lines on stderr: `text` (coloured only on a terminal without
    /// NO_COLOR) or `json` (one object a line).
    #[arg(
        long,
        global = true,
        env = "TRAILKEEP_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (SQLite and ./trailkeep-data by default).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TRAILKEEP_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Manage API keys and show the checkpoint verifier key.
    Keys {
        /// Key operation.
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Show and operate event sources (SSE upstreams).
    Sources {
        /// Source operation.
        #[command(subcommand)]
        command: sources::SourcesCommand,
    },
    /// Export the log's signed checkpoints for `verify --trusted-checkpoint`.
    Checkpoints {
        /// Checkpoint operation.
        #[command(subcommand)]
        command: checkpoints::CheckpointsCommand,
    },
    /// Create or upgrade the store's schema and create the signing key if missing (before the first serve; key commands need both).
    Migrate,
    /// Copy a SQLite data directory to PostgreSQL, verifying both sides.
    Copy(copy::CopyArgs),
    /// Verify every hash, link, seq and the signed checkpoints, hot and
    /// archived; with --archive URL --public-key FILE, the bucket alone.
    Verify(verify::VerifyArgs),
    /// Move events older than the retention window to the cold archive.
    Archive {
        /// Archive operation.
        #[command(subcommand)]
        command: archive::ArchiveCommand,
    },
    /// Destination status, dead letters and their retry.
    Destinations {
        /// Destination operation.
        #[command(subcommand)]
        command: destinations::DestinationsCommand,
    },
    /// Bring an archived seq range back into the hot store, checking every
    /// hash, link and manifest signature on the way in.
    Restore(archive::RestoreArgs),
    /// List the streams: head seq, oldest hot seq, archived seq, when the
    /// last event arrived (the store read-only, or --server).
    Streams(streams::StreamsArgs),
    /// Show the nodes sharing a PostgreSQL store and who owns which shard
    /// (the store read-only, or --server with an admin key).
    ///
    /// Lists every node with a heartbeat in the store: its advertised URL,
    /// last heartbeat, whether it is alive (a heartbeat younger than
    /// `[cluster] lease_ttl_ms`) and how many shards it owns; then the 64
    /// shards as a grid, each cell the letter of its owner's node ('.':
    /// nobody owns it now, e.g. during a failover). Streams hash into the
    /// shards; a shard's owner normally commits its streams.
    ///
    /// Reads the store read-only (--store postgres://… or the config), or
    /// GET /v1/cluster of a server with --server and an admin key for '*'.
    /// --json prints GET /v1/cluster's answer (epochs and lease expiries
    /// included). A SQLite store has no cluster: the command fails,
    /// saying so.
    Cluster(cluster::ClusterArgs),
    /// Print a stream's events, or follow them as they commit (--follow);
    /// the store read-only, or --server.
    Events(events::EventsArgs),
    /// Answer SQL over every event, hot and archived, as one table
    /// `events` (the store read-only and the archive, or --server).
    Query(query::QueryArgs),
    /// Check a config file completely without starting anything: exit 0
    /// with a summary, or 2 listing each problem with FILE:LINE:COLUMN and
    /// its key.
    CheckConfig {
        /// The config file (default: --config).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print the HTTP API's OpenAPI 3.1 description (as served at
    /// /v1/openapi.json).
    Openapi,
    /// Print the SQL that defines the archive (--archive or archive.url)
    /// as an external table for Athena, BigQuery, DuckDB, Trino or Spark.
    Ddl(ddl::DdlArgs),
    /// Measure performance (prints figures; see BENCHMARKS.md).
    #[cfg(feature = "bench")]
    Bench {
        /// Benchmark to run.
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Loads the config file (if any) and applies the flags.
fn load_config(cli: &Cli, listen: Option<String>) -> anyhow::Result<Config> {
    let over = Overrides {
        data_dir: cli.data_dir.clone(),
        listen,
        store: cli.store.clone(),
        archive: cli.archive.clone(),
    };
    match &cli.config {
        Some(path) => {
            let (text, raw) = check_config::read(path)?;
            Ok(raw
                .validate(&over)
                .map_err(|e| check_config::problem(path, &text, &e))?)
        }
        None => Ok(RawConfig::default().validate(&over)?),
    }
}

/// Returns the runtime: one worker thread fewer than there are cores (at
/// least one), so the SQLite writer thread keeps a core to itself under load
/// (measured: single-event ingest +20% on 2 cores, see BENCHMARKS.md).
/// `TOKIO_WORKER_THREADS` overrides.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        b.worker_threads(cores.saturating_sub(1).max(1));
    }
    // 8 MiB stacks (virtual; only touched pages cost memory): query
    // planning recurses over expression trees, and `query::MAX_OPERATORS`
    // is set to fit a 2 MiB debug-build stack, so release workers have a
    // wide margin.
    b.thread_stack_size(8 << 20);
    Ok(b.enable_all().build()?)
}

/// Makes every file and directory this process creates private to its
/// owner (0600/0700) whatever the directory or the caller's umask: the
/// database, its WAL, the signing key, file destinations and a local
/// archive all hold audit data.
fn private_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    private_files();
    crate::telemetry::init_logging(cli.log_format == LogFormat::Json);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once (issue #15), lines inside a message kept.
            eprintln!("trailkeep: error: {}", crate::report::Chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// Exit status when stdout's reader went away: what a shell reports for a
/// process `SIGPIPE` ended (128 + 13), as `cat` or `grep` end in a pipe.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes to stdout; a reader that went away (`| head`) ends the process
/// quietly with [`BROKEN_PIPE_EXIT`] (no panic: Rust ignores `SIGPIPE`, so
/// `println!` would panic on `EPIPE`). Any other write failure ends it
/// with 2 and says why.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        eprintln!("trailkeep: error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// [`write_stdout`] for bytes (Parquet, Arrow).
pub(crate) fn write_stdout_bytes(bytes: &[u8]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        eprintln!("trailkeep: error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { listen } => {
            let config = load_config(&cli, listen.clone())?;
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                crate::server::run(config, listener, shutdown_signal()).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Keys { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(keys::run(&config, command))
        }
        Command::Sources { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(sources::run(&config, command))
        }
        Command::Checkpoints { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(checkpoints::run(&config, command))
        }
        Command::Migrate => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(async {
                crate::server::open_store(&config).await?;
                // The signing key too: key commands never create one.
                let key = config.signing_key_path();
                if let Some(dir) = key.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::keyfile::load_or_create(&key, &config.log_name)?;
                println!(
                    "schema is current ({})",
                    if config.store == crate::config::StoreLocation::Sqlite {
                        "sqlite"
                    } else {
                        "postgres"
                    }
                );
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Copy(args) => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(copy::run(&config, args))
        }
        Command::Verify(args) => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(verify::run(&config, args))
        }
        Command::Archive { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(archive::run(&config, command))
        }
        Command::Destinations { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(destinations::run(&config, command))
        }
        Command::Restore(args) => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(archive::restore(&config, args))
        }
        Command::Streams(args) => {
            runtime()?.block_on(streams::run(args, || load_config(&cli, None)))
        }
        Command::Events(args) => runtime()?.block_on(events::run(args, || load_config(&cli, None))),
        Command::Cluster(args) => {
            runtime()?.block_on(cluster::run(args, || load_config(&cli, None)))
        }
        Command::Query(args) => runtime()?.block_on(query::run(args, || load_config(&cli, None))),
        Command::CheckConfig { file } => {
            let Some(file) = file.as_ref().or(cli.config.as_ref()) else {
                anyhow::bail!("check-config needs a FILE (or --config FILE)");
            };
            let over = Overrides {
                data_dir: cli.data_dir.clone(),
                listen: None,
                store: cli.store.clone(),
                archive: cli.archive.clone(),
            };
            match check_config::check(file, &over) {
                Ok(config) => {
                    println!("{}", check_config::summary(file, &config));
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    eprintln!("{}: {} problem(s)", file.display(), problems.len());
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Ddl(args) => ddl::run(&load_config(&cli, None)?, args),
        Command::Openapi => {
            println!("{}", crate::api::openapi().to_pretty_json()?);
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "bench")]
        Command::Bench { command } => {
            let config = load_config(&cli, None)?;
            runtime()?.block_on(bench::run(&config, command))
        }
    }
}

/// Resolves on SIGINT or SIGTERM, logging that serve is stopping.
async fn shutdown_signal() {
    interrupted().await;
    tracing::info!("shutdown signal received; finishing in-flight commits");
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Opens the configured store; a SQLite store must exist already (never
/// creates one), a PostgreSQL store is reached and migrated.
async fn open_existing(config: &Config) -> anyhow::Result<std::sync::Arc<dyn crate::store::Store>> {
    if config.store == crate::config::StoreLocation::Sqlite {
        existing_db(config)?;
    }
    Ok(crate::server::open_store(config).await?)
}

/// The data directory's SQLite file, which must exist.
fn existing_db(config: &Config) -> anyhow::Result<PathBuf> {
    let db = config.data_dir.join(crate::server::DB_FILE);
    std::fs::metadata(&db).with_context(|| {
        format!(
            "no trailkeep store at {} (is --data-dir right? `trailkeep serve` or `trailkeep migrate` creates one)",
            db.display()
        )
    })?;
    Ok(db)
}

/// Returns `s` with control characters (C0, DEL, C1) and bidirectional
/// controls escaped as `\u{…}`: text that came from producers or a server
/// cannot move the cursor, recolour or reorder what a terminal shows.
pub(crate) fn printable(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(|c| c.is_control() || bidi(c)) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() || bidi(c) {
                format!("\\u{{{:04x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints `v` as pretty JSON on stdout; a reader that went away (`| head`)
/// ends the output quietly instead of a panic.
pub(crate) fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer_pretty(&mut out, v)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(BROKEN_PIPE_EXIT)
        }
        r => Ok(r?),
    }
}
