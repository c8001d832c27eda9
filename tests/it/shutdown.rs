//! Graceful shutdown: stop accepting, let in-flight requests finish, then close.

use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::net::TcpStream;

use crate::support::{Upstream, config, get, start, text};

async fn slow_upstream(delay: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        text("finished")
    })
    .await
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let up = slow_upstream(Duration::from_millis(800)).await;
    let proxy = start(config(&format!(
        "[server]\nshutdown_grace = \"10s\"\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let addr = proxy.addr();
    let admin = proxy.admin_addr().unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let shutdown = tokio::spawn(proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is still open"
    );
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "the admin listener is still open"
    );

    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "finished"));
    assert!(
        shutdown.await.unwrap(),
        "shutdown reported connections cut off"
    );
}

#[tokio::test]
async fn connections_still_open_after_the_grace_period_are_closed() {
    let up = slow_upstream(Duration::from_secs(30)).await;
    let proxy = start(config(&format!(
        "[server]\nshutdown_grace = \"300ms\"\n[upstreams.web]\nurl = \"{}\"\n",
        up.url()
    )))
    .await;
    let addr = proxy.addr();
    let in_flight = tokio::spawn(async move {
        let client = crate::support::client();
        client
            .get(format!("http://{addr}/forever").parse().unwrap())
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert!(
        !proxy.shutdown().await,
        "shutdown should report the forced close"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the request should have been cut off"
    );
}
