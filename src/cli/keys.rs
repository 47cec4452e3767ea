//! `trailkeep keys`: create, list, revoke, public.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::auth::Scope;
use crate::config::Config;

/// Key operations.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token once.
    Create {
        /// What the key may do.
        #[arg(long, value_enum, env = "TRAILKEEP_SCOPE")]
        scope: Scope,
        /// The stream it is bound to, or '*' for all.
        #[arg(long, default_value = "*", env = "TRAILKEEP_STREAM")]
        stream: String,
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// List keys (never their tokens).
    List {
        /// Print JSON.
        #[arg(long, env = "TRAILKEEP_JSON")]
        json: bool,
    },
    /// Revoke a key by id; a running server stops accepting it within a second.
    Revoke {
        /// The key id (the 16 hex characters after `tk_`).
        id: String,
    },
    /// Print the checkpoint verifier key (signed-note format).
    Public,
}

pub(super) async fn run(config: &Config, cmd: &KeysCommand) -> anyhow::Result<ExitCode> {
    // An existing store only: a mistyped --data-dir must fail, not create
    // an empty store (and, for `public`, a new signing key) beside the real one.
    let store = super::open_existing(config).await?;
    match cmd {
        KeysCommand::Create {
            scope,
            stream,
            json,
        } => {
            if stream != "*" {
                crate::names::StreamName::producer(stream)
                    .map_err(|e| anyhow::anyhow!("--stream: {e} (or '*' for every stream)"))?;
            }
            let (rec, token) =
                crate::audit::create_key(store.as_ref(), *scope, stream, crate::audit::Actor::Cli)
                    .await?;
            if *json {
                println!(
                    "{}",
                    serde_json::json!({"id": rec.id, "scope": rec.scope, "stream": rec.stream, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "created key {} (scope {}, stream {}); the token above is shown only once",
                    rec.id, rec.scope, rec.stream
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list_keys().await?;
            if *json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                println!(
                    "{:<16}  {:<6}  {:<20}  {:<27}  revoked",
                    "id", "scope", "stream", "created"
                );
                for k in keys {
                    println!(
                        "{:<16}  {:<6}  {:<20}  {:<27}  {}",
                        k.id,
                        k.scope,
                        k.stream,
                        k.created,
                        k.revoked.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            crate::audit::revoke_key(store.as_ref(), id, crate::audit::Actor::Cli).await?;
            eprintln!("revoked key {id}");
        }
        KeysCommand::Public => {
            let signer = crate::keyfile::load(&config.signing_key_path()).with_context(|| {
                format!(
                    "loading the signing key (is --data-dir right? `serve` creates it at {})",
                    config.signing_key_path().display()
                )
            })?;
            println!("{}", signer.verifier());
        }
    }
    Ok(ExitCode::SUCCESS)
}
