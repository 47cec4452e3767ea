//! The C2SP `tlog-checkpoint` body: `origin\nsize\nbase64(root)\n`.
//!
//! Spec: <https://c2sp.org/tlog-checkpoint>. Extension lines after the root
//! are accepted on parse and ignored; trailkeep writes none.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::hash::Hash;

/// A tree head: the log's origin, its size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, `<log name>/<stream>`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root hash.
    pub root: Hash,
}

/// A checkpoint body that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed checkpoint: {0}")]
pub struct CheckpointParseError(&'static str);

/// Returns the checkpoint origin of `stream` in the log `log_name`:
/// `{log_name}/{stream}`.
pub fn origin(log_name: &str, stream: &str) -> String {
    format!("{log_name}/{stream}")
}

impl Checkpoint {
    /// Returns the note text of this checkpoint.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint body (the note text, without signatures).
    ///
    /// # Errors
    /// When a line is missing, the size is not a canonical decimal, or the
    /// root is not 32 bytes of base64.
    pub fn parse(text: &str) -> Result<Self, CheckpointParseError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointParseError("missing final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointParseError("empty origin"))?;
        let size_s = lines.next().ok_or(CheckpointParseError("missing size"))?;
        if size_s.is_empty()
            || (size_s.len() > 1 && size_s.starts_with('0'))
            || !size_s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CheckpointParseError(
                "size is not a decimal without leading zeros",
            ));
        }
        let size = size_s
            .parse()
            .map_err(|_| CheckpointParseError("size out of range"))?;
        let root_s = lines.next().ok_or(CheckpointParseError("missing root"))?;
        let root_v = STANDARD
            .decode(root_s)
            .map_err(|_| CheckpointParseError("root is not base64"))?;
        let root: Hash = root_v
            .try_into()
            .map_err(|_| CheckpointParseError("root is not 32 bytes"))?;
        if lines.any(|l| l.is_empty()) {
            return Err(CheckpointParseError("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed() {
        let c = Checkpoint {
            origin: "trailkeep.local/auth".into(),
            size: 42,
            root: [7u8; 32],
        };
        let text = c.to_text();
        assert_eq!(Checkpoint::parse(&text), Ok(c));
        for bad in [
            "",
            "origin\n",
            "origin\n01\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n1\nnot-base64\n",
            "origin\n1\nBwcH\n",
            "origin\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_a_published_checkpoint_with_extension_lines() {
        // Body shape from the C2SP tlog-checkpoint spec's example.
        let text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\nextension\n";
        let c = Checkpoint::parse(text).expect("published example parses");
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20_852_163);
    }
}
