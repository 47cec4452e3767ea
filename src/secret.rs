//! A secret read from the environment or a file (API keys of upstreams,
//! destination tokens and signing secrets). `Debug` never shows it, so a
//! secret inside a config struct cannot reach a log through `{:?}`.

use std::fmt;

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
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-value".into());
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(empty)");
        assert_eq!(s.expose(), "hunter2-value");
    }
}
