//! Stagedoor's own HTTP/1.1 path (`server/h1.rs`, `upstream/lean.rs`), on raw sockets at both
//! ends: pipelining, the hand-over to hyper and back on one connection, every way an upstream
//! can delimit a response, and upstream responses that must not be believed.

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Upstream, config, get, proxy_to, start, text};

/// Reads from `stream` until `complete` says the bytes so far are enough, or 5 s pass.
async fn read_until(stream: &mut TcpStream, complete: impl Fn(&str) -> bool) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !complete(&String::from_utf8_lossy(&out)) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An upstream answering with its request's method, path and body length.
async fn echo_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let answer = format!("{method} {path} {}", body.len());
        http::Response::new(stagedoor::full(answer))
    })
    .await
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_close_is_honoured() {
    let upstream = echo_upstream().await;
    let proxy = proxy_to(&upstream).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /two HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
    let all = String::from_utf8_lossy(&all);
    let one = all.find("GET /one 0").expect(&all);
    let two = all.find("GET /two 0").expect(&all);
    let three = all.find("GET /three 0").expect(&all);
    assert!(one < two && two < three, "{all}");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    // Only the last response says the connection ends, and it did end (read_to_end returned).
    assert_eq!(all.matches("connection: close").count(), 1, "{all}");
    assert_eq!(all.matches("date: ").count(), 3, "{all}");
}

#[tokio::test]
async fn one_connection_moves_to_hyper_for_a_body_and_back_after_idling() {
    let upstream = echo_upstream().await;
    let proxy = proxy_to(&upstream).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    exchange(
        &mut stream,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /first 0",
    )
    .await;
    // A body: hyper frames it, on the same connection.
    exchange(
        &mut stream,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST /upload 5",
    )
    .await;
    exchange(
        &mut stream,
        b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "POST /chunks 3",
    )
    .await;
    exchange(
        &mut stream,
        b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /after 0",
    )
    .await;
    // Idle past the parking delay: hyper lets go, and Stagedoor's loop picks it up again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    exchange(
        &mut stream,
        b"GET /woken HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /woken 0",
    )
    .await;
    let seen: Vec<String> = upstream.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        seen,
        ["/first", "/upload", "/chunks", "/after", "/woken"],
        "each request reached the upstream once"
    );
}

/// Writes `request` and reads until `expect` arrives.
async fn exchange(stream: &mut TcpStream, request: &[u8], expect: &str) {
    stream.write_all(request).await.unwrap();
    let answer = read_until(stream, |s| s.contains(expect)).await;
    assert!(answer.contains(expect), "wanted {expect:?} in {answer}");
}

/// An upstream on raw sockets whose responses are framed as the path asks.
async fn framing_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (response, close): (&[u8], bool) = match target.as_str() {
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
                            false,
                        ),
                        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nall of it, then EOF", true),
                        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", false),
                        "/not-modified" => (
                            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
                            false,
                        ),
                        "/early-hints" => (
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
                              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
                            false,
                        ),
                        "/two-lengths" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                            true,
                        ),
                        "/bad-chunk" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                            true,
                        ),
                        "/listed-length" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
                            false,
                        ),
                        "/no-content-close" => (
                            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                            true,
                        ),
                        "/headers" => (
                            b"HTTP/1.1 200 OK\r\nServer: framing\r\nSet-Cookie: a=1\r\n\
                              Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nKeep-Alive: timeout=5\r\n\
                              Connection: keep-alive\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\
                              X-Spaced:  v  \r\nContent-Length: 2\r\n\r\nok",
                            false,
                        ),
                        "/named-hop" => (
                            b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n\
                              X-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
                            false,
                        ),
                        "/garbage" => (b"HTTP/1.1 2OO OK\r\n\r\n", true),
                        "/switch" => (
                            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
                            true,
                        ),
                        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
                    };
                    if stream.write_all(response).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// A proxy in front of [`framing_upstream`]. Without the access log, a plain upstream
/// response's header lines pass to the client as they came; with it, through a header map.
async fn framing_proxy(access_log: bool) -> stagedoor::Running {
    let url = framing_upstream().await;
    start(config(&format!(
        "[log]\naccess_log = {access_log}\n[upstreams.web]\nurl = \"{url}\"\n"
    )))
    .await
}

#[tokio::test]
async fn every_upstream_framing_reaches_the_client_intact() {
    for access_log in [false, true] {
        framings_reach_the_client_intact(access_log).await;
    }
}

async fn framings_reach_the_client_intact(access_log: bool) {
    let proxy = framing_proxy(access_log).await;
    let addr = proxy.addr();

    let (status, headers, body) = get(addr, "/chunked", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello, world"));
    assert!(headers.get("content-length").is_none());

    let (status, _, body) = get(addr, "/until-close", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "all of it, then EOF")
    );

    let (status, _, body) = get(addr, "/early-hints", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "final"));

    // The same length listed twice is one length.
    let (status, headers, body) = get(addr, "/listed-length", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    assert_eq!(headers["content-length"], "5");

    // No body, and an upstream that closes: answered at once, not when the upstream closes.
    let started = std::time::Instant::now();
    let (status, _, body) = get(addr, "/no-content-close", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert!(started.elapsed() < Duration::from_secs(2));

    let (status, headers, body) = get(addr, "/not-modified", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(headers["etag"], "\"v1\"");

    // HEAD: the length of what a GET would send, and no body; the connection goes on.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nGET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut stream, |s| s.ends_with("\r\n\r\nok")).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("content-length: 1234\r\n"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
}

/// Upstream response headers reach the client once each, in order, with the upstream's
/// `Date`; hop-by-hop ones, and those `Connection` names, do not. The same over the lean
/// HTTP/1.1 path (lines passed as they came, or through a map with the access log on) and
/// over HTTP/2 (through hyper).
#[tokio::test]
async fn upstream_headers_reach_the_client_once_and_hop_by_hop_ones_do_not() {
    for access_log in [false, true] {
        let proxy = framing_proxy(access_log).await;
        let addr = proxy.addr();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /headers HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until(&mut stream, |s| s.ends_with("\r\n\r\nok")).await;
        let lower = answer.to_ascii_lowercase();
        let lines: Vec<&str> = lower.split("\r\n").collect();
        let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(lines[0], "http/1.1 200 ok", "{answer}");
        assert!(lines.contains(&"server: framing"), "{answer}");
        assert!(
            lines.contains(&"date: sun, 06 nov 1994 08:49:37 gmt"),
            "{answer}"
        );
        assert!(lines.contains(&"content-length: 2"), "{answer}");
        assert!(
            lines.contains(&"x-empty:") || lines.contains(&"x-empty: "),
            "{answer}"
        );
        assert!(
            lines.contains(&"x-spaced: v") || lines.contains(&"x-spaced:  v"),
            "{answer}"
        );
        for (name, n) in [("date:", 1), ("content-length:", 1), ("set-cookie:", 2)] {
            assert_eq!(count(name), n, "{name} in {answer}");
        }
        for hop in ["keep-alive:", "connection:", "transfer-encoding:"] {
            assert_eq!(count(hop), 0, "{hop} in {answer}");
        }
        let a = lines.iter().position(|l| *l == "set-cookie: a=1");
        let b = lines.iter().position(|l| *l == "set-cookie: b=2");
        assert!(a.is_some() && a < b, "{answer}");

        let (status, headers, body) = get(addr, "/named-hop", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        assert!(headers.get("x-secret").is_none(), "{headers:?}");
        assert_eq!(headers["x-kept"], "1");
    }

    let proxy = framing_proxy(false).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = client
        .get(format!("http://{}/headers", proxy.addr()).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let headers = response.headers().clone();
    let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(headers["date"], "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(headers["x-spaced"], "v");
    assert_eq!(headers["server"], "framing");
    assert!(headers.get("keep-alive").is_none());
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
}

#[tokio::test]
async fn upstream_responses_that_cannot_be_believed_are_refused() {
    let proxy = framing_proxy(false).await;
    let addr = proxy.addr();
    for path in ["/two-lengths", "/garbage", "/switch"] {
        let (status, _, _) = get(addr, path, &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{path}");
    }
    // Bad chunk framing shows only after the head went out: the body ends in an error.
    let request = http::Request::get(format!("http://{addr}/bad-chunk"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await.is_err());
    // And the proxy is fine.
    let (status, _, body) = get(addr, "/plain", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn a_local_answer_on_the_own_path_has_its_length_and_date() {
    // No route matches: Stagedoor answers itself, on its own HTTP/1.1 path.
    let upstream = Upstream::start(|_req| async { text("never") }).await;
    let proxy = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n[[routes]]\nhost = \"known.example\"\nupstream = \"web\"\n",
        upstream.url()
    )))
    .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: unknown.example\r\nAccept: application/json\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut stream, |s| s.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let length: usize = answer
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect(&answer);
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), length, "{answer}");
    assert!(answer.contains("\r\ndate: "), "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_head_over_the_limit_is_refused_even_in_one_write() {
    let upstream = Upstream::start(|_req| async { text("never") }).await;
    let proxy = start(config(&format!(
        "[server]\nmax_header_bytes = 16384\n[upstreams.web]\nurl = \"{}\"\n",
        upstream.url()
    )))
    .await;
    let big = "x".repeat(20_000);
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let answer = crate::support::raw(proxy.addr(), request.as_bytes()).await;
    assert_eq!(crate::support::status_of(&answer), 431, "{answer}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_long_response_does_not_count_as_idle_time() {
    // Found in review: idleness was measured from a tick missed during the response, so a
    // connection was closed soon after any response that took longer than the idle timeout.
    let upstream = Upstream::start(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        text("done")
    })
    .await;
    let proxy = start(config(&format!(
        "[server]\nidle_timeout = \"600ms\"\n[upstreams.web]\nurl = \"{}\"\n",
        upstream.url()
    )))
    .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    exchange(
        &mut stream,
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n",
        "done",
    )
    .await;
    // Well within the idle timeout since the response, past a few of the loop's ticks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    exchange(
        &mut stream,
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        "done",
    )
    .await;
    // And an idle connection is still closed once the timeout has passed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed after the idle timeout: {read:?}"
    );
}
