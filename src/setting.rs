//! A setting that is wrong: the one configuration error type. Each part of
//! the configuration (`[[sources]]`, `[[destinations]]`, the rest) names
//! the key relative to the table it reads; `config` puts the table in front
//! ([`SettingError::within`]), so every message names the full dotted key.

/// A configuration error naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct SettingError {
    /// The offending key, dotted (`ingest.max_event_bytes`,
    /// `sources[0].url`).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// Where in the file, when the parser said (bytes); otherwise the key
    /// is looked up in the file to show where it is
    /// (`config::check::locate`).
    pub span: Option<std::ops::Range<usize>>,
}

impl SettingError {
    /// `key` is wrong: `message`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
            span: None,
        }
    }

    /// The same error with `table` in front of its key
    /// (`url` within `sources[0]` is `sources[0].url`).
    #[must_use]
    pub fn within(mut self, table: &str) -> Self {
        self.key = format!("{table}.{}", self.key);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_prefixes_the_table() {
        let e = SettingError::new("url", "must be https").within("sources[2]");
        assert_eq!(e.to_string(), "config: sources[2].url: must be https");
    }
}
