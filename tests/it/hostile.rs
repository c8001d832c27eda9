//! Hostile input through a running gate: request-smuggling shapes aimed at a protected path
//! from behind a public one, identity headers forged in every spelling on plain requests and
//! WebSocket upgrades, open-redirect payloads, and spoiled session cookies (tampered, expired,
//! sealed under another secret, chunks shuffled or missing). Each case checks the refusal and
//! what the upstream saw. Callback replay and foreign state are in `oidc.rs`.

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::signin::sign_in;
use crate::support::{Upstream, dev_config, header_map, raw, start, status_of};
use crate::websocket::echo_upstream;

const PUBLIC: &str = "[[policy.routes]]\npath_prefix = \"/public\"\npublic = true\n";

#[tokio::test]
async fn smuggling_shapes_never_reach_a_protected_path() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, PUBLIC)).await;
    let inner = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            // Framed by Transfer-Encoding; the connection closes after it, so the rest is
            // never read as a second request.
            "CL.TE",
            format!(
                "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
                5 + inner.len()
            ),
            &[200],
        ),
        (
            // The inner request is the chunked body of the public one.
            "TE.CL",
            format!(
                "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
                inner.len()
            ),
            &[200],
        ),
        (
            "two Content-Lengths",
            format!(
                "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{inner}",
                inner.len()
            ),
            &[400],
        ),
        (
            "unknown transfer coding",
            format!(
                "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n{inner}"
            ),
            &[400],
        ),
        (
            "space before the colon",
            format!(
                "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{inner}"
            ),
            &[400],
        ),
        (
            "obsolete line folding",
            "GET /public HTTP/1.1\r\nHost: a\r\nX-Forwarded-Email: a@example.com\r\n admin@example.com\r\n\r\n".to_string(),
            &[400],
        ),
        (
            "invalid chunk size",
            format!("POST /admin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{inner}"),
            // Judged on its head before the body is read: no session, an API call.
            &[401],
        ),
        (
            "request line with an absolute URI to another host",
            "GET http://internal.example/admin HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
            // Sent to sign in, never forwarded.
            &[302],
        ),
    ];
    for (name, bytes, want) in &cases {
        let answer = raw(proxy.addr(), bytes.as_bytes()).await;
        assert!(
            want.contains(&status_of(&answer)),
            "{name}: wanted {want:?}, got {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{name}: one answer, no second request read: {answer:?}"
        );
    }
    // CL.TE and TE.CL went through as the public request they are; nothing else did.
    assert_eq!(up.seen().len(), 2);
    for seen in up.seen() {
        assert!(
            seen.uri.starts_with("/public"),
            "only the public route was forwarded, saw {}",
            seen.uri
        );
    }
}

/// Every spelling of every identity header, forged: case, underscores, duplicates.
const FORGED: [(&str, &str); 10] = [
    ("X-FORWARDED-EMAIL", "mallory@example.com"),
    ("x-forwarded-email", "second@example.com"),
    ("X_Forwarded_Email", "underscore@example.com"),
    ("x-forwarded-user", "mallory"),
    ("X-Forwarded-Groups", "admins,root"),
    ("x-forwarded-preferred-username", "mallory"),
    ("X-Auth-Request-Email", "mallory@example.com"),
    ("remote_user", "mallory"),
    ("X-Stagedoor-Jwt-Assertion", "forged"),
    ("x-oauth2-proxy-id-token", "Bearer forged"),
];

fn assert_only_alice(headers: &http::HeaderMap) {
    let seen = header_map(headers);
    assert_eq!(seen["x-forwarded-email"], "alice@example.com", "{seen:?}");
    assert_eq!(headers.get_all("x-forwarded-email").iter().count(), 1);
    assert_eq!(seen["x-forwarded-user"], "alice@example.com");
    assert_eq!(seen["x-forwarded-groups"], "engineering,admins");
    for name in ["x_forwarded_email", "x-auth-request-email", "remote_user"] {
        assert!(!seen.contains_key(name), "{name} reached the upstream");
    }
    assert_ne!(seen["x-stagedoor-jwt-assertion"], "forged");
    // Stagedoor's own on Backstage's auth paths, else none at all.
    let id_token = seen.get("x-oauth2-proxy-id-token").map(String::as_str);
    assert_ne!(id_token, Some("Bearer forged"));
}

#[tokio::test]
async fn forged_identity_never_reaches_the_upstream() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, PUBLIC)).await;
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let page = alice
        .send("GET", "/catalog", &FORGED, bytes::Bytes::new())
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_only_alice(&up.last().headers);

    // Without a session, on a public route: no identity at all.
    let anonymous = raw(
        proxy.addr(),
        b"GET /public HTTP/1.1\r\nHost: a\r\nX-Forwarded-Email: mallory@example.com\r\nX_Forwarded_User: mallory\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&anonymous), 200);
    let seen = header_map(&up.last().headers);
    for name in ["x-forwarded-email", "x_forwarded_user", "x-forwarded-user"] {
        assert!(!seen.contains_key(name), "{name}: {seen:?}");
    }
}

#[tokio::test]
async fn forged_identity_on_a_websocket_upgrade_is_replaced() {
    let up = echo_upstream().await;
    let proxy = start(dev_config(&up, "")).await;
    let (alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let cookie = alice.cookie_header();
    let mut request = format!("ws://{}/api/signals", proxy.addr())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("cookie", cookie.parse().unwrap());
    for (name, value) in FORGED {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hello"
    );
    assert_only_alice(&up.last().headers);
}

/// Open-redirect payloads, for every parameter that redirects.
const REDIRECTS: [&str; 14] = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "http://evil.example/",
    "https:evil.example",
    "javascript:alert(1)",
    "/%2F%2Fevil.example",
    "https://backstage.example.com@evil.example/",
    "https://backstage.example.com.evil.example/",
    "https://evil.example#https://backstage.example.com/",
    " //evil.example",
    "/x\r\nLocation: https://evil.example/",
];

#[tokio::test]
async fn open_redirect_payloads_go_nowhere_on_any_redirecting_parameter() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(
        &up,
        "[auth]\nallowed_redirect_hosts = [\"backstage.example.com\"]\n",
    ))
    .await;
    for payload in REDIRECTS {
        let encoded: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();

        // rd on sign-out: the plain signed-out page, no redirect.
        let mut browser = crate::support::Browser::new(proxy.addr());
        let out = browser.get(&format!("/oauth2/sign_out?rd={encoded}")).await;
        assert_eq!(out.status, StatusCode::OK, "sign_out rd={payload:?}");
        assert_eq!(out.location(), "", "sign_out rd={payload:?}");

        // rd on sign-in: carried through the sign-in, and back to the root.
        let done =
            crate::signin::dev_sign_in_with_rd(&mut browser, payload, "alice@example.com").await;
        assert_eq!(done.location(), "/", "start rd={payload:?}");
    }
    assert!(up.seen().is_empty());
}

/// A `Cookie` header carrying `cookies` (as `Set-Cookie` would have set them).
fn cookie_header(cookies: &[cookie::Cookie<'static>]) -> String {
    cookies
        .iter()
        .filter(|c| !c.value().is_empty())
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn tampered_expired_foreign_and_shuffled_session_cookies_are_no_session() {
    use stagedoor::session::{Codec, CookieSettings};
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let settings = || CookieSettings {
        name: "_stagedoor".into(),
        domain: None,
        path: "/".into(),
        secure: false,
        expire: std::time::Duration::from_secs(3600),
    };
    let secret = stagedoor::config::decode_cookie_secret(crate::support::TEST_SECRET).unwrap();
    let ours = Codec::new(&secret, &[], settings());
    let theirs = Codec::new(b"another secret, also 32 bytes or more", &[], settings());

    // Alice's real session is the template; sealed again under the right secret, it works.
    let (alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let mut jar = http::HeaderMap::new();
    jar.insert(http::header::COOKIE, alice.cookie_header().parse().unwrap());
    let template = ours.read_session(&jar).expect("alice's cookie opens");
    let get = |cookie: String| {
        let addr = proxy.addr();
        async move {
            let (status, _, _) = crate::support::get(
                addr,
                "/api/catalog",
                &[("cookie", &cookie), ("accept", "application/json")],
            )
            .await;
            status
        }
    };
    let empty = http::HeaderMap::new();
    let valid = ours.write_session(&template, &empty);
    assert_eq!(
        get(cookie_header(&valid)).await,
        StatusCode::OK,
        "the control"
    );

    // Every spoiled variant is no session: 401, and the upstream hears nothing of it.
    let before = up.seen().len();
    let mut expired = template.clone();
    expired.expires_at = expired.created_at.saturating_sub(1);
    let mut tampered = valid.clone();
    let value = tampered[0].value().to_string();
    let flipped = if value.ends_with('A') { 'B' } else { 'A' };
    tampered[0].set_value(format!("{}{flipped}", &value[..value.len() - 1]));
    let mut big = template.clone();
    big.groups = (0..600).map(|i| format!("group-number-{i:04}")).collect();
    let chunks = ours.write_session(&big, &empty);
    assert!(chunks.len() >= 3, "a session large enough to be chunked");
    assert_eq!(
        get(cookie_header(&chunks)).await,
        StatusCode::OK,
        "chunked control"
    );
    let before = before + 1;
    let mut shuffled = chunks.clone();
    let (a, b) = (
        shuffled[0].value().to_string(),
        shuffled[1].value().to_string(),
    );
    shuffled[0].set_value(b);
    shuffled[1].set_value(a);
    for (case, cookies) in [
        ("expired", ours.write_session(&expired, &empty)),
        ("another secret", theirs.write_session(&template, &empty)),
        ("tampered", tampered),
        ("chunks shuffled", shuffled),
        ("a chunk missing", chunks[1..].to_vec()),
    ] {
        assert_eq!(
            get(cookie_header(&cookies)).await,
            StatusCode::UNAUTHORIZED,
            "{case}"
        );
    }
    assert_eq!(up.seen().len(), before, "no refused request was forwarded");
}
