//! What an ingest body is: its format (`Content-Type`: JSON or NDJSON) and
//! its content coding (`Content-Encoding`: gzip, deflate, zstd), decoded
//! within `[ingest] max_request_bytes`.
//!
//! Log shippers (Vector, Fluent Bit, Filebeat) compress what they send and
//! name NDJSON in several ways; both used to be parsed as plain JSON and
//! refused with a message about line 1 or 2. The decoded size is bounded
//! as it is inflated: a few hundred kilobytes of gzip can inflate to
//! gigabytes, so decoding stops one byte past the limit and answers 413,
//! and memory never exceeds the limit (plus zstd's window, itself capped
//! to the limit's size).
//!
//! Not here: parsing events (`event::parse_request`).

use std::io::Read as _;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::ApiError;

/// Media types read as NDJSON (one event per line). Anything else is read
/// as JSON, as it always was (curl's `-d` sends a form type).
const NDJSON_TYPES: [&str; 6] = [
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonl",
    "application/jsonlines",
    "application/x-jsonlines",
];

/// What `Content-Encoding` may name, as the 415 and `Accept-Encoding` say.
pub(super) const SUPPORTED_ENCODINGS: &str = "gzip, deflate, zstd, identity";

/// Whether the request's `Content-Type` is one of the NDJSON types.
pub(super) fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| NDJSON_TYPES.contains(&ct.as_str()))
}

/// A content coding trailkeep decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// No coding.
    Identity,
    /// gzip (RFC 1952), one member or several.
    Gzip,
    /// HTTP `deflate`: zlib (RFC 1950), or the raw deflate some clients
    /// send instead (RFC 9110 §8.4.1.2 notes both exist).
    Deflate,
    /// zstd (RFC 8878).
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// Reads `Content-Encoding`: none, `identity`, or one of gzip
/// (`x-gzip`), deflate, zstd.
///
/// # Errors
/// 415 `unsupported_encoding` naming the codings taken, with
/// `Accept-Encoding` listing them (RFC 7694), for any other coding or for
/// more than one.
pub(super) fn coding(headers: &HeaderMap) -> Result<Coding, ApiError> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(v) = v.to_str() else {
            return Err(unsupported("a Content-Encoding that is not ASCII"));
        };
        for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let c = c.to_ascii_lowercase();
            let coding = match c.as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "zstd" => Coding::Zstd,
                _ => return Err(unsupported(&format!("Content-Encoding {c}"))),
            };
            codings.push(coding);
        }
    }
    match codings[..] {
        [] => Ok(Coding::Identity),
        [one] => Ok(one),
        _ => Err(unsupported("more than one Content-Encoding")),
    }
}

fn unsupported(what: &str) -> ApiError {
    ApiError {
        field: Some("Content-Encoding".into()),
        ..ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "{what} is not supported; send the body as is or with one Content-Encoding of {SUPPORTED_ENCODINGS}"
            ),
        )
    }
    .with_header(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(SUPPORTED_ENCODINGS),
    )
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DecodeError {
    /// It inflates past the limit (or, for zstd, needs a window larger
    /// than the limit).
    TooLarge,
    /// It is not valid data of its coding.
    Corrupt(String),
}

/// Decodes `body` (coded with `coding`), refusing to produce more than
/// `max` bytes: decoding stops at `max + 1`.
///
/// # Errors
/// [`DecodeError`].
pub(super) fn decode(body: &[u8], coding: Coding, max: usize) -> Result<Vec<u8>, DecodeError> {
    let reader: Box<dyn std::io::Read + '_> = match coding {
        Coding::Identity => return Ok(body.to_vec()),
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Coding::Deflate if is_zlib(body) => Box::new(flate2::read::ZlibDecoder::new(body)),
        Coding::Deflate => Box::new(flate2::read::DeflateDecoder::new(body)),
        Coding::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
            // A frame may ask for a window of up to 2 GiB; more than the
            // whole decoded body may hold is never needed.
            d.window_log_max(window_log(max))
                .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
            Box::new(d)
        }
    };
    // Grows with what arrives, never past `max + 1`.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max + 1));
    match reader.take(max as u64 + 1).read_to_end(&mut out) {
        Ok(n) if n > max => Err(DecodeError::TooLarge),
        Ok(_) => Ok(out),
        Err(e) if coding == Coding::Zstd && e.to_string().contains("too much memory") => {
            Err(DecodeError::TooLarge)
        }
        Err(e) => Err(DecodeError::Corrupt(format!("{}: {e}", coding.name()))),
    }
}

/// Whether `body` starts with a zlib header (RFC 1950 §2.2: deflate, a
/// window of at most 32 KiB, and a check value).
fn is_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The zstd window (log2 bytes) a body of at most `max` bytes can need:
/// the smallest power of two at least `max`, within zstd's 10-31.
fn window_log(max: usize) -> u32 {
    (usize::BITS - max.saturating_sub(1).leading_zeros()).clamp(10, 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ndjson_types_are_recognized_whatever_their_case_and_parameters() {
        for ct in [
            "application/x-ndjson",
            "application/jsonl; charset=utf-8",
            "Application/X-JSONLines",
            "application/jsonlines",
        ] {
            assert!(is_ndjson(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/json", "text/plain", "application/x-ndjson-seq"] {
            assert!(!is_ndjson(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_ndjson(&HeaderMap::new()));
    }

    #[test]
    fn codings_are_read_and_unknown_ones_refused_by_name() {
        let c = |v: &str| coding(&headers(&[("content-encoding", v)]));
        assert_eq!(coding(&HeaderMap::new()).unwrap(), Coding::Identity);
        assert_eq!(c("identity").unwrap(), Coding::Identity);
        assert_eq!(c("GZIP").unwrap(), Coding::Gzip);
        assert_eq!(c("x-gzip").unwrap(), Coding::Gzip);
        assert_eq!(c("identity, deflate").unwrap(), Coding::Deflate);
        assert_eq!(c("zstd").unwrap(), Coding::Zstd);
        for bad in ["br", "gzip, gzip", "compress"] {
            let e = c(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
            assert!(e.message.contains(SUPPORTED_ENCODINGS), "{}", e.message);
        }
        assert!(c("br").unwrap_err().message.contains("Content-Encoding br"));
    }

    #[test]
    fn every_coding_decodes_and_none_inflates_past_the_limit() {
        let data = b"{\"type\":\"a\"}\n".repeat(1000);
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let raw = {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        let two_members = [gzip(&data[..5000]), gzip(&data[5000..])].concat();
        for (coding, body) in [
            (Coding::Gzip, gzip(&data)),
            (Coding::Gzip, two_members),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
            (Coding::Zstd, zstd),
        ] {
            assert_eq!(
                decode(&body, coding, data.len()).unwrap(),
                data,
                "{coding:?}"
            );
            assert_eq!(
                decode(&body, coding, data.len() - 1),
                Err(DecodeError::TooLarge),
                "{coding:?}"
            );
        }
        assert!(matches!(
            decode(b"not gzip", Coding::Gzip, 100),
            Err(DecodeError::Corrupt(m)) if m.starts_with("gzip:")
        ));
        assert!(matches!(
            decode(b"not zstd", Coding::Zstd, 100),
            Err(DecodeError::Corrupt(m)) if m.starts_with("zstd:")
        ));
    }

    #[test]
    fn a_zstd_frame_asking_for_a_huge_window_is_too_large() {
        // A streamed frame (no size known up front) declares the window it
        // was given: 128 MiB here, for a body of 64 KiB.
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        e.window_log(27).unwrap();
        e.write_all(&[7u8; 64 << 10]).unwrap();
        let body = e.finish().unwrap();
        assert_eq!(
            decode(&body, Coding::Zstd, 1 << 20),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn window_logs_cover_the_limit() {
        assert_eq!(window_log(1), 10);
        assert_eq!(window_log(8 << 20), 23);
        assert_eq!(window_log((8 << 20) + 1), 24);
        assert_eq!(window_log(usize::MAX), 31);
    }
}
