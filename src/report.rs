//! Error text for people: an error and its causes on one line, each said
//! once.
//!
//! trailkeep's own error types follow the convention of well-kept crates
//! (std, `object_store`'s public errors, `anyhow` contexts): `Display`
//! says what this layer knows and leaves the cause to `source()`, so
//! printing the chain says everything once. [`Chain`] prints that chain,
//! `a: b: c`; a cause whose text the previous link already shows is
//! skipped, because errors of other crates do not all follow the
//! convention (an `std::io::Error` made from a message, say, repeats it).
//!
//! Not here: what is logged with `tracing` (callers pass `%Chain(&e)`) and
//! the HTTP API's error bodies (`api::error`).

use std::fmt;

/// An error and its `source()` chain, `a: b: c`, each text once: a cause
/// whose text the link before already contains is not printed again.
/// Lines inside a message (a TOML error's snippet and caret) are kept.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            let text = e.to_string();
            if !text.is_empty() && !last.contains(&text) {
                f.write_str(": ")?;
                f.write_str(&text)?;
            }
            last = text;
            cur = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("data directory d")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("data directory d: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn each_text_is_said_once() {
        let io = || std::io::Error::other("another trailkeep serve is running on it");
        assert_eq!(
            Chain(&Outer(io())).to_string(),
            "data directory d: another trailkeep serve is running on it"
        );
        assert_eq!(
            Chain(&Repeats(io())).to_string(),
            "data directory d: another trailkeep serve is running on it",
            "a cause the message already shows is skipped"
        );
        let e = anyhow::Error::new(Outer(io())).context("cannot start");
        assert_eq!(
            Chain(e.as_ref()).to_string(),
            "cannot start: data directory d: another trailkeep serve is running on it"
        );
    }
}
