//! Names that reach object keys, file paths, URLs and headers, checked once
//! by type.
//!
//! A [`StreamName`] can only be built through validation, so a function
//! that takes one (the archive's key layout, say) cannot be handed `..`,
//! `a/b` or an empty name. [`StreamName::producer`] further refuses the
//! log's own names (leading `.` or `_`): producers, sources and API keys
//! get those; the log's own streams ([`crate::event::SELF_STREAM`],
//! [`crate::event::AUDIT_STREAM`]) come from [`StreamName::parse`].
//! [`ConfigName`] is the same idea for destination and source names.

use std::fmt;

/// Why a name was refused; the message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not 1–128 of `A–Z a–z 0–9 . _ -`, or `.`/`..`.
    #[error("{0:?} is not a stream name: use 1-128 of A-Z a-z 0-9 . _ - (not . or ..)")]
    Stream(String),
    /// A name starting with `.` or `_`, which belong to the log itself.
    #[error(
        "stream names starting with '.' or '_' belong to the log itself ({0:?}); choose another"
    )]
    Reserved(String),
    /// Not 1–64 of `A–Z a–z 0–9 - _`.
    #[error("{0:?} is not a name: use 1-64 of A-Z a-z 0-9 - _")]
    Config(String),
}

impl NameError {
    /// A short machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            NameError::Stream(_) => "invalid_stream",
            NameError::Config(_) => "invalid_name",
            NameError::Reserved(_) => "reserved_stream",
        }
    }
}

/// A syntactically valid stream name (possibly one of the log's own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

impl StreamName {
    /// Any valid stream name, the log's own included: 1–128 of
    /// `A–Z a–z 0–9 . _ -`, and not `.` or `..` (which would climb out of
    /// a path or object key).
    ///
    /// # Errors
    /// [`NameError::Stream`].
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if crate::event::valid_stream_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Stream(truncate(s)))
        }
    }

    /// A name a producer, a source or an API key may use: valid and not
    /// the log's own.
    ///
    /// # Errors
    /// [`NameError::Stream`] or [`NameError::Reserved`].
    pub fn producer(s: &str) -> Result<Self, NameError> {
        let n = Self::parse(s)?;
        if n.is_reserved() {
            return Err(NameError::Reserved(n.0));
        }
        Ok(n)
    }

    /// Whether the name is the log's own (starts with `.` or `_`).
    pub fn is_reserved(&self) -> bool {
        crate::event::is_reserved_stream(&self.0)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A destination or source name: 1–64 of `A–Z a–z 0–9 - _` (no dot, so it
/// cannot be a path step; it appears in metrics labels, URLs and headers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ConfigName(String);

impl ConfigName {
    /// Validates a destination or source name.
    ///
    /// # Errors
    /// [`NameError::Config`].
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Config(truncate(s)))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps error messages short whatever was sent.
fn truncate(s: &str) -> String {
    s.chars().take(140).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        for ok in ["a", "A-b_c.d", "x".repeat(128).as_str(), "_trailkeep", ".x"] {
            assert!(StreamName::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "x".repeat(129).as_str(),
            "a\0",
            "a\n",
        ] {
            assert_eq!(
                StreamName::parse(bad),
                Err(NameError::Stream(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(StreamName::producer("auth").is_ok());
        for reserved in ["_trailkeep", "_audit", ".hidden", "_"] {
            assert_eq!(
                StreamName::producer(reserved),
                Err(NameError::Reserved(reserved.to_owned()))
            );
        }
        assert!(
            StreamName::parse("_audit")
                .unwrap_or_else(|e| panic!("{e}"))
                .is_reserved()
        );
        assert!(
            !StreamName::parse("audit")
                .unwrap_or_else(|e| panic!("{e}"))
                .is_reserved()
        );
        let long = "z".repeat(1000);
        assert!(
            StreamName::parse(&long)
                .expect_err("too long")
                .to_string()
                .len()
                < 300
        );
    }

    #[test]
    fn names_show_as_themselves() {
        let s = StreamName::parse("auth").expect("valid");
        assert_eq!(
            (s.to_string().as_str(), s.as_ref(), s.as_str()),
            ("auth", "auth", "auth")
        );
        let c = ConfigName::parse("splunk-main").expect("valid");
        assert_eq!(
            (c.to_string().as_str(), c.as_str()),
            ("splunk-main", "splunk-main")
        );
    }

    #[test]
    fn config_names() {
        for ok in ["s3", "splunk-main", "a_b", "x".repeat(64).as_str()] {
            assert!(ConfigName::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a.b", "..", "a/b", "x".repeat(65).as_str(), "a b"] {
            assert!(ConfigName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
