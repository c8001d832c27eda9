//! `/metrics` on the admin listener, scraped after a known sequence of requests.

use http::StatusCode;

use crate::signin::sign_in;
use crate::support::{Browser, Upstream, dev_config, start};

/// The value of the sample whose line starts with `series` (name and labels), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn counters_follow_the_requests() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(
        &up,
        "[[policy.routes]]\nname = \"assets\"\npath_prefix = \"/assets\"\npublic = true\n\
         [[policy.routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\ngroups = [\"nobody\"]\n",
    ))
    .await;
    let admin = proxy.admin_addr().expect("the admin listener is on");

    let mut anonymous = Browser::new(proxy.addr());
    assert_eq!(anonymous.get("/catalog").await.status, StatusCode::FOUND);
    assert_eq!(anonymous.get("/assets/app.js").await.status, StatusCode::OK);
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    for _ in 0..3 {
        assert_eq!(alice.get("/catalog").await.status, StatusCode::OK);
    }
    assert_eq!(alice.get("/admin").await.status, StatusCode::FORBIDDEN);

    let page = Browser::new(admin).get("/metrics").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = page.body;
    let checks = [
        // The public asset and alice's three pages.
        (r#"stagedoor_requests_total{route="web",class="2xx"}"#, 4.0),
        (
            r#"stagedoor_upstream_response_seconds_count{upstream="web"}"#,
            4.0,
        ),
        (
            r#"stagedoor_auth_decisions_total{outcome="allow",rule="policy"}"#,
            3.0,
        ),
        (
            r#"stagedoor_auth_decisions_total{outcome="public",rule="assets"}"#,
            1.0,
        ),
        (
            r#"stagedoor_auth_decisions_total{outcome="deny",rule="admin"}"#,
            1.0,
        ),
        // The anonymous /catalog, and sign_in's first protected request.
        (
            r#"stagedoor_auth_decisions_total{outcome="sign-in required",rule="policy"}"#,
            2.0,
        ),
        (
            r#"stagedoor_sign_ins_total{provider="dev",result="ok"}"#,
            1.0,
        ),
        (
            r#"stagedoor_requests_total{route="stagedoor",class="4xx"}"#,
            1.0,
        ),
    ];
    for (series, want) in checks {
        assert_eq!(sample(&text, series), want, "{series}\n{text}");
    }
    assert!(
        text.contains("# TYPE stagedoor_connections_active gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

/// Reads one HTTP/1.1 response with a Content-Length body from `stream`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf[..end + 4 + length]).into_owned();
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_parked_and_wake_up() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::named("web").await;
    let proxy = crate::support::proxy_to(&up).await;
    let admin = proxy.admin_addr().expect("the admin listener is on");
    let parked = || async {
        let page = Browser::new(admin).get("/metrics").await;
        sample(&page.body, "stagedoor_connections_parked")
    };

    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /first HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut client).await.starts_with("HTTP/1.1 200"));
    assert_eq!(parked().await, 0.0, "busy a moment ago");
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    assert_eq!(parked().await, 1.0, "idle for longer than a second");

    // The parked connection serves the next request, and is active again.
    client
        .write_all(b"GET /second HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("web"), "{response}");
    assert_eq!(up.last().uri, "/second");
    assert_eq!(parked().await, 0.0);
}
