//! S3 Object Lock retention on every object the archive creates.
//!
//! `object_store` sends no `x-amz-object-lock-*` headers with a PUT, and S3
//! refuses `x-amz-*` headers that the SigV4 signature does not cover, so
//! they cannot be added afterwards. Instead, right after each create-only
//! PUT (and before the batch is recorded), the archive sends its own
//! `PUT /{key}?retention` (PutObjectRetention), signed with
//! `object_store`'s own [`AwsAuthorizer`] and credentials, so every way of
//! configuring credentials that the archive supports works here too.
//!
//! A bucket's default retention applies to every object whoever writes it
//! and needs nothing from trailkeep; this is for operators who want the
//! retention set by the writer (a bucket with Object Lock enabled but no
//! default rule), or longer than the default.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use md5::Digest as _;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::HttpRequestBody;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::ObjStoreError;

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, root included, can delete or shorten it until it expires.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    /// Parses `compliance` or `governance`.
    ///
    /// # Errors
    /// Any other word.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "compliance" => Ok(Self::Compliance),
            "governance" => Ok(Self::Governance),
            other => Err(format!(
                "{other:?} is not an Object Lock mode: use compliance or governance"
            )),
        }
    }

    fn as_s3(self) -> &'static str {
        match self {
            Self::Compliance => "COMPLIANCE",
            Self::Governance => "GOVERNANCE",
        }
    }
}

/// What to set on every object (`[archive] object_lock_mode`,
/// `object_lock_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockSettings {
    /// The mode.
    pub mode: LockMode,
    /// Retain for this long after the write.
    pub days: u32,
}

/// Sets retention on objects of one S3 bucket.
pub(super) struct ObjectLock {
    s3: Arc<AmazonS3>,
    /// `https://host/bucket` (path style) or `https://bucket.host`.
    bucket_url: String,
    region: String,
    settings: LockSettings,
    http: reqwest::Client,
}

/// Percent-encodes a key segment as SigV4 canonical URIs expect (all but
/// unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl ObjectLock {
    pub(super) fn new(
        s3: Arc<AmazonS3>,
        bucket_url: String,
        region: String,
        settings: LockSettings,
        timeout: Duration,
    ) -> Result<Self, ObjStoreError> {
        // No redirects (they would carry the signed headers and the session
        // token to another host) and no proxy from the environment.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ObjStoreError::Location(format!("object lock client: {e}")))?;
        Ok(Self {
            s3,
            bucket_url,
            region,
            settings,
            http,
        })
    }

    fn url(&self, key: &str, query: &str) -> String {
        let path: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        format!(
            "{}/{}{query}",
            self.bucket_url.trim_end_matches('/'),
            path.join("/")
        )
    }

    /// Sends one request signed with the bucket's credentials: status,
    /// headers and body text.
    async fn send(
        &self,
        method: http::Method,
        key: &str,
        query: &str,
        body: Option<String>,
    ) -> Result<(u16, http::HeaderMap, String), String> {
        let credential = self
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| format!("credentials: {e}"))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(self.url(key, query));
        if let Some(b) = &body {
            let md5 = md5::Md5::digest(b.as_bytes());
            builder = builder.header("content-type", "application/xml").header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(md5),
            );
        }
        let mut req = builder
            .body(HttpRequestBody::from(body.clone().unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut req, None);
        let mut out = self
            .http
            .request(req.method().clone(), req.uri().to_string());
        for (k, v) in req.headers() {
            out = out.header(k, v);
        }
        if let Some(b) = body {
            out = out.body(b);
        }
        let resp = out
            .send()
            .await
            .map_err(|e| format!("cannot reach the bucket: {}", crate::net::describe(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // S3's answers here are a few hundred bytes; read no more than 4 KiB.
        let text = crate::net::read_limited(resp, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b.bytes).into_owned())
            .unwrap_or_default();
        Ok((status, headers, text))
    }

    /// Sets retention until `days` from now on `key` (the full key, prefix
    /// included). Extending an existing retention is allowed; S3 refuses to
    /// shorten a COMPLIANCE one, which a later date never asks for.
    pub(super) async fn retain(&self, key: &str) -> Result<(), ObjStoreError> {
        let until =
            time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(self.settings.days));
        let until = until
            .replace_nanosecond(0)
            .unwrap_or(until)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| ObjStoreError::Location(e.to_string()))?;
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>",
            self.settings.mode.as_s3()
        );
        let failed = |message: String, retryable: bool| ObjStoreError::Store {
            location: key.to_owned(),
            message: format!("setting Object Lock retention: {message}"),
            retryable,
            source: None,
        };
        let (status, _, text) = self
            .send(http::Method::PUT, key, "?retention", Some(body))
            .await
            .map_err(|m| failed(m, true))?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(failed(
            format!(
                "HTTP {status}: {} (is Object Lock enabled on the bucket, and may these credentials call s3:PutObjectRetention?)",
                xml_field(&text, "Code").unwrap_or("no error code")
            ),
            status >= 500 || status == 429,
        ))
    }

    /// The retention S3 reports for `key` (HeadObject's
    /// `x-amz-object-lock-*` headers, which need `s3:GetObjectRetention`):
    /// mode, retain-until date and the version id it protects.
    pub(super) async fn retention(&self, key: &str) -> Result<Option<Retention>, ObjStoreError> {
        let (status, headers, _) =
            self.send(http::Method::HEAD, key, "", None)
                .await
                .map_err(|message| ObjStoreError::Store {
                    location: key.to_owned(),
                    message,
                    retryable: true,
                    source: None,
                })?;
        if !(200..300).contains(&status) {
            return Err(ObjStoreError::Store {
                location: key.to_owned(),
                message: format!("reading Object Lock retention: HTTP {status}"),
                retryable: status >= 500,
                source: None,
            });
        }
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(h("x-amz-object-lock-mode")
            .zip(h("x-amz-object-lock-retain-until-date"))
            .map(|(mode, until)| Retention {
                mode,
                until,
                version: h("x-amz-version-id"),
            }))
    }

    /// Deletes one version of `key` for good (what an intruder with the
    /// bucket's credentials would try): the HTTP status S3 answers.
    #[cfg(test)]
    pub(super) async fn delete_version(&self, key: &str, version: &str) -> Result<u16, String> {
        let query = format!("?versionId={}", utf8_percent_encode(version, SEGMENT));
        Ok(self.send(http::Method::DELETE, key, &query, None).await?.0)
    }
}

/// An object's Object Lock retention as S3 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub mode: String,
    /// RFC 3339.
    pub until: String,
    /// The version it protects.
    pub version: Option<String>,
}

/// The text of the first `<name>…</name>` (S3's small, fixed answers).
fn xml_field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + len])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes_and_fields() {
        assert_eq!(LockMode::parse("compliance").unwrap(), LockMode::Compliance);
        assert_eq!(LockMode::parse("governance").unwrap(), LockMode::Governance);
        assert!(LockMode::parse("COMPLIANCE").is_err());
        let xml = "<Retention><Mode>COMPLIANCE</Mode><RetainUntilDate>2030-01-01T00:00:00Z</RetainUntilDate></Retention>";
        assert_eq!(xml_field(xml, "Mode"), Some("COMPLIANCE"));
        assert_eq!(
            xml_field(xml, "RetainUntilDate"),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(xml_field(xml, "Code"), None);
    }
}
