//! The `bigquery` destination: streaming inserts with `tabledata.insertAll`
//! (<https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll>).
//!
//! Rows use the Grantex column mapping: `event_id`, `event_type`,
//! `created_at` (the event time) and `data` (a JSON string); `insertId` is
//! the event id, so BigQuery drops a row sent twice (best effort, as
//! documented). Credentials: a service-account JSON file; a JWT signed with
//! its RS256 key is exchanged at its `token_uri` for an access token
//! (scope `bigquery.insertdata`), cached until shortly before it expires.
//!
//! A 200 answer can still carry `insertErrors`: rows marked `invalid` are
//! refused for good; the others (`stopped` because of them, or a backend
//! error) are sent again at once. When invalid rows remain, the batch is a
//! dead letter naming their event ids (the valid rows are in the table).
//!
//! A batch is cut into requests of at most 500 rows and 9 MB of rows
//! (BigQuery takes 10 MB per request); a row over 9 MB is refused for good
//! before anything is sent.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::{Batch, DeliveryError, Destination, HttpClient, excerpt, read_answer};

/// The service-account file's fields used here.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery.insertdata";

/// Where rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Project id.
    pub project: String,
    /// Dataset id.
    pub dataset: String,
    /// Table id.
    pub table: String,
}

/// Streams rows into a BigQuery table.
pub struct BigQuery {
    endpoint: String,
    table: Table,
    email: String,
    token_uri: String,
    key: RsaKeyPair,
    token: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
    /// Built once: token requests and inserts reuse their connections.
    client: HttpClient,
}

/// Why a service account cannot be used (never showing its key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Not the JSON of a service account file.
    #[error("service account file is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// `private_key` is not PEM PKCS#8.
    #[error("service account file: private_key is not a PKCS#8 PEM key")]
    NotPem,
    /// `private_key` is not an RSA key.
    #[error("service account file: private_key is not an RSA key")]
    NotRsa,
}

impl std::fmt::Debug for BigQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BigQuery({}.{}.{}, key redacted)",
            self.table.project, self.table.dataset, self.table.table
        )
    }
}

fn retryable(message: String) -> DeliveryError {
    DeliveryError::retryable(message)
}

/// Most bytes of a token answer read.
const TOKEN_ANSWER_MAX: usize = 64 * 1024;
/// Most bytes of an insertAll answer read (`insertErrors` for every row of
/// a large batch fits well within).
const INSERT_ANSWER_MAX: usize = 16 << 20;

impl BigQuery {
    /// A destination writing to `table` through `endpoint` (default
    /// `https://bigquery.googleapis.com`), with the service account in
    /// `account_json`, sending through `client`.
    ///
    /// # Errors
    /// [`AccountError`]: a service-account file without a usable RS256 key
    /// (the message never contains the key).
    pub fn new(
        endpoint: &str,
        table: Table,
        account_json: &str,
        client: HttpClient,
    ) -> Result<Self, AccountError> {
        let sa: ServiceAccount = serde_json::from_str(account_json).map_err(AccountError::Json)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(sa.private_key.as_bytes())
            .map_err(|_| AccountError::NotPem)?;
        let key =
            RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| AccountError::NotRsa)?;
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            table,
            email: sa.client_email,
            token_uri: sa.token_uri,
            key,
            token: tokio::sync::Mutex::new(None),
            client,
        })
    }

    /// The signed JWT assertion for the token exchange.
    fn assertion(&self) -> Result<String, DeliveryError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"iss": self.email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600})
                .to_string(),
        );
        let msg = format!("{header}.{claims}");
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                msg.as_bytes(),
                &mut sig,
            )
            .map_err(|_| retryable("signing the token request failed".into()))?;
        Ok(format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    async fn access_token(&self) -> Result<String, DeliveryError> {
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && tokio::time::Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let req = self.client.get()?.post(&self.token_uri).form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &self.assertion()?),
        ]);
        let resp = self.client.send(req, "token").await?;
        let text = read_answer(resp, TOKEN_ANSWER_MAX)
            .await
            .map_err(|e| match e {
                DeliveryError::Permanent {
                    status,
                    message,
                    detail,
                } => DeliveryError::Permanent {
                    status,
                    message: format!("token: {message}"),
                    detail,
                },
                other => other,
            })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| retryable(format!("token answer: {e}")))?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| retryable("token answer has no access_token".into()))?
            .to_owned();
        let ttl = v["expires_in"]
            .as_u64()
            .unwrap_or(3600)
            .saturating_sub(60)
            .max(1);
        *cached = Some((
            token.clone(),
            tokio::time::Instant::now() + Duration::from_secs(ttl),
        ));
        Ok(token)
    }

    /// One row per event, Grantex columns.
    pub fn rows(batch: &Batch) -> Vec<serde_json::Value> {
        batch
            .events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.json).unwrap_or_default();
                serde_json::json!({
                    "insertId": e.id,
                    "json": {
                        "event_id": e.id,
                        "event_type": e.event_type,
                        "created_at": v["time"],
                        "data": v.get("data").map_or_else(|| "{}".to_owned(), ToString::to_string),
                    }
                })
            })
            .collect()
    }
}

/// Rows per insertAll request: BigQuery's recommended maximum (the hard
/// limit is 50,000; <https://cloud.google.com/bigquery/quotas#streaming_inserts>).
pub const MAX_ROWS: usize = 500;
/// BigQuery's limit on one insertAll HTTP request, bytes.
pub const MAX_REQUEST: usize = 10_000_000;
/// Most bytes of rows per request (room left for the request's envelope);
/// also the largest row sent: a larger one is refused for good.
pub const MAX_ROW_BYTES: usize = 9_000_000;

/// Cuts `rows` into requests within [`MAX_ROWS`] and [`MAX_ROW_BYTES`].
///
/// # Errors
/// [`DeliveryError::Permanent`] for a row over [`MAX_ROW_BYTES`] (nothing
/// of the batch is sent).
fn requests(rows: Vec<serde_json::Value>) -> Result<Vec<Vec<serde_json::Value>>, DeliveryError> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for row in rows {
        let len = row.to_string().len() + 1;
        if len > MAX_ROW_BYTES {
            return Err(DeliveryError::permanent(
                None,
                format!(
                    "event {} is {len} bytes as a row, over BigQuery's 10 MB request limit",
                    row["insertId"].as_str().unwrap_or_default()
                ),
            ));
        }
        if !cur.is_empty() && (cur.len() >= MAX_ROWS || size + len > MAX_ROW_BYTES) {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push(row);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

impl BigQuery {
    /// Inserts `rows` (one request's worth): rows BigQuery marks `invalid`
    /// are added to `invalid`; the others it did not take go again at once,
    /// up to 5 rounds.
    async fn insert(
        &self,
        url: &str,
        mut rows: Vec<serde_json::Value>,
        invalid: &mut Vec<String>,
    ) -> Result<(), DeliveryError> {
        let c = self.client.get()?;
        for _round in 0..5 {
            if rows.is_empty() {
                return Ok(());
            }
            let token = self.access_token().await?;
            let req = c
                .post(url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({"kind": "bigquery#tableDataInsertAllRequest", "rows": rows})
                        .to_string(),
                );
            let resp = self.client.send(req, "insertAll").await?;
            if resp.status().as_u16() == 401 {
                *self.token.lock().await = None; // expired early: fetch a new one next time
            }
            let text = read_answer(resp, INSERT_ANSWER_MAX).await?;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let Some(errors) = v["insertErrors"].as_array().filter(|e| !e.is_empty()) else {
                return Ok(());
            };
            let mut again = Vec::new();
            for err in errors {
                let Some(i) = err["index"].as_u64().and_then(|i| usize::try_from(i).ok()) else {
                    continue;
                };
                let Some(row) = rows.get(i) else { continue };
                let bad = err["errors"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["reason"] == "invalid"));
                if bad {
                    invalid.push(format!(
                        "{} ({})",
                        row["insertId"].as_str().unwrap_or(""),
                        excerpt(&err["errors"].to_string())
                    ));
                } else {
                    again.push(row.clone());
                }
            }
            rows = again;
        }
        if rows.is_empty() {
            Ok(())
        } else {
            Err(retryable(format!(
                "{} rows still failing after 5 attempts",
                rows.len()
            )))
        }
    }
}

#[async_trait]
impl Destination for BigQuery {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let url = format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{}/insertAll",
            self.endpoint, self.table.project, self.table.dataset, self.table.table
        );
        let mut invalid: Vec<String> = Vec::new();
        for rows in requests(Self::rows(batch))? {
            self.insert(&url, rows, &mut invalid).await?;
        }
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(DeliveryError::Permanent {
                status: Some(200),
                message: format!(
                    "BigQuery refused {} rows as invalid: {}",
                    invalid.len(),
                    excerpt(
                        &invalid
                            .iter()
                            .map(|i| i.split(" (").next().unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                ),
                detail: Some(excerpt(&invalid.join("; "))),
            })
        }
    }
}

#[cfg(test)]
mod tests;
