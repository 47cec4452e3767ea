//! The JSON error body: `{"error":{"code","message","index","field"}}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::event::Rejection;
use crate::store::ArchivedRange;

/// An HTTP error with a machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message (never includes secrets).
    pub message: String,
    /// Index of the offending event.
    pub index: Option<usize>,
    /// Offending field.
    pub field: Option<String>,
    /// Seconds to wait before retrying (429, 503): sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// What few answers carry (boxed: every handler returns this type).
    pub extra: Option<Box<Extra>>,
}

/// The parts of an [`ApiError`] few answers have.
#[derive(Debug, Default)]
pub struct Extra {
    /// Headers the answer carries (`Accept-Encoding` on a 415).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The archived range a read asked for (`410 archived`).
    pub archived: Option<Archived>,
}

impl ApiError {
    /// Returns an error without index or field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            index: None,
            field: None,
            retry_after: None,
            extra: None,
        }
    }

    /// Returns the error with `name: value` added to its answer's headers.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.extra
            .get_or_insert_with(Box::default)
            .headers
            .push((name, value));
        self
    }

    /// 410 `archived`: the seqs a read starts at were moved to the cold
    /// archive and deleted from the hot store. Names the range, where the
    /// hot store goes on, and how to get them; `Cache-Control: no-store`,
    /// since a restore brings them back.
    pub fn archived(range: ArchivedRange) -> Self {
        let goes_on = match range.next_hot_seq {
            Some(n) => format!("the hot store goes on at seq {n} (read from_seq={n} to skip them)"),
            None => "nothing after them is in the hot store yet".to_owned(),
        };
        let message = format!(
            "{} archived in stream {}: moved to the cold archive and deleted from the hot store; {goes_on}. \
             To read them, bring them back with `{}` or {} (an admin key) and read again, \
             or read the archive objects named in error.archived.objects (compressed NDJSON, each with a signed manifest)",
            range.seqs_are(),
            range.stream,
            range.restore_command(),
            range.restore_request(),
        );
        Self {
            field: Some("from_seq".into()),
            extra: Some(Box::new(Extra {
                headers: vec![(
                    axum::http::header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                )],
                archived: Some(Archived {
                    restore_command: range.restore_command(),
                    restore_request: range.restore_request(),
                    range,
                }),
            })),
            ..Self::new(StatusCode::GONE, "archived", message)
        }
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid API key (Authorization: Bearer <token>)",
        )
    }

    /// 403.
    pub fn forbidden(what: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key's scope does not allow {what}"),
        )
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 503 with `Retry-After`: the writer is saturated or the disk full;
    /// nothing of the request was stored.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 for a store failure; the detail goes to the log, not the client.
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = if r.too_large {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            code: r.code,
            message: r.message,
            index: r.index,
            field: r.field,
            retry_after: None,
            extra: None,
        }
    }
}

/// The body of every error answer (4xx and 5xx).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`) and people (`message`).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`invalid_time`, `forbidden`, `overloaded`, …).
    pub code: String,
    /// What is wrong and how to fix it; never a secret.
    pub message: String,
    /// Index of the offending event in the request, when one is at fault.
    pub index: Option<usize>,
    /// The offending field or parameter.
    pub field: Option<String>,
    /// With code `archived` (410) only: the archived range the read asked
    /// for and how to get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<Archived>,
}

/// `error.archived` of a `410 archived` answer: the seqs asked for that
/// are archived and no longer hot, where the hot store goes on, the
/// archive objects holding them, and how to bring them back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Archived {
    /// The range and where the hot store goes on.
    #[serde(flatten)]
    pub range: ArchivedRange,
    /// The command that restores the range into the hot store (run where
    /// the server's store is; then read again).
    pub restore_command: String,
    /// The request that does the same, with an admin key.
    pub restore_request: String,
}

/// The longest `message` an error answer carries, in bytes.
const MAX_MESSAGE: usize = 2048;
/// The longest `field` an error answer carries, in bytes.
const MAX_FIELD: usize = 256;

/// `s` cut to at most `max` bytes on a character boundary, marked with `…`
/// when cut: a message may quote the client's input (an unknown field's
/// name), and an answer must stay small whatever was sent.
fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: bounded(self.message, MAX_MESSAGE),
                index: self.index,
                field: self.field.map(|f| bounded(f, MAX_FIELD)),
                archived: self.extra.as_mut().and_then(|e| e.archived.take()),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        for (name, value) in self.extra.map(|e| e.headers).unwrap_or_default() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[tokio::test]
    async fn an_error_answer_stays_small_whatever_it_quotes() {
        let name = "é".repeat(1_000_000);
        let e = ApiError {
            field: Some(name.clone()),
            ..ApiError::bad_request("unknown_field", format!("unknown field `{name}`"))
        };
        let (_, body) = e.into_response().into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("in memory");
        assert!(
            body.len() < MAX_MESSAGE + MAX_FIELD + 200,
            "{} bytes",
            body.len()
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let (m, f) = (
            v["error"]["message"].as_str().expect("message"),
            v["error"]["field"].as_str().expect("field"),
        );
        assert!(m.starts_with("unknown field `é") && m.ends_with('…'), "{m}");
        assert!(f.len() <= MAX_FIELD && f.ends_with('…'), "{f}");
        assert_eq!(bounded("short".into(), 10), "short");
    }
}
