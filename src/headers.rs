//! Hop-by-hop header handling (RFC 9110 §7.6.1).

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one connection and never travel past a proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header that `Connection` names.
/// `Upgrade` is removed too: the upgrade path re-adds it deliberately.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none of them: one pass over the names is cheaper than ten removals.
    let any = headers
        .keys()
        .any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name));
    if !any {
        return;
    }
    // Names listed in Connection are collected first; the header itself is removed below.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            // Looked up before it is made a name: most tokens (`keep-alive`, `close`) name
            // no header present, and making a name would allocate.
            let token = token.trim();
            if token.is_empty() || !headers.contains_key(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The protocol a request asks to switch to, if it is an HTTP/1.1 upgrade request
/// (`Connection: upgrade` and an `Upgrade` header).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderValue;

    /// The HTTP/1.1 code's quick check (`wire::Known`) names exactly the headers stripped here.
    #[test]
    fn known_hop_by_hop_names_are_the_stripped_ones() {
        use crate::wire::known;
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            assert!(known(name.as_str().as_bytes()).is_hop_by_hop(), "{name}");
        }
        for name in [
            header::CONTENT_LENGTH,
            header::DATE,
            header::EXPECT,
            header::HOST,
            header::ACCEPT,
        ] {
            assert!(!known(name.as_str().as_bytes()).is_hop_by_hop(), "{name}");
        }
    }

    #[test]
    fn removes_standard_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop , close"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
            ("cookie", "a=b"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "cookie"]);
    }

    #[test]
    fn detects_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }
}
