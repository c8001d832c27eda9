//! Stagedoor in front of a real Backstage backend (installed from npm), with the real OpenID
//! provider: Backstage's stock `oauth2Proxy` sign-in provider, and the `stagedoor` module from
//! `integrations/backstage` that verifies the signed identity token, including a key rotation.

use std::net::SocketAddr;
use std::path::Path;

use http::StatusCode;
use serde_json::Value;
use stagedoor::Config;
use stagedoor::signing::Keys;

use crate::oidc::sign_in;
use crate::support::{Backstage, Browser, OpenIdProvider, TEST_SECRET, free_port, start};

fn stagedoor(port: u16, backstage: SocketAddr, issuer: &str, keys: &str) -> Config {
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:{port}"
        [admin]
        enabled = false
        [upstreams.backstage]
        url = "http://{backstage}"
        [auth]
        public_url = "http://127.0.0.1:{port}"
        [session]
        cookie_secure = false
        cookie_secret = "{TEST_SECRET}"
        [policy]
        email_domains = ["example.com"]
        # bob's address is unverified at the fixture provider; he is let in to be impersonated.
        allow_unverified_email = true
        [identity]
        {keys}
        [[providers]]
        kind = "oidc"
        id = "corp"
        issuer = "{issuer}"
        client_id = "stagedoor"
        client_secret = "stagedoor-secret"
        scopes = ["openid", "email", "profile", "groups"]
        "#
    );
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The Backstage identity a refresh answered with: user ref, ownership refs and token.
fn identity(page: &crate::support::Page) -> (String, Vec<String>, String) {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = json(&page.body);
    let identity = &body["backstageIdentity"];
    let refs = identity["identity"]["ownershipEntityRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (
        identity["identity"]["userEntityRef"]
            .as_str()
            .unwrap()
            .to_string(),
        refs,
        identity["token"].as_str().unwrap().to_string(),
    )
}

/// Starts Stagedoor on `port` (the public URL's) in front of a Backstage started right after
/// it, in that order: Backstage's own outgoing connections at start-up cannot then take
/// Stagedoor's port.
async fn stagedoor_then_backstage(
    port: u16,
    issuer: &str,
    keys: &str,
    env: &[(&str, &str)],
) -> (stagedoor::server::Running, Backstage) {
    let backstage_port = free_port();
    let backstage_addr = SocketAddr::from(([127, 0, 0, 1], backstage_port));
    let proxy = start(stagedoor(port, backstage_addr, issuer, keys)).await;
    let public = format!("http://127.0.0.1:{port}");
    (proxy, Backstage::start_on(backstage_port, &public, env))
}

/// A token like the ones Stagedoor mints, signed with the key in `key_file`.
fn token(key_file: &Path, issuer: &str, audience: &str, lifetime: i64) -> String {
    let keys = Keys::load(Some(key_file), &[] as &[&Path]).unwrap();
    let now = stagedoor::session::now() as i64;
    keys.sign(&serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": "user:default/alice",
        "ent": ["user:default/alice", "group:default/engineering"],
        "email": "alice@example.com",
        "groups": ["engineering"],
        "idp": "corp",
        "iat": now - 300,
        "exp": now + lifetime,
    }))
    .unwrap()
}

/// Asks Backstage directly (not through Stagedoor) to sign in with a Stagedoor token.
async fn direct_stagedoor_sign_in(backstage: &Backstage, token: &str) -> StatusCode {
    Browser::new(backstage.addr)
        .send(
            "GET",
            "/api/auth/stagedoor/refresh",
            &[("x-stagedoor-jwt-assertion", token)],
            bytes::Bytes::new(),
        )
        .await
        .status
}

#[tokio::test]
async fn backstage_signs_users_in_through_stagedoor() {
    stagedoor::install_crypto_provider();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let op = OpenIdProvider::start(&format!("{public}/oauth2/callback"), 3600);
    let dir = tempfile::tempdir().unwrap();
    let k1 = dir.path().join("k1.pem");
    let keys = format!("signing_key_file = \"{}\"", k1.display());
    let (proxy, backstage) = stagedoor_then_backstage(port, &op.issuer, &keys, &[]).await;

    // 1. The stock oauth2Proxy provider signs alice in from Stagedoor's headers, and the token
    //    Backstage issues is accepted by the catalog.
    let (mut alice, done) = sign_in(proxy.addr(), "/", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let (user, ownership, backstage_token) =
        identity(&alice.get("/api/auth/oauth2Proxy/refresh").await);
    assert_eq!(user, "user:default/alice");
    assert!(
        ownership.contains(&"group:default/engineering".to_string()),
        "{ownership:?}"
    );
    let bearer = format!("Bearer {backstage_token}");
    let users = alice
        .send(
            "GET",
            "/api/catalog/entities?filter=kind=user",
            &[("authorization", &bearer)],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    assert!(users.body.contains("\"alice\""), "{}", users.body);
    let info = alice
        .send(
            "GET",
            "/api/auth/v1/userinfo",
            &[("authorization", &bearer)],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        json(&info.body)["claims"]["sub"],
        "user:default/alice",
        "{}",
        info.body
    );

    // 2. Without a session Stagedoor answers and Backstage never sees the call; bob cannot
    //    pass as alice by sending her headers.
    let anonymous = Browser::new(proxy.addr())
        .get("/api/auth/oauth2Proxy/refresh")
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.body.contains("\"sign_in\""),
        "Stagedoor's answer: {}",
        anonymous.body
    );
    let (mut bob, done) = sign_in(proxy.addr(), "/", "bob").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let forged = [
        ("x-forwarded-user", "alice"),
        ("x-forwarded-email", "alice@example.com"),
        ("x_forwarded_user", "alice"),
        ("x-stagedoor-jwt-assertion", "forged"),
    ];
    let (user, _, _) = identity(
        &bob.send(
            "GET",
            "/api/auth/oauth2Proxy/refresh",
            &forged,
            bytes::Bytes::new(),
        )
        .await,
    );
    assert_eq!(user, "user:default/bob");

    // 3. The verifying module signs alice in from the signed token alone; Backstage itself
    //    refuses tokens signed by another key, expired, or for another audience.
    let (user, ownership, _) = identity(&alice.get("/api/auth/stagedoor/refresh").await);
    assert_eq!(user, "user:default/alice");
    assert!(
        ownership.contains(&"group:default/backstage-admins".to_string()),
        "{ownership:?}"
    );
    let other = dir.path().join("other.pem");
    let cases = [
        (
            "valid, signed with Stagedoor's key",
            token(&k1, &public, "backstage", 300),
            StatusCode::OK,
        ),
        (
            "another key",
            token(&other, &public, "backstage", 300),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            token(&k1, &public, "backstage", -120),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another audience",
            token(&k1, &public, "grafana", 300),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another issuer",
            token(&k1, "http://evil.test", "backstage", 300),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, token, want) in &cases {
        assert_eq!(
            direct_stagedoor_sign_in(&backstage, token).await,
            *want,
            "{what}"
        );
    }
    proxy.shutdown().await;
    drop(backstage);

    // 4. Rotation: a second key signs, the first is still published, so tokens it signed keep
    //    verifying; once it is removed they no longer do.
    let k2 = dir.path().join("k2.pem");
    let old_token = token(&k1, &public, "backstage", 300);
    let keys = format!(
        "signing_key_file = \"{}\"\nprevious_key_files = [\"{}\"]",
        k2.display(),
        k1.display()
    );
    let (proxy, backstage) = stagedoor_then_backstage(port, &op.issuer, &keys, &[]).await;
    let mut alice = Browser {
        addr: proxy.addr(),
        ..alice
    };
    let (user, _, _) = identity(&alice.get("/api/auth/stagedoor/refresh").await);
    assert_eq!(
        user, "user:default/alice",
        "a token from the new key verifies"
    );
    let jwks = json(
        &Browser::new(proxy.addr())
            .get("/.well-known/jwks.json")
            .await
            .body,
    );
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        direct_stagedoor_sign_in(&backstage, &old_token).await,
        StatusCode::OK
    );
    proxy.shutdown().await;
    drop(backstage);

    let keys = format!("signing_key_file = \"{}\"", k2.display());
    let (proxy, backstage) = stagedoor_then_backstage(port, &op.issuer, &keys, &[]).await;
    let mut alice = Browser {
        addr: proxy.addr(),
        ..alice
    };
    assert_eq!(
        direct_stagedoor_sign_in(&backstage, &old_token).await,
        StatusCode::UNAUTHORIZED,
        "the removed key's tokens are refused"
    );
    let (user, _, _) = identity(&alice.get("/api/auth/stagedoor/refresh").await);
    assert_eq!(user, "user:default/alice");
}

/// A P-256 key pair in `dir` as Backstage's static key store reads it: `private.pem` (PKCS#8,
/// mode 0600) and `public.pem` (SPKI).
fn backstage_keys(dir: &Path) {
    let script = "openssl ecparam -name prime256v1 -genkey -noout \
                  | openssl pkcs8 -topk8 -nocrypt -out private.pem \
                  && openssl ec -in private.pem -pubout -out public.pem 2>/dev/null \
                  && chmod 600 private.pem";
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "openssl made the keys");
}

/// A user token in Backstage's format for alice, signed with `key` under `kid`.
fn backstage_token(key: &Path, kid: &str, issuer: &str, lifetime: i64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("vnd.backstage.user".into());
    header.kid = Some(kid.into());
    let now = stagedoor::session::now() as i64;
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": "user:default/alice",
        "ent": ["user:default/alice"],
        "aud": "backstage",
        "iat": now - 700,
        "exp": now + lifetime,
    });
    let pem = std::fs::read(key).unwrap();
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn stagedoor_injects_user_tokens_that_backstage_itself_accepts() {
    stagedoor::install_crypto_provider();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let op = OpenIdProvider::start(&format!("{public}/oauth2/callback"), 3600);
    let dir = tempfile::tempdir().unwrap();
    backstage_keys(dir.path());
    let key_dir = dir.path().to_str().unwrap();
    let backstage_port = free_port();
    let issuer = format!("http://127.0.0.1:{backstage_port}/api/auth");
    let private = dir.path().join("private.pem");
    let settings = format!(
        "[backstage]\nkey_file = \"{}\"\nkey_id = \"stagedoor-1\"\nissuer = \"{issuer}\"",
        private.display()
    );
    let backstage_addr = SocketAddr::from(([127, 0, 0, 1], backstage_port));
    let proxy = start(stagedoor(port, backstage_addr, &op.issuer, &settings)).await;
    let backstage = Backstage::start_on(
        backstage_port,
        &public,
        &[
            ("STATIC_KEY_DIR", key_dir),
            ("STATIC_KEY_ID", "stagedoor-1"),
        ],
    );

    // 1. A plain API call, no Authorization: Backstage serves it as alice.
    let (mut alice, done) = sign_in(proxy.addr(), "/", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let users = alice.get("/api/catalog/entities?filter=kind=user").await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    assert!(users.body.contains("\"alice\""), "{}", users.body);
    // The principal as every backend plugin sees it, for a user who never signed in through
    // Backstage: the ownership refs come from the token's `ent`.
    let me = json(&alice.get("/api/whoami").await.body);
    assert_eq!(me["userEntityRef"], "user:default/alice", "{me}");
    let ownership = me["ownershipEntityRefs"].to_string();
    assert!(
        ownership.contains("group:default/engineering"),
        "{ownership}"
    );

    // The identity proof is right: the limited token Backstage derives from it for its
    // cookie verifies against Backstage's own keys.
    let cookie = alice.get("/api/catalog/.backstage/auth/v1/cookie").await;
    assert_eq!(cookie.status, StatusCode::OK, "{}", cookie.body);
    let limited = alice.jar["backstage-auth"].clone();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(
        &Browser::new(backstage.addr)
            .get("/api/auth/.well-known/jwks.json")
            .await
            .body,
    )
    .unwrap();
    let jwk = jwks
        .find("stagedoor-1")
        .expect("Backstage publishes the static key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(
        &limited,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("the limited user token verifies")
    .claims;
    assert_eq!(claims["sub"], "user:default/alice");

    // 2. A request that carries a Backstage token keeps it: bob sending alice's token is alice
    //    to Backstage (his own would say bob).
    let (_, _, alice_token) = identity(&alice.get("/api/auth/oauth2Proxy/refresh").await);
    let (mut bob, done) = sign_in(proxy.addr(), "/", "bob").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let own = json(&bob.get("/api/whoami").await.body);
    assert_eq!(own["userEntityRef"], "user:default/bob");
    let kept = bob
        .send(
            "GET",
            "/api/whoami",
            &[("authorization", &format!("Bearer {alice_token}"))],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        json(&kept.body)["userEntityRef"],
        "user:default/alice",
        "{}",
        kept.body
    );

    // 3. Backstage refuses tokens from another key, with another kid, or expired.
    let other = tempfile::tempdir().unwrap();
    backstage_keys(other.path());
    let cases = [
        (
            "valid",
            backstage_token(&private, "stagedoor-1", &issuer, 600),
            StatusCode::OK,
        ),
        (
            "another key",
            backstage_token(
                &other.path().join("private.pem"),
                "stagedoor-1",
                &issuer,
                600,
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "another kid",
            backstage_token(&private, "stagedoor-2", &issuer, 600),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            backstage_token(&private, "stagedoor-1", &issuer, -60),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, token, want) in &cases {
        let status = Browser::new(backstage.addr)
            .send(
                "GET",
                "/api/catalog/entities?filter=kind=user",
                &[("authorization", &format!("Bearer {token}"))],
                bytes::Bytes::new(),
            )
            .await
            .status;
        assert_eq!(status, *want, "{what}");
    }

    // 4. No session: Stagedoor answers, nothing is injected, Backstage never sees it.
    let anonymous = Browser::new(proxy.addr())
        .get("/api/catalog/entities")
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.body.contains("\"sign_in\""), "{}", anonymous.body);
}
