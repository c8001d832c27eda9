//! Faults around Stagedoor: an identity provider that is down or never answers, an upstream
//! that goes away in the middle of a body, a client that goes away in the middle of an upload.
//! Each ends in a bounded time with a clear answer, and Stagedoor goes on serving.

use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::oidc::sign_in;
use crate::support::{
    self, Browser, OpenIdProvider, Upstream, config, free_port, gate_config, get, start,
};

#[tokio::test]
async fn a_provider_that_goes_away_or_hangs_leaves_sessions_working_and_sign_in_clear() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\nscopes = [\"openid\", \"email\", \"profile\"]\n",
        op.issuer
    );
    let proxy = start(gate_config(port, &up, "", &provider)).await;
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice").await;
    drop(op);
    // Signed-in users do not need the provider until their access token expires.
    assert_eq!(alice.get("/catalog").await.status, StatusCode::OK);
    proxy.shutdown().await;

    // A provider that accepts connections and never answers: the sign-in page says so within
    // the provider client's timeout, and other requests are not held up meanwhile.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"http://{silent_addr}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\n"
    );
    // A port of its own: the first one, just freed, may meanwhile be another test's.
    let proxy = start(gate_config(free_port(), &up, "", &provider)).await;
    let addr = proxy.addr();
    let started = Instant::now();
    let sign_in_page =
        tokio::spawn(async move { Browser::new(addr).get("/oauth2/start?rd=/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = get(addr, "/oauth2/userinfo", &[]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "answered while sign-in waits"
    );
    let page = sign_in_page.await.unwrap();
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.body);
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
}

/// An upstream that promises 100,000 bytes, sends 1,000 and closes the connection.
async fn resetting_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'x'; 1000]).await;
                drop(stream);
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_gone_mid_body_ends_that_response_only() {
    let web = Upstream::named("web").await;
    let broken = resetting_upstream().await;
    let proxy = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n[upstreams.broken]\nurl = \"http://{broken}\"\n\
         [[routes]]\npath_prefix = \"/broken\"\nupstream = \"broken\"\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"web\"\n",
        web.url()
    )))
    .await;
    let request = http::Request::get(format!("http://{}/broken/file", proxy.addr()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(10), support::client().request(request))
            .await
            .expect("bounded")
            .unwrap();
    // The head was already on its way: the client sees the body cut short, not a lie.
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("bounded");
    assert!(
        body.is_err(),
        "a truncated body is an error, not a short success"
    );
    let (status, _, text) = get(proxy.addr(), "/healthy", &[]).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "web"));
}

#[tokio::test]
async fn a_client_gone_mid_upload_ends_the_upstream_request_too() {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let up = Upstream::start(move |req| {
        let done = done_tx.clone();
        async move {
            let result = req.into_body().collect().await.map(|b| b.to_bytes().len());
            let _ = done.send(result.is_ok());
            support::text("stored")
        }
    })
    .await;
    let proxy = crate::support::proxy_to(&up).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    client.write_all(&[b'y'; 10_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(client);
    let complete = tokio::time::timeout(Duration::from_secs(10), done_rx.recv())
        .await
        .expect("the upstream learns of it in bounded time")
        .unwrap();
    assert!(
        !complete,
        "the upstream saw an aborted body, not a complete one"
    );
    let (status, _, text) = get(proxy.addr(), "/after", &[]).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "stored"));
}
