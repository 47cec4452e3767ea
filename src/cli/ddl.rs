//! `trailkeep ddl`: prints the external-table definition of the archive for
//! a warehouse engine (the generation is [`crate::archive::ddl`]).

use std::process::ExitCode;

use clap::Args;

use crate::archive::ddl::{self, Engine};
use crate::config::Config;
use crate::names::StreamName;

/// Arguments of `ddl`.
#[derive(Debug, Args)]
pub struct DdlArgs {
    /// The engine to write SQL for.
    #[arg(long, value_enum)]
    pub engine: EngineArg,
    /// Table (or view) name; may be qualified (`dataset.table`, which
    /// BigQuery needs).
    #[arg(long, value_name = "NAME", default_value = "trailkeep_events")]
    pub table: String,
    /// A stream to define a table for (BigQuery and Trino need one table a
    /// stream) or to list in Athena's projection; repeatable. DuckDB and
    /// Spark read every stream through one glob and take none.
    #[arg(long = "stream", value_name = "NAME")]
    pub streams: Vec<String>,
    /// Athena: the first `dt` day its date projection covers (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", default_value = "2024-01-01")]
    pub since: String,
}

/// `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// Amazon Athena.
    Athena,
    /// Google BigQuery.
    Bigquery,
    /// DuckDB.
    Duckdb,
    /// Trino (Hive connector).
    Trino,
    /// Apache Spark SQL.
    Spark,
}

pub(super) fn run(config: &Config, args: &DdlArgs) -> anyhow::Result<ExitCode> {
    let engine = match args.engine {
        EngineArg::Athena => Engine::Athena,
        EngineArg::Bigquery => Engine::Bigquery,
        EngineArg::Duckdb => Engine::Duckdb,
        EngineArg::Trino => Engine::Trino,
        EngineArg::Spark => Engine::Spark,
    };
    let streams = args
        .streams
        .iter()
        .map(|s| StreamName::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let url = config.archive_url()?;
    let sql = ddl::generate(&ddl::Request {
        engine,
        archive_url: &url,
        table: &args.table,
        streams: &streams,
        since: &args.since,
        compression: config.archive.settings.compression,
        version: env!("CARGO_PKG_VERSION"),
    })?;
    print!("{sql}");
    Ok(ExitCode::SUCCESS)
}
