//! `X-Forwarded-*`, `Forwarded` and `X-Real-IP`: what the upstream learns about the client.
//!
//! A client can write any of these headers. They are believed only when the connection comes
//! from a trusted proxy (`server.trusted_proxies`); otherwise they are replaced, so the upstream
//! never sees an address or scheme the client made up.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = http::header::FORWARDED;

/// The set of peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// True if `ip` is inside a trusted network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A connection's TCP peer, with its address already written the way forwarding headers
/// carry it: made once per connection rather than once per request.
#[derive(Debug, Clone)]
pub struct Peer {
    ip: IpAddr,
    text: HeaderValue,
    /// `for=...` of a `Forwarded` element (IPv6 bracketed and quoted, RFC 7239 §6).
    element: String,
}

impl Peer {
    /// The peer at `ip` (an IPv4-mapped IPv6 address is taken as IPv4).
    pub fn new(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        let text = ip.to_string();
        let element = match ip {
            IpAddr::V4(_) => format!("for={text}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\""),
        };
        let text = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("unknown"));
        Self { ip, text, element }
    }

    /// The peer's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// What Stagedoor itself knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The TCP peer.
    pub peer: &'a Peer,
    /// `https` on a TLS listener, else `http`.
    pub proto: &'static str,
    /// The host the client asked for, if it was a valid authority.
    pub host: Option<&'a HeaderValue>,
}

/// The names [`apply`] sets, in the order a request head gets them.
static NAMES: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_REAL_IP,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    FORWARDED,
];

/// Rewrites the forwarding headers of a request about to be sent upstream: removes those
/// the client sent (a trusted proxy's are read first, and its `X-Forwarded-Proto` and
/// `X-Forwarded-Host` kept), and returns the client's address as best known (the peer, or
/// the nearest untrusted hop a trusted proxy saw) and this hop's headers, which the
/// upstream client adds after the request's own.
pub fn apply(
    headers: &mut HeaderMap,
    origin: Origin<'_>,
    trusted: &TrustedProxies,
) -> (IpAddr, Forwarding) {
    let peer = origin.peer.ip;
    let believed = trusted.contains(peer);
    // Most requests carry none: one pass over the names, not five lookups.
    let present = headers.keys().any(|name| NAMES.contains(name));
    let prior_xff = if believed && present {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let client = match &prior_xff {
        Some(chain) => client_from_chain(chain, peer, trusted),
        None => peer,
    };

    let xff = match prior_xff {
        Some(chain) => {
            let peer_text = origin.peer.text.to_str().unwrap_or_default();
            header_value(&format!("{chain}, {peer_text}"))
        }
        None => Some(origin.peer.text.clone()),
    };
    // Untrusted: the client is the peer, whose address X-Forwarded-For already holds.
    let real_ip = if believed {
        header_value(&client.to_string())
    } else {
        xff.clone()
    };
    let keep_proto = believed && present && headers.contains_key(&X_FORWARDED_PROTO);
    let keep_host = believed && present && headers.contains_key(&X_FORWARDED_HOST);
    let prior = (believed && present)
        .then(|| joined(headers, &FORWARDED))
        .flatten();
    if present {
        for name in &NAMES {
            let kept = (*name == X_FORWARDED_PROTO && keep_proto)
                || (*name == X_FORWARDED_HOST && keep_host);
            if !kept {
                headers.remove(name);
            }
        }
    }
    let values = [
        xff,
        real_ip,
        (!keep_proto).then(|| HeaderValue::from_static(origin.proto)),
        origin.host.filter(|_| !keep_host).cloned(),
        forwarded_value(prior.as_deref(), origin),
    ];
    (client, Forwarding { values })
}

/// This hop's forwarding headers (see [`apply`]): written straight into a lean request's
/// head, or inserted into the map of one that goes through hyper.
#[derive(Debug)]
pub struct Forwarding {
    /// A value for each of [`NAMES`]; none where there is no valid one, or a trusted
    /// proxy's header stays.
    values: [Option<HeaderValue>; 5],
}

impl Forwarding {
    fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        NAMES
            .iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// The bytes [`Forwarding::write_to`] writes.
    pub fn head_len(&self) -> usize {
        self.headers()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum()
    }

    /// Writes the headers as request-head lines; the request carries none of them.
    pub fn write_to(&self, out: &mut impl bytes::BufMut) {
        for (name, value) in self.headers() {
            crate::wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }

    /// Sets the headers in `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// `Forwarded` with this hop's element after the `prior` ones: built in one exact-size
/// allocation that the header value takes over.
fn forwarded_value(prior: Option<&str>, origin: Origin<'_>) -> Option<HeaderValue> {
    let host = origin.host.and_then(|h| h.to_str().ok());
    let parts: [&str; 8] = [
        prior.unwrap_or(""),
        if prior.is_some() { ", " } else { "" },
        &origin.peer.element,
        if host.is_some() { ";host=\"" } else { "" },
        host.unwrap_or(""),
        if host.is_some() { "\"" } else { "" },
        ";proto=",
        origin.proto,
    ];
    let mut value = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        value.extend_from_slice(part.as_bytes());
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// The client's address as [`apply`] would find it, leaving the headers alone.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    match joined(headers, &X_FORWARDED_FOR) {
        Some(chain) => client_from_chain(&chain, peer, trusted),
        None => peer,
    }
}

/// All values of `name`, joined with ", " (a list header may be split across lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out = String::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(value);
    }
    (!out.is_empty()).then_some(out)
}

/// The rightmost address in an `X-Forwarded-For` chain that is not a trusted proxy.
fn client_from_chain(chain: &str, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    for hop in chain.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip.to_canonical();
        if !trusted.contains(client) {
            break;
        }
    }
    client
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(peer: &str, trusted: &[&str], incoming: &[(&str, &str)]) -> (HeaderMap, IpAddr) {
        let mut h = HeaderMap::new();
        for (k, v) in incoming {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let trusted = TrustedProxies::new(trusted.iter().map(|n| n.parse().unwrap()).collect());
        let host = HeaderValue::from_static("portal.example.com");
        let origin = Origin {
            peer: &Peer::new(peer.parse().unwrap()),
            proto: "https",
            host: Some(&host),
        };
        let (client, forwarding) = apply(&mut h, origin, &trusted);
        forwarding.insert_into(&mut h);
        (h, client)
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
        h.get(k).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    #[test]
    fn untrusted_peer_cannot_choose_its_address() {
        let (h, client) = run(
            "203.0.113.9",
            &["10.0.0.0/8"],
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=1.2.3.4"),
                ("x-real-ip", "1.2.3.4"),
            ],
        );
        assert_eq!(client.to_string(), "203.0.113.9");
        assert_eq!(get(&h, "x-forwarded-for"), "203.0.113.9");
        assert_eq!(get(&h, "x-forwarded-proto"), "https");
        assert_eq!(get(&h, "x-forwarded-host"), "portal.example.com");
        assert_eq!(
            get(&h, "forwarded"),
            "for=203.0.113.9;host=\"portal.example.com\";proto=https"
        );
        assert_eq!(get(&h, "x-real-ip"), "203.0.113.9");
    }

    #[test]
    fn trusted_peer_is_appended_and_believed() {
        let (h, client) = run(
            "10.0.0.5",
            &["10.0.0.0/8"],
            &[
                ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "backstage.example.com"),
                ("forwarded", "for=198.51.100.7"),
            ],
        );
        assert_eq!(client.to_string(), "198.51.100.7");
        assert_eq!(
            get(&h, "x-forwarded-for"),
            "198.51.100.7, 10.1.1.1, 10.0.0.5"
        );
        assert_eq!(get(&h, "x-forwarded-host"), "backstage.example.com");
        assert!(get(&h, "forwarded").starts_with("for=198.51.100.7, for=10.0.0.5;"));
        assert_eq!(get(&h, "x-real-ip"), "198.51.100.7");
    }

    #[test]
    fn trusted_chain_with_garbage_stops_at_last_good_hop() {
        let (_, client) = run(
            "10.0.0.5",
            &["10.0.0.0/8"],
            &[("x-forwarded-for", "1.1.1.1, not-an-ip, 10.2.2.2")],
        );
        assert_eq!(client.to_string(), "10.2.2.2");
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let (h, _) = run("::1", &[], &[]);
        assert_eq!(
            get(&h, "forwarded"),
            "for=\"[::1]\";host=\"portal.example.com\";proto=https"
        );
        let (h, client) = run(
            "::ffff:10.0.0.5",
            &["10.0.0.0/8"],
            &[("x-forwarded-for", "192.0.2.1")],
        );
        assert_eq!(client.to_string(), "192.0.2.1");
        assert_eq!(get(&h, "x-forwarded-for"), "192.0.2.1, 10.0.0.5");
    }
}
