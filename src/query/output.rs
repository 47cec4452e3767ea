//! Answers as people use them: a table on a terminal, JSON (columns, rows
//! and what was read), NDJSON, CSV, Parquet, and the Arrow IPC stream a
//! `trailkeep query --server` reads back without losing types.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::FormatOptions;

use super::QueryStats;

/// An answer's format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned columns, for a terminal.
    Table,
    /// One object: `columns` (name, type), `rows` (objects), `stats`.
    Json,
    /// One JSON object per row and line.
    Ndjson,
    /// RFC 4180 CSV with a header line.
    Csv,
    /// Apache Parquet (zstd).
    Parquet,
    /// Arrow IPC stream.
    Arrow,
}

impl Format {
    /// Every name, for messages.
    pub const NAMES: &'static str = "table, json, ndjson, csv, parquet, arrow";

    /// The format called `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "table" => Self::Table,
            "json" => Self::Json,
            "ndjson" => Self::Ndjson,
            "csv" => Self::Csv,
            "parquet" => Self::Parquet,
            "arrow" => Self::Arrow,
            _ => return None,
        })
    }

    /// Its HTTP `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Table => "text/plain; charset=utf-8",
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Parquet => "application/vnd.apache.parquet",
            Self::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// One column's name and type, as the JSON answer lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Arrow type (`Utf8`, `Int64`, `Timestamp(µs, "UTC")`, …).
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Why an answer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Encoding failed.
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    /// Parquet encoding failed.
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn json_rows(batches: &[RecordBatch], lines: bool, out: &mut dyn Write) -> Result<(), WriteError> {
    let builder = datafusion::arrow::json::WriterBuilder::new().with_explicit_nulls(true);
    if lines {
        let mut w = builder.build::<_, datafusion::arrow::json::writer::LineDelimited>(out);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    } else {
        let mut w = builder.build::<_, datafusion::arrow::json::writer::JsonArray>(out);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            // The array writer writes nothing for no rows.
            return Ok(());
        }
    }
    Ok(())
}

/// Writes `batches` (of `schema`) as `format`; `stats` goes into the JSON
/// answer only (elsewhere the caller reports it beside the answer).
///
/// # Errors
/// [`WriteError`].
pub fn write(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    stats: &QueryStats,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    match format {
        Format::Table => {
            let options = FormatOptions::default().with_null("NULL");
            if batches.iter().all(|b| b.num_rows() == 0) {
                let t = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(
                    schema.clone(),
                    batches,
                )?;
                writeln!(out, "{t}")?;
            } else {
                let t = datafusion::arrow::util::pretty::pretty_format_batches_with_options(
                    batches, &options,
                )?;
                writeln!(out, "{t}")?;
            }
        }
        Format::Json => {
            let columns: Vec<Column> = schema
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                })
                .collect();
            let mut rows = Vec::new();
            json_rows(batches, false, &mut rows)?;
            if rows.is_empty() {
                rows.extend_from_slice(b"[]");
            }
            let columns = serde_json::to_string(&columns).map_err(std::io::Error::other)?;
            let stats = serde_json::to_string(stats).map_err(std::io::Error::other)?;
            out.write_all(b"{\"columns\":")?;
            out.write_all(columns.as_bytes())?;
            out.write_all(b",\"rows\":")?;
            out.write_all(&rows)?;
            out.write_all(b",\"stats\":")?;
            out.write_all(stats.as_bytes())?;
            out.write_all(b"}\n")?;
        }
        Format::Ndjson => json_rows(batches, true, out)?,
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut buf = Vec::new();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            out.write_all(&buf)?;
        }
        Format::Arrow => {
            let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(out, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// Reads an Arrow IPC stream back (what `POST /v1/query` answers with
/// `format=arrow`).
///
/// # Errors
/// A malformed stream.
pub fn read_arrow(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let r = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes, None)?;
    let schema = r.schema();
    let batches = r.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}
