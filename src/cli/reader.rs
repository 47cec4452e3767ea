//! Where `streams` and `events` read: the store itself, opened read-only
//! (a data directory, also while `serve` runs on it, or PostgreSQL), or a
//! server's HTTP API with a key (`--server`, `--token`), whose scope and
//! stream the server enforces. Both give the same pages
//! ([`crate::store::EventPage`]'s rule: consecutive seqs, or the archived
//! range that starts where the read does).
//!
//! Not here: printing (`streams.rs`, `events.rs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::api::ErrorBody;
use crate::config::{Config, StoreLocation};
use crate::event::stored_json;
use crate::names::StreamName;
use crate::secret::Secret;
use crate::store::{ArchivedRange, EventPage, Store, StoreExt as _, StreamInfo};

/// `--server` and `--token`: read through a server instead of the store.
#[derive(Debug, Args)]
pub struct Remote {
    /// Read through this server's HTTP API (e.g. http://127.0.0.1:7470)
    /// instead of opening the store; the key's scope (read) and stream
    /// apply. Without it, the store is opened read-only: the data
    /// directory (--data-dir), or PostgreSQL (--store postgres://…).
    #[arg(long, env = "TRAILKEEP_SERVER", value_name = "URL", requires = "token")]
    pub server: Option<String>,
    /// API key for --server (read or admin scope). Prefer the
    /// TRAILKEEP_TOKEN variable: a flag shows in the process list. Never
    /// printed.
    #[arg(
        long,
        env = "TRAILKEEP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub token: Option<Secret>,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(Secret::new(s.to_owned()))
}

/// One stored event as read: its seq and its stored JSON line.
pub(super) struct Line {
    /// Its seq.
    pub seq: u64,
    /// The event as stored, hash included (one JSON object, no newline).
    pub json: String,
}

/// One page of a stream.
pub(super) enum Page {
    /// Consecutive seqs from the one asked for (empty: past the head).
    Events(Vec<Line>),
    /// The seq asked for is archived and no longer hot.
    Archived(ArchivedRange),
    /// No such stream (yet).
    NoStream,
}

/// Where reads go.
pub(super) enum Reader {
    /// The store, read-only.
    Store(Arc<dyn Store>),
    /// A server's HTTP API.
    Server(Client),
}

impl Reader {
    /// Opens what the flags name: `--server`, else the configured store,
    /// read-only (`config` is loaded only then).
    ///
    /// # Errors
    /// A bad URL, a missing or unreadable store, a config error.
    pub(super) async fn open(
        remote: &Remote,
        config: impl FnOnce() -> anyhow::Result<Config>,
    ) -> anyhow::Result<Self> {
        match (&remote.server, &remote.token) {
            (Some(url), Some(token)) => Ok(Self::Server(Client::new(url, token.clone())?)),
            (Some(_), None) => bail!("--server needs a key: --token or TRAILKEEP_TOKEN"),
            (None, _) => Ok(Self::Store(open_read_only(&config()?).await?)),
        }
    }

    /// Returns every stream the reader may see, by name.
    ///
    /// # Errors
    /// Store or server errors.
    pub(super) async fn streams(&self) -> anyhow::Result<Vec<StreamInfo>> {
        match self {
            Self::Store(store) => {
                let mut all = store.streams().await?;
                all.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
                Ok(all)
            }
            Self::Server(c) => {
                #[derive(serde::Deserialize)]
                struct List {
                    streams: Vec<StreamInfo>,
                }
                let body = c.get("/v1/streams").await?.ok()?;
                let list: List = serde_json::from_slice(&body)
                    .with_context(|| format!("{} GET /v1/streams: not a stream list", c.base))?;
                Ok(list.streams)
            }
        }
    }

    /// Returns up to `limit` events of `stream` from `from_seq`.
    ///
    /// # Errors
    /// Store or server errors.
    pub(super) async fn page(
        &self,
        stream: &StreamName,
        from_seq: u64,
        limit: usize,
    ) -> anyhow::Result<Page> {
        match self {
            Self::Store(store) => Ok(
                match store.read_page(stream.as_str(), from_seq, limit).await? {
                    EventPage::Events(rows)
                        if rows.is_empty() && store.stream(stream.as_str()).await?.is_none() =>
                    {
                        Page::NoStream
                    }
                    EventPage::Events(rows) => Page::Events(
                        rows.into_iter()
                            .map(|r| Line {
                                seq: r.seq,
                                json: stored_json(&r.body, &r.hash),
                            })
                            .collect(),
                    ),
                    EventPage::Archived(r) => Page::Archived(r),
                },
            ),
            Self::Server(c) => {
                let path = format!(
                    "/v1/streams/{}/events?from_seq={from_seq}&limit={limit}",
                    stream.as_str()
                );
                let answer = c.get(&path).await?;
                match answer.status {
                    200 => {
                        let text = String::from_utf8(answer.body)
                            .with_context(|| format!("{}: not UTF-8", answer.what))?;
                        let mut lines = Vec::new();
                        for l in text.lines().filter(|l| !l.is_empty()) {
                            let seq = crate::event::scan_stored(l)
                                .and_then(|s| s.seq)
                                .with_context(|| {
                                    format!("{}: a line without a seq", answer.what)
                                })?;
                            lines.push(Line {
                                seq,
                                json: l.to_owned(),
                            });
                        }
                        Ok(Page::Events(lines))
                    }
                    404 => Ok(Page::NoStream),
                    410 => match answer.error().and_then(|e| e.error.archived) {
                        Some(a) => Ok(Page::Archived(a.range)),
                        None => Err(answer.failure()),
                    },
                    _ => Err(answer.failure()),
                }
            }
        }
    }
}

/// Opens the configured store read-only: never creates or migrates one,
/// never takes the writer's lock (see `SqliteStore::open_read_only`).
pub(super) async fn open_read_only(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreLocation::Sqlite => {
            let db = super::existing_db(config)?;
            Arc::new(
                crate::store::sqlite::SqliteStore::open_read_only(&db)
                    .with_context(|| format!("opening {} read-only", db.display()))?,
            )
        }
        StoreLocation::Postgres(url) => Arc::new(
            crate::store::postgres::PostgresStore::connect_read_only(url, &config.postgres)
                .await
                .context("opening the PostgreSQL store read-only")?,
        ),
    })
}

/// A server's HTTP API, with the key every request carries.
pub(super) struct Client {
    http: reqwest::Client,
    /// The server's URL without a trailing slash (never holds the key).
    base: String,
    token: Secret,
}

/// A server's answer.
struct Answer {
    status: u16,
    /// The answer's headers.
    headers: reqwest::header::HeaderMap,
    /// `URL GET PATH` (for messages; never the key).
    what: String,
    body: Vec<u8>,
}

impl Answer {
    /// The body of a 2xx answer.
    fn ok(self) -> anyhow::Result<Vec<u8>> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(self.failure())
        }
    }

    fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The error an unexpected answer is: the server's own message when
    /// it sent the JSON error shape.
    fn failure(&self) -> anyhow::Error {
        let hint = match self.status {
            401 => " (is the token right, and not revoked?)",
            403 => " (the key's scope or stream does not allow this read)",
            _ => "",
        };
        match self.error() {
            Some(e) => anyhow::anyhow!(
                "{}: {} {}: {}{hint}",
                self.what,
                self.status,
                super::printable(&e.error.code),
                super::printable(&e.error.message)
            ),
            None => anyhow::anyhow!(
                "{}: {}: {}{hint}",
                self.what,
                self.status,
                super::printable(
                    &String::from_utf8_lossy(&self.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                )
            ),
        }
    }
}

/// How often a request answered 429 or 503 with `Retry-After` is tried.
const TRIES: u32 = 10;

impl Client {
    fn new(url: &str, token: Secret) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none()
        });
        let Some(parsed) = parsed else {
            bail!(
                "--server {url:?} is not an http:// or https:// URL such as http://127.0.0.1:7470"
            );
        };
        // Messages name the URL: it must hold no secret.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            bail!(
                "--server must not carry credentials; the key goes in --token or TRAILKEEP_TOKEN"
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// GETs `path`, waiting out `Retry-After` on 429 and 503.
    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(path, None).await
    }

    /// GETs `path` and reads a 2xx answer's body as JSON of type `T`, else
    /// the server's error.
    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<T> {
        let answer = self.get(path).await?;
        let what = answer.what.clone();
        let body = answer.ok()?;
        serde_json::from_slice(&body).with_context(|| format!("{what}: not the expected JSON"))
    }

    /// POSTs `body` as JSON to `path`: the headers and body of a 2xx
    /// answer, else the server's error (429 and 503 waited out as for GET).
    pub(super) async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, Vec<u8>)> {
        let a = self.send(path, Some(body)).await?;
        if (200..300).contains(&a.status) {
            Ok((a.headers, a.body))
        } else {
            Err(a.failure())
        }
    }

    async fn send(&self, path: &str, json: Option<&serde_json::Value>) -> anyhow::Result<Answer> {
        let what = format!(
            "{} {} {}",
            self.base,
            if json.is_some() { "POST" } else { "GET" },
            path.split('?').next().unwrap_or(path)
        );
        let mut tries = 0;
        loop {
            tries += 1;
            let url = format!("{}{path}", self.base);
            let req = match json {
                Some(b) => self
                    .http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string()),
                None => self.http.get(url),
            };
            let resp = req
                .bearer_auth(self.token.expose())
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot reach {}: {}", self.base, crate::net::describe(&e))
                })?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let (429 | 503, Some(secs), true) = (status, wait, tries < TRIES) {
                tokio::time::sleep(Duration::from_secs(secs.clamp(1, 60))).await;
                continue;
            }
            let body = resp.bytes().await.map_err(|e| {
                anyhow::anyhow!("{what}: reading the answer: {}", crate::net::describe(&e))
            })?;
            return Ok(Answer {
                status,
                what: what.clone(),
                body: body.to_vec(),
                headers,
            });
        }
    }
}
