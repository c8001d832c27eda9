//! Forwarding: headers, routing, errors, malformed input.

use std::time::Duration;

use http::StatusCode;

use crate::support::{self, Upstream, config, get, header_map, proxy_to, raw, start, status_of};

#[tokio::test]
async fn forwards_and_rewrites_headers() {
    let up = Upstream::named("web").await;
    let proxy = proxy_to(&up).await;
    let (status, headers, body) = get(
        proxy.addr(),
        "/catalog/entities?filter=kind%3Duser",
        &[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "must not pass"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web"));
    assert!(!headers.contains_key("keep-alive"));

    let seen = up.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/catalog/entities?filter=kind%3Duser");
    let h = header_map(&seen.headers);
    for hop in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(!h.contains_key(hop), "{hop} reached the upstream: {h:?}");
    }
    let host = proxy.addr().to_string();
    assert_eq!(h["host"], host);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], host);
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(
        h["forwarded"],
        format!("for=127.0.0.1;host=\"{host}\";proto=http")
    );
    assert_eq!(h["x-custom"], "kept");
}

#[tokio::test]
async fn trusted_proxy_headers_are_extended_not_replaced() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    get(
        proxy.addr(),
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "backstage.example.com"),
        ],
    )
    .await;
    let h = header_map(&up.last().headers);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "backstage.example.com");
    assert_eq!(h["x-real-ip"], "203.0.113.7");
}

#[tokio::test]
async fn routes_by_host_and_path() {
    let web = Upstream::named("web").await;
    let api = Upstream::named("api").await;
    let docs = Upstream::named("docs").await;
    let proxy = start(config(&format!(
        r#"
        [upstreams.web]
        url = "{}"
        [upstreams.api]
        url = "{}"
        [upstreams.docs]
        url = "{}/base"
        [[routes]]
        upstream = "web"
        [[routes]]
        path_prefix = "/api"
        upstream = "api"
        [[routes]]
        host = "docs.example.com"
        upstream = "docs"
        "#,
        web.url(),
        api.url(),
        docs.url()
    )))
    .await;
    let cases = [
        ("portal.example.com", "/", "web"),
        ("portal.example.com", "/api/catalog", "api"),
        ("portal.example.com", "/apiary", "web"),
        ("docs.example.com", "/api/catalog", "docs"),
    ];
    for (host, path, want) in cases {
        let (status, _, body) = get(proxy.addr(), path, &[("host", host)]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, want),
            "{host}{path}"
        );
    }
    assert_eq!(docs.last().uri, "/base/api/catalog");
    assert_eq!(header_map(&docs.last().headers)["host"], "docs.example.com");
}

#[tokio::test]
async fn no_route_is_404() {
    let api = Upstream::named("api").await;
    let proxy = start(config(&format!(
        "[upstreams.api]\nurl = \"{}\"\n[[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n",
        api.url()
    )))
    .await;
    let (status, headers, body) = get(proxy.addr(), "/elsewhere", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(body.contains("Nothing is served at this address"));
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn upstream_refused_is_502_in_html_or_json() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = start(config(&format!("[upstreams.gone]\nurl = \"{url}\"\n"))).await;

    let (status, headers, body) = get(proxy.addr(), "/", &[("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(body.contains("<h1>Bad Gateway</h1>"), "{body}");
    assert!(!body.contains("127.0.0.1"), "internals leaked: {body}");

    let (status, headers, body) =
        get(proxy.addr(), "/api", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], 502);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        support::text("late")
    })
    .await;
    let proxy = start(config(&format!(
        "[upstreams.slow]\nurl = \"{}\"\ntimeout = \"300ms\"\n",
        up.url()
    )))
    .await;
    let started = std::time::Instant::now();
    let (status, _, _) = get(proxy.addr(), "/", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A timeout, a quick answer and another timeout on one keep-alive connection: each request
/// gets its own deadline, and a timeout leaves the client's connection usable. The pause lets
/// the deadline of the last request pass while its upstream connection idles in the pool:
/// that connection then serves one request in time and times out on the next.
#[tokio::test]
async fn each_request_on_a_connection_gets_its_own_upstream_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        support::text("ok")
    })
    .await;
    let proxy = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\ntimeout = \"300ms\"\n",
        up.url()
    )))
    .await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let started = std::time::Instant::now();
    for (path, want) in [
        ("/slow", "504"),
        ("/fast", "200"),
        ("/slow", "504"),
        ("/", "200"),
        ("pause", ""),
        ("/fast", "200"),
        ("/slow", "504"),
    ] {
        if path == "pause" {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let head = format!("GET {path} HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        // One response: its head, then as many bytes as its Content-Length says.
        let mut got = Vec::new();
        let (end, length) = loop {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed after {path}");
            got.extend_from_slice(&chunk[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("a content-length");
                break (end + 4, length);
            }
        };
        while got.len() < end + length {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(
            got.len(),
            end + length,
            "{path}: nothing more than one response"
        );
        let status = String::from_utf8_lossy(&got[9..12]).to_string();
        assert_eq!(status, want, "{path}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        up.seen().len(),
        6,
        "every request reached the upstream once"
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_and_the_proxy_survives() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server]\nmax_header_bytes = 8192\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let addr = proxy.addr();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20_000));
    let cases: [(&str, &[u8], &[u16]); 6] = [
        ("garbage", b"NOT HTTP AT ALL\r\n\r\n", &[400]),
        (
            "bad header",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
            &[400],
        ),
        ("no host", b"GET / HTTP/1.1\r\n\r\n", &[400]),
        (
            "two content-lengths",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            &[400],
        ),
        ("huge header", huge.as_bytes(), &[431]),
        ("huge uri", long_uri.as_bytes(), &[414, 431]),
    ];
    for (name, bytes, want) in cases {
        let answer = raw(addr, bytes).await;
        assert!(
            want.contains(&status_of(&answer)),
            "{name}: expected {want:?}, got {answer:?}"
        );
    }
    assert!(
        up.seen().is_empty(),
        "a malformed request reached the upstream"
    );

    // Content-Length with Transfer-Encoding: chunked framing wins, Content-Length is dropped
    // and the connection is closed afterwards (RFC 9112 §6.3), so nothing can be smuggled.
    let answer = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].headers.contains_key("content-length"));
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web"));
}

#[tokio::test]
async fn http2_prior_knowledge_on_plain_listener() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let up = Upstream::named("web").await;
    let proxy = proxy_to(&up).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{}/h2", proxy.addr()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web");
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(header_map(&seen.headers)["host"], proxy.addr().to_string());
}

#[tokio::test]
async fn admin_ping_and_ready() {
    let up = Upstream::named("web").await;
    let proxy = proxy_to(&up).await;
    let admin = proxy.admin_addr().expect("admin listener");
    assert_eq!(get(admin, "/ping", &[]).await.0, StatusCode::OK);
    assert_eq!(get(admin, "/ready", &[]).await.0, StatusCode::OK);
    assert_eq!(get(admin, "/other", &[]).await.0, StatusCode::NOT_FOUND);
    assert!(up.seen().is_empty());
}
