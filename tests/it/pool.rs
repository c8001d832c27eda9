//! The upstream connection pool: connections are reused, a connection the upstream closed is
//! never used again, a response abandoned half-way does not hand its connection to the next
//! request, and idle connections are closed after `pool_idle_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{config, get, start};

/// What a raw upstream saw: connections accepted, and connections the proxy closed.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    closed_by_proxy: AtomicUsize,
}

/// An HTTP/1.1 upstream written on raw sockets, so that what happens to each connection is
/// visible. Every response is `ok` (or, for `/big`, 1 MiB). With `close_after`, it closes
/// each connection that long after a response, without saying so (a keep-alive timeout).
async fn raw_upstream(close_after: Option<Duration>) -> (String, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let seen = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let read = match close_after {
                        Some(after) => {
                            match tokio::time::timeout(after, stream.read(&mut chunk)).await {
                                Ok(read) => read,
                                // Quiet for too long: close without a word.
                                Err(_) => return,
                            }
                        }
                        None => stream.read(&mut chunk).await,
                    };
                    let n = match read {
                        Ok(0) | Err(_) => {
                            seen.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let body: Vec<u8> = if head.starts_with("GET /big") {
                            vec![b'x'; 1 << 20]
                        } else {
                            b"ok".to_vec()
                        };
                        let mut response =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        response.extend_from_slice(&body);
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, counts)
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (url, counts) = raw_upstream(None).await;
    let proxy = start(config(&format!("[upstreams.web]\nurl = \"{url}\"\n"))).await;
    for _ in 0..5 {
        let (status, _, body) = get(proxy.addr(), "/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_the_upstream_closed_are_not_used_again() {
    let (url, counts) = raw_upstream(Some(Duration::from_millis(50))).await;
    let proxy = start(config(&format!("[upstreams.web]\nurl = \"{url}\"\n"))).await;
    for _ in 0..3 {
        let (status, _, body) = get(proxy.addr(), "/", &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_response_abandoned_half_way_does_not_lend_its_connection() {
    let (url, counts) = raw_upstream(None).await;
    let proxy = start(config(&format!("[upstreams.web]\nurl = \"{url}\"\n"))).await;
    // Ask for 1 MiB, read the head, hang up.
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = client.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(client);
    // The next request gets a whole, clean answer, on a connection of its own.
    let (status, _, body) = get(proxy.addr(), "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        counts.closed_by_proxy.load(Ordering::SeqCst),
        1,
        "the abandoned connection is closed"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (url, counts) = raw_upstream(None).await;
    let proxy = start(config(&format!(
        "[upstreams.web]\nurl = \"{url}\"\npool_idle_timeout = \"300ms\"\n"
    )))
    .await;
    let (status, _, _) = get(proxy.addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts.closed_by_proxy.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counts.closed_by_proxy.load(Ordering::SeqCst), 1);
    // And the next request simply opens a new one.
    let (status, _, _) = get(proxy.addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}
