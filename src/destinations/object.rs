//! The object-store destinations (`s3`, `gcs`, `azure_blob`): each batch is
//! one NDJSON object, optionally gzip or zstd, written create-only at
//! `{prefix}/{stream}/dt=YYYY-MM-DD/HH-MM-SS.mmm-{startSeq:020}-{endSeq:020}.ndjson[.gz|.zst]`.
//!
//! The time in the key is the receipt time of the batch's first event and
//! the encoding is deterministic, so a retried batch has the same key and
//! bytes: the create-only write finds its own object (same SHA-256) and
//! counts as done, never making a second object. Keys sort by time and carry
//! the seq range, so they never collide.

use async_trait::async_trait;
use bytes::Bytes;

use super::encoding::{Encoding, encode};
use super::{Batch, DeliveryError, Destination};
use crate::objstore::{Bucket, ObjStoreError};

/// Object compression for destinations (`none` allowed, unlike the archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectCompression {
    /// Plain NDJSON.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Writes batches as objects.
#[derive(Debug, Clone)]
pub struct ObjectDestination {
    bucket: Bucket,
    compression: ObjectCompression,
    encoding: Encoding,
}

impl ObjectDestination {
    /// A destination writing into `bucket`.
    pub fn new(bucket: Bucket, compression: ObjectCompression, encoding: Encoding) -> Self {
        Self {
            bucket,
            compression,
            encoding,
        }
    }

    /// The object key of `batch`.
    pub fn key(&self, batch: &Batch) -> String {
        let first = batch.events.first().map_or("", |e| e.received.as_str());
        // received is `YYYY-MM-DDTHH:MM:SS.ffffffZ`
        let day = first.get(..10).unwrap_or("0000-00-00");
        let clock = first
            .get(11..23)
            .unwrap_or("00:00:00.000")
            .replace(':', "-");
        let ext = match self.compression {
            ObjectCompression::None => "",
            ObjectCompression::Gzip => ".gz",
            ObjectCompression::Zstd => ".zst",
        };
        format!(
            "{}/dt={day}/{clock}-{:020}-{:020}.ndjson{ext}",
            batch.stream, batch.start_seq, batch.end_seq
        )
    }

    fn body(&self, batch: &Batch) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        for e in &batch.events {
            raw.extend_from_slice(encode(&e.json, self.encoding).as_bytes());
            raw.push(b'\n');
        }
        Ok(match self.compression {
            ObjectCompression::None => raw,
            ObjectCompression::Gzip => {
                use std::io::Write as _;
                let mut enc =
                    flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(6));
                enc.write_all(&raw)?;
                enc.finish()?
            }
            ObjectCompression::Zstd => zstd::stream::encode_all(&raw[..], 3)?,
        })
    }
}

#[async_trait]
impl Destination for ObjectDestination {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let body = self.body(batch).map_err(|e| DeliveryError::Permanent {
            status: None,
            message: format!("encoding: {e}"),
            detail: None,
        })?;
        match self
            .bucket
            .put_create(&self.key(batch), Bytes::from(body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e @ ObjStoreError::Conflict { .. }) => Err(DeliveryError::Permanent {
                status: None,
                message: e.to_string(),
                detail: None,
            }),
            Err(e) => Err(DeliveryError::Retryable {
                message: e.to_string(),
                retry_after: None,
                detail: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::OutEvent;
    use super::*;
    use crate::objstore::BucketOptions;

    fn batch(from: u64, n: u64, tag: &str) -> Batch {
        Batch {
            destination: "obj".into(),
            stream: "auth".into(),
            start_seq: from,
            end_seq: from + n - 1,
            events: (from..from + n)
                .map(|seq| OutEvent {
                    seq,
                    id: format!("e{seq}"),
                    event_type: "a.b".into(),
                    received: "2026-11-23T10:11:12.345678Z".into(),
                    json: format!("{{\"id\":\"e{seq}\",\"tag\":\"{tag}\"}}"),
                })
                .collect(),
        }
    }

    async fn check(bucket: Bucket) {
        let d =
            ObjectDestination::new(bucket.clone(), ObjectCompression::Gzip, Encoding::Trailkeep);
        let b = batch(1, 3, "x");
        assert_eq!(
            d.key(&b),
            "auth/dt=2026-11-23/10-11-12.345-00000000000000000001-00000000000000000003.ndjson.gz"
        );
        d.deliver(&b).await.unwrap();
        d.deliver(&b).await.unwrap(); // a retried batch: same key, same bytes
        let listed = bucket.list("auth").await.unwrap();
        assert_eq!(listed.len(), 1, "never a second object: {listed:?}");
        let got = bucket.get(&d.key(&b)).await.unwrap().unwrap();
        let raw = crate::objstore::compression::decompress(
            &got,
            crate::objstore::Compression::Gzip,
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "{\"id\":\"e1\",\"tag\":\"x\"}\n{\"id\":\"e2\",\"tag\":\"x\"}\n{\"id\":\"e3\",\"tag\":\"x\"}\n"
        );
        // Other contents at the same key: refused for good, nothing overwritten.
        let e = d.deliver(&batch(1, 3, "y")).await.unwrap_err();
        assert!(matches!(e, DeliveryError::Permanent { .. }), "{e}");
        let plain =
            ObjectDestination::new(bucket.clone(), ObjectCompression::None, Encoding::Grantex);
        plain.deliver(&batch(4, 2, "x")).await.unwrap();
        assert_eq!(bucket.list("auth").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn batches_are_create_only_objects_on_a_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        check(Bucket::open(url.as_str(), &BucketOptions::default()).unwrap()).await;
    }

    #[tokio::test]
    async fn batches_are_create_only_objects_on_s3() {
        let endpoint = match std::env::var("TEST_S3_ENDPOINT") {
            Ok(e) if !e.is_empty() => e,
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the S3 destination test: TEST_S3_ENDPOINT is not set"
                );
                return;
            }
        };
        let bucket = std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into());
        let url = format!(
            "s3://{bucket}/dest-{}?endpoint={endpoint}&region=us-east-1&path_style=true",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        check(Bucket::open(&url, &BucketOptions::default()).unwrap()).await;
    }

    use crate::destinations::conformance::{Decoded, Payload, Redelivery, Subject, required};

    /// What keeps a backend alive while a subject uses it (a directory, a
    /// fake server).
    type Guard = Box<dyn std::any::Any + Send + Sync>;

    /// Where an [`Objects`] subject's bucket is.
    #[async_trait]
    trait Backend: Send + Sync + 'static {
        /// A fresh prefix in the backend's bucket; `None` when its server is
        /// not available here.
        async fn open() -> Option<(Bucket, Guard)>;
    }

    fn unique() -> String {
        ulid::Ulid::new().to_string().to_lowercase()
    }

    struct LocalDir;
    #[async_trait]
    impl Backend for LocalDir {
        async fn open() -> Option<(Bucket, Guard)> {
            let dir = tempfile::tempdir().unwrap();
            let url = url::Url::from_directory_path(dir.path()).unwrap();
            let b = Bucket::open(url.as_str(), &BucketOptions::default()).unwrap();
            Some((b, Box::new(dir)))
        }
    }

    /// The in-test GCS XML API fake (no local GCS emulator honours
    /// create-only preconditions; see `objstore::gcs_fake`).
    struct Gcs;
    #[async_trait]
    impl Backend for Gcs {
        async fn open() -> Option<(Bucket, Guard)> {
            let fake = crate::objstore::gcs_fake::GcsFake::start().await;
            let dir = tempfile::tempdir().unwrap();
            let account = fake.service_account(dir.path());
            let url = format!(
                "gs://trailkeep-test/dest-{}?service_account={}",
                unique(),
                account.display()
            );
            let b = Bucket::open(&url, &BucketOptions::default()).unwrap();
            Some((b, Box::new((fake, dir))))
        }
    }

    /// moto (scripts/test.sh).
    struct S3;
    #[async_trait]
    impl Backend for S3 {
        async fn open() -> Option<(Bucket, Guard)> {
            let endpoint = required("TEST_S3_ENDPOINT")?;
            let bucket =
                std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "trailkeep-test".into());
            let url = format!(
                "s3://{bucket}/dest-{}?endpoint={endpoint}&region=us-east-1&path_style=true",
                unique()
            );
            Some((
                Bucket::open(&url, &BucketOptions::default()).unwrap(),
                Box::new(()),
            ))
        }
    }

    /// Azurite (scripts/test.sh).
    struct Azure;
    #[async_trait]
    impl Backend for Azure {
        async fn open() -> Option<(Bucket, Guard)> {
            required("AZURITE_BLOB_STORAGE_URL")?;
            let container =
                std::env::var("TEST_AZURE_CONTAINER").unwrap_or_else(|_| "trailkeep-test".into());
            let url = format!("az://{container}/dest-{}?emulator=true", unique());
            Some((
                Bucket::open(&url, &BucketOptions::default()).unwrap(),
                Box::new(()),
            ))
        }
    }

    /// An object destination in the conformance suite: the receiver is the
    /// bucket, each object a payload.
    struct Objects<B> {
        bucket: Bucket,
        dest: ObjectDestination,
        _guard: Guard,
        _backend: std::marker::PhantomData<B>,
    }

    #[async_trait]
    impl<B: Backend> Subject for Objects<B> {
        async fn start() -> Option<Self> {
            let (bucket, guard) = B::open().await?;
            Some(Self {
                dest: ObjectDestination::new(
                    bucket.clone(),
                    ObjectCompression::Gzip,
                    Encoding::Trailkeep,
                ),
                bucket,
                _guard: guard,
                _backend: std::marker::PhantomData,
            })
        }

        fn destination(&self) -> &dyn Destination {
            &self.dest
        }

        async fn received(&self) -> Vec<Payload> {
            let mut keys: Vec<String> = self
                .bucket
                .list("auth")
                .await
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            let mut out = Vec::new();
            for at in keys {
                let bytes = self.bucket.get(&at).await.unwrap().unwrap().to_vec();
                out.push(Payload { at, bytes });
            }
            out
        }

        fn decode(&self, p: &Payload) -> Decoded {
            let raw = crate::objstore::compression::decompress(
                &p.bytes,
                crate::objstore::Compression::Gzip,
                1 << 30,
            )
            .unwrap();
            Decoded {
                ids: String::from_utf8_lossy(&raw)
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["id"].as_str().unwrap().to_owned()
                    })
                    .collect(),
                size: raw.len(),
            }
        }

        fn redelivery(&self) -> Redelivery {
            Redelivery::Idempotent
        }
    }

    mod local_dir_conformance {
        crate::stored_destination_test_suite!(super::Objects<super::LocalDir>);
    }

    mod s3_moto_conformance {
        crate::stored_destination_test_suite!(super::Objects<super::S3>);
    }

    mod azure_azurite_conformance {
        crate::stored_destination_test_suite!(super::Objects<super::Azure>);
    }

    mod gcs_fake_conformance {
        crate::stored_destination_test_suite!(super::Objects<super::Gcs>);
    }
}
