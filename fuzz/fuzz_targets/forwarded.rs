//! Forwarding headers from a trusted and an untrusted peer: never a panic, an untrusted
//! peer's claims are never believed, and the lines written into a head are the headers set
//! in a map.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stagedoor::forwarded::{Origin, Peer, TrustedProxies, apply, client_address};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let names = [
        "x-forwarded-for",
        "forwarded",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
    ];
    for (i, part) in data.split(|b| *b == b'\n').enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(part) {
            headers.append(HeaderName::from_static(names[i % names.len()]), value);
        }
    }
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))]);
    let stranger = std::net::IpAddr::from([203, 0, 113, 7]);
    assert_eq!(client_address(&headers, stranger, &trusted), stranger);
    for peer in [stranger, std::net::IpAddr::from([10, 1, 2, 3])] {
        let mut copy = headers.clone();
        let host = HeaderValue::from_static("portal.example.com");
        let origin = Origin {
            peer: &Peer::new(peer),
            proto: "https",
            host: Some(&host),
        };
        let (client, forwarding) = apply(&mut copy, origin, &trusted);
        // The lines the lean client writes are the headers hyper's path inserts.
        let mut written = Vec::new();
        forwarding.write_to(&mut written);
        assert_eq!(written.len(), forwarding.head_len());
        let mut alone = HeaderMap::new();
        forwarding.insert_into(&mut alone);
        let mut lines = Vec::new();
        for (name, value) in &alone {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        assert_eq!(written, lines);
        forwarding.insert_into(&mut copy);
        if peer == stranger {
            assert_eq!(client, stranger);
            let chain: Vec<_> = copy.get_all("x-forwarded-for").iter().collect();
            assert_eq!(chain, ["203.0.113.7"]);
        }
    }
});
