//! A secret read from the environment or a file (API keys of upstreams,
//! destination tokens and signing secrets). `Debug` never shows it, so a
//! secret inside a config struct cannot reach a log through `{:?}`.
//!
//! Every secret is loaded the same way ([`SecretSource::load`]): the
//! value with surrounding whitespace trimmed (the newline `echo` leaves in
//! a file, a space pasted into a variable), and an empty one refused, with
//! an error naming the setting and the variable or file, never the value.

use std::fmt;
use std::path::PathBuf;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

/// Why a secret could not be loaded. Names the setting and where it
/// looked, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set (or not UTF-8).
    #[error("{setting}: environment variable {var} is not set")]
    EnvMissing {
        /// The setting that names the variable (`sources.up.api_key_env`).
        setting: String,
        /// The variable.
        var: String,
    },
    /// The file cannot be read.
    #[error("{setting}: cannot read {}", path.display())]
    File {
        /// The setting that names the file.
        setting: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text (only byte secrets may be).
    #[error("{setting}: {} is not UTF-8 text", path.display())]
    NotText {
        /// The setting that names the file.
        setting: String,
        /// The file.
        path: PathBuf,
    },
    /// Nothing is left once whitespace is trimmed.
    #[error("{setting}: the secret is empty")]
    Empty {
        /// The setting.
        setting: String,
    },
}

impl SecretSource {
    /// Loads the secret as bytes (an HMAC key may be any bytes), trimmed of
    /// surrounding ASCII whitespace; `setting` names it in errors.
    ///
    /// # Errors
    /// See [`SecretError`].
    pub fn load_bytes(&self, setting: &str) -> Result<Vec<u8>, SecretError> {
        let raw = match self {
            Self::Env(var) => std::env::var(var)
                .map_err(|_| SecretError::EnvMissing {
                    setting: setting.to_owned(),
                    var: var.clone(),
                })?
                .into_bytes(),
            Self::File(path) => std::fs::read(path).map_err(|source| SecretError::File {
                setting: setting.to_owned(),
                path: path.clone(),
                source,
            })?,
        };
        let v = raw.trim_ascii().to_vec();
        if v.is_empty() {
            return Err(SecretError::Empty {
                setting: setting.to_owned(),
            });
        }
        Ok(v)
    }

    /// Loads the secret as text (tokens, API keys), trimmed as
    /// [`SecretSource::load_bytes`] does.
    ///
    /// # Errors
    /// See [`SecretError`].
    pub fn load(&self, setting: &str) -> Result<Secret, SecretError> {
        let v = self.load_bytes(setting)?;
        String::from_utf8(v)
            .map(Secret)
            .map_err(|_| SecretError::NotText {
                setting: setting.to_owned(),
                path: match self {
                    Self::File(p) => p.clone(),
                    Self::Env(v) => PathBuf::from(format!("${v}")),
                },
            })
    }
}

/// A secret value.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// Returns the secret value (for building a request header only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(empty)"
        } else {
            "Secret(redacted)"
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue #14: sources trimmed only the end of a file and nothing of a
    /// variable, destinations both ends, the HMAC key bytes: one rule now.
    #[test]
    fn every_secret_is_trimmed_the_same_way_and_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, " \tvalue-1\n").unwrap();
        let from_file = SecretSource::File(f.clone());
        assert_eq!(from_file.load("x.secret_file").unwrap().expose(), "value-1");
        assert_eq!(from_file.load_bytes("x").unwrap(), b"value-1");
        std::fs::write(&f, "\n  \n").unwrap();
        let e = from_file
            .load("sources.up.api_key_file")
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "sources.up.api_key_file: the secret is empty"
        );
        std::fs::write(&f, [0xff, 0xfe, b'a']).unwrap();
        assert!(matches!(
            from_file.load("x"),
            Err(SecretError::NotText { .. })
        ));
        assert_eq!(
            from_file.load_bytes("x").unwrap(),
            [0xff, 0xfe, b'a'],
            "bytes may be any bytes"
        );
        let missing = SecretSource::Env("TRAILKEEP_SECRET_TEST_UNSET_VAR".into());
        assert_eq!(
            missing
                .load("destinations.d.secret_env")
                .expect_err("refused")
                .to_string(),
            "destinations.d.secret_env: environment variable TRAILKEEP_SECRET_TEST_UNSET_VAR is not set"
        );
        let e = SecretSource::File(dir.path().join("nope"))
            .load("archive.hmac_secret_file")
            .expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("archive.hmac_secret_file: cannot read "),
            "{e}"
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-value".into());
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(empty)");
        assert_eq!(s.expose(), "hunter2-value");
    }
}
