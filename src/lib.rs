//! trailkeep: a durable, hash-chained audit-event log.
//!
//! Events arrive over HTTP, are validated, canonicalized (RFC 8785), chained
//! by SHA-256 and committed in groups to the hot store before they are
//! acknowledged. A Merkle tree (RFC 9162) over each stream is persisted as
//! tiles and its heads are signed as C2SP checkpoints; `verify` recomputes
//! everything.
//!
//! # Layout
//! - [`chain`]: pure hashing, Merkle tree, tiles, checkpoints, signed notes;
//! - [`event`]: the event, its validation and canonical bytes;
//! - [`store`]: the [`store::Store`] trait, its conformance suite, SQLite
//!   and PostgreSQL (with `sslmode` TLS);
//! - [`ingest`]: group commit (batcher) and the checkpointer;
//! - [`selflog`]: the log's own stream `_trailkeep` (its checkpoints and
//!   archive indexes, recorded as events);
//! - [`sources`]: SSE sources pulled into streams;
//! - [`objstore`]: object storage behind a URL (create-only writes,
//!   Object Lock, compression), below archive and destinations;
//! - [`archive`]: the cold archive (layout, signed manifests,
//!   restore, offline verify);
//! - [`destinations`]: at-least-once delivery from per-destination cursors;
//! - [`verify`]: read-only verification of the hot store;
//! - [`auth`]: API keys; [`keyfile`]: the signing key on disk;
//! - [`api`]: HTTP routes; [`server`]: wiring for `serve`;
//! - [`net`]: outgoing HTTP to configured hosts and upstreams (SSRF guard,
//!   redirect policy, body limits, redacted errors);
//! - [`config`]: the config file; [`setting`]: its one error type;
//!   [`telemetry`]: logs and metrics;
//! - [`cli`]: the `trailkeep` command line; [`http`]: the listener (TLS,
//!   timeouts, connection limit);
//! - [`names`]: stream and config names, checked once by type;
//! - [`audit`]: the `_audit` stream of administrative acts;
//! - [`node`]: this process's lease-holder id; [`lease`]: taking and
//!   keeping a lease (one place for all four jobs); [`secret`]: values `Debug`
//!   never shows; [`failpoint`]: crash-test hooks (`testing` feature only);
//!   [`report`]: an error and its causes as one line, each said once.
//!
//! Dependencies point down through five layers (ARCHITECTURE.md
//! "Layers"; `tests/layering.rs` enforces them): `api`/`cli`/`server` →
//! `archive`/`destinations`/`sources`/`verify`/`audit` → `ingest`/`auth` →
//! `store`/`lease` → `chain`/`event` and the other small modules.

pub mod api;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod config;
pub mod destinations;
pub mod event;
pub mod failpoint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod jcs;
pub mod keyfile;
pub mod lease;
pub mod names;
pub mod net;
pub mod node;
pub mod objstore;
pub mod query;
pub mod report;
pub mod secret;
pub mod selflog;
pub mod server;
pub mod setting;
pub mod shards;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod verify;
