//! Limits and timeouts on client connections, and upstreams that misbehave.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Upstream, config, get, raw, start, status_of};

/// Reads until the server closes the connection; None if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server]\nidle_timeout = \"300ms\"\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let out = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the idle keep-alive connection was closed");
    assert_eq!(status_of(&String::from_utf8_lossy(&out)), 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server]\nheader_read_timeout = \"300ms\"\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow:")
        .await
        .unwrap();
    closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("a client dribbling its headers was disconnected");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server]\nmax_connections = 2\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let addr = proxy.addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
        held.push(s);
    }
    let third = tokio::spawn(async move { get(addr, "/third", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served over the cap of 2"
    );
    drop(held.pop());
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn connect_method_is_refused() {
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let answer = raw(
        proxy.addr(),
        b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn garbage_from_the_upstream_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 ??? oops\r\n\0\0\0\r\n\r\n").await;
        }
    });
    let proxy = start(config(&format!(
        "[upstreams.bad]\nurl = \"http://{addr}\"\n"
    )))
    .await;
    for _ in 0..3 {
        let (status, _, _) = get(proxy.addr(), "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
}
