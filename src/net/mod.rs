//! Outgoing HTTP to hosts a config or an upstream names: the one place that
//! builds those clients, so each gets the same defences.
//!
//! - [`guard`]: the SSRF guard (IANA special-purpose addresses and the
//!   host's own interfaces refused at connect time, by the DNS resolver);
//! - [`Policy`]: a client builder with the guard, no proxy from the
//!   environment (a proxy would resolve the host instead of the guard) and
//!   no redirects; [`Policy::send`] also checks IP-literal hosts;
//! - [`same_origin_redirects`]: for sources, redirects within one origin
//!   only (a redirect elsewhere is refused, so no credential goes there);
//! - [`read_limited`]: every response body is read up to a limit;
//! - [`describe`], [`redact_urls`]: error text without query strings,
//!   userinfo or bodies.
//!
//! Not here: object stores (the archive and the `s3`/`gcs`/`azure_blob`
//! destinations use `object_store`'s own client; their URLs are the
//! operator's, not an upstream's).

pub mod guard;

use std::sync::Arc;

pub use guard::Refused;

/// Who may reach what: `allow_private` and the config owner named in
/// refusals (`destination "hook"`, `source "up"`).
#[derive(Debug, Clone)]
pub struct Policy {
    allow_private: bool,
    owner: Arc<str>,
}

/// A request that failed: refused by the guard or by the redirect policy,
/// or an HTTP failure. `Display` never shows a URL or a body.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The guard refused an IP-literal host.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Anything else (a guard refusal of a resolved name is found in its
    /// source chain: see [`SendError::refused`]). Its text is
    /// [`describe`]'s, which already says the causes, so the reqwest error
    /// is not exposed as `source()` (each cause is said once).
    #[error("{}", describe(.0))]
    Http(reqwest::Error),
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

impl SendError {
    /// Returns the guard's refusal, when that is why the request failed.
    pub fn refused(&self) -> Option<&Refused> {
        match self {
            Self::Refused(r) => Some(r),
            Self::Http(e) => find_in_chain::<Refused>(e),
        }
    }
}

impl Policy {
    /// A policy for `owner` (named in refusals).
    pub fn new(allow_private: bool, owner: impl Into<String>) -> Self {
        Self {
            allow_private,
            owner: Arc::from(owner.into()),
        }
    }

    /// Returns whether private addresses are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Returns a client builder with the guard as its resolver, no proxy and
    /// no redirects (callers may set another redirect policy).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(guard::GuardedResolver {
                allow_private: self.allow_private,
                owner: self.owner.clone(),
            }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
    }

    /// Checks a URL whose host is an IP literal (names are checked by the
    /// resolver at connect time).
    ///
    /// # Errors
    /// [`Refused`] for a literal that is not a public address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if self.allow_private {
            return Ok(());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => std::net::IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => std::net::IpAddr::V6(a),
            _ => return Ok(()),
        };
        guard::check(&ip.to_string(), [ip], &self.owner)
    }

    /// Sends a request built on a client of [`Policy::client_builder`],
    /// after checking an IP-literal host.
    ///
    /// # Errors
    /// [`SendError`]: refused, or the HTTP failure.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        let (client, req) = req.build_split();
        let req = req?;
        self.check_url(req.url())?;
        Ok(client.execute(req).await?)
    }
}

/// A redirect refused by [`same_origin_redirects`].
#[derive(Debug, thiserror::Error)]
#[error("redirect refused: {0}")]
pub struct RedirectRefused(String);

/// Returns a redirect policy that follows at most 3 redirects, all within
/// the origin (scheme, host, port) of the first request; any other
/// redirect is refused, so credentials never leave the origin.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if attempt.url().origin() != first.origin() {
            let to = attempt.url().origin().ascii_serialization();
            let from = first.origin().ascii_serialization();
            return attempt.error(RedirectRefused(format!(
                "{from} redirected to another origin, {to}; only same-origin redirects are followed"
            )));
        }
        if attempt.previous().len() > 3 {
            return attempt.error(RedirectRefused("more than 3 redirects".into()));
        }
        attempt.follow()
    })
}

fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// Returns a reqwest error as text without its URL: what failed, told
/// apart by the error's source chain (connection refused, a name that does
/// not resolve, the TLS certificate and why, a timeout), with what to do;
/// otherwise what failed and its causes (a guard or redirect refusal
/// alone, as it says everything).
pub fn describe(e: &reqwest::Error) -> String {
    if let Some(r) = find_in_chain::<Refused>(e) {
        return r.to_string();
    }
    if let Some(r) = find_in_chain::<RedirectRefused>(e) {
        return r.to_string();
    }
    let target = e.url().map_or_else(
        || "the receiver".to_owned(),
        |u| match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => "the receiver".to_owned(),
        },
    );
    if let Some(cause) = connect_cause(e, &target) {
        return redact_urls(&cause);
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else if e.is_builder() {
        "bad request"
    } else {
        "request failed"
    };
    let mut out = what.to_owned();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    redact_urls(&out)
}

/// Why a request to `target` (`host:port`) failed, when the chain says
/// which of the usual reasons it is, with what to do about it.
fn connect_cause(e: &reqwest::Error, target: &str) -> Option<String> {
    use std::io::ErrorKind;
    if let Some(r) = find_in_chain::<guard::ResolveFailed>(e) {
        return Some(format!(
            "cannot resolve {}: {} (is the host name right? this machine's resolver, /etc/resolv.conf or /etc/hosts, does not know it)",
            r.host, r.source
        ));
    }
    if let Some(t) = find_tls(e) {
        let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
        use rustls::CertificateError as C;
        let why = match t {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
                "{host}'s certificate is not signed by a CA trailkeep trusts (unknown issuer: self-signed or a private CA); \
                 trailkeep trusts the Mozilla root CAs built into it and has no setting for another CA: \
                 give the receiver a certificate from a public CA"
            ),
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                format!("{host}'s certificate has expired: renew it on the receiver")
            }
            rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
                format!(
                    "{host}'s certificate is not valid yet: check the clocks of this machine and the receiver"
                )
            }
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => format!(
                "{host}'s certificate is not valid for the name {host} (name mismatch): use a host name the certificate lists in the URL, or fix the certificate"
            ),
            rustls::Error::InvalidCertificate(C::Revoked) => {
                format!("{host}'s certificate has been revoked")
            }
            rustls::Error::InvalidMessage(_) => format!(
                "{target} did not answer in TLS: is it an https:// port? (use http:// only for a plain-HTTP receiver)"
            ),
            other => format!("{other}"),
        };
        return Some(format!("TLS handshake with {target} failed: {why}"));
    }
    if e.is_timeout() {
        return Some(format!(
            "no answer from {target} in time: the connection or the response timed out \
             (is the receiver overloaded, or a firewall dropping packets? timeout_ms sets how long to wait)"
        ));
    }
    if let Some(io) = find_io(e) {
        let why = match io.kind() {
            ErrorKind::ConnectionRefused => format!(
                "connection refused: nothing is listening on {target} (is the receiver running on {target}, and is the port right?)"
            ),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => format!(
                "{target} closed the connection ({io}): is it the right port and protocol (http:// vs https://)?"
            ),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                format!("{target} is unreachable ({io}): check the address, routes and firewalls")
            }
            ErrorKind::TimedOut => {
                format!("connecting to {target} timed out ({io}): is a firewall dropping packets?")
            }
            _ => return None,
        };
        return Some(format!("cannot connect to {target}: {why}"));
    }
    None
}

/// The `rustls::Error` in `e`'s chain: tokio-rustls wraps it in an
/// `io::Error` (and reqwest that in another), whose `source()` skips it,
/// so each `io::Error`'s inner errors are looked at too.
fn find_tls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        // reqwest wraps the handshake's io::Error in another one.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = err.source();
    }
    None
}

/// The first `io::Error` in `e`'s chain.
fn find_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    find_in_chain::<std::io::Error>(e)
}

/// Returns `url` as `scheme://host[:port]/path`: no userinfo, query or
/// fragment.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Returns `text` with every `http://`/`https://` URL in it redacted as by
/// [`redact_url`] (a URL that does not parse is cut to its scheme).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ','))
            .unwrap_or(tail.len());
        let candidate = &tail[..end];
        match url::Url::parse(candidate) {
            Ok(u) => out.push_str(redact_url(&u).trim_end_matches('/')),
            Err(_) => out.push_str(&candidate[..candidate.find("://").map_or(0, |p| p + 3)]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A response body read up to a limit.
#[derive(Debug)]
pub struct Limited {
    /// The bytes read (at most the limit).
    pub bytes: Vec<u8>,
    /// Whether the body had more (not read).
    pub truncated: bool,
}

/// Reads at most `max` bytes of `resp`'s body; the rest is not read (the
/// connection is dropped), so a receiver cannot make us buffer without end.
///
/// # Errors
/// The read failure.
pub async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Limited, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Limited {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Limited {
        bytes,
        truncated: false,
    })
}

/// Returns a redacted, length-limited excerpt of a receiver's body for
/// operators: at most `max_chars` characters, URLs redacted, control
/// characters replaced.
pub fn excerpt(body: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    if s.chars().count() < text.chars().count() {
        s.push('…');
    }
    redact_urls(&s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue #13: refused before any connection, whether the host is a
    /// name (the resolver) or an IP literal (checked before the request).
    #[tokio::test]
    async fn refused_before_any_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let p = Policy::new(false, "[[destinations]] \"t\"");
        let c = p.client_builder().build().unwrap();
        for url in [
            format!("http://localhost:{port}/x?token=q"),
            format!("http://127.0.0.1:{port}/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/x"),
        ] {
            let e = p.send(c.get(&url)).await.unwrap_err();
            assert!(e.refused().is_some(), "{url}: {e}");
            let m = e.to_string();
            assert!(
                m.contains("allow_private = true on [[destinations]] \"t\"")
                    && !m.contains("token"),
                "{m}"
            );
        }
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "no connection was made"
        );
        // Allowed: the same request connects.
        let p = Policy::new(true, "t");
        let c = p
            .client_builder()
            .timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap();
        let _ = p.send(c.get(format!("http://127.0.0.1:{port}/x"))).await;
        assert!(l.accept().is_ok(), "allow_private connects");
    }

    #[test]
    fn urls_lose_queries_and_userinfo() {
        let t = redact_urls(
            "POST https://user:pw@hec.example:8088/services/collector?token=abc123&x=1 failed; see http://h/x?sig=zz.",
        );
        assert!(
            !t.contains("abc123") && !t.contains("pw") && !t.contains("sig=zz"),
            "{t}"
        );
        assert!(
            t.contains("https://hec.example:8088/services/collector"),
            "{t}"
        );
        assert!(t.contains("http://h/x"), "{t}");
        assert_eq!(redact_urls("no url here"), "no url here");
    }

    #[test]
    fn excerpts_are_short_and_redacted() {
        let body = format!("see https://x/?token=t0k {}", "y".repeat(5000));
        let e = excerpt(body.as_bytes(), 100);
        assert!(e.chars().count() <= 101 && !e.contains("t0k"), "{e}");
    }
}
