//! `trailkeep events`: a stream's stored events, one line each, from the
//! store (read-only) or a server; `--follow` goes on printing them as
//! they commit, like `tail -f`.
//!
//! Output: with `--json`, each event exactly as stored and as `GET
//! /v1/streams/{s}/events` answers (NDJSON, hash included); otherwise one
//! readable line per event: `SEQ  TIME  TYPE  ID  actor=… subject=…
//! data=…`. Archived seqs are never skipped in silence: each archived
//! range is named on stderr with how to get it, then reading goes on where
//! the hot store does.
//!
//! `--follow` polls (ARCHITECTURE.md "Following a stream polls"): when a
//! read comes back empty it waits `--poll-interval`, otherwise it reads on
//! at once. Ctrl-C (SIGINT) and SIGTERM end it quietly with status 0; a
//! reader that went away (`| head`) quietly with 141, as every command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::reader::{Page, Reader, Remote};
use crate::event::filter::Filter;
use crate::names::StreamName;
use crate::store::ArchivedRange;

/// Events read per request (the HTTP API's default page).
const PAGE: usize = 1000;

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// The stream to read.
    #[arg(long, env = "TRAILKEEP_STREAM", value_name = "STREAM")]
    pub stream: String,
    /// First seq to print (default 1: the whole stream).
    #[arg(long, env = "TRAILKEEP_FROM_SEQ", value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Start with the last N events (as `tail -n N`) instead of seq 1.
    #[arg(
        long,
        env = "TRAILKEEP_LAST",
        value_name = "N",
        conflicts_with = "from_seq"
    )]
    pub last: Option<u64>,
    /// Only events of this type: a type (`grant.created`), a dotted prefix
    /// (`grant.*`), or `!TYPE` to leave one out; repeat the flag or
    /// separate with commas.
    #[arg(
        long = "type",
        env = "TRAILKEEP_TYPE",
        value_name = "TYPE",
        value_delimiter = ','
    )]
    pub types: Vec<String>,
    /// Stop after printing this many events.
    #[arg(long, env = "TRAILKEEP_LIMIT", value_name = "N")]
    pub limit: Option<u64>,
    /// Keep printing events as they are committed, until Ctrl-C (like
    /// `tail -f`); a stream that does not exist yet is waited for.
    #[arg(long, env = "TRAILKEEP_FOLLOW")]
    pub follow: bool,
    /// How long --follow waits before looking again once it has printed
    /// everything (e.g. 200ms, 2s).
    #[arg(
        long,
        env = "TRAILKEEP_POLL_INTERVAL",
        value_name = "DURATION",
        default_value = "500ms",
        value_parser = parse_interval
    )]
    pub poll_interval: Duration,
    /// Print each event exactly as stored (NDJSON, hash included), as the
    /// HTTP API answers, instead of one readable line.
    #[arg(long, env = "TRAILKEEP_JSON")]
    pub json: bool,
    /// Where to read.
    #[command(flatten)]
    pub remote: Remote,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = crate::archive::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err("the poll interval must be between 1ms and 1h".into());
    }
    Ok(d)
}

/// Why printing stopped early.
enum Stop {
    /// The reader of stdout went away (`| head`): not an error.
    Closed,
    /// Anything else.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

pub(super) async fn run(
    args: &EventsArgs,
    config: impl FnOnce() -> anyhow::Result<crate::config::Config>,
) -> anyhow::Result<ExitCode> {
    let stream =
        StreamName::parse(&args.stream).with_context(|| format!("--stream {:?}", args.stream))?;
    let filter = Filter::new(&[], &args.types).context("--type")?;
    let reader = Reader::open(&args.remote, config).await?;
    let out = std::io::BufWriter::new(std::io::stdout());
    let result = tokio::select! {
        r = print(&reader, &stream, &filter, args, out) => r,
        () = super::interrupted() => Ok(()),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // As every command ends on a closed pipe, quietly (`cat`'s status).
        Err(Stop::Closed) => Ok(ExitCode::from(super::BROKEN_PIPE_EXIT as u8)),
        Err(Stop::Failed(e)) => Err(e),
    }
}

async fn print(
    reader: &Reader,
    stream: &StreamName,
    filter: &Filter,
    args: &EventsArgs,
    mut out: std::io::BufWriter<std::io::Stdout>,
) -> Result<(), Stop> {
    let mut next = match (args.from_seq, args.last) {
        (Some(seq), _) => seq.max(1),
        (None, Some(n)) => {
            let head = reader
                .streams()
                .await?
                .into_iter()
                .find(|s| s.name == stream.as_str())
                .map_or(0, |s| s.head_seq);
            head.saturating_sub(n) + 1
        }
        (None, None) => 1,
    };
    let mut printed = 0u64;
    let mut waiting_for_stream = false;
    if args.limit == Some(0) {
        return Ok(());
    }
    loop {
        // Whether to read on at once: a page that brought anything may end
        // early at a gap in the hot store, so only an empty one means the
        // head was reached.
        let more = match reader.page(stream, next, PAGE).await? {
            Page::Events(lines) => {
                let more = !lines.is_empty();
                for line in lines {
                    if line.seq != next {
                        // Never from this version's pages; an older
                        // server's reads skipped archived seqs this way.
                        flush(&mut out)?;
                        eprintln!(
                            "trailkeep: stream {stream}: seqs {next}-{} were not returned (archived? `trailkeep archive list --stream {stream}` shows what is)",
                            line.seq.saturating_sub(1)
                        );
                    }
                    next = line.seq + 1;
                    let event: Value = serde_json::from_str(&line.json)
                        .with_context(|| format!("seq {}: not JSON", line.seq))?;
                    let event_type = event["type"].as_str().unwrap_or_default();
                    if !filter.event_type(event_type) {
                        continue;
                    }
                    let text = if args.json { line.json } else { human(&event) };
                    emit(&mut out, text.as_bytes())?;
                    emit(&mut out, b"\n")?;
                    printed += 1;
                    if args.limit.is_some_and(|l| printed >= l) {
                        return flush(&mut out);
                    }
                }
                flush(&mut out)?;
                more
            }
            Page::Archived(range) => {
                flush(&mut out)?;
                for line in archived_notice(&range).lines() {
                    eprintln!("{}", super::printable(line));
                }
                match range.next_hot_seq {
                    Some(n) => {
                        next = n;
                        true
                    }
                    None => {
                        next = range.to_seq + 1;
                        false
                    }
                }
            }
            Page::NoStream if args.follow => {
                if !waiting_for_stream {
                    eprintln!(
                        "trailkeep: stream {stream} has no events yet; waiting for the first"
                    );
                    waiting_for_stream = true;
                }
                false
            }
            Page::NoStream => {
                return Err(Stop::Failed(anyhow::anyhow!(
                    "no stream {stream} (`trailkeep streams` lists them; --follow waits for a new one)"
                )));
            }
        };
        if !more {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(args.poll_interval).await;
        }
    }
}

fn emit(out: &mut impl std::io::Write, bytes: &[u8]) -> Result<(), Stop> {
    out.write_all(bytes).map_err(io_stop)
}

fn flush(out: &mut impl std::io::Write) -> Result<(), Stop> {
    out.flush().map_err(io_stop)
}

fn io_stop(e: std::io::Error) -> Stop {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Stop::Closed
    } else {
        Stop::Failed(anyhow::Error::new(e).context("writing to stdout"))
    }
}

/// What stderr says about an archived range: which seqs, and how to get
/// them (the same ways a `410 archived` names).
fn archived_notice(r: &ArchivedRange) -> String {
    let mut s = format!(
        "trailkeep: stream {}: {} archived (in the cold archive, no longer in the hot store); ",
        r.stream,
        r.seqs_are()
    );
    match r.next_hot_seq {
        Some(n) => s.push_str(&format!("going on at seq {n}\n")),
        None => s.push_str("nothing after them is hot yet\n"),
    }
    s.push_str(&format!(
        "  to read them: `{}` (then read again), or {} with an admin key\n",
        r.restore_command(),
        r.restore_request()
    ));
    if let Some(first) = r.objects.first() {
        let more = match r.objects.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        s.push_str(&format!(
            "  or read the archive object {}{more} (`trailkeep archive list --stream {}` lists them all)\n",
            first.object_key, r.stream
        ));
    }
    s
}

/// One readable line: `SEQ  TIME  TYPE  ID  actor=… subject=… data=…`.
/// Text that came from producers is shown as JSON with every control and
/// bidirectional-override character escaped, so an event cannot move the
/// cursor, recolour or reorder what a terminal shows.
fn human(event: &Value) -> String {
    let field = |k: &str| event[k].as_str().unwrap_or("-");
    let mut line = format!(
        "{:>6}  {}  {}  {}",
        event["seq"].as_u64().unwrap_or(0),
        field("time"),
        field("type"),
        field("id")
    );
    for k in ["actor", "subject", "data"] {
        let v = &event[k];
        if v.is_null() {
            continue;
        }
        let shown = match v.as_str() {
            Some(s) if is_plain(s) => s.to_owned(),
            _ => v.to_string(),
        };
        line.push_str(&format!("  {k}={shown}"));
    }
    super::printable(&line)
}

/// A string that reads the same bare: no spaces, quotes, `=` or controls.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@/+-#".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_lines_show_the_event_and_escape_what_could_drive_a_terminal() {
        let ev = serde_json::json!({
            "seq": 7, "time": "2026-01-02T03:04:05Z", "type": "grant.created", "id": "evt_1",
            "actor": "user_1", "subject": {"id": "agent 7"}, "data": {"s": "a\u{1b}[31mred\u{9b}2J\u{202e}x"},
            "hash": "00", "prev": "00", "stream": "s", "received": "2026-01-02T03:04:05.000001Z"
        });
        let line = human(&ev);
        assert_eq!(
            line,
            "     7  2026-01-02T03:04:05Z  grant.created  evt_1  actor=user_1  subject={\"id\":\"agent 7\"}  data={\"s\":\"a\\u001b[31mred\\u{009b}2J\\u{202e}x\"}"
        );
        assert!(!line.chars().any(char::is_control));
        let bare = serde_json::json!({"seq": 1, "time": "t", "type": "a", "id": "i"});
        assert_eq!(human(&bare), "     1  t  a  i");
    }

    #[test]
    fn the_archived_notice_names_the_range_and_every_way_to_get_it() {
        let r = ArchivedRange {
            stream: "auth".into(),
            from_seq: 1,
            to_seq: 300,
            archived_seq: 300,
            oldest_hot_seq: Some(301),
            next_hot_seq: Some(301),
            head_seq: 400,
            objects: vec![crate::store::ArchivedObject {
                start_seq: 1,
                end_seq: 300,
                object_key: "auth/events/x.ndjson.gz".into(),
                manifest_key: "auth/manifests/x.json".into(),
            }],
        };
        let n = archived_notice(&r);
        for needle in [
            "seqs 1-300",
            "going on at seq 301",
            "trailkeep restore --stream auth --from 1 --to 300",
            "POST /v1/streams/auth/restore?from=1&to=300",
            "auth/events/x.ndjson.gz",
        ] {
            assert!(n.contains(needle), "{needle}: {n}");
        }
    }
}
