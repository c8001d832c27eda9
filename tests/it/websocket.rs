//! Protocol upgrades are tunneled: a WebSocket echo through the proxy.

use futures_util::{SinkExt, StreamExt};
use http::{Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};

use crate::support::{Upstream, header_map, proxy_to};

/// An upstream that echoes every WebSocket message.
pub(crate) async fn echo_upstream() -> Upstream {
    Upstream::start(|mut req| async move {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(stagedoor::full("not a websocket request"))
                .unwrap();
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(stagedoor::empty())
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = echo_upstream().await;
    let proxy = proxy_to(&up).await;
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/signals", proxy.addr()))
            .await
            .expect("handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    for text in ["hello", "second message"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        [0u8, 1, 2, 255]
    );
    ws.close(None).await.unwrap();

    let seen = header_map(&up.last().headers);
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["connection"], "upgrade");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn upgrade_refused_by_upstream_is_a_normal_response() {
    let up = Upstream::named("no upgrades here").await;
    let proxy = proxy_to(&up).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/", proxy.addr()))
        .await
        .expect_err("the upstream does not switch protocols");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::OK)
        }
        other => panic!("unexpected error: {other}"),
    }
}
