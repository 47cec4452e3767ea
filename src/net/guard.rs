//! The SSRF guard: which addresses an outgoing request may reach.
//!
//! Every URL that a config or an upstream supplies (webhook, Splunk HEC,
//! Datadog, BigQuery and its token URI, SSE sources, backfill pages) is
//! fetched with a client whose DNS resolver is [`GuardedResolver`]: the
//! names are resolved here and, unless `allow_private = true`, a name with
//! *any* address that is not globally reachable is refused before a
//! connection is made. The connection then goes to exactly the addresses
//! checked, so DNS rebinding between a check and the connect is impossible.
//! IP-literal hosts never reach a resolver; [`super::Policy::send`] checks
//! them before the request.
//!
//! What is refused ([`refusal`]):
//! - every entry of the IANA IPv4 Special-Purpose Address Registry
//!   (<https://www.iana.org/assignments/iana-ipv4-special-registry/>) whose
//!   "Globally Reachable" is not `True` (192.0.0.0/24 as a whole, its two
//!   anycast exceptions included: no receiver lives there), plus multicast
//!   and 240.0.0.0/4;
//! - every entry of the IANA IPv6 Special-Purpose Address Registry
//!   (<https://www.iana.org/assignments/iana-ipv6-special-registry/>) whose
//!   "Globally Reachable" is not `True`, deprecated site-local fec0::/10,
//!   multicast, and anything outside global unicast 2000::/3 (IANA IPv6
//!   Address Space); IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96),
//!   NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are judged by the
//!   IPv4 address they embed;
//! - the addresses of this host's own interfaces (a public address of the
//!   host reaches services bound to 0.0.0.0 just like loopback does).
//!
//! Not here: the redirect policy and body limits (`net`), whether a
//! destination may use plain HTTP (its config).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// IPv4 registry entries that are not globally reachable: (prefix, length, name).
const V4: &[(Ipv4Addr, u8, &str)] = &[
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "\"this network\" 0.0.0.0/8 (RFC 791)",
    ),
    (
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        "private-use 10.0.0.0/8 (RFC 1918)",
    ),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space 100.64.0.0/10 (RFC 6598)",
    ),
    (
        Ipv4Addr::new(127, 0, 0, 0),
        8,
        "loopback 127.0.0.0/8 (RFC 1122)",
    ),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local 169.254.0.0/16 (RFC 3927)",
    ),
    (
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        "private-use 172.16.0.0/12 (RFC 1918)",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments 192.0.0.0/24 (RFC 6890)",
    ),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation 192.0.2.0/24 (RFC 5737)",
    ),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "deprecated 6to4 relay anycast 192.88.99.0/24 (RFC 7526)",
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        "private-use 192.168.0.0/16 (RFC 1918)",
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        "benchmarking 198.18.0.0/15 (RFC 2544)",
    ),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation 198.51.100.0/24 (RFC 5737)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation 203.0.113.0/24 (RFC 5737)",
    ),
    (
        Ipv4Addr::new(224, 0, 0, 0),
        4,
        "multicast 224.0.0.0/4 (RFC 5771)",
    ),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved 240.0.0.0/4 and limited broadcast (RFC 1112, RFC 919)",
    ),
];

/// IPv6 registry entries that are globally reachable inside 2001::/23.
const V6_GLOBAL_IN_2001_23: &[(u128, u8)] = &[
    (0x2001_0001_0000_0000_0000_0000_0000_0001, 128), // PCP anycast (RFC 7723)
    (0x2001_0001_0000_0000_0000_0000_0000_0002, 128), // TURN anycast (RFC 8155)
    (0x2001_0001_0000_0000_0000_0000_0000_0003, 128), // DNS-SD SRP anycast (RFC 9665)
    (0x2001_0003_0000_0000_0000_0000_0000_0000, 32),  // AMT (RFC 7450)
    (0x2001_0004_0112_0000_0000_0000_0000_0000, 48),  // AS112-v6 (RFC 7535)
    (0x2001_0020_0000_0000_0000_0000_0000_0000, 28),  // ORCHIDv2 (RFC 7343)
    (0x2001_0030_0000_0000_0000_0000_0000_0000, 28),  // Drone Remote ID (RFC 9374)
];

/// IPv6 entries refused outright: (prefix, length, name). Checked in order.
const V6: &[(u128, u8, &str)] = &[
    (0, 128, "unspecified ::/128 (RFC 4291)"),
    (1, 128, "loopback ::1/128 (RFC 4291)"),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        "local-use IPv4/IPv6 translation 64:ff9b:1::/48 (RFC 8215)",
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        "discard-only 100::/64 (RFC 6666)",
    ),
    (
        0x0100_0000_0000_0001_0000_0000_0000_0000,
        64,
        "dummy prefix 100:0:0:1::/64 (RFC 9780)",
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        "documentation 2001:db8::/32 (RFC 3849)",
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        "IETF protocol assignments 2001::/23 (RFC 2928), Teredo and benchmarking included",
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        "documentation 3fff::/20 (RFC 9637)",
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        "segment routing SIDs 5f00::/16 (RFC 9602)",
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        "unique-local fc00::/7 (RFC 4193)",
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        "link-local fe80::/10 (RFC 4291)",
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        "deprecated site-local fec0::/10 (RFC 3879)",
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        "multicast ff00::/8 (RFC 4291)",
    ),
];

fn in_v4(a: Ipv4Addr, prefix: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(a) & mask == u32::from(prefix) & mask
}

fn in_v6(a: u128, prefix: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    a & mask == prefix & mask
}

fn v4_reason(a: Ipv4Addr) -> Option<String> {
    V4.iter()
        .find(|(p, len, _)| in_v4(a, *p, *len))
        .map(|(_, _, name)| (*name).to_owned())
}

fn embedded(kind: &str, v4: Ipv4Addr) -> Option<String> {
    v4_reason(v4).map(|r| format!("{kind} address embedding {v4}, {r}"))
}

fn v6_reason(a: Ipv6Addr) -> Option<String> {
    let n = u128::from(a);
    let low32 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
    if in_v6(n, 0xffff_0000_0000, 96) {
        return embedded("an IPv4-mapped", low32);
    }
    if in_v6(n, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return embedded("a NAT64", low32);
    }
    if in_v6(n, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return embedded("a 6to4", Ipv4Addr::from(((n >> 80) & 0xffff_ffff) as u32));
    }
    if n > 1 && in_v6(n, 0, 96) {
        return embedded("an IPv4-compatible", low32);
    }
    if in_v6(n, 0x2001_0000_0000_0000_0000_0000_0000_0000, 23)
        && V6_GLOBAL_IN_2001_23
            .iter()
            .any(|(p, len)| in_v6(n, *p, *len))
    {
        return None;
    }
    if let Some((_, _, name)) = V6.iter().find(|(p, len, _)| in_v6(n, *p, *len)) {
        return Some((*name).to_owned());
    }
    if !in_v6(n, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3) {
        return Some("outside global unicast 2000::/3 (IANA IPv6 Address Space)".into());
    }
    None
}

/// Returns why `ip` is not a public address (its IANA special-purpose
/// registry entry), or `None` for a globally reachable address. Pure: the
/// host's interfaces are [`refusal`]'s.
pub fn special_purpose(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(a) => v4_reason(a),
        IpAddr::V6(a) => v6_reason(a),
    }
}

/// Returns why `ip` is refused: a special-purpose address, or one of `own`
/// (this host's interface addresses).
pub fn refusal(ip: IpAddr, own: &[IpAddr]) -> Option<String> {
    special_purpose(ip).or_else(|| {
        let canonical = ip.to_canonical();
        own.iter()
            .any(|o| o.to_canonical() == canonical)
            .then(|| "an address of this host's own network interfaces".to_owned())
    })
}

/// Returns this host's interface addresses, read now (interfaces come and
/// go; a lookup is one netlink round trip, cheap next to a connection).
/// Empty when they cannot be read: the special-purpose check still applies.
pub fn own_addresses() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::warn!(error = %crate::report::Chain(&e), "cannot read this host's interface addresses");
            Vec::new()
        }
    }
}

/// Refuses, at config validation, a URL whose host is a non-public IP
/// literal (pure: names are checked when resolved, at connect time).
///
/// # Errors
/// A message naming the address, why, and `allow_private`.
pub fn check_config_url(url: &url::Url, allow_private: bool) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        // RFC 6761: `localhost` and its subdomains are loopback, whatever
        // DNS says; refused here, at startup, rather than by the resolver
        // on every delivery (issue #15: a webhook on localhost started,
        // then dead-lettered every batch).
        Some(url::Host::Domain(d)) if is_localhost(d) => {
            if allow_private {
                return Ok(());
            }
            return Err(format!(
                "{d} is loopback, not a public address; set allow_private = true in this table to allow it"
            ));
        }
        _ => return Ok(()),
    };
    match special_purpose(ip) {
        Some(reason) if !allow_private => Err(format!(
            "{ip} is {reason}, not a public address; set allow_private = true to allow it"
        )),
        _ => Ok(()),
    }
}

/// Returns whether `host` is `localhost` or a name below it (RFC 6761
/// §6.3: always loopback).
fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// A name the system resolver could not resolve (typed, so
/// [`super::describe`] tells it apart from a refused connection).
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}")]
pub struct ResolveFailed {
    /// The host as written in the URL.
    pub host: String,
    /// The resolver's error.
    #[source]
    pub source: std::io::Error,
}

/// An address refused by the guard, before any connection.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} resolves to {addr}, {reason}: not a public address, refused before connecting \
     (set allow_private = true on {owner} to allow it)"
)]
pub struct Refused {
    /// The host as written in the URL.
    pub host: String,
    /// The refused address.
    pub addr: IpAddr,
    /// Why (the registry entry).
    pub reason: String,
    /// Who may allow it, e.g. `destination "hook"`.
    pub owner: Arc<str>,
}

/// Checks every address of `host`; the first refused one is the error.
///
/// # Errors
/// [`Refused`], naming the host, the address and the key that allows it.
pub fn check(
    host: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
    owner: &Arc<str>,
) -> Result<(), Refused> {
    let own = own_addresses();
    for addr in addrs {
        if let Some(reason) = refusal(addr, &own) {
            return Err(Refused {
                host: host.to_owned(),
                addr,
                reason,
                owner: owner.clone(),
            });
        }
    }
    Ok(())
}

/// A reqwest DNS resolver that refuses names with a non-public address
/// (unless private addresses are allowed) and hands reqwest exactly the
/// addresses it checked.
pub struct GuardedResolver {
    pub(super) allow_private: bool,
    pub(super) owner: Arc<str>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let owner = self.owner.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the connector sets the URL's port on each address.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| ResolveFailed {
                    host: host.clone(),
                    source,
                })?
                .collect();
            if !allow_private {
                check(&host, addrs.iter().map(SocketAddr::ip), &owner)?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One address inside every non-globally-reachable entry of the IANA
    /// special-purpose registries (and the other refused ranges).
    const REFUSED: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "10.1.2.3",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.255",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.9",
        "192.0.0.170",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "::10.0.0.1",
        "64:ff9b::a00:1",
        "64:ff9b::7f00:1",
        "64:ff9b:1::1",
        "100::1",
        "100:0:0:1::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:2::1",
        "2001:10::1",
        "2001:db8::1",
        "2002:a00:1::1",
        "2002:7f00:1::1",
        "2002:c0a8:101::1",
        "3fff::1",
        "5f00::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "feff::1",
        "ff02::1",
        "4000::1",
        "1::1",
    ];

    const PUBLIC: &[&str] = &[
        "1.1.1.1",
        "8.8.8.8",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "192.0.3.1",
        "192.31.196.1",
        "192.52.193.1",
        "192.175.48.1",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:1::1",
        "2001:3::1",
        "2001:4:112::1",
        "2001:20::1",
        "2620:4f:8000::1",
    ];

    #[test]
    fn iana_special_purpose_addresses_are_refused() {
        for ip in REFUSED {
            assert!(
                special_purpose(ip.parse().unwrap()).is_some(),
                "{ip} must be refused"
            );
        }
        for ip in PUBLIC {
            assert_eq!(special_purpose(ip.parse().unwrap()), None, "{ip} is public");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_as_ipv4() {
        let r = special_purpose("::ffff:192.168.0.1".parse().unwrap()).unwrap();
        assert!(
            r.contains("IPv4-mapped") && r.contains("192.168.0.1"),
            "{r}"
        );
        let r = special_purpose("2002:c0a8:1::".parse().unwrap()).unwrap();
        assert!(r.contains("6to4") && r.contains("192.168.0.1"), "{r}");
    }

    #[test]
    fn the_hosts_own_addresses_are_refused() {
        let own: Vec<IpAddr> = vec!["93.184.215.14".parse().unwrap()];
        assert!(refusal("93.184.215.14".parse().unwrap(), &own).is_some());
        assert!(refusal("::ffff:93.184.215.14".parse().unwrap(), &own).is_some());
        assert!(refusal("93.184.215.15".parse().unwrap(), &own).is_none());
        // The real interfaces are read (loopback at least) and refused.
        let real = own_addresses();
        assert!(real.iter().all(|ip| refusal(*ip, &real).is_some()));
    }

    #[test]
    fn the_refusal_names_host_address_and_key() {
        let owner: Arc<str> = Arc::from("destination \"hook\"");
        let e = check("internal.example", ["10.0.0.5".parse().unwrap()], &owner).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("internal.example")
                && m.contains("10.0.0.5")
                && m.contains("allow_private = true")
                && m.contains("destination \"hook\""),
            "{m}"
        );
    }
}
