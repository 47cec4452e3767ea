//! Issue #19: `serve` nodes sharing one PostgreSQL, each owning a share of
//! the streams. Real processes, a real PostgreSQL; checks are made on the
//! database and with `trailkeep verify`, independently of the writers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BIN, Server, fresh_postgres};
use serde_json::{Value, json};

/// (stream, id) -> (seq, hash), as acknowledged.
type Acked = Arc<Mutex<HashMap<(String, String), (u64, String)>>>;

const TTL_MS: u64 = 1500;

/// A database, a shared config (signing key, short shard leases) and an
/// ingest key, ready for nodes.
struct Cluster {
    url: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    public_key: PathBuf,
    token: String,
}

impl Cluster {
    async fn new(name: &str, extra_config: &str) -> Option<Self> {
        Self::with_ttl(name, TTL_MS, extra_config).await
    }

    /// A cluster whose shard leases last `ttl_ms`.
    async fn with_ttl(name: &str, ttl_ms: u64, extra_config: &str) -> Option<Self> {
        let pg = fresh_postgres(name).await?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shared.toml");
        let key_file = dir.path().join("shared-signing.key");
        std::fs::write(
            &config,
            format!(
                "signing_key_file = \"{}\"\n[postgres]\nmax_connections = 6\n[cluster]\nlease_ttl_ms = {ttl_ms}\n{extra_config}",
                key_file.display()
            ),
        )
        .unwrap();
        let c = Self {
            url: pg.url.clone(),
            public_key: dir.path().join("verifier.pub"),
            dir,
            config,
            token: String::new(),
        };
        assert!(c.cli(&["migrate"]).status.success());
        let public = c.cli(&["keys", "public"]);
        assert!(public.status.success());
        std::fs::write(&c.public_key, &public.stdout).unwrap();
        let key = c.cli(&["keys", "create", "--scope", "ingest"]);
        assert!(key.status.success());
        let token = String::from_utf8(key.stdout).unwrap().trim().to_owned();
        Some(Self { token, ..c })
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args([
                "--data-dir",
                self.dir.path().join("cli").to_str().unwrap(),
                "--store",
                &self.url,
                "--config",
                self.config.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    }

    async fn node(&self, n: usize) -> Server {
        self.node_with(n, None).await
    }

    /// A node; `config` replaces the shared config file.
    async fn node_with(&self, n: usize, config: Option<&PathBuf>) -> Server {
        let dir = self.dir.path().join(format!("node{n}"));
        Server::start(
            &dir,
            &[
                "--store",
                &self.url,
                "--config",
                config.unwrap_or(&self.config).to_str().unwrap(),
            ],
        )
        .await
    }

    /// `verify --json` of the whole store with the public key: exit 0 and
    /// the report.
    fn verify(&self) -> Value {
        let out = self.cli(&[
            "verify",
            "--json",
            "--public-key",
            self.public_key.to_str().unwrap(),
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify: {report:#} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }

    /// Every acknowledged event is stored once, with the seq and hash it
    /// was acknowledged with, and nothing else is in the producers' streams.
    async fn assert_stored(&self, acked: &Acked) {
        let (c, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = c
            .query(
                "SELECT s.name, e.id, e.seq, e.hash FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name NOT LIKE '\\_%'",
                &[],
            )
            .await
            .unwrap();
        let stored: HashMap<(String, String), (u64, String)> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get::<_, i64>(2) as u64, r.get(3))))
            .collect();
        let acked = acked.lock().unwrap();
        for (k, v) in acked.iter() {
            assert_eq!(stored.get(k), Some(v), "acknowledged {k:?}");
        }
        assert_eq!(
            stored.len(),
            acked.len(),
            "nothing stored twice or unacknowledged"
        );
    }
}

/// A metric's value summed over its series (0 when absent).
async fn metric(url: &str, name: &str) -> f64 {
    let (samples, _) = common::scrape(url).await;
    samples
        .iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v)
        .sum()
}

/// How many shards each node says it owns.
async fn owned(nodes: &[&Server]) -> Vec<f64> {
    let mut v = Vec::new();
    for n in nodes {
        v.push(metric(&n.url, "trailkeep_shards_owned").await);
    }
    v
}

/// Writers that post batches of 5 events to 12 streams through `urls`
/// until `stop`, each batch retried with the same ids on any failure
/// (through the next node) until acknowledged. Returns the handles.
fn load(
    urls: Arc<Mutex<Vec<String>>>,
    token: &str,
    acked: Acked,
    stop: Arc<AtomicBool>,
    writers: usize,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..writers)
        .map(|w| {
            let (urls, token, acked, stop) =
                (urls.clone(), token.to_owned(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut batches = 0u64;
                let mut next = w;
                while !stop.load(Ordering::SeqCst) {
                    let stream = format!("s{}", (batches as usize * 7 + w) % 12);
                    let events: Vec<Value> = (0..5)
                        .map(|i| json!({"type":"t","id":format!("w{w}-b{batches}-{i}")}))
                        .collect();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        assert!(Instant::now() < deadline, "a batch was never acknowledged");
                        let url = {
                            let u = urls.lock().unwrap();
                            u[next % u.len()].clone()
                        };
                        next += 1;
                        let Ok(r) = http
                            .post(format!("{url}/v1/streams/{stream}/events"))
                            .bearer_auth(&token)
                            .json(&events)
                            .send()
                            .await
                        else {
                            continue;
                        };
                        if r.status() != 200 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        let body: Value = r.json().await.unwrap();
                        let mut a = acked.lock().unwrap();
                        for e in body["accepted"].as_array().unwrap() {
                            a.insert(
                                (stream.clone(), e["id"].as_str().unwrap().to_owned()),
                                (
                                    e["seq"].as_u64().unwrap(),
                                    e["hash"].as_str().unwrap().to_owned(),
                                ),
                            );
                        }
                        break;
                    }
                    batches += 1;
                }
                batches
            })
        })
        .collect()
}

/// Nodes divide the 64 shards between them; a request sent to a node that
/// does not own its stream is forwarded to the owner (who commits it: the
/// answer names it), or, with `non_owner = "redirect"`, answered 307 with
/// the owner's URL. Every event is stored once and the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_divide_the_shards_and_non_owners_forward_or_redirect() {
    let Some(c) = Cluster::new("tk_owners", "").await else {
        return;
    };
    let a = c.node(0).await;
    let redirecting = c.dir.path().join("redirect.toml");
    std::fs::write(
        &redirecting,
        format!(
            "{}non_owner = \"redirect\"\n",
            std::fs::read_to_string(&c.config).unwrap()
        ),
    )
    .unwrap();
    let b = c.node_with(1, Some(&redirecting)).await;
    common::wait_for(
        Duration::from_secs(20),
        "both nodes owning their share, 32 each",
        async || owned(&[&a, &b]).await == [32.0, 32.0],
    )
    .await;
    // Each node learns who owns the shards it does not hold at its next
    // round (every TTL/3): two rounds after the last move, both views agree.
    tokio::time::sleep(Duration::from_millis(2 * TTL_MS / 3 + 100)).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    let mut committed_by: HashMap<String, usize> = HashMap::new();
    let mut redirects = 0;
    for i in 0..24 {
        let stream = format!("st{i}");
        let events = json!([{"type":"t","id":format!("e{i}")}]);
        // Through a (forwarding).
        let r = http
            .post(format!("{}/v1/streams/{stream}/events", a.url))
            .bearer_auth(&c.token)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let node = r.headers()["trailkeep-node"].to_str().unwrap().to_owned();
        *committed_by.entry(node.clone()).or_default() += 1;
        let body: Value = r.json().await.unwrap();
        let e = &body["accepted"][0];
        acked.lock().unwrap().insert(
            (stream.clone(), format!("e{i}")),
            (
                e["seq"].as_u64().unwrap(),
                e["hash"].as_str().unwrap().to_owned(),
            ),
        );
        // Through b (redirecting): a stream b does not own is answered 307.
        let second = json!([{"type":"t","id":format!("f{i}")}]);
        let r = http
            .post(format!("{}/v1/streams/{stream}/events", b.url))
            .bearer_auth(&c.token)
            .json(&second)
            .send()
            .await
            .unwrap();
        let r = if r.status() == 307 {
            redirects += 1;
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            assert_eq!(
                location,
                format!("{}/v1/streams/{stream}/events", a.url),
                "the owner's URL"
            );
            assert_eq!(r.headers()["trailkeep-owner"].to_str().unwrap(), node);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "not_owner", "{body}");
            http.post(location)
                .bearer_auth(&c.token)
                .json(&second)
                .send()
                .await
                .unwrap()
        } else {
            r
        };
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["trailkeep-node"].to_str().unwrap(),
            node,
            "the same owner commits both"
        );
        let body: Value = r.json().await.unwrap();
        let e = &body["accepted"][0];
        acked.lock().unwrap().insert(
            (stream.clone(), format!("f{i}")),
            (
                e["seq"].as_u64().unwrap(),
                e["hash"].as_str().unwrap().to_owned(),
            ),
        );
    }
    assert_eq!(
        committed_by.len(),
        2,
        "both nodes own streams: {committed_by:?}"
    );
    let forwarded = metric(&a.url, "trailkeep_ingest_forwarded_total").await;
    assert!(forwarded > 0.0 && redirects > 0, "{forwarded} {redirects}");
    assert_eq!(
        forwarded + redirects as f64,
        24.0,
        "each stream has one owner: a forwards what b owns, b redirects what a owns"
    );
    assert_eq!(
        metric(&b.url, "trailkeep_ingest_redirects_total").await,
        redirects as f64
    );
    assert_eq!(a.terminate().code(), Some(0));
    assert_eq!(b.terminate().code(), Some(0));
    c.assert_stored(&acked).await;
    c.verify();
}

/// `kill -9` of a node during load: the others take its shards within one
/// lease TTL and a round (TTL/3) plus slack for this shared machine; while
/// they have not, requests for its streams are committed by whichever node
/// receives them. Every acknowledged event is stored once with its seq and
/// hash, and `verify` finds every chain, tile and checkpoint intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_owner_during_load_fails_over_and_loses_nothing() {
    let Some(c) = Cluster::new("tk_failover", "").await else {
        return;
    };
    let nodes = [c.node(0).await, c.node(1).await, c.node(2).await];
    common::wait_for(
        Duration::from_secs(20),
        "three nodes owning 64 shards",
        async || {
            let o = owned(&[&nodes[0], &nodes[1], &nodes[2]]).await;
            o.iter().sum::<f64>() == 64.0 && o.iter().all(|n| *n > 0.0)
        },
    )
    .await;
    let urls = Arc::new(Mutex::new(nodes.iter().map(|n| n.url.clone()).collect()));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(urls.clone(), &c.token, acked.clone(), stop.clone(), 6);
    common::wait_until(Duration::from_secs(20), "load under way", || {
        acked.lock().unwrap().len() > 500
    })
    .await;
    let [n0, n1, n2] = nodes;
    let victim_owned = metric(&n2.url, "trailkeep_shards_owned").await;
    assert!(victim_owned > 0.0);
    n2.kill9();
    let killed = Instant::now();
    urls.lock().unwrap().truncate(2);
    common::wait_for(
        Duration::from_secs(30),
        "the survivors owning all 64 shards",
        async || owned(&[&n0, &n1]).await.iter().sum::<f64>() == 64.0,
    )
    .await;
    let failover = killed.elapsed();
    let bound = Duration::from_millis(TTL_MS + TTL_MS / 3) + Duration::from_secs(3);
    assert!(
        failover <= bound,
        "failover took {failover:?}, more than one TTL and a round (+3 s slack): {bound:?}"
    );
    let before = acked.lock().unwrap().len();
    common::wait_until(
        Duration::from_secs(20),
        "load going on after failover",
        || acked.lock().unwrap().len() > before + 300,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(n0.terminate().code(), Some(0));
    assert_eq!(n1.terminate().code(), Some(0));
    c.assert_stored(&acked).await;
    let report = c.verify();
    assert_eq!(
        common::user_events(&report),
        acked.lock().unwrap().len() as u64
    );
}

/// Nodes joining and leaving under load: the first node owns everything,
/// two more join and take their share, the first stops (gracefully: it
/// gives its shards up) and the others take them. Nothing is lost or
/// stored twice, and the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalancing_under_load_loses_nothing() {
    let Some(c) = Cluster::new("tk_rebalance", "").await else {
        return;
    };
    let n0 = c.node(0).await;
    common::wait_for(Duration::from_secs(20), "one node owning all", async || {
        owned(&[&n0]).await == [64.0]
    })
    .await;
    let urls = Arc::new(Mutex::new(vec![n0.url.clone()]));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = load(urls.clone(), &c.token, acked.clone(), stop.clone(), 4);
    let n1 = c.node(1).await;
    let n2 = c.node(2).await;
    urls.lock()
        .unwrap()
        .extend([n1.url.clone(), n2.url.clone()]);
    common::wait_for(
        Duration::from_secs(30),
        "three nodes sharing the 64 shards",
        async || {
            let o = owned(&[&n0, &n1, &n2]).await;
            o.iter().sum::<f64>() == 64.0 && o.iter().all(|n| *n >= 20.0)
        },
    )
    .await;
    let before = acked.lock().unwrap().len();
    common::wait_until(Duration::from_secs(20), "load after the join", || {
        acked.lock().unwrap().len() > before + 200
    })
    .await;
    urls.lock().unwrap().remove(0);
    assert_eq!(n0.terminate().code(), Some(0));
    let (db, conn) = tokio_postgres::connect(&c.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let registered: i64 = db
        .query_one("SELECT count(*) FROM nodes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 2, "a graceful stop leaves the cluster at once");
    common::wait_for(
        Duration::from_secs(20),
        "two nodes owning all 64 shards",
        async || owned(&[&n1, &n2]).await.iter().sum::<f64>() == 64.0,
    )
    .await;
    let before = acked.lock().unwrap().len();
    common::wait_until(Duration::from_secs(20), "load after the leave", || {
        acked.lock().unwrap().len() > before + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(n1.terminate().code(), Some(0));
    assert_eq!(n2.terminate().code(), Some(0));
    c.assert_stored(&acked).await;
    let report = c.verify();
    assert_eq!(
        common::user_events(&report),
        acked.lock().unwrap().len() as u64
    );
}

/// A stand-in at the URL the store names for a node: whoever can write the
/// `nodes` table can point forwards at it. It records every request's
/// headers and answers like an owner would (200, `Trailkeep-Node`).
struct Impostor {
    url: String,
    seen: Arc<Mutex<Vec<Headers>>>,
}

/// One request's headers, as (name, value) text.
type Headers = Vec<(String, String)>;

impl Impostor {
    async fn start(node: &'static str) -> Self {
        let seen: Arc<Mutex<Vec<Headers>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(
                    headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                );
                (
                    [("trailkeep-node", node), ("content-type", "application/json")],
                    r#"{"stream":"s","accepted":[{"id":"e1","seq":1,"hash":"sha256:00","duplicate":false}],"head":{"seq":1,"hash":"sha256:00"}}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }
}

/// Makes `node` (at `url`) look alive and the owner of every shard for an
/// hour, as database write access could.
async fn hand_every_shard_to(db: &str, node: &str, url: &str) {
    let (c, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "INSERT INTO nodes (node, url, seen_ms) VALUES ('{node}', '{url}', \
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 3600000); \
         INSERT INTO leases (name, holder, token, expires_ms) \
           SELECT 'shard:' || lpad(n::text, 4, '0'), '{node}', 1, \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 3600000 \
           FROM generate_series(0, 63) n"
    ))
    .await
    .unwrap();
}

/// The ids of the events stored in producers' streams.
async fn stored_ids(db: &str) -> Vec<String> {
    let (c, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query(
        "SELECT e.id FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name NOT LIKE '\\_%'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Database write access can name any URL as a node's: a forward there
/// must carry no client token, and its answer must not be relayed as an
/// acknowledgement (the events were never stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_to_a_url_the_database_names_carries_no_token_and_no_false_ack() {
    let Some(c) = Cluster::new("tk_impostor", "").await else {
        return;
    };
    let impostor = Impostor::start("ghost").await;
    hand_every_shard_to(&c.url, "ghost", &impostor.url).await;
    let a = c.node(0).await;
    let http = reqwest::Client::new();
    // Until node 0 has read the shard owners it commits requests itself:
    // each try has its own id, and the one that reached the impostor must
    // not be stored.
    let mut tries = 0;
    let (id, r) = common::poll(
        Duration::from_secs(20),
        "node 0 forwarding to the node the store names",
        async || {
            tries += 1;
            let id = format!("e{tries}");
            let r = http
                .post(format!("{}/v1/streams/s/events", a.url))
                .bearer_auth(&c.token)
                .json(&json!([{"type":"t","id":id}]))
                .send()
                .await
                .unwrap();
            (!impostor.seen.lock().unwrap().is_empty()).then_some((id, r))
        },
    )
    .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "forward_failed", "{body}");
    let seen = impostor.seen.lock().unwrap().clone();
    let secret = c.token.rsplit('_').next().unwrap();
    for request in &seen {
        for (name, value) in request {
            assert!(
                name != "authorization" && !value.contains(secret),
                "the impostor was sent the client's token in {name}: {request:?}"
            );
        }
    }
    assert_eq!(
        stored_ids(&c.url)
            .await
            .iter()
            .filter(|i| **i == id)
            .count(),
        0,
        "the forwarded event was not stored, whatever the impostor said"
    );
    assert!(metric(&a.url, "trailkeep_ingest_forwarded_total").await >= 1.0);
}

/// `Trailkeep-Forwarded-By` makes a node commit a request itself; a client
/// sending it without the nodes' signature is refused, not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pass_for_a_forwarding_node() {
    let Some(c) = Cluster::new("tk_passfor", "").await else {
        return;
    };
    let impostor = Impostor::start("ghost").await;
    hand_every_shard_to(&c.url, "ghost", &impostor.url).await;
    let a = c.node(0).await;
    let http = reqwest::Client::new();
    for headers in [
        vec![("trailkeep-forwarded-by", "ghost")],
        vec![
            ("trailkeep-forwarded-by", "ghost"),
            ("trailkeep-forwarded-key", "whatever"),
            ("trailkeep-forwarded-at", "1"),
            ("trailkeep-forwarded-mac", "AAAA"),
        ],
    ] {
        let mut req = http
            .post(format!("{}/v1/streams/s/events", a.url))
            .bearer_auth(&c.token)
            .json(&json!([{"type":"t","id":"e1"}]));
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "forward_unauthenticated", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("without the Trailkeep-Forwarded-* headers"),
            "{body}"
        );
    }
    assert!(stored_ids(&c.url).await.is_empty(), "nothing was stored");
    assert!(
        impostor.seen.lock().unwrap().is_empty(),
        "a refused request is not forwarded either"
    );
}

/// A non-owner whose forward cannot connect (the owner was just killed with
/// `kill -9`, long before its leases expire: no failover can have
/// happened) commits the request itself: 200 from the surviving node,
/// counted as `committed_here`, stored once with the seq and hash it
/// acknowledged, a retry answered as duplicates, and the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owner_commits_what_it_cannot_forward_to_a_killed_owner() {
    // 30 s leases: rounds every 10 s, so neither node moves a shard during
    // the test, and the dead node's leases outlive it.
    let Some(c) = Cluster::with_ttl("tk_dead_owner", 30_000, "").await else {
        return;
    };
    let owner = c.node(0).await;
    common::wait_for(Duration::from_secs(20), "node 0 owning all", async || {
        owned(&[&owner]).await == [64.0]
    })
    .await;
    // Node 1's first round (done before it serves) sees every shard leased
    // to node 0 for 30 s: it owns none and forwards everything to node 0.
    let survivor = c.node(1).await;
    assert_eq!(owned(&[&survivor]).await, [0.0], "node 1 owns nothing");
    let survivor_id = std::fs::read_to_string(c.dir.path().join("node1").join("node.id"))
        .unwrap()
        .trim()
        .to_owned();
    owner.kill9();
    let killed = Instant::now();
    let http = reqwest::Client::new();
    let stream = "orphaned";
    let events = json!([{"type":"t","id":"d1"}, {"type":"t","id":"d2"}, {"type":"t","id":"d3"}]);
    let post = async || {
        let r = http
            .post(format!("{}/v1/streams/{stream}/events", survivor.url))
            .bearer_auth(&c.token)
            .json(&events)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let node = r
            .headers()
            .get("trailkeep-node")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            node.as_deref(),
            Some(survivor_id.as_str()),
            "the surviving node committed it"
        );
        body
    };
    let body = post().await;
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "answered while node 0's leases still held (no failover)"
    );
    let acked: Acked = Arc::default();
    for e in body["accepted"].as_array().unwrap() {
        assert_eq!(e["duplicate"], false, "{body}");
        acked.lock().unwrap().insert(
            (stream.to_owned(), e["id"].as_str().unwrap().to_owned()),
            (
                e["seq"].as_u64().unwrap(),
                e["hash"].as_str().unwrap().to_owned(),
            ),
        );
    }
    assert_eq!(acked.lock().unwrap().len(), 3, "{body}");
    // The client's retry (same ids) is answered from what is stored.
    let again = post().await;
    assert_eq!(again["accepted"], {
        let mut a = body["accepted"].clone();
        for e in a.as_array_mut().unwrap() {
            e["duplicate"] = json!(true);
        }
        a
    });
    assert_eq!(again["head"], body["head"], "{again}");
    let (samples, _) = common::scrape(&survivor.url).await;
    let count = |outcome: &str| {
        samples
            .iter()
            .filter(|(k, _)| {
                k.starts_with("trailkeep_ingest_forwarded_total{")
                    && k.contains(&format!("outcome=\"{outcome}\""))
            })
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    assert_eq!(count("committed_here"), 2.0, "both posts committed here");
    assert_eq!(count("forwarded") + count("failed"), 0.0);
    // Still node 0's: no failover happened before the answers.
    assert_eq!(owned(&[&survivor]).await, [0.0]);
    assert_eq!(survivor.terminate().code(), Some(0));
    c.assert_stored(&acked).await;
    let report = c.verify();
    assert_eq!(common::user_events(&report), 3);
}

/// An API key of `scope` (for `*`, or for `stream`), created with the CLI.
fn key(c: &Cluster, scope: &str, stream: Option<&str>) -> String {
    let mut args = vec!["keys", "create", "--scope", scope];
    if let Some(s) = stream {
        args.extend(["--stream", s]);
    }
    let out = c.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `GET /v1/cluster` of `url` with `token`: the status and the body.
async fn cluster_view(url: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// What every node must answer alike, whenever asked: who is there and
/// alive, at which URL, and who owns each shard under which epoch (not the
/// clock, ages and expiries, which move with every heartbeat).
fn stable(view: &Value) -> Value {
    json!({
        "shard_count": view["shard_count"],
        "shards_owned": view["shards_owned"],
        "nodes": view["nodes"].as_array().map(|ns| ns.iter().map(|n| json!({
            "id": n["id"], "url": n["url"], "alive": n["alive"], "shards_owned": n["shards_owned"],
        })).collect::<Vec<_>>()),
        "shards": view["shards"].as_array().map(|ss| ss.iter().map(|s| json!({
            "shard": s["shard"], "owner": s["owner"], "epoch": s["epoch"],
        })).collect::<Vec<_>>()),
    })
}

/// The node id a node's data directory holds.
fn node_id(c: &Cluster, n: usize) -> String {
    std::fs::read_to_string(c.dir.path().join(format!("node{n}/node.id")))
        .unwrap()
        .trim()
        .to_owned()
}

/// `GET /v1/cluster`: both nodes listed with their URLs, alive, owning
/// 32 shards each (the counts add up to the 64 shards, every shard owned
/// with an epoch and a lease expiry); both nodes give the same answer (it
/// is read from the store, not each node's view); a key that is not admin
/// for `*` is refused. After a `kill -9`, the dead node stays listed, not
/// alive, and the survivor owns every shard once the leases expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_endpoint_shows_every_node_and_shard_alike_on_each_node() {
    let Some(c) = Cluster::new("tk_cluster_view", "").await else {
        return;
    };
    let admin = key(&c, "admin", None);
    let a = c.node(0).await;
    let b = c.node(1).await;
    let (id_a, id_b) = (node_id(&c, 0), node_id(&c, 1));
    let both_settled = |v: &Value| {
        v["shards_owned"] == 64
            && v["nodes"]
                .as_array()
                .is_some_and(|ns| ns.len() == 2 && ns.iter().all(|n| n["shards_owned"] == 32))
    };
    let view_a = common::poll(
        Duration::from_secs(20),
        "both nodes owning 32 shards each, as GET /v1/cluster says",
        async || {
            let (status, v) = cluster_view(&a.url, &admin).await;
            assert_eq!(status, 200, "{v}");
            both_settled(&v).then_some(v)
        },
    )
    .await;
    assert_eq!(view_a["node"], id_a.as_str(), "the node that answered");
    assert_eq!(view_a["shard_count"], 64);
    assert_eq!(view_a["lease_ttl_ms"], TTL_MS);
    assert!(view_a["now"].as_str().unwrap().ends_with('Z'), "{view_a}");
    let mut expected = vec![(id_a.clone(), a.url.clone()), (id_b.clone(), b.url.clone())];
    expected.sort();
    let nodes = view_a["nodes"].as_array().unwrap();
    for (n, (id, url)) in nodes.iter().zip(&expected) {
        assert_eq!(n["id"], id.as_str(), "{view_a}");
        assert_eq!(n["url"], url.as_str(), "the advertised URL: {n}");
        assert_eq!(n["alive"], true, "{n}");
        assert!(n["last_seen"].as_str().unwrap().ends_with('Z'), "{n}");
        assert!(n["age_ms"].as_u64().unwrap() < TTL_MS, "{n}");
    }
    let total: u64 = nodes
        .iter()
        .map(|n| n["shards_owned"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 64, "the nodes' counts add up to every shard");
    let shards = view_a["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 64);
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"], i, "{s}");
        assert!(
            s["owner"] == id_a.as_str() || s["owner"] == id_b.as_str(),
            "{s}"
        );
        assert!(s["epoch"].as_i64().unwrap() >= 1, "{s}");
        assert!(s["expires"].as_str().unwrap().ends_with('Z'), "{s}");
    }
    // The same answer from either node (asked in turn until one moment's
    // answers agree: an ownership move between the two reads would differ).
    common::wait_for(
        Duration::from_secs(10),
        "both nodes giving the same answer",
        async || {
            let (_, va) = cluster_view(&a.url, &admin).await;
            let (_, vb) = cluster_view(&b.url, &admin).await;
            vb["node"] == id_b.as_str() && both_settled(&vb) && stable(&va) == stable(&vb)
        },
    )
    .await;
    // Only an admin key for `*`.
    for (token, why) in [
        (key(&c, "read", None), "a read key"),
        (c.token.clone(), "an ingest key"),
        (
            key(&c, "admin", Some("payments")),
            "an admin key bound to a stream",
        ),
    ] {
        let (status, body) = cluster_view(&a.url, &token).await;
        assert_eq!(status, 403, "{why}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{why}: {body}");
    }
    let (status, _) = cluster_view(&b.url, "tk_0000000000000000_nope").await;
    assert_eq!(status, 401);
    // A node that dies stays listed, not alive; its shards move once their
    // leases expire.
    b.kill9();
    let after = common::poll(
        Duration::from_secs(20),
        "the dead node not alive and its shards taken over",
        async || {
            let (_, v) = cluster_view(&a.url, &admin).await;
            let nodes = v["nodes"].as_array()?;
            let dead = nodes.iter().find(|n| n["id"] == id_b.as_str())?;
            let survivor = nodes.iter().find(|n| n["id"] == id_a.as_str())?;
            (dead["alive"] == false && survivor["shards_owned"] == 64).then_some(v.clone())
        },
    )
    .await;
    for n in after["nodes"].as_array().unwrap() {
        let survivor = n["id"] == id_a.as_str();
        assert_eq!(n["alive"], survivor, "{n}");
        assert_eq!(n["shards_owned"], if survivor { 64 } else { 0 }, "{n}");
    }
    assert_eq!(a.terminate().code(), Some(0));
}

/// `trailkeep cluster --json` reads the store itself (read-only) and
/// prints what `GET /v1/cluster` answers; without `--json`, a node table
/// and the shard grid; with `--server`, the server's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_command_prints_the_nodes_and_shards_from_the_store() {
    let Some(c) = Cluster::new("tk_cluster_cli", "").await else {
        return;
    };
    let admin = key(&c, "admin", None);
    let n = c.node(0).await;
    let id = node_id(&c, 0);
    let from_cli = common::poll(
        Duration::from_secs(20),
        "trailkeep cluster --json showing the node owning all 64 shards",
        async || {
            let out = c.cli(&["cluster", "--json"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            (v["shards_owned"] == 64).then_some(v)
        },
    )
    .await;
    assert_eq!(
        from_cli["node"],
        Value::Null,
        "read from the store, no node answered"
    );
    assert_eq!(from_cli["lease_ttl_ms"], TTL_MS, "the config's TTL");
    assert_eq!(from_cli["nodes"][0]["id"], id.as_str());
    assert_eq!(from_cli["nodes"][0]["url"], n.url.as_str());
    assert_eq!(from_cli["nodes"][0]["alive"], true);
    assert_eq!(from_cli["nodes"][0]["shards_owned"], 64);
    let (status, from_api) = cluster_view(&n.url, &admin).await;
    assert_eq!(status, 200);
    assert_eq!(stable(&from_cli), stable(&from_api), "the API's answer");
    let out = c.cli(&["cluster"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("1 node(s), 1 alive; 64 of 64 shards owned; store clock "),
        "{text}"
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("A "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        (
            row.len(),
            row.first(),
            row.get(1),
            row.get(2),
            row.get(3),
            row.last()
        ),
        (
            7,
            Some(&"A"),
            Some(&id.as_str()),
            Some(&"yes"),
            Some(&"64"),
            Some(&n.url.as_str())
        ),
        "label, node, alive, shards, last seen, age, URL: {text}"
    );
    assert!(
        text.contains("\n   56  A  A  A  A  A  A  A  A\n"),
        "the grid's last row: {text}"
    );
    let out = c.cli(&["cluster", "--json", "--server", &n.url, "--token", &admin]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let via_server: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(via_server["node"], id.as_str());
    assert_eq!(stable(&via_server), stable(&from_api));
    let out = c.cli(&["cluster", "--server", &n.url, "--token", &c.token]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403 forbidden"), "{err}");
    assert!(!err.contains(&c.token), "the token is never printed: {err}");
    assert_eq!(n.terminate().code(), Some(0));
}

/// A forward that was sent but got no answer (the connection closed after
/// the request went out) may have been stored: the client gets `502
/// forward_failed` and is told to retry, and the receiving node does not
/// commit it itself (that is only for a forward that never left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_that_got_no_answer_is_502_and_not_committed_here() {
    let Some(c) = Cluster::new("tk_hangup", "").await else {
        return;
    };
    // Reads each request's head, then hangs up without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    hand_every_shard_to(&c.url, "ghost", &url).await;
    let a = c.node(0).await;
    let http = reqwest::Client::new();
    let mut tries = 0;
    let (id, r) = common::poll(
        Duration::from_secs(20),
        "node 0 forwarding to the node the store names",
        async || {
            tries += 1;
            let id = format!("e{tries}");
            let r = http
                .post(format!("{}/v1/streams/s/events", a.url))
                .bearer_auth(&c.token)
                .json(&json!([{"type":"t","id":id}]))
                .send()
                .await
                .unwrap();
            (taken.load(Ordering::SeqCst) > 0).then_some((id, r))
        },
    )
    .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "forward_failed", "{body}");
    assert!(
        !stored_ids(&c.url).await.contains(&id),
        "a forward that may have been stored is not committed again here"
    );
}

/// What the proxy between two nodes does to each request it passes on.
#[derive(Clone, Copy, PartialEq, Debug)]
enum OnTheWay {
    Pass,
    FlipBodyByte,
    AddContentEncoding,
}

/// A recording proxy in front of a node (its `advertise_url`), as someone
/// on the network between nodes could run.
struct Proxy {
    url: String,
    target: Arc<Mutex<String>>,
    mode: Arc<Mutex<OnTheWay>>,
    seen: Arc<Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>>,
}

impl Proxy {
    async fn start() -> Self {
        let target: Arc<Mutex<String>> = Arc::default();
        let mode = Arc::new(Mutex::new(OnTheWay::Pass));
        let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, bytes::Bytes)>>> = Arc::default();
        let (t, m, s) = (target.clone(), mode.clone(), seen.clone());
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let (t, m, s) = (t.clone(), m.clone(), s.clone());
                async move {
                    s.lock().unwrap().push((headers.clone(), body.clone()));
                    let mode = *m.lock().unwrap();
                    let mut body = body.to_vec();
                    if mode == OnTheWay::FlipBodyByte
                        && let Some(b) = body.iter_mut().find(|b| **b == b'e')
                    {
                        *b = b'f';
                    }
                    let target = t.lock().unwrap().clone();
                    let mut req = reqwest::Client::new()
                        .post(format!("{target}{uri}"))
                        .body(body);
                    for (k, v) in &headers {
                        if k != "host" && k != "content-length" {
                            req = req.header(k.as_str(), v.as_bytes());
                        }
                    }
                    if mode == OnTheWay::AddContentEncoding {
                        req = req.header("content-encoding", "identity");
                    }
                    let r = req.send().await.unwrap();
                    let mut out = axum::http::Response::builder().status(r.status().as_u16());
                    for (k, v) in r.headers() {
                        if k != "content-length" && k != "transfer-encoding" {
                            out = out.header(k.as_str(), v.as_bytes());
                        }
                    }
                    out.body(axum::body::Body::from(r.bytes().await.unwrap()))
                        .unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            target,
            mode,
            seen,
        }
    }
}

/// Someone between two nodes can neither replay a forward nor turn a
/// forward they changed into a final refusal: a replayed forward is
/// refused (`forward_replayed`, stored once), and a forward whose body or
/// body headers changed on the way is refused unsigned, so the client gets
/// `502 forward_failed` (send again) and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_replayed_or_changed_between_nodes_is_refused() {
    let Some(c) = Cluster::with_ttl("tk_between", 30_000, "").await else {
        return;
    };
    let proxy = Proxy::start().await;
    let behind_proxy = c.dir.path().join("proxied.toml");
    std::fs::write(
        &behind_proxy,
        format!(
            "{}advertise_url = \"{}\"\n",
            std::fs::read_to_string(&c.config).unwrap(),
            proxy.url
        ),
    )
    .unwrap();
    let b = c.node_with(1, Some(&behind_proxy)).await;
    *proxy.target.lock().unwrap() = b.url.clone();
    common::wait_for(
        Duration::from_secs(20),
        "node 1 owning every shard",
        async || owned(&[&b]).await == [64.0],
    )
    .await;
    let a = c.node(0).await;
    let http = reqwest::Client::new();
    let post = async |id: &str| {
        http.post(format!("{}/v1/streams/s/events", a.url))
            .bearer_auth(&c.token)
            .json(&json!([{"type":"t","id":id}]))
            .send()
            .await
            .unwrap()
    };
    let mut tries = 0;
    let (id, r) = common::poll(
        Duration::from_secs(20),
        "node 0 forwarding through the proxy",
        async || {
            tries += 1;
            let id = format!("e{tries}");
            let r = post(&id).await;
            (!proxy.seen.lock().unwrap().is_empty()).then_some((id, r))
        },
    )
    .await;
    assert_eq!(r.status(), 200, "a forward that passes is stored");
    let (headers, body) = proxy.seen.lock().unwrap()[0].clone();
    assert!(!headers.contains_key("authorization"), "{headers:?}");

    // The same forward again, straight to the owner.
    let mut replay = http
        .post(format!("{}/v1/streams/s/events", b.url))
        .body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            replay = replay.header(k.as_str(), v.as_bytes());
        }
    }
    let r = replay.send().await.unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "forward_replayed", "{answer}");
    assert_eq!(
        stored_ids(&c.url)
            .await
            .iter()
            .filter(|i| **i == id)
            .count(),
        1
    );

    for mode in [OnTheWay::FlipBodyByte, OnTheWay::AddContentEncoding] {
        *proxy.mode.lock().unwrap() = mode;
        let id = format!("changed-{mode:?}");
        let r = post(&id).await;
        let status = r.status();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(status, 502, "{mode:?}: {answer}");
        assert_eq!(answer["error"]["code"], "forward_failed", "{answer}");
        assert!(!stored_ids(&c.url).await.contains(&id), "{mode:?}");
    }
    *proxy.mode.lock().unwrap() = OnTheWay::Pass;
    assert_eq!(post("after").await.status(), 200);
}

/// A resumable SSE upstream: events `1..=published` (SSE `id:` = n, JSON
/// id `e{n}`), each connection replaying after its `Last-Event-ID` and
/// then following live as the test publishes more.
struct Feed {
    url: String,
    published: Arc<tokio::sync::watch::Sender<usize>>,
    /// Each connection's `Last-Event-ID`, in order.
    resumed_from: Arc<Mutex<Vec<Option<String>>>>,
}

impl Feed {
    async fn start() -> Self {
        use axum::extract::State;
        type St = (
            Arc<tokio::sync::watch::Sender<usize>>,
            Arc<Mutex<Vec<Option<String>>>>,
        );
        async fn stream(
            State((published, seen)): State<St>,
            headers: axum::http::HeaderMap,
        ) -> axum::response::Response {
            let last = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            seen.lock().unwrap().push(last.clone());
            let mut from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0) + 1;
            let mut rx = published.subscribe();
            let (tx, body) =
                tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(16);
            tokio::spawn(async move {
                loop {
                    let upto = *rx.borrow_and_update();
                    while from <= upto {
                        let data = json!({"id": format!("e{from}"), "type": "feed.event", "data": {"n": from}});
                        if tx
                            .send(Ok(format!("id: {from}\ndata: {data}\n\n")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        from += 1;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            let body = futures_util::stream::unfold(body, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from_stream(body))
                .unwrap()
        }
        let published = Arc::new(tokio::sync::watch::channel(0usize).0);
        let resumed_from = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/stream", axum::routing::get(stream))
            .with_state((published.clone(), resumed_from.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            published,
            resumed_from,
        }
    }

    /// Publishes one event every 5 ms (the upstream's own pace) until
    /// `stop`; the task returns how many it published.
    fn publish(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
        let published = self.published.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                published.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *published.borrow()
        })
    }

    fn connections(&self) -> usize {
        self.resumed_from.lock().unwrap().len()
    }
}

/// The source's stream. With the node ids below, its shard (15) is one
/// that node A, owning all 64, gives up to node B when B joins (the test
/// checks this before relying on it).
const FEED_STREAM: &str = "feed2";
const NODE_A: &str = "tk-node-a";
const NODE_B: &str = "tk-node-b";

/// The `[[sources]]` entry of the tests below, after a quiet checkpointer
/// (it would otherwise write `_trailkeep` beside the source's gap records
/// and count conflicts of its own).
fn feed_config(feed: &Feed) -> String {
    format!(
        "[checkpoint]\ninterval_ms = 3600000\n\
         [[sources]]\nname = \"feed\"\ntype = \"sse\"\nurl = \"{}/stream\"\nstream = \"{FEED_STREAM}\"\n\
         allow_private = true\napi_key_env = \"TEST_FEED_KEY\"\nreconnect_initial_ms = 50\n\
         reconnect_max_ms = 200\nlease_ttl_ms = 1000\n",
        feed.url
    )
}

/// A node `n` under the persistent id `id` (written to its data directory
/// before it starts), with `config` or the shared one.
async fn node_as(c: &Cluster, n: usize, id: &str, config: Option<&PathBuf>) -> Server {
    let dir = c.dir.path().join(format!("node{n}"));
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .unwrap();
    }
    std::fs::write(dir.join("node.id"), format!("{id}\n")).unwrap();
    Server::start_with_env(
        &dir,
        &[
            "--store",
            &c.url,
            "--config",
            config.unwrap_or(&c.config).to_str().unwrap(),
        ],
        &[("TEST_FEED_KEY", "feed-key")],
    )
    .await
}

/// One series of `/metrics` (name with labels as rendered), 0 when absent.
async fn series(url: &str, key: &str) -> f64 {
    common::scrape(url).await.0.get(key).copied().unwrap_or(0.0)
}

/// Whether the node at `url` holds the source's lease, and is connected.
async fn runs_feed(url: &str) -> bool {
    series(url, "trailkeep_lease_held{lease=\"source:feed\"}").await == 1.0
        && series(url, "trailkeep_source_connected{source=\"feed\"}").await == 1.0
}

/// The owner of `FEED_STREAM`'s shard, as `GET /v1/cluster` says.
async fn feed_owner(url: &str, admin: &str) -> Option<String> {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(FEED_STREAM.as_bytes());
    let shard = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 64;
    let (status, v) = cluster_view(url, admin).await;
    assert_eq!(status, 200, "{v}");
    v["shards"][shard as usize]["owner"]
        .as_str()
        .map(str::to_owned)
}

/// The ids of `FEED_STREAM`'s events, by seq.
async fn feed_ids(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT e.id FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = $1 ORDER BY e.seq",
        &[&FEED_STREAM],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// How many of `FEED_STREAM`'s events came from the source.
async fn feed_taken(db: &tokio_postgres::Client) -> usize {
    feed_ids(db)
        .await
        .iter()
        .filter(|i| i.starts_with('e'))
        .count()
}

/// The sum of `trailkeep_append_conflicts_total` (every reason) of nodes.
async fn conflicts(urls: &[&str]) -> f64 {
    let mut n = 0.0;
    for u in urls {
        n += metric(u, "trailkeep_append_conflicts_total").await;
    }
    n
}

/// Sources run on the node that owns their stream: node A starts alone and
/// runs the source; once node B joins and owns the stream, A hands the
/// source over (B claims it, A stops, lands and records its position, then
/// releases the lease) and B resumes exactly where A stopped. In steady
/// state the other node is refused nothing (it writes nothing to the
/// stream). When B is stopped (SIGTERM), A takes the source back and resumes from
/// the stored position. Every upstream event is stored once; nothing was
/// read twice; the store verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_runs_on_its_streams_owner_and_follows_it() {
    let feed = Feed::start().await;
    let Some(c) = Cluster::new("tk_source_owner", &feed_config(&feed)).await else {
        return;
    };
    let admin = key(&c, "admin", None);
    let (db, conn) = tokio_postgres::connect(&c.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stop_feed = Arc::new(AtomicBool::new(false));
    let publisher = feed.publish(stop_feed.clone());
    let a = node_as(&c, 0, NODE_A, None).await;
    common::wait_for(
        Duration::from_secs(20),
        "node A, alone, running the source",
        async || runs_feed(&a.url).await && feed_taken(&db).await > 0,
    )
    .await;
    let b = node_as(&c, 1, NODE_B, None).await;
    common::wait_for(
        Duration::from_secs(20),
        "node B owning the source's stream (if not, the shard plan changed: pick another FEED_STREAM)",
        async || feed_owner(&a.url, &admin).await.as_deref() == Some(NODE_B),
    )
    .await;
    common::wait_for(
        Duration::from_secs(20),
        "the source running on node B, the stream's owner, and not on node A",
        async || runs_feed(&b.url).await && !runs_feed(&a.url).await,
    )
    .await;
    assert_eq!(feed.connections(), 2, "one connection each, never a third");
    let handed_over_at = feed.resumed_from.lock().unwrap()[1].clone();
    assert!(
        handed_over_at.is_some(),
        "B resumed from A's stored position"
    );
    // Steady state: the handover's gap record is in the log (the last
    // write to `_trailkeep`), then the source alone writes its stream,
    // from the stream's owner: nothing is refused by the compare-and-set.
    common::wait_for(
        Duration::from_secs(20),
        "the handover's gap record logged",
        async || {
            db.query_one(
                "SELECT count(*) FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = '_trailkeep' AND e.type = 'source.gap'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
                > 0
        },
    )
    .await;
    let (before_a, before_b) = (conflicts(&[&a.url]).await, conflicts(&[&b.url]).await);
    let taken = feed_taken(&db).await;
    common::wait_for(
        Duration::from_secs(30),
        "300 more source events stored",
        async || feed_taken(&db).await >= taken + 300,
    )
    .await;
    assert_eq!(
        conflicts(&[&a.url]).await - before_a,
        0.0,
        "the node not running the source commits nothing to its stream, so is refused nothing"
    );
    // The owner's pipelined calls on one stream share a connection (a
    // lane), so a lone writer is never refused.
    let own = conflicts(&[&b.url]).await - before_b;
    assert_eq!(own, 0.0, "the owner running the source is refused nothing");
    assert!(runs_feed(&b.url).await && !runs_feed(&a.url).await);
    // The owner stops: A takes the source back from the stored position.
    assert_eq!(b.terminate().code(), Some(0));
    common::wait_for(
        Duration::from_secs(20),
        "node A running the source again",
        async || runs_feed(&a.url).await,
    )
    .await;
    assert_eq!(feed.connections(), 3);
    assert!(feed.resumed_from.lock().unwrap()[2].is_some());
    let after_failover = feed_taken(&db).await;
    common::wait_for(
        Duration::from_secs(20),
        "100 more source events stored by node A",
        async || feed_taken(&db).await >= after_failover + 100,
    )
    .await;
    stop_feed.store(true, Ordering::SeqCst);
    let total = publisher.await.unwrap();
    common::wait_for(
        Duration::from_secs(20),
        "every published event stored",
        async || feed_taken(&db).await >= total,
    )
    .await;
    assert_eq!(a.terminate().code(), Some(0));
    let ids = feed_ids(&db).await;
    let from_source: Vec<&String> = ids.iter().filter(|i| i.starts_with('e')).collect();
    let expected: Vec<String> = (1..=total).map(|n| format!("e{n}")).collect();
    // Each upstream event once, in the upstream's order, across both
    // handovers (the old node lands everything before the new one reads;
    // a refused call keeps its place).
    assert!(
        from_source.iter().copied().eq(expected.iter()),
        "every upstream event once, in order ({} stored, {total} published)",
        from_source.len()
    );
    assert_eq!(ids.len(), total, "nothing else in the stream");
    let status = c.cli(&["sources", "status", "--json"]);
    assert!(status.status.success());
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status[0]["taken"], total, "{status}");
    assert_eq!(
        status[0]["duplicates"], 0,
        "each node resumed exactly where the last stopped: {status}"
    );
    c.verify();
}

/// A source never stops because of ownership: when the stream's owner
/// does not run the source (here it is not configured there), the owner
/// never claims it and the node that runs it keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_stays_where_it_runs_when_the_owner_does_not_claim_it() {
    let feed = Feed::start().await;
    let Some(c) = Cluster::new("tk_source_unclaimed", &feed_config(&feed)).await else {
        return;
    };
    let admin = key(&c, "admin", None);
    let (db, conn) = tokio_postgres::connect(&c.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stop_feed = Arc::new(AtomicBool::new(false));
    let publisher = feed.publish(stop_feed.clone());
    let a = node_as(&c, 0, NODE_A, None).await;
    common::wait_for(
        Duration::from_secs(20),
        "node A, alone, running the source",
        async || runs_feed(&a.url).await && feed_taken(&db).await > 0,
    )
    .await;
    // Node B without the source.
    let plain = c.dir.path().join("no-sources.toml");
    let shared = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&plain, &shared[..shared.find("[[sources]]").unwrap()]).unwrap();
    let b = node_as(&c, 1, NODE_B, Some(&plain)).await;
    common::wait_for(
        Duration::from_secs(20),
        "node B owning the source's stream",
        async || feed_owner(&a.url, &admin).await.as_deref() == Some(NODE_B),
    )
    .await;
    let taken = feed_taken(&db).await;
    common::wait_for(
        Duration::from_secs(20),
        "200 more source events stored after B took the stream",
        async || feed_taken(&db).await >= taken + 200,
    )
    .await;
    assert!(runs_feed(&a.url).await, "node A still runs the source");
    assert_eq!(feed.connections(), 1, "never handed over, never restarted");
    stop_feed.store(true, Ordering::SeqCst);
    let total = publisher.await.unwrap();
    common::wait_for(
        Duration::from_secs(20),
        "every published event stored",
        async || feed_taken(&db).await >= total,
    )
    .await;
    assert_eq!(b.terminate().code(), Some(0));
    assert_eq!(a.terminate().code(), Some(0));
    assert_eq!(feed_ids(&db).await.len(), total, "each event once");
}
