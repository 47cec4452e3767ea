//! Helpers shared by the end-to-end tests: run the real binary, start and
//! stop `serve`, read the store back.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod console;

pub const BIN: &str = env!("CARGO_BIN_EXE_trailkeep");

pub fn trailkeep(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

pub fn create_key(data_dir: &Path, scope: &str) -> String {
    // Key commands need an existing store: provision one the way an
    // operator would before the first serve.
    if std::fs::metadata(data_dir.join("trailkeep.db")).is_err() {
        let m = trailkeep(data_dir, &["migrate"]);
        assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    }
    let out = trailkeep(data_dir, &["keys", "create", "--scope", scope]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The port in a "trailkeep serving … listen=127.0.0.1:PORT" log line
/// (colour codes and all).
fn serving_port(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Everything a spawned process wrote to stderr so far.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().contains(needle)
    }

    /// Appends one line.
    pub fn push(&self, line: &str) {
        let mut all = self.0.lock().unwrap();
        all.push_str(line);
        all.push('\n');
    }
}

/// A `serve` process started on port 0, with the port it was given.
pub struct Serving {
    pub child: Child,
    pub port: u16,
    /// Its stderr, collected for the life of the process.
    pub log: Log,
}

/// Spawns `cmd` (a `serve … --listen 127.0.0.1:0`; its log level must show
/// `trailkeep::server` at info), drains its stderr into a [`Log`] and
/// returns once the "trailkeep serving" line names the port the kernel
/// gave it. No port is picked, freed and hoped to be still free: that
/// raced other tests.
pub fn spawn_serving(cmd: &mut Command) -> Serving {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Log::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    // Drain stderr for the life of the process (a full pipe would block
    // its logging); the first "serving" line carries the address.
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut all = sink.0.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
            if line.contains("trailkeep serving")
                && let Some(port) = serving_port(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(port) => Serving { child, port, log },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not start (no 'trailkeep serving' line within 20 s):\n{}",
                log.text()
            );
        }
    }
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: Log,
}

/// A test that panics must not leave its server running (it would keep
/// ports, files and inherited locks).
impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[]).await
    }

    /// Starts `serve` on port 0 ([`spawn_serving`]) and waits until
    /// `/readyz` answers.
    pub async fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let Serving { child, port, log } = spawn_serving(
            Command::new(BIN)
                .arg("--data-dir")
                .arg(data_dir)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(extra)
                .envs(env.iter().copied())
                .env("RUST_LOG", "warn,trailkeep::server=info"),
        );
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        // `Connection: close` and no idle pool: the server closes each
        // probe's connection itself, so none is left open to count against
        // a test's connection limit.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let readyz = format!("{}/readyz", server.url);
        wait_for(
            Duration::from_secs(20),
            "the server to be ready",
            async || {
                client
                    .get(&readyz)
                    .header("connection", "close")
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        server
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

pub fn events_in_db(data_dir: &Path) -> HashMap<(String, String), (u64, String)> {
    let conn = rusqlite::Connection::open(data_dir.join("trailkeep.db")).unwrap();
    let mut q = conn
        .prepare(
            "SELECT s.name, e.id, e.seq, e.hash FROM events e JOIN streams s ON s.id = e.stream_id",
        )
        .unwrap();
    q.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?),
            (r.get::<_, i64>(2)? as u64, r.get(3)?),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

pub fn verify_json(data_dir: &Path) -> (i32, Value) {
    let out = trailkeep(data_dir, &["verify", "--json"]);
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stderr).into()));
    (code, v)
}

/// GETs `url` with `token` and returns the body as JSON.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `f` holds, polling, or panics with `what` after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for an async condition (an HTTP answer, a query).
pub async fn wait_for(timeout: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    poll(timeout, what, async || f().await.then_some(())).await;
}

/// Polls `f` until it gives a value, or panics with `what` after `timeout`.
pub async fn poll<T>(timeout: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for plain threads (no runtime).
pub fn wait_until_blocking(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// How often the waits above look again.
pub const POLL: Duration = Duration::from_millis(25);

/// A fresh PostgreSQL database on the server `scripts/test.sh` started.
pub struct FreshPostgres {
    /// URL of the new database.
    pub url: String,
    /// URL of the server's default database.
    pub base: String,
    /// Name of the new database.
    pub db: String,
    /// A connection to the default database (to create more).
    pub client: tokio_postgres::Client,
}

/// Creates a fresh database named `{prefix}_{pid}`; `None` outside CI when
/// no server is configured (in CI that is a failure, not a skip).
pub async fn fresh_postgres(prefix: &str) -> Option<FreshPostgres> {
    let Some(base) = std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: TEST_POSTGRES_URL is not set"
        );
        return None;
    };
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let db = format!("{prefix}_{}", std::process::id());
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    Some(FreshPostgres {
        url,
        base,
        db,
        client,
    })
}

/// Events of the producers' streams in a verify report (`streams[].events`),
/// leaving out the log's own stream `_trailkeep` (its checkpoint and index
/// records, whose number depends on timing).
pub fn user_events(report: &Value) -> u64 {
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        // The log's own streams (`_trailkeep`, `_audit`) are not users'.
        .filter(|s| !s["stream"].as_str().unwrap().starts_with('_'))
        .map(|s| s["events"].as_u64().unwrap())
        .sum()
}

/// Rewrites `stream`'s history consistently in a SQLite store, as an
/// attacker with database write access would: the event at `seq` gets
/// `data.i = 333`, and every later event up to `head` is re-chained (prev,
/// canonical body, hash), then the head hash. Only checkpoints held outside
/// the store can show it.
pub fn rewrite_consistently(c: &rusqlite::Connection, stream: &str, seq: i64, head: i64) {
    let sid: i64 = c
        .query_row("SELECT id FROM streams WHERE name = ?1", [stream], |r| {
            r.get(0)
        })
        .unwrap();
    let at = |seq: i64| -> (String, String) {
        c.query_row(
            "SELECT body, hash FROM events WHERE stream_id = ?1 AND seq = ?2",
            [sid, seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let mut prev = at(seq - 1).1;
    for s in seq..=head {
        let mut v: Value = serde_json::from_str(&at(s).0).unwrap();
        if s == seq {
            v["data"]["i"] = serde_json::json!(333);
        }
        v["prev"] = serde_json::json!(prev);
        let canon = serde_json_canonicalizer::to_string(&v).unwrap();
        let hash = hex::encode(trailkeep::chain::event_hash(canon.as_bytes()));
        c.execute(
            "UPDATE events SET body = ?1, hash = ?2 WHERE stream_id = ?3 AND seq = ?4",
            rusqlite::params![canon, hash, sid, s],
        )
        .unwrap();
        prev = hash;
    }
    c.execute(
        "UPDATE streams SET head_hash = ?1 WHERE id = ?2",
        rusqlite::params![prev, sid],
    )
    .unwrap();
}

/// Produces a CA and a leaf certificate for `san` (`IP:127.0.0.1`,
/// `DNS:other.example`) signed by it, with openssl (rustls refuses a CA
/// certificate as the server's own): (leaf, key, CA).
pub fn tls_cert(
    dir: &Path,
    name: &str,
    san: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |ext: &str| dir.join(format!("{name}.{ext}"));
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca_key, ca_crt) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}-ca"),
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
        ],
    ]
    .concat());
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    ]
    .concat());
    std::fs::write(
        p("ext"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        &crt,
        "-extfile",
        &ext,
    ]);
    (p("crt"), p("key"), dir.join(ca_crt))
}

/// Scrapes `/metrics` of the server at `url`: every series (name with its
/// labels, as rendered) and its value, and the text itself.
pub async fn scrape(url: &str) -> (std::collections::BTreeMap<String, f64>, String) {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut series = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        series.insert(name.to_owned(), value.parse().unwrap());
    }
    (series, text)
}
