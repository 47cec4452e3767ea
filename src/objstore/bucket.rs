//! An object store behind a URL, opened through the `object_store` crate:
//! create-only writes with read-back, and the create-only probe. The
//! archive and the object destinations both write through it.
//!
//! URLs:
//! - `file:///abs/dir` (the embedded default is `DATA_DIR/archive`);
//! - `s3://bucket/prefix?endpoint=…&region=…&path_style=true|false`;
//!   credentials from the AWS environment (`AWS_ACCESS_KEY_ID`, …), else
//!   the shared credentials file's profile (`AWS_PROFILE`, default
//!   `default`), else instance metadata;
//! - `gs://bucket/prefix?service_account=FILE` (credentials from that
//!   file, else `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`
//!   or the metadata server);
//! - `az://container/prefix?account=…&endpoint=…` (key or SAS from the
//!   `AZURE_STORAGE_*` environment), `&emulator=true` for Azurite.
//!
//! Query keys other than these are refused by name; no secret is ever taken
//! from the URL, so the URL can be logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};
use sha2::{Digest, Sha256};

use super::ObjStoreError;

/// Connection settings for remote stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketOptions {
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Retries of a failed request inside `object_store` (5xx, throttling,
    /// connection errors), with its exponential backoff.
    pub max_retries: usize,
    /// S3 Object Lock retention to set on every object created (s3:// only).
    pub object_lock: Option<super::object_lock::LockSettings>,
}

impl Default for BucketOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_retries: 4,
            object_lock: None,
        }
    }
}

/// What a create-only write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created by this write.
    Created,
    /// The object already existed with the same SHA-256 (an earlier, crashed
    /// or retried run wrote it): done.
    AlreadyThere,
}

/// What the create-only probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    /// A second create-only write of the same key was refused.
    CreateOnly,
    /// The second write silently replaced the first.
    Overwrites,
}

/// An archive location: a store and a key prefix.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    display: String,
    lock: Option<Arc<super::object_lock::ObjectLock>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.display)
    }
}

fn location(msg: impl Into<String>) -> ObjStoreError {
    ObjStoreError::Location(msg.into())
}

impl Bucket {
    /// Opens `url`.
    ///
    /// # Errors
    /// [`ObjStoreError::Location`] naming the bad part (scheme, query key,
    /// missing bucket), or the store's builder error.
    pub fn open(url: &str, opts: &BucketOptions) -> Result<Self, ObjStoreError> {
        Self::open_with(url, opts, Open::Create)
    }

    /// Checks `url` as [`Bucket::open`] would, without touching anything:
    /// a `file://` directory is neither created nor required, nothing is
    /// contacted (`trailkeep check-config`).
    ///
    /// # Errors
    /// As [`Bucket::open`].
    pub fn check(url: &str, opts: &BucketOptions) -> Result<(), ObjStoreError> {
        Self::open_with(url, opts, Open::Check).map(drop)
    }

    /// Opens `url` to read it only: a `file://` directory must exist (it is
    /// never created), so a mistyped path is an error, not an empty archive.
    ///
    /// # Errors
    /// As [`Bucket::open`], and [`ObjStoreError::Location`] when the
    /// directory does not exist.
    pub fn open_existing(url: &str, opts: &BucketOptions) -> Result<Self, ObjStoreError> {
        Self::open_with(url, opts, Open::Existing)
    }

    fn open_with(url: &str, opts: &BucketOptions, mode: Open) -> Result<Self, ObjStoreError> {
        let parsed = url::Url::parse(url).map_err(|e| location(format!("{url:?}: {e}")))?;
        let query: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let allowed: &[&str] = match parsed.scheme() {
            "file" => &[],
            "s3" => &["endpoint", "region", "path_style", "credentials"],
            "gs" => &["service_account", "credentials"],
            "az" => &["account", "endpoint", "emulator", "credentials"],
            other => {
                return Err(location(format!(
                    "scheme {other:?} is not supported (file://, s3://, gs://, az://)"
                )));
            }
        };
        if let Some((k, _)) = query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(location(format!(
                "query key {k:?} is not supported for {}:// (allowed: {})",
                parsed.scheme(),
                if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.clone());
        let flag = |k: &str| -> Result<bool, ObjStoreError> {
            match get(k).as_deref() {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(v) => Err(location(format!(
                    "query key {k:?}: {v:?} is not true or false"
                ))),
            }
        };
        let client = |endpoint: Option<&str>| {
            ClientOptions::new()
                .with_timeout(opts.request_timeout)
                .with_connect_timeout(Duration::from_secs(10))
                .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        };
        let retry = RetryConfig {
            max_retries: opts.max_retries,
            retry_timeout: opts.request_timeout * (opts.max_retries as u32 + 1),
            ..RetryConfig::default()
        };
        let path_prefix = parsed.path().trim_matches('/');
        // `credentials=metadata`: the operator says the instance's or
        // workload's identity provides them (EC2/ECS/EKS roles, GKE
        // workload identity, Azure managed identity).
        let metadata = match get("credentials").as_deref() {
            None => false,
            Some("metadata") => true,
            Some(v) => {
                return Err(location(format!(
                    "query key \"credentials\": {v:?} is not supported (only credentials=metadata)"
                )));
            }
        };
        let missing = |hint: &'static str| ObjStoreError::MissingCredentials {
            location: redact(&parsed),
            hint,
        };
        let builder_err = |e: object_store::Error| location(format!("{}: {e}", redact(&parsed)));
        if opts.object_lock.is_some() && parsed.scheme() != "s3" {
            return Err(location(format!(
                "Object Lock retention (archive.object_lock_mode) needs an s3:// archive, not {}://",
                parsed.scheme()
            )));
        }
        let mut lock = None;
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = match parsed.scheme() {
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(location("file:// URLs take an absolute path: file:///dir"));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| location(format!("{url:?} is not a local path")))?;
                if mode == Open::Check {
                    return Ok(Self::from_store(
                        Arc::new(object_store::memory::InMemory::new()),
                        None,
                        &redact(&parsed),
                    ));
                }
                if mode == Open::Create {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| location(format!("{}: {e}", dir.display())))?;
                } else if !dir.is_dir() {
                    return Err(location(format!(
                        "{}: no such directory (nothing was created; check the archive URL)",
                        dir.display()
                    )));
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(builder_err)?;
                (Arc::new(fs), "")
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| location("s3:// URL needs a bucket: s3://bucket/prefix"))?;
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(client(get("endpoint").as_deref()));
                if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
                    && let Some(p) = profile_credentials()
                {
                    b = b
                        .with_access_key_id(p.access_key_id)
                        .with_secret_access_key(p.secret_access_key);
                    if let Some(t) = p.session_token {
                        b = b.with_token(t);
                    }
                }
                if let Some(e) = get("endpoint") {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = get("region") {
                    b = b.with_region(r);
                }
                if get("path_style").is_some() {
                    b = b.with_virtual_hosted_style_request(!flag("path_style")?);
                }
                if !metadata && !s3_has_credentials(&b) {
                    return Err(missing(S3_CREDENTIALS));
                }
                let s3 = Arc::new(b.clone().build().map_err(builder_err)?);
                if let Some(settings) = opts.object_lock {
                    use object_store::aws::AmazonS3ConfigKey as K;
                    let region = b
                        .get_config_value(&K::Region)
                        .unwrap_or_else(|| "us-east-1".to_owned());
                    let virtual_hosted = b
                        .get_config_value(&K::VirtualHostedStyleRequest)
                        .is_some_and(|v| v == "true");
                    let bucket_url = match (b.get_config_value(&K::Endpoint), virtual_hosted) {
                        (Some(e), true) => e,
                        (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
                        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
                    };
                    lock = Some(Arc::new(super::object_lock::ObjectLock::new(
                        s3.clone(),
                        bucket_url,
                        region,
                        settings,
                        opts.request_timeout,
                    )?));
                }
                (s3, path_prefix)
            }
            "gs" => {
                let bucket = parsed
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| location("gs:// URL needs a bucket: gs://bucket/prefix"))?;
                let account = get("service_account");
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(
                        client(None).with_allow_http(gcs_allows_http(account.as_deref())),
                    );
                let explicit = account.is_some();
                if let Some(a) = account {
                    b = b.with_service_account_path(a);
                }
                if !metadata && !explicit && !gcs_has_credentials(&b) {
                    return Err(missing(GCS_CREDENTIALS));
                }
                (Arc::new(b.build().map_err(builder_err)?), path_prefix)
            }
            _ => {
                let container = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
                    location("az:// URL needs a container: az://container/prefix")
                })?;
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(retry)
                    .with_client_options(client(get("endpoint").as_deref()));
                if let Some(a) = get("account") {
                    b = b.with_account(a);
                }
                if let Some(e) = get("endpoint") {
                    b = b.with_endpoint(e);
                }
                if flag("emulator")? {
                    b = b.with_use_emulator(true);
                }
                if !metadata && !azure_has_credentials(&b) {
                    return Err(missing(AZURE_CREDENTIALS));
                }
                (Arc::new(b.build().map_err(builder_err)?), path_prefix)
            }
        };
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(Path::parse(prefix).map_err(|e| location(format!("prefix {prefix:?}: {e}")))?)
        };
        Ok(Self {
            store,
            prefix,
            display: redact(&parsed),
            lock,
        })
    }

    /// Wraps an existing store (tests, benchmarks).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: Option<&str>, display: &str) -> Self {
        Self {
            store,
            prefix: prefix.and_then(|p| Path::parse(p).ok()),
            display: display.to_owned(),
            lock: None,
        }
    }

    /// The URL without query, for messages and logs.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn path(&self, rel: &str) -> Result<Path, ObjStoreError> {
        let rel = Path::parse(rel).map_err(|e| location(format!("key {rel:?}: {e}")))?;
        Ok(match &self.prefix {
            Some(p) => p.parts().chain(rel.parts()).collect(),
            None => rel,
        })
    }

    fn relative(&self, p: &Path) -> String {
        match &self.prefix {
            Some(pre) => p
                .prefix_match(pre)
                .map(|parts| {
                    parts
                        .map(|x| x.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_else(|| p.to_string()),
            None => p.to_string(),
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> ObjStoreError {
        ObjStoreError::from_store(format!("{}/{key}", self.display.trim_end_matches('/')), e)
    }

    /// Writes `bytes` at `rel` create-only. When the key exists (412 /
    /// already exists), or a retry follows an ambiguous failure, the
    /// existing object is read back: the same SHA-256 means done, another
    /// means [`ObjStoreError::Conflict`] and nothing is overwritten.
    ///
    /// # Errors
    /// [`ObjStoreError::Conflict`], or the store's error.
    pub async fn put_create(&self, rel: &str, bytes: Bytes) -> Result<PutOutcome, ObjStoreError> {
        let path = self.path(rel)?;
        let want = Sha256::digest(&bytes);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let outcome = self
            .put_create_once(rel, &path, bytes, want.into(), opts)
            .await?;
        // Retention follows every create (and a resumed one: an earlier run
        // may have crashed between the PUT and this), before the caller
        // records the batch.
        if let Some(lock) = &self.lock {
            lock.retain(path.as_ref()).await?;
        }
        Ok(outcome)
    }

    async fn put_create_once(
        &self,
        rel: &str,
        path: &Path,
        bytes: Bytes,
        want: [u8; 32],
        opts: PutOptions,
    ) -> Result<PutOutcome, ObjStoreError> {
        match self.store.put_opts(path, bytes.into(), opts).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let existing = self.get(rel).await?.ok_or_else(|| ObjStoreError::Store {
                    location: format!("{}/{rel}", self.display),
                    message: "a create-only write was refused but the object cannot be read".into(),
                    retryable: true,
                    source: None,
                })?;
                let found: [u8; 32] = Sha256::digest(&existing).into();
                if found == want {
                    Ok(PutOutcome::AlreadyThere)
                } else {
                    Err(ObjStoreError::Conflict {
                        key: rel.to_owned(),
                        expected: hex::encode(want),
                        found: hex::encode(found),
                    })
                }
            }
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// The Object Lock retention S3 reports for `rel`; `None` without
    /// retention or when no lock is configured.
    ///
    /// # Errors
    /// The bucket's error.
    pub async fn retention(
        &self,
        rel: &str,
    ) -> Result<Option<super::object_lock::Retention>, ObjStoreError> {
        match &self.lock {
            Some(lock) => lock.retention(self.path(rel)?.as_ref()).await,
            None => Ok(None),
        }
    }

    /// Tries to delete one version of `rel` for good, as an intruder with
    /// the bucket's credentials would (tests of Object Lock): the status.
    ///
    /// # Errors
    /// No lock configured (no signed client), or the request failed.
    #[cfg(test)]
    pub async fn delete_version(&self, rel: &str, version: &str) -> Result<u16, ObjStoreError> {
        let lock = self
            .lock
            .as_ref()
            .ok_or_else(|| location("no Object Lock configured"))?;
        let key = self.path(rel)?;
        lock.delete_version(key.as_ref(), version)
            .await
            .map_err(|message| ObjStoreError::Store {
                location: rel.to_owned(),
                message,
                retryable: false,
                source: None,
            })
    }

    /// Reads `rel`; `None` when it does not exist.
    ///
    /// # Errors
    /// The store's error.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>, ObjStoreError> {
        let path = self.path(rel)?;
        match self.store.get(&path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.err(rel, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Reads `rel` back and checks its size and SHA-256.
    ///
    /// # Errors
    /// [`ObjStoreError::ReadBack`] on any difference, or the store's error.
    pub async fn confirm(&self, rel: &str, size: u64, sha256: &str) -> Result<(), ObjStoreError> {
        let path = self.path(rel)?;
        let meta = match self.store.head(&path).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ObjStoreError::ReadBack {
                    key: rel.to_owned(),
                    message: "missing after write".into(),
                });
            }
            Err(e) => return Err(self.err(rel, e)),
        };
        if meta.size != size {
            return Err(ObjStoreError::ReadBack {
                key: rel.to_owned(),
                message: format!("size {} after write, expected {size}", meta.size),
            });
        }
        let body = self
            .get(rel)
            .await?
            .ok_or_else(|| ObjStoreError::ReadBack {
                key: rel.to_owned(),
                message: "missing after write".into(),
            })?;
        let found = hex::encode(Sha256::digest(&body));
        if found != sha256 {
            return Err(ObjStoreError::ReadBack {
                key: rel.to_owned(),
                message: format!("sha256 {found} after write, expected {sha256}"),
            });
        }
        Ok(())
    }

    /// Lists every object under `rel_prefix` (recursively): relative key
    /// and size, sorted by key.
    ///
    /// # Errors
    /// The store's error.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>, ObjStoreError> {
        let p = if rel_prefix.is_empty() {
            self.prefix.clone()
        } else {
            Some(self.path(rel_prefix)?)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(p.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.err(rel_prefix, e))?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .map(|m| (self.relative(&m.location), m.size))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Overwrites `rel` unconditionally (tamper tests only).
    #[cfg(test)]
    pub(crate) async fn overwrite(&self, rel: &str, bytes: Bytes) {
        let path = self.path(rel).expect("key");
        self.store
            .put(&path, bytes.into())
            .await
            .expect("overwrite");
    }

    /// Deletes `rel` (tamper tests only).
    #[cfg(test)]
    pub(crate) async fn remove(&self, rel: &str) {
        self.delete(rel).await.expect("delete");
    }

    /// Deletes `rel` (probe keys only: the archiver never deletes).
    async fn delete(&self, rel: &str) -> Result<(), ObjStoreError> {
        let path = self.path(rel)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Writes a probe key create-only twice: a store that accepts the second
    /// write silently overwrites and cannot hold invariant 4 by itself.
    ///
    /// # Errors
    /// When the first write or the read-back fails.
    pub async fn probe(&self) -> Result<ProbeResult, ObjStoreError> {
        let rel = format!("{PROBE_FOLDER}/{}", ulid::Ulid::new());
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let path = self.path(&rel)?;
        self.store
            .put_opts(&path, Bytes::from_static(b"first").into(), opts())
            .await
            .map_err(|e| self.err(&rel, e))?;
        let second = self
            .store
            .put_opts(&path, Bytes::from_static(b"second").into(), opts())
            .await;
        let result = match second {
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => match self.get(&rel).await?.as_deref() {
                Some(b"first") => ProbeResult::CreateOnly,
                _ => ProbeResult::Overwrites,
            },
            Ok(_) => ProbeResult::Overwrites,
            Err(e) => {
                let _ = self.delete(&rel).await;
                return Err(self.err(&rel, e));
            }
        };
        self.delete(&rel).await?;
        Ok(result)
    }
}

/// Folder of the create-only probe's keys (deleted after each probe).
/// Earlier builds used `_trailkeep/probe/`, which is now the log's own
/// stream's folder; verify still ignores probe keys left there.
pub const PROBE_FOLDER: &str = "_probe";

/// How [`Bucket::open_with`] treats a `file://` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Create it.
    Create,
    /// It must exist.
    Existing,
    /// Touch nothing (check the URL and credentials only).
    Check,
}

const S3_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), \
or AWS_PROFILE naming a profile in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE), \
or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (EKS IRSA); \
on EC2, ECS or EKS with an instance or task role, add ?credentials=metadata to the URL";
const GCS_CREDENTIALS: &str = "add ?service_account=FILE to the URL, or set GOOGLE_SERVICE_ACCOUNT (a key file) \
or GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`; \
on GCE or GKE with a service account or workload identity, add ?credentials=metadata to the URL";
const AZURE_CREDENTIALS: &str = "set AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_SAS_KEY, \
or AZURE_CLIENT_ID with AZURE_CLIENT_SECRET and AZURE_TENANT_ID (a service principal), \
or AZURE_FEDERATED_TOKEN_FILE with AZURE_CLIENT_ID and AZURE_TENANT_ID (AKS workload identity); \
with a managed identity, add ?credentials=metadata to the URL";

/// Whether the builder has credentials other than the EC2 metadata
/// service's (keys, a web identity, a container's, or none needed).
fn s3_has_credentials(b: &object_store::aws::AmazonS3Builder) -> bool {
    use object_store::aws::AmazonS3ConfigKey as K;
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    has(K::AccessKeyId)
        || has(K::SecretAccessKey)
        || (has(K::WebIdentityTokenFile) && has(K::RoleArn))
        || has(K::ContainerCredentialsRelativeUri)
        || (has(K::ContainerCredentialsFullUri) && has(K::ContainerAuthorizationTokenFile))
        || b.get_config_value(&K::SkipSignature).as_deref() == Some("true")
}

/// Whether the builder has credentials other than the GCE metadata
/// server's (a service account, application default credentials).
fn gcs_has_credentials(b: &object_store::gcp::GoogleCloudStorageBuilder) -> bool {
    use object_store::gcp::GoogleConfigKey as K;
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let adc = std::env::var_os("HOME").is_some_and(|h| {
        std::path::Path::new(&h)
            .join(".config/gcloud/application_default_credentials.json")
            .is_file()
    });
    has(K::ServiceAccount)
        || has(K::ServiceAccountKey)
        || has(K::ApplicationCredentials)
        || b.get_config_value(&K::SkipSignature).as_deref() == Some("true")
        || adc
}

/// Whether the builder has credentials other than Azure's managed
/// identity endpoint (a key, a SAS, a service principal, a federated
/// token, the emulator's, the Azure CLI's, or none needed).
fn azure_has_credentials(b: &object_store::azure::MicrosoftAzureBuilder) -> bool {
    use object_store::azure::AzureConfigKey as K;
    let has = |k: K| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let yes = |k: K| b.get_config_value(&k).as_deref() == Some("true");
    has(K::AccessKey)
        || has(K::SasKey)
        || has(K::Token)
        || (has(K::ClientId) && has(K::ClientSecret))
        || (has(K::FederatedTokenFile) && has(K::ClientId))
        || yes(K::UseEmulator)
        || yes(K::UseAzureCli)
        || yes(K::SkipSignature)
}

/// `scheme://host/path`, without query or credentials.
fn redact(u: &url::Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.path().trim_end_matches('/')
    )
}

/// Plain HTTP to GCS only when the service account file points at a local
/// endpoint (`gcs_base_url`, as emulators and tests do).
fn gcs_allows_http(account: Option<&str>) -> bool {
    let path = account.map(str::to_owned).or_else(|| {
        std::env::var("GOOGLE_SERVICE_ACCOUNT")
            .or_else(|_| std::env::var("GOOGLE_APPLICATION_CREDENTIALS"))
            .ok()
    });
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v["gcs_base_url"]
                .as_str()
                .map(|u| u.starts_with("http://127.0.0.1") || u.starts_with("http://localhost"))
        })
        .unwrap_or(false)
}

/// Credentials of one profile in the AWS shared credentials file.
#[derive(PartialEq, Eq)]
struct ProfileCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl std::fmt::Debug for ProfileCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProfileCredentials({}, secret redacted)",
            self.access_key_id
        )
    }
}

/// Reads `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`),
/// profile `AWS_PROFILE` (default `default`).
fn profile_credentials() -> Option<ProfileCredentials> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials"))
        })?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse_credentials(&std::fs::read_to_string(file).ok()?, &profile)
}

fn parse_credentials(text: &str, profile: &str) -> Option<ProfileCredentials> {
    let mut in_profile = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(ProfileCredentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_are_checked_by_part() {
        let o = BucketOptions::default();
        let e = Bucket::open("ftp://x/y", &o).unwrap_err().to_string();
        assert!(e.contains("scheme \"ftp\""), "{e}");
        let e = Bucket::open("s3://b/p?secret=x", &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("query key \"secret\"") && !e.contains("=x"),
            "{e}"
        );
        let e = Bucket::open("s3:///p", &o).unwrap_err().to_string();
        assert!(e.contains("needs a bucket"), "{e}");
        let e = Bucket::open("s3://b/p?endpoint=http://127.0.0.1:1&path_style=maybe", &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("path_style"), "{e}");
        let e = Bucket::open("file://host/x", &o).unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let b = Bucket::open(
            "s3://b/some/prefix?endpoint=http://127.0.0.1:1&region=r&path_style=true",
            &o,
        )
        .unwrap();
        assert_eq!(b.display(), "s3://b/some/prefix");
        assert_eq!(b.path("s/x").unwrap().as_ref(), "some/prefix/s/x");
    }

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n\n# c\n[ci]\naws_access_key_id=AK2\naws_secret_access_key=S2\naws_session_token=T2\n";
        let d = parse_credentials(text, "default").unwrap();
        assert_eq!(
            (d.access_key_id.as_str(), d.session_token.is_none()),
            ("AK1", true)
        );
        let c = parse_credentials(text, "ci").unwrap();
        assert_eq!(
            (c.secret_access_key.as_str(), c.session_token.as_deref()),
            ("S2", Some("T2"))
        );
        assert!(parse_credentials(text, "nope").is_none());
        assert!(!format!("{c:?}").contains("S2"));
    }

    #[tokio::test]
    async fn local_directory_is_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path())
            .unwrap()
            .to_string();
        let b = Bucket::open(&format!("{url}archive"), &BucketOptions::default()).unwrap();
        assert_eq!(b.probe().await.unwrap(), ProbeResult::CreateOnly);
        assert!(b.list("").await.unwrap().is_empty(), "the probe cleans up");
        let data = Bytes::from_static(b"hello");
        assert_eq!(
            b.put_create("s/a", data.clone()).await.unwrap(),
            PutOutcome::Created
        );
        assert_eq!(
            b.put_create("s/a", data.clone()).await.unwrap(),
            PutOutcome::AlreadyThere
        );
        let e = b
            .put_create("s/a", Bytes::from_static(b"other"))
            .await
            .unwrap_err();
        assert!(matches!(e, ObjStoreError::Conflict { .. }), "{e}");
        assert_eq!(
            b.get("s/a").await.unwrap().unwrap(),
            data,
            "never overwritten"
        );
        b.confirm("s/a", 5, &hex::encode(Sha256::digest(b"hello")))
            .await
            .unwrap();
        assert!(b.confirm("s/a", 6, "x").await.is_err());
        assert!(b.confirm("s/a", 5, &"0".repeat(64)).await.is_err());
        assert_eq!(b.list("s").await.unwrap(), vec![("s/a".to_owned(), 5)]);
        assert!(b.get("s/missing").await.unwrap().is_none());
    }
}
