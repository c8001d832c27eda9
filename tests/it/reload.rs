//! Reloading the configuration without a restart: in process (`Running::reload`), and in the
//! binary on SIGHUP and on a change of the file.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::signin::sign_in;
use crate::support::{dev_config, free_port, get, start};
use crate::websocket::echo_upstream;

fn admin_route(who: &str) -> String {
    format!("[[policy.routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\n{who}\n")
}

#[tokio::test]
async fn a_reload_changes_the_policy_for_new_requests_and_keeps_open_websockets() {
    let up = echo_upstream().await;
    let proxy = start(dev_config(&up, &admin_route("groups = [\"nobody\"]"))).await;
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let cookie = alice.cookie_header();
    let mut request = format!("ws://{}/api/signals", proxy.addr())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut echo = async |text: &str| {
        ws.send(Message::text(text)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    };
    echo("before").await;
    assert_eq!(alice.get("/admin").await.status, StatusCode::FORBIDDEN);

    // The echo upstream answers a plain request with 400: reaching it means the gate let it by.
    proxy
        .reload(dev_config(&up, &admin_route("allow_any_user = true")))
        .unwrap();
    assert_eq!(alice.get("/admin").await.status, StatusCode::BAD_REQUEST);
    echo("after the reload").await;

    // A configuration that cannot be built is refused; the current one stays.
    let mut broken = dev_config(&up, &admin_route("groups = [\"nobody\"]"));
    broken.policy.emails_file = Some("/nonexistent/emails.txt".into());
    let err = proxy.reload(broken).unwrap_err();
    assert!(err.to_string().contains("policy.emails_file"), "{err}");
    assert_eq!(alice.get("/admin").await.status, StatusCode::BAD_REQUEST);
    echo("after a refused reload").await;
}

/// Polls `path` until it answers `want`, for up to 8 s.
async fn eventually(addr: std::net::SocketAddr, path: &str, want: StatusCode) {
    let mut last = StatusCode::OK;
    for _ in 0..80 {
        last = get(addr, path, &[("accept", "application/json")]).await.0;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path}: still {last}, wanted {want}");
}

#[tokio::test]
async fn the_binary_reloads_on_sighup_and_on_file_changes() {
    // Plain requests reaching it get 400; WebSockets are echoed.
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stagedoor.toml");
    let port = free_port();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nenabled = false\n[log]\nformat = \"json\"\n\
         [upstreams.web]\nurl = \"{}\"\n[session]\ncookie_secure = false\n\
         [[providers]]\nkind = \"dev\"\nusers = [{{ email = \"a@example.com\" }}]\n",
        up.url()
    );
    let public =
        |prefix: &str| format!("[[policy.routes]]\npath_prefix = \"{prefix}\"\npublic = true\n");
    // A public WebSocket route, open across the reloads.
    let base = format!("{base}{}", public("/ws"));
    std::fs::write(&path, &base).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stagedoor"))
        .args(["--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("STAGEDOOR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(addr, "/open", StatusCode::UNAUTHORIZED).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut echo = async |text: &str| {
        ws.send(Message::text(text)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    };
    echo("before").await;
    let hup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };

    std::fs::write(&path, format!("{base}{}", public("/open"))).unwrap();
    hup();
    eventually(addr, "/open", StatusCode::BAD_REQUEST).await;
    echo("after SIGHUP: the WebSocket is still open").await;

    // A broken file is refused, and the process goes on with the last good configuration.
    std::fs::write(&path, "[server\nthis is not TOML").unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(addr, "/open", &[]).await.0, StatusCode::BAD_REQUEST);
    assert!(child.try_wait().unwrap().is_none(), "still running");

    // No signal: a change of the file is noticed by itself.
    std::fs::write(
        &path,
        format!("{base}{}{}", public("/open"), public("/other")),
    )
    .unwrap();
    eventually(addr, "/other", StatusCode::BAD_REQUEST).await;
    echo("after the file changed").await;

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("reloaded the configuration"), "{log}");
}
