//! The identity sent upstream: Backstage's `oauth2Proxy` headers and the signed identity
//! token, verified here against the keys Stagedoor publishes.

use std::collections::HashMap;

use http::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::signin::sign_in;
use crate::support::{Browser, Upstream, dev_config, header_map, start};

/// Verifies `token` against the JWKS served at `addr`, as an upstream would.
async fn verify(addr: std::net::SocketAddr, token: &str) -> Value {
    let page = Browser::new(addr).get("/.well-known/jwks.json").await;
    assert_eq!(page.status, StatusCode::OK);
    let set: JwkSet = serde_json::from_str(&page.body).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("the signing key is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["http://127.0.0.1:4180"]);
    validation.set_audience(&["backstage"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

fn identity_config(up: &Upstream, extra: &str) -> stagedoor::Config {
    dev_config(
        up,
        &format!(
            "[auth]\npublic_url = \"http://127.0.0.1:4180\"\n\
             [[policy.routes]]\npath_prefix = \"/public\"\npublic = true\n\
             [identity]\nstrip_headers = [\"X-Tenant\"]\ngroup_refs = {{ admins = \"group:default/backstage-admins\" }}\n{extra}"
        ),
    )
}

#[tokio::test]
async fn a_signed_token_and_oauth2_proxy_headers_reach_the_upstream() {
    let up = Upstream::named("web").await;
    let proxy = start(identity_config(&up, "")).await;
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;

    let forged = [
        ("x-stagedoor-jwt-assertion", "forged"),
        ("x_stagedoor_jwt_assertion", "forged"),
        ("x-oauth2-proxy-id-token", "Bearer forged"),
        ("x-tenant", "acme"),
        ("X_Tenant", "acme"),
    ];
    let page = browser
        .send("GET", "/catalog", &forged, bytes::Bytes::new())
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let seen = header_map(&up.last().headers);
    let token = seen["x-stagedoor-jwt-assertion"].clone();
    // The oauth2Proxy copy goes only where Backstage's auth backend reads it.
    assert!(!seen.contains_key("x-oauth2-proxy-id-token"), "{seen:?}");
    assert!(!seen.contains_key("x-tenant") && !seen.contains_key("x_tenant"));
    assert!(!seen.contains_key("x_stagedoor_jwt_assertion"));
    let page = browser
        .send(
            "GET",
            "/api/auth/oauth2Proxy/refresh",
            &forged,
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let seen = header_map(&up.last().headers);
    assert_eq!(seen["x-stagedoor-jwt-assertion"], token);
    assert_eq!(seen["x-oauth2-proxy-id-token"], format!("Bearer {token}"));

    let claims = verify(proxy.addr(), &token).await;
    assert_eq!(claims["sub"], "user:default/alice");
    assert_eq!(
        claims["ent"],
        serde_json::json!([
            "user:default/alice",
            "group:default/engineering",
            "group:default/backstage-admins"
        ])
    );
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["engineering", "admins"])
    );
    assert_eq!(claims["idp"], "dev");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );

    // Minted once, not per request.
    browser.get("/catalog").await;
    assert_eq!(
        header_map(&up.last().headers)["x-stagedoor-jwt-assertion"],
        token
    );

    // No session, public route: no identity at all, forged or not.
    let mut anonymous = Browser::new(proxy.addr());
    let page = anonymous
        .send("GET", "/public/logo.png", &forged, bytes::Bytes::new())
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let seen: HashMap<String, String> = header_map(&up.last().headers);
    for name in [
        "x-stagedoor-jwt-assertion",
        "x-oauth2-proxy-id-token",
        "x-forwarded-user",
        "x-tenant",
    ] {
        assert!(!seen.contains_key(name), "{name}");
    }

    let discovery: Value = serde_json::from_str(
        &anonymous
            .get("/.well-known/openid-configuration")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(discovery["issuer"], "http://127.0.0.1:4180");
    assert_eq!(
        discovery["jwks_uri"],
        "http://127.0.0.1:4180/.well-known/jwks.json"
    );
}

/// A request without a body gets its identity written straight into the upstream head; one
/// with a body goes through hyper's client, where it is added to the header map. Both must
/// carry the same identity, each header once, and nothing forged.
#[tokio::test]
async fn requests_with_and_without_a_body_carry_the_same_identity() {
    let up = Upstream::named("web").await;
    let proxy = start(identity_config(&up, "")).await;
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let forged = [
        ("x-forwarded-user", "mallory"),
        ("X_Forwarded_Email", "mallory@example.com"),
        ("x-stagedoor-jwt-assertion", "forged"),
    ];
    let mut seen = Vec::new();
    for body in [bytes::Bytes::new(), bytes::Bytes::from_static(b"{\"a\":1}")] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let page = browser
            .send(method, "/api/auth/oauth2Proxy/refresh", &forged, body)
            .await;
        assert_eq!(page.status, StatusCode::OK, "{method}");
        seen.push(header_map(&up.last().headers));
    }
    let names = [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-oauth2-proxy-id-token",
        "x-stagedoor-jwt-assertion",
    ];
    for name in names {
        // Joined with ", " by `header_map` if it came twice.
        assert_eq!(seen[0].get(name), seen[1].get(name), "{name}");
        assert!(seen[0].contains_key(name), "{name}");
    }
    assert_eq!(seen[0]["x-forwarded-user"], "alice@example.com");
    assert_eq!(seen[1]["x-forwarded-email"], "alice@example.com");
    assert!(!seen[0].contains_key("x_forwarded_email"));
    assert!(!seen[1].contains_key("x_forwarded_email"));
    verify(proxy.addr(), &seen[1]["x-stagedoor-jwt-assertion"]).await;
}

#[tokio::test]
async fn names_come_from_the_template_and_keys_rotate() {
    let up = Upstream::named("web").await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.pem");
    let config = identity_config(
        &up,
        &format!(
            "user_name = \"{{provider}}-{{email_local}}\"\ngroup_filter = \"eng.*\"\nsigning_key_file = \"{}\"\n",
            old.display()
        ),
    );
    let proxy = start(config).await;
    assert!(old.exists(), "the key file is created on first start");
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    browser.get("/").await;
    let first = header_map(&up.last().headers)["x-stagedoor-jwt-assertion"].clone();
    let claims = verify(proxy.addr(), &first).await;
    assert_eq!(claims["sub"], "user:default/dev-alice");
    // "admins" is mapped explicitly, so the filter does not drop it.
    assert_eq!(
        claims["ent"],
        serde_json::json!([
            "user:default/dev-alice",
            "group:default/engineering",
            "group:default/backstage-admins"
        ])
    );
    let old_kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();
    proxy.shutdown().await;

    // A new key signs; the old one is still published, so its tokens keep verifying.
    let new = dir.path().join("new.pem");
    let config = identity_config(
        &up,
        &format!(
            "signing_key_file = \"{}\"\nprevious_key_files = [\"{}\"]\n",
            new.display(),
            old.display()
        ),
    );
    let proxy = start(config).await;
    let mut browser = Browser {
        addr: proxy.addr(),
        ..browser
    };
    browser.get("/").await;
    let second = header_map(&up.last().headers)["x-stagedoor-jwt-assertion"].clone();
    let new_kid = jsonwebtoken::decode_header(&second).unwrap().kid.unwrap();
    assert_ne!(old_kid, new_kid);
    verify(proxy.addr(), &second).await;
    verify(proxy.addr(), &first).await;
}
