//! The access policy end to end, with the real OpenID provider: an emails file changed while
//! Stagedoor runs, bearer JWTs from a machine client, client networks, per-route groups.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use stagedoor::Config;

use crate::oidc::sign_in;
use crate::support::{
    Browser, OpenIdProvider, Upstream, client, free_port, gate_config, header_map, start,
};

fn corp(issuer: &str, extra: &str) -> String {
    format!(
        r#"
        [[providers]]
        kind = "oidc"
        id = "corp"
        issuer = "{issuer}"
        client_id = "stagedoor"
        client_secret = "stagedoor-secret"
        scopes = ["openid", "email", "profile", "groups"]
        {extra}
        "#
    )
}

/// A JWT access token for the fixture's machine client, for `resource`.
async fn machine_token(issuer: &str, resource: &str) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "api"),
        ])
        .finish();
    let basic = base64::engine::general_purpose::STANDARD.encode("ci:ci-secret");
    let request = http::Request::post(format!("{issuer}/token"))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["access_token"].as_str().unwrap().to_string()
}

async fn call(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let page = Browser::new(addr)
        .send("GET", path, headers, Bytes::new())
        .await;
    (page.status, page.body)
}

#[tokio::test]
async fn bearer_tokens_from_the_provider_are_judged_like_sessions() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let config: Config = gate_config(
        port,
        &up,
        "explain_rule = true\n[[policy.routes]]\nname = \"admin-api\"\npath_prefix = \"/api/admin\"\ngroups = [\"backstage-admins\"]\n",
        &corp(&op.issuer, "bearer_audiences = [\"https://api.test\"]"),
    );
    let proxy = start(config).await;
    let addr = proxy.addr();

    let token = machine_token(&op.issuer, "https://api.test").await;
    let auth = format!("Bearer {token}");
    let (status, body) = call(addr, "/api/catalog/entities", &[("authorization", &auth)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web"));
    let seen = header_map(&up.last().headers);
    assert_eq!(seen["x-forwarded-email"], "ci-bot@example.com");
    assert_eq!(seen["x-forwarded-groups"], "ci");
    // The token itself goes on: the upstream may want it.
    assert_eq!(seen["authorization"], auth);
    let forwarded = up.seen().len();

    // Judged by the route's rule: the machine client is not in backstage-admins.
    let (status, body) = call(addr, "/api/admin/users", &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    // explain_rule names the deciding rule.
    assert!(body.contains("\"rule\":\"admin-api\""), "{body}");

    // Another audience, a payload edited under the original signature, `alg: none`, and a
    // token that is not a JWT: all 401, none forwarded.
    let other = machine_token(&op.issuer, "https://other.test").await;
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["groups"] = serde_json::json!(["backstage-admins"]);
    let edited = b64.encode(claims.to_string());
    let forged = format!("{}.{edited}.{}", parts[0], parts[2]);
    let none = format!("{}.{edited}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    for (what, bad) in [
        ("wrong audience", other.as_str()),
        ("edited payload", forged.as_str()),
        ("alg none", none.as_str()),
        ("not a JWT", "opaque-token"),
    ] {
        let (status, body) = call(
            addr,
            "/api/admin/users",
            &[("authorization", &format!("Bearer {bad}"))],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body.contains("invalid_token"), "{what}: {body}");
    }
    assert_eq!(up.seen().len(), forwarded, "nothing refused was forwarded");

    // alice is in backstage-admins: the group rule admits her session there.
    let (mut alice, done) = sign_in(addr, "/", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = alice.get("/api/admin/users").await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "web"));
}

#[tokio::test]
async fn the_emails_file_is_read_again_while_running() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("emails.txt");
    std::fs::write(&file, "# who may use the portal\ncarol@example.com\n").unwrap();
    let mut config = gate_config(port, &up, "", &corp(&op.issuer, ""));
    config.policy.email_domains = Vec::new();
    config.policy.emails_file = Some(file.clone());
    let proxy = start(config).await;

    let (_, refused) = sign_in(proxy.addr(), "/", "alice").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    std::fs::write(&file, "carol@example.com\nAlice@Example.com\n").unwrap();
    let mut admitted = None;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (browser, done) = sign_in(proxy.addr(), "/", "alice").await;
        if done.status == StatusCode::SEE_OTHER {
            admitted = Some(browser);
            break;
        }
    }
    let mut browser = admitted.expect("alice admitted once the file names her");
    assert_eq!(browser.get("/").await.body, "web");

    // Taken off the list: her session is refused within seconds, not at its expiry.
    std::fs::write(&file, "carol@example.com\n").unwrap();
    let mut status = StatusCode::OK;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        status = browser.get("/").await.status;
        if status == StatusCode::FORBIDDEN {
            break;
        }
    }
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A broken version is refused and the last good list stays in force.
    std::fs::write(
        &file,
        "carol@example.com\nnot an address\nalice@example.com\n",
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(browser.get("/").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn client_networks_pass_their_routes_without_sign_in() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let routes = r#"
        [[policy.routes]]
        name = "metrics"
        path_prefix = "/metrics"
        allow_cidrs = ["127.0.0.0/8"]
        [[policy.routes]]
        name = "internal"
        path_prefix = "/internal"
        allow_cidrs = ["10.0.0.0/8"]
        "#;
    let proxy = start(gate_config(port, &up, routes, &corp(&op.issuer, ""))).await;
    let json = [("accept", "application/json")];

    let (status, body) = call(proxy.addr(), "/metrics", &json).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "web"));
    assert!(!header_map(&up.last().headers).contains_key("x-forwarded-email"));

    // Loopback is not in 10.0.0.0/8, and a client cannot claim to be with X-Forwarded-For.
    for headers in [
        &json[..],
        &[
            ("accept", "application/json"),
            ("x-forwarded-for", "10.1.2.3"),
        ],
    ] {
        let (status, _) = call(proxy.addr(), "/internal/x", headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(up.seen().len(), 1);
}
