//! `trailkeep streams`: every stream with its head, what is hot and what is
//! archived, and when its last event arrived: `GET /v1/streams` as a
//! table, from the store (read-only) or a server.

use std::process::ExitCode;

use clap::Args;

use super::reader::{Reader, Remote};
use crate::store::StreamInfo;

/// Arguments of `streams`.
#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Print `{"streams": [...]}` as `GET /v1/streams` answers, instead of
    /// a table.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
    /// Where to read.
    #[command(flatten)]
    pub remote: Remote,
}

pub(super) async fn run(
    args: &StreamsArgs,
    config: impl FnOnce() -> anyhow::Result<crate::config::Config>,
) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(&args.remote, config).await?;
    let streams = reader.streams().await?;
    if args.json {
        super::print_json(&serde_json::json!({ "streams": streams }))?;
    } else {
        super::write_stdout(format_args!("{}", table(&streams)));
    }
    Ok(ExitCode::SUCCESS)
}

/// The streams as an aligned table: names left, numbers right, `-` for
/// what is not there.
fn table(streams: &[StreamInfo]) -> String {
    let header = [
        "STREAM",
        "HEAD",
        "OLDEST HOT",
        "ARCHIVED TO",
        "LAST RECEIVED",
    ];
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<[String; 5]> = streams
        .iter()
        .map(|s| {
            [
                super::printable(&s.name),
                s.head_seq.to_string(),
                opt(s.oldest_hot_seq),
                opt(s.archived_seq),
                s.head_received
                    .as_deref()
                    .map_or_else(|| "-".into(), super::printable),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let [name, head, hot, archived, last] = cells;
        format!(
            "{name:<w0$}  {head:>w1$}  {hot:>w2$}  {archived:>w3$}  {last}\n",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
        )
    };
    let mut out = line(header);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    if rows.is_empty() {
        out.push_str("(no streams yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_its_columns() {
        let s = |name: &str, head, hot, archived, last: Option<&str>| StreamInfo {
            name: name.into(),
            head_seq: head,
            head_hash: String::new(),
            oldest_hot_seq: hot,
            archived_seq: archived,
            head_received: last.map(Into::into),
        };
        let t = table(&[
            s(
                "auth",
                12345,
                Some(301),
                Some(300),
                Some("2026-01-02T03:04:05.000001Z"),
            ),
            s("_audit", 3, None, Some(3), None),
        ]);
        assert_eq!(
            t,
            "STREAM   HEAD  OLDEST HOT  ARCHIVED TO  LAST RECEIVED\n\
             auth    12345         301          300  2026-01-02T03:04:05.000001Z\n\
             _audit      3           -            3  -\n"
        );
        assert!(table(&[]).ends_with("(no streams yet)\n"));
    }
}
