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
pub fn apply<'a>(
    headers: &mut HeaderMap,
    origin: Origin<'a>,
    trusted: &TrustedProxies,
) -> (IpAddr, Forwarding<'a>) {
    let peer = origin.peer.ip;
    let believed = trusted.contains(peer);
    // Most requests carry none: one pass over the names, not five lookups.
    let present = headers.keys().any(|name| NAMES.contains(name));
    let from_proxy = believed && present;
    let prior_chain = if from_proxy {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let client = match &prior_chain {
        Some(chain) => client_from_chain(chain, peer, trusted),
        None => peer,
    };
    let forwarding = Forwarding {
        origin,
        // Untrusted: the client is the peer, whose address X-Forwarded-For already holds.
        real_ip: believed.then(|| client.to_string()),
        keep_proto: from_proxy && headers.contains_key(&X_FORWARDED_PROTO),
        keep_host: from_proxy && headers.contains_key(&X_FORWARDED_HOST),
        prior_forwarded: from_proxy.then(|| joined(headers, &FORWARDED)).flatten(),
        prior_chain,
        ascii_host: origin.host.is_some_and(|h| h.to_str().is_ok()),
    };
    if present {
        for name in &NAMES {
            let kept = (*name == X_FORWARDED_PROTO && forwarding.keep_proto)
                || (*name == X_FORWARDED_HOST && forwarding.keep_host);
            if !kept {
                headers.remove(name);
            }
        }
    }
    (client, forwarding)
}

/// This hop's forwarding headers (see [`apply`]): written straight into a lean request's
/// head from their pieces, or inserted into the map of one that goes through hyper. Every
/// piece is a valid header value on its own (a header's value, a trimmed ASCII list from a
/// trusted proxy, an address, or a fixed string), so their joins are too.
#[derive(Debug)]
pub struct Forwarding<'a> {
    origin: Origin<'a>,
    /// `X-Forwarded-For` and `Forwarded` from a trusted proxy, which this hop's extend.
    prior_chain: Option<String>,
    prior_forwarded: Option<String>,
    /// `X-Real-IP` when the peer is trusted; else it is the peer's address.
    real_ip: Option<String>,
    /// A trusted proxy's `X-Forwarded-Proto` or `X-Forwarded-Host` stays, and this hop
    /// sets none.
    keep_proto: bool,
    keep_host: bool,
    /// `Forwarded` quotes the host, so only a plain ASCII one goes in.
    ascii_host: bool,
}

impl Forwarding<'_> {
    /// Calls `f` with each header this hop sets, in the order of [`NAMES`], and its value in
    /// pieces.
    #[inline]
    fn each(&self, mut f: impl FnMut(&HeaderName, &[&[u8]])) {
        let origin = &self.origin;
        let peer = origin.peer.text.as_bytes();
        match &self.prior_chain {
            Some(chain) => f(&X_FORWARDED_FOR, &[chain.as_bytes(), b", ", peer]),
            None => f(&X_FORWARDED_FOR, &[peer]),
        }
        let real_ip = self.real_ip.as_ref().map_or(peer, |ip| ip.as_bytes());
        f(&X_REAL_IP, &[real_ip]);
        if !self.keep_proto {
            f(&X_FORWARDED_PROTO, &[origin.proto.as_bytes()]);
        }
        if let Some(host) = origin.host.filter(|_| !self.keep_host) {
            f(&X_FORWARDED_HOST, &[host.as_bytes()]);
        }
        let (prior, prior_sep): (&[u8], &[u8]) = match &self.prior_forwarded {
            Some(prior) => (prior.as_bytes(), b", "),
            None => (b"", b""),
        };
        let element = origin.peer.element.as_bytes();
        let proto = origin.proto.as_bytes();
        match origin.host.filter(|_| self.ascii_host) {
            Some(host) => f(
                &FORWARDED,
                &[
                    prior,
                    prior_sep,
                    element,
                    b";host=\"",
                    host.as_bytes(),
                    b"\";proto=",
                    proto,
                ],
            ),
            None => f(&FORWARDED, &[prior, prior_sep, element, b";proto=", proto]),
        }
    }

    /// The bytes [`Forwarding::write_to`] writes.
    pub fn head_len(&self) -> usize {
        let mut len = 0;
        self.each(|name, pieces| {
            let value = pieces.iter().map(|p| p.len()).sum();
            len += crate::wire::header_line_len(name.as_str().len(), value);
        });
        len
    }

    /// Writes the headers as request-head lines; the request carries none of them.
    pub fn write_to(&self, out: &mut impl bytes::BufMut) {
        self.each(|name, pieces| {
            crate::wire::put_header_pieces(out, name.as_str().as_bytes(), pieces);
        });
    }

    /// Sets the headers in `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        self.each(|name, pieces| {
            if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(pieces.concat())) {
                headers.insert(name.clone(), value);
            }
        });
    }
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
        let mut written = Vec::new();
        forwarding.write_to(&mut written);
        assert_eq!(written.len(), forwarding.head_len());
        let mut alone = HeaderMap::new();
        forwarding.insert_into(&mut alone);
        assert_same_lines(&written, &alone);
        forwarding.insert_into(&mut h);
        (h, client)
    }

    /// The lines `write_to` writes are the headers `insert_into` sets: the lean client and
    /// hyper's send the same.
    fn assert_same_lines(written: &[u8], inserted: &HeaderMap) {
        let text = std::str::from_utf8(written).unwrap();
        let mut lines = Vec::new();
        for line in text.split_terminator("\r\n") {
            let (name, value) = line.split_once(": ").unwrap();
            lines.push((name.to_string(), value.to_string()));
        }
        let mut set = Vec::new();
        for name in &NAMES {
            for value in inserted.get_all(name) {
                set.push((name.to_string(), value.to_str().unwrap().to_string()));
            }
        }
        assert_eq!(lines, set);
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
        h.get(k).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// A host that is not plain ASCII is passed on in `X-Forwarded-Host` as it came, and left
    /// out of `Forwarded`, which would have to quote it.
    #[test]
    fn a_host_with_other_bytes_stays_out_of_forwarded() {
        let host = HeaderValue::from_bytes("café.example".as_bytes()).unwrap();
        let peer = Peer::new("192.0.2.1".parse().unwrap());
        let origin = Origin {
            peer: &peer,
            proto: "http",
            host: Some(&host),
        };
        let (_, forwarding) = apply(&mut HeaderMap::new(), origin, &TrustedProxies::default());
        let mut written = Vec::new();
        forwarding.write_to(&mut written);
        let expected = "x-forwarded-for: 192.0.2.1\r\nx-real-ip: 192.0.2.1\r\n\
            x-forwarded-proto: http\r\nx-forwarded-host: café.example\r\n\
            forwarded: for=192.0.2.1;proto=http\r\n";
        assert_eq!(String::from_utf8(written).unwrap(), expected);
        let mut inserted = HeaderMap::new();
        forwarding.insert_into(&mut inserted);
        assert_eq!(inserted["x-forwarded-host"], host);
        assert_eq!(inserted["forwarded"], "for=192.0.2.1;proto=http");
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
