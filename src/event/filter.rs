//! Which events a destination (or the archiver, holding deletion back for
//! one) takes: stream names and type patterns.
//!
//! Type patterns: `grant.created` (exact), `grant.*` (a dotted prefix),
//! `*` (all); a leading `!` excludes. An event passes when it matches an
//! include pattern (or there are none) and no exclude pattern.

/// Compiled filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    streams: Vec<String>,
    include: Vec<String>,
    exclude: Vec<String>,
    checkpoints: bool,
}

fn matches(pattern: &str, t: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            t.len() > prefix.len() && t.starts_with(prefix) && t.as_bytes()[prefix.len()] == b'.'
        }
        None => pattern == t,
    }
}

/// A type pattern that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// Empty, or `*` other than as a whole dotted part at the end.
    #[error(
        "type pattern {pattern:?}: use a type, a prefix such as grant.*, or *, optionally after !"
    )]
    BadPattern {
        /// The pattern as written.
        pattern: String,
    },
}

impl Filter {
    /// Builds filters; `streams` empty or containing `*` means every stream.
    ///
    /// # Errors
    /// [`FilterError::BadPattern`]: a pattern that is empty or has `*` other
    /// than as a whole dotted part at the end.
    pub fn new(streams: &[String], types: &[String]) -> Result<Self, FilterError> {
        let mut f = Self {
            streams: if streams.iter().any(|s| s == "*") {
                Vec::new()
            } else {
                streams.to_vec()
            },
            ..Self::default()
        };
        for p in types {
            let (list, pat) = match p.strip_prefix('!') {
                Some(rest) => (&mut f.exclude, rest),
                None => (&mut f.include, p.as_str()),
            };
            let body = pat.strip_suffix(".*").unwrap_or(pat);
            if pat.is_empty() || (pat != "*" && (body.is_empty() || body.contains('*'))) {
                return Err(FilterError::BadPattern { pattern: p.clone() });
            }
            list.push(pat.to_owned());
        }
        Ok(f)
    }

    /// Also takes the log's own stream ([`crate::event::SELF_STREAM`]: every
    /// signed checkpoint and archive index), whatever the stream and type
    /// patterns say (`checkpoints = true`).
    #[must_use]
    pub fn with_checkpoints(mut self, on: bool) -> Self {
        self.checkpoints = on;
        self
    }

    /// Whether the destination takes `stream`. The log's own streams (names
    /// starting with `.` or `_`) only with `checkpoints = true`, and then
    /// only [`crate::event::SELF_STREAM`].
    pub fn stream(&self, stream: &str) -> bool {
        if crate::event::is_reserved_stream(stream) {
            return self.checkpoints && stream == crate::event::SELF_STREAM;
        }
        self.streams.is_empty() || self.streams.iter().any(|s| s == stream)
    }

    /// The one stream this destination serves, when it serves exactly one
    /// (and not the log's own): who may pause it.
    pub fn only_stream(&self) -> Option<&str> {
        match self.streams.as_slice() {
            [one] if !self.checkpoints => Some(one),
            _ => None,
        }
    }

    /// Whether the destination takes an event of type `t` in `stream`: the
    /// log's own stream passes whole, other streams by type.
    pub fn takes(&self, stream: &str, t: &str) -> bool {
        if crate::event::is_reserved_stream(stream) {
            return self.stream(stream);
        }
        self.event_type(t)
    }

    /// Whether the destination takes an event of type `t`.
    pub fn event_type(&self, t: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| matches(p, t)))
            && !self.exclude.iter().any(|p| matches(p, t))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_include_and_exclude() {
        let f = Filter::new(
            &v(&["auth", "grants"]),
            &v(&["grant.*", "token.issued", "!grant.revoked"]),
        )
        .unwrap();
        assert!(f.stream("auth") && !f.stream("billing"));
        assert!(f.event_type("grant.created"));
        assert!(f.event_type("grant.scope.added"));
        assert!(!f.event_type("grant.revoked"));
        assert!(!f.event_type("grantee.created"), "a prefix ends at a dot");
        assert!(!f.event_type("grant"));
        assert!(f.event_type("token.issued") && !f.event_type("token.revoked"));
        let all = Filter::new(&v(&["*"]), &v(&["!debug.*"])).unwrap();
        assert!(all.stream("anything") && all.event_type("x.y") && !all.event_type("debug.trace"));
        assert!(Filter::new(&[], &[]).unwrap().event_type("a"));
        // The log's own stream: only with checkpoints = true, whatever the types say.
        assert!(!all.stream("_trailkeep") && !f.stream("_trailkeep"));
        let cps = f.clone().with_checkpoints(true);
        assert!(cps.stream("_trailkeep") && cps.takes("_trailkeep", "checkpoint.signed"));
        assert!(!cps.stream("_audit") && !cps.stream(".x"));
        assert!(cps.stream("auth") && !cps.stream("billing"));
        assert!(
            !cps.takes("auth", "checkpoint.signed"),
            "types still filter other streams"
        );
        assert_eq!(f.only_stream(), None, "two streams");
        let one = Filter::new(&v(&["auth"]), &[]).unwrap();
        assert_eq!(one.only_stream(), Some("auth"));
        assert_eq!(
            one.with_checkpoints(true).only_stream(),
            None,
            "and the log's own"
        );
        assert_eq!(all.only_stream(), None);
        for bad in ["", "!", "gr*nt", "*.created", ".*"] {
            assert!(Filter::new(&[], &v(&[bad])).is_err(), "{bad:?}");
        }
    }
}
