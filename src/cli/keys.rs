//! `trailkeep keys`: create, list, revoke, public.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::auth::{Scope, generate};
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
    let store = crate::server::open_store(config).await?;
    let now = crate::event::format_received(time::OffsetDateTime::now_utc());
    match cmd {
        KeysCommand::Create {
            scope,
            stream,
            json,
        } => {
            if stream != "*"
                && (!crate::event::valid_stream_name(stream)
                    || crate::event::is_reserved_stream(stream))
            {
                anyhow::bail!(
                    "--stream {stream:?} is not a stream name (1-128 of A-Z a-z 0-9 . _ -, not starting with . or _) or '*'"
                );
            }
            let (rec, token) = generate(*scope, stream, &now);
            store.create_key(rec.clone()).await?;
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
            if !store.revoke_key(id, &now).await? {
                anyhow::bail!("no active key with id {id}");
            }
            eprintln!("revoked key {id}");
        }
        KeysCommand::Public => {
            let signer =
                crate::keyfile::load_or_create(&config.signing_key_path(), &config.log_name)
                    .context("loading the signing key")?;
            println!("{}", signer.verifier());
        }
    }
    Ok(ExitCode::SUCCESS)
}
