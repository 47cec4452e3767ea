//! The log's Ed25519 signing key on disk: `DATA_DIR/signing.key`, created on
//! first use with mode 0600, in the signed-note `PRIVATE+KEY+…` form.
//!
//! The key's contents never reach logs or errors: messages name the file only.

use std::io::Write as _;
use std::path::Path;

use crate::chain::note::NoteSigner;

/// File name of the signing key inside the data directory.
pub const FILE_NAME: &str = "signing.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("signing key {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a signed-note private key.
    #[error("signing key {path} is not a valid signed-note Ed25519 private key")]
    Invalid {
        /// The file.
        path: String,
    },
}

/// Loads the signing key at `path`, which must exist (the CLI's key
/// commands: a mistyped `--data-dir` must not mint a new signing key).
///
/// # Errors
/// A missing or unreadable file, or one that does not hold a valid key.
pub fn load(path: &Path) -> Result<NoteSigner, KeyFileError> {
    let shown = path.display().to_string();
    let s = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: shown.clone(),
        source,
    })?;
    NoteSigner::parse(s.trim()).map_err(|_| KeyFileError::Invalid { path: shown })
}

/// Loads the signing key at `path` (by default `DATA_DIR/signing.key`), or
/// creates it there named `log_name`.
///
/// # Errors
/// I/O failures, or a file that does not hold a valid key.
pub fn load_or_create(path: &Path, log_name: &str) -> Result<NoteSigner, KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(s) => NoteSigner::parse(s.trim()).map_err(|_| KeyFileError::Invalid {
            path: shown.clone(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let signer =
                NoteSigner::from_seed(log_name, &seed).map_err(|_| KeyFileError::Invalid {
                    path: shown.clone(),
                })?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = match opts.open(path) {
                Ok(f) => f,
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return load_or_create(path, log_name);
                }
                Err(e) => return Err(io(e)),
            };
            f.write_all(format!("{}\n", signer.to_private_key()).as_bytes())
                .map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(signer)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_mode_0600_then_loads_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(&dir.path().join(FILE_NAME), "log.test").expect("create");
        let b = load_or_create(&dir.path().join(FILE_NAME), "other.name").expect("load");
        assert_eq!(a.verifier(), b.verifier(), "the stored key is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE_NAME))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            load(&dir.path().join(FILE_NAME)).expect("load").verifier(),
            a.verifier()
        );
        assert!(matches!(
            load(&dir.path().join("absent.key")),
            Err(KeyFileError::Io { .. })
        ));
        assert!(
            !dir.path().join("absent.key").try_exists().expect("stat"),
            "load creates nothing"
        );
        std::fs::write(dir.path().join(FILE_NAME), "garbage").expect("write");
        let err = load_or_create(&dir.path().join(FILE_NAME), "x").expect_err("invalid");
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");
    }
}
