//! `trailkeep check-config FILE`, and where in a config file a problem is.
//!
//! A problem is shown as `FILE:LINE:COLUMN: KEY: MESSAGE`, then the line
//! and a caret under the value on lines of their own (what toml's own
//! errors show, with the file name; issue #15). Syntax, type and unknown-key
//! errors carry the parser's position; a value that parses but is wrong
//! names its dotted key (`destinations[0].url`), which is looked up in the
//! file.
//!
//! The check starts nothing: no data directory is created, no listener
//! bound, no store, object store or receiver contacted. It loads what
//! `serve` would load at start (secrets, TLS files, an existing signing
//! key) and checks object-store credentials are configured; it never
//! prints a secret's value.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::config::{Config, Overrides, RawConfig};
use crate::setting::SettingError;

/// One problem, located in its file when the key is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// The config file.
    pub(super) file: PathBuf,
    /// 1-based line and column, when located.
    pub at: Option<(usize, usize)>,
    /// The dotted key (`ingest.max_event_bytes`, `destinations[0].url`).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The line and the caret under the value (empty when not located).
    pub snippet: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.at {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {}: {}", self.key, self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// One step of a dotted key.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `destinations[0].url` → `destinations`, `0`, `url`.
fn steps(key: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Step::Key(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

/// Returns the span of `key`'s value in `text` (or of the deepest table
/// on its path that is there: a missing key points at its table).
pub(super) fn locate(text: &str, key: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<Range<usize>> = None;
    let mut cur: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for step in steps(key) {
        let next = match (step, table, cur) {
            (Step::Key(k), Some(t), _) => t
                .iter()
                .find(|(name, _)| name.get_ref() == k)
                .map(|(_, v)| v),
            (Step::Index(i), _, Some(DeValue::Array(a))) => a.get(i),
            _ => None,
        };
        let Some(v) = next else { break };
        best = Some(v.span());
        cur = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    best
}

/// Returns the dotted key whose name or value covers byte `at`
/// (`ingest.max_evnt_bytes` for an unknown key the parser points at).
pub(super) fn key_at(text: &str, at: usize) -> Option<String> {
    fn walk(t: &DeTable<'_>, at: usize, path: &mut String) -> bool {
        for (k, v) in t {
            let (ks, vs) = (k.span(), v.span());
            let inside = ks.contains(&at) || vs.contains(&at);
            if !inside && !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                continue;
            }
            let before = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k.get_ref());
            if ks.contains(&at) {
                return true;
            }
            match v.get_ref() {
                DeValue::Table(inner) if walk(inner, at, path) => return true,
                DeValue::Array(a) => {
                    for (i, item) in a.iter().enumerate() {
                        let mark = path.len();
                        path.push_str(&format!("[{i}]"));
                        if let DeValue::Table(inner) = item.get_ref()
                            && walk(inner, at, path)
                        {
                            return true;
                        }
                        path.truncate(mark);
                    }
                }
                _ => {}
            }
            if inside {
                return true;
            }
            path.truncate(before);
        }
        false
    }
    let (root, _) = DeTable::parse_recoverable(text);
    let mut path = String::new();
    walk(root.get_ref(), at, &mut path).then_some(path)
}

/// Returns `e` located in `file` (whose contents are `text`).
pub(super) fn problem(file: &Path, text: &str, e: &SettingError) -> Problem {
    let mut key = e.key.clone();
    let span = match &e.span {
        Some(s) => {
            // The parser names the unknown key only: say where it is.
            if let Some(full) = key_at(text, s.start).filter(|k| k.ends_with(&key)) {
                key = full;
            }
            Some(s.clone())
        }
        None => locate(text, &key),
    };
    let (at, snippet) = match span {
        Some(s) => {
            let (line, col, snippet) = snippet(text, &s);
            (Some((line, col)), snippet)
        }
        None => (None, String::new()),
    };
    Problem {
        file: file.to_owned(),
        at,
        key,
        message: e.message.clone(),
        snippet,
    }
}

/// The 1-based line and column of `span`'s start, and the line with a
/// caret under the span (on that line).
fn snippet(text: &str, span: &Range<usize>) -> (usize, usize, String) {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..start].matches('\n').count() + 1;
    let col = text[line_start..start].chars().count() + 1;
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let num = line.to_string();
    let pad = " ".repeat(num.len());
    let caret = format!("{}{}", " ".repeat(col - 1), "^".repeat(width));
    (
        line,
        col,
        format!("{pad} |\n{num} | {line_text}\n{pad} | {caret}"),
    )
}

/// Reads and parses a config file; errors located in it.
///
/// # Errors
/// The file cannot be read, or does not parse (its first problem).
pub(super) fn read(file: &Path) -> anyhow::Result<(String, RawConfig)> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file {}", file.display()))?;
    let raw = RawConfig::parse(&text).map_err(|e| problem(file, &text, &e))?;
    Ok((text, raw))
}

/// What a valid config holds, for the summary.
pub(super) fn summary(file: &Path, c: &Config) -> String {
    format!(
        "{}: ok: store {}, {} source(s), {} destination(s), archive {}, listen {}",
        file.display(),
        match c.store {
            crate::config::StoreLocation::Sqlite => "sqlite",
            crate::config::StoreLocation::Postgres(_) => "postgres",
        },
        c.sources.len(),
        c.destinations.len(),
        c.archive
            .url
            .as_deref()
            .map_or_else(|| "file://DATA_DIR/archive".to_owned(), redact_url),
        c.listen
    )
}

fn redact_url(u: &str) -> String {
    url::Url::parse(u).map_or_else(|_| "(not a URL)".to_owned(), |p| crate::net::redact_url(&p))
}

/// Checks `file` completely: every problem, each located. Returns the
/// validated config when there is none.
///
/// # Errors
/// The problems (a file that cannot be read is one problem).
pub(super) fn check(file: &Path, over: &Overrides) -> Result<Config, Vec<Problem>> {
    let at = |text: &str, e: &SettingError| problem(file, text, e);
    let text = std::fs::read_to_string(file).map_err(|e| {
        vec![Problem {
            file: file.to_owned(),
            at: None,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
            snippet: String::new(),
        }]
    })?;
    // Syntax, types and unknown keys: serde stops at the first.
    let parse = || RawConfig::parse(&text).map_err(|e| vec![at(&text, &e)]);
    let mut problems: Vec<Problem> = Vec::new();
    let push = |p: Problem, problems: &mut Vec<Problem>| {
        if !problems.contains(&p) {
            problems.push(p);
        }
    };
    // Each table on its own, so one bad table does not hide the next;
    // what a valid table names (secrets, files, credentials) is loaded.
    for (i, s) in parse()?.sources.into_iter().enumerate() {
        match s.validate() {
            Ok(cfg) => {
                for e in source_loads(i, &cfg) {
                    push(at(&text, &e), &mut problems);
                }
            }
            Err(e) => push(
                at(&text, &e.within(&format!("sources[{i}]"))),
                &mut problems,
            ),
        }
    }
    for (i, d) in parse()?.destinations.into_iter().enumerate() {
        match d.validate() {
            Ok(cfg) => {
                for e in destination_loads(i, &cfg) {
                    push(at(&text, &e), &mut problems);
                }
            }
            Err(e) => push(
                at(&text, &e.within(&format!("destinations[{i}]"))),
                &mut problems,
            ),
        }
    }
    let raw = parse()?;
    let signing_key = raw.signing_key_file.clone();
    match raw.archive.validate(over.archive.clone()) {
        Ok(a) => {
            for e in archive_loads(&a) {
                push(at(&text, &e), &mut problems);
            }
        }
        Err(e) => push(at(&text, &e), &mut problems),
    }
    match parse()?.server.validate() {
        Ok(server) => {
            if let Some(tls) = &server.tls
                && let Err(e) = crate::http::load_tls(tls)
            {
                let e = SettingError::new("server.tls_cert_file", chain(&e));
                push(at(&text, &e), &mut problems);
            }
        }
        Err(e) => push(at(&text, &e), &mut problems),
    }
    if let Some(k) = &signing_key
        && std::fs::metadata(k).is_ok()
        && let Err(e) = crate::keyfile::load(k)
    {
        let e = SettingError::new("signing_key_file", chain(&e));
        push(at(&text, &e), &mut problems);
    }
    // The rest (and what a table's own check cannot see: a name used
    // twice, a flag that overrides the file).
    let config = match parse()?.validate(over) {
        Ok(c) => Some(c),
        Err(e) => {
            push(at(&text, &e), &mut problems);
            None
        }
    };
    // In the file's order; what is not in the file (a flag) last.
    problems.sort_by_key(|p| p.at.unwrap_or((usize::MAX, 0)));
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    crate::report::Chain(e).to_string()
}

/// A source's API key, loaded as `serve` loads it (never shown).
fn source_loads(i: usize, s: &crate::sources::SourceConfig) -> Vec<SettingError> {
    use crate::secret::SecretSource;
    let mut out = Vec::new();
    if let Err(e) = s.load_key() {
        let key = match &s.key_from {
            Some(SecretSource::File(_)) => "api_key_file",
            _ => "api_key_env",
        };
        out.push(SettingError::new(&format!("sources[{i}].{key}"), chain(&e)));
    }
    if let Err(e) = s.http_client() {
        out.push(SettingError::new(
            &format!("sources[{i}].url"),
            crate::net::describe(&e),
        ));
    }
    out
}

/// A destination's secret (loaded and parsed, never shown), its client
/// or its object store's URL and credentials.
fn destination_loads(
    i: usize,
    d: &crate::destinations::config::DestinationConfig,
) -> Vec<SettingError> {
    use crate::destinations::config::Kind;
    use crate::secret::SecretSource;
    let table = format!("destinations[{i}]");
    let built = match &d.kind {
        Kind::File { .. } => Ok(()),
        Kind::Object { url, bucket, .. } => crate::objstore::Bucket::check(url, bucket)
            .map_err(|e| SettingError::new(&format!("{table}.url"), chain(&e))),
        Kind::SplunkHec { secret, .. }
        | Kind::BigQuery { secret, .. }
        | Kind::Datadog { secret, .. }
        | Kind::Webhook { secret, .. } => {
            // Building loads the secret and parses it (a whsec_ key, a
            // service account) and builds the client: no connection.
            crate::destinations::build(d).map(drop).map_err(|e| {
                let key = match secret {
                    SecretSource::Env(_) => "secret_env",
                    SecretSource::File(_) => "secret_file",
                };
                SettingError::new(&format!("{table}.{key}"), chain(&e))
            })
        }
    };
    built.err().into_iter().collect()
}

/// The archive's bucket URL and credentials, and its HMAC secret file.
fn archive_loads(a: &crate::config::ArchiveConfig) -> Vec<SettingError> {
    let mut out = Vec::new();
    if let Some(url) = &a.url
        && let Err(e) = crate::objstore::Bucket::check(url, &a.bucket)
    {
        out.push(SettingError::new("archive.url", chain(&e)));
    }
    if let Some(f) = &a.hmac_secret_file {
        match crate::secret::SecretSource::File(f.clone()).load_bytes("archive.hmac_secret_file") {
            Ok(s) if s.len() < 16 => out.push(SettingError::new(
                "archive.hmac_secret_file",
                format!("{}: the secret must be at least 16 bytes", f.display()),
            )),
            Ok(_) => {}
            Err(e) => out.push(SettingError::new("archive.hmac_secret_file", chain(&e))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_found_with_their_line_and_column() {
        let text = "log_name = \"x\"\n[ingest]\nmax_event_bytes = 10\n\n[[destinations]]\nname = \"a\"\n\n[[destinations]]\nname = \"b\"\nurl = \"http://127.0.0.1:9/x\"\n";
        let e = SettingError::new(
            "ingest.max_event_bytes",
            "must be between 1024 and 16777216",
        );
        let p = problem(Path::new("t.toml"), text, &e);
        assert_eq!(p.at, Some((3, 19)), "{p}");
        assert_eq!(
            p.to_string(),
            "t.toml:3:19: ingest.max_event_bytes: must be between 1024 and 16777216\n  |\n3 | max_event_bytes = 10\n  |                   ^^"
        );
        let e = SettingError::new("destinations[1].url", "refused");
        let p = problem(Path::new("t.toml"), text, &e);
        assert_eq!(p.at, Some((10, 7)), "{p}");
        // A key that is not in the file points at its table.
        let e = SettingError::new("destinations[1].secret_env", "missing");
        assert!(problem(Path::new("t.toml"), text, &e).at.is_some());
        assert_eq!(
            key_at(text, text.find("127.0.0.1").unwrap()).as_deref(),
            Some("destinations[1].url")
        );
    }

    /// Issue #15: toml's errors were flattened onto one line, without the
    /// file; now the position leads and the caret has its own line.
    #[test]
    fn parse_errors_show_file_line_column_and_caret() {
        let text = "[ingest]\nmax_evnt_bytes = 1\n";
        let e = RawConfig::parse(text).expect_err("unknown key");
        let p = problem(Path::new("c.toml"), text, &e);
        assert_eq!(p.key, "ingest.max_evnt_bytes", "{p}");
        let shown = p.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert!(
            lines[0]
                .starts_with("c.toml:2:1: ingest.max_evnt_bytes: unknown field `max_evnt_bytes`"),
            "{shown}"
        );
        assert_eq!(lines[2], "2 | max_evnt_bytes = 1", "{shown}");
        assert_eq!(lines[3], "  | ^^^^^^^^^^^^^^", "{shown}");
        let text = "a = \n";
        let e = RawConfig::parse(text).expect_err("syntax");
        let p = problem(Path::new("c.toml"), text, &e);
        assert_eq!(p.at.map(|a| a.0), Some(1), "{p}");
        assert!(p.to_string().lines().count() >= 4, "{p}");
    }
}
