//! Sign-in against a real OpenID provider (`oidc-provider`, certified), through Stagedoor,
//! into a recording upstream.

use std::net::SocketAddr;

use http::StatusCode;
use stagedoor::Config;

use crate::support::{
    Browser, OpenIdProvider, Page, Upstream, free_port, gate_config, header_map, proxy_to, start,
};

fn oidc_config(port: u16, issuer: &str, upstream: &Upstream, extra: &str) -> Config {
    let provider = format!(
        r#"
        [[providers]]
        kind = "oidc"
        id = "corp"
        display_name = "Corp SSO"
        issuer = "{issuer}"
        client_id = "stagedoor"
        client_secret = "stagedoor-secret"
        scopes = ["openid", "email", "profile", "groups", "offline_access"]
        {extra}
        "#
    );
    gate_config(port, upstream, "", &provider)
}

/// Follows a sign-in from a protected `path` through the provider's login form as `login`.
/// Returns the browser and Stagedoor's final answer (the redirect back to `path`).
pub(crate) async fn sign_in(addr: SocketAddr, path: &str, login: &str) -> (Browser, Page) {
    let (mut browser, callback) = reach_callback(addr, path, login).await;
    let done = browser.get(&callback).await;
    (browser, done)
}

/// As [`sign_in`], up to the provider's redirect back to Stagedoor: returns the browser and the
/// callback URL, not yet visited.
async fn reach_callback(addr: SocketAddr, path: &str, login: &str) -> (Browser, String) {
    let mut browser = Browser::new(addr);
    let protected = browser.get(path).await;
    assert_eq!(protected.status, StatusCode::FOUND);
    let mut page = browser.get(protected.location()).await;
    // Stagedoor sends the browser to the provider, which shows its login form.
    for _ in 0..10 {
        if !page.status.is_redirection() {
            break;
        }
        let next = absolute(&page, &browser);
        page = browser.get(&next).await;
    }
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let action = page
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a login form")
        .to_string();
    let action = if action.starts_with("http://") {
        action
    } else {
        format!("{}{action}", browser.last_origin)
    };
    let mut page = browser
        .post_form(
            &action,
            &[("prompt", "login"), ("login", login), ("password", "any")],
        )
        .await;
    // Back through the provider to Stagedoor's callback, which answers with a redirect home.
    for _ in 0..10 {
        let next = absolute(&page, &browser);
        if next.starts_with(&format!("http://{addr}/oauth2/callback")) {
            return (browser, next);
        }
        assert!(
            page.status.is_redirection(),
            "{}: {}",
            page.status,
            page.body
        );
        page = browser.get(&next).await;
    }
    panic!("never reached the callback");
}

fn absolute(page: &Page, browser: &Browser) -> String {
    let location = page.location();
    if location.starts_with("http://") {
        location.to_string()
    } else {
        format!("{}{location}", browser.last_origin)
    }
}

#[tokio::test]
async fn sign_in_with_a_real_openid_provider() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;

    // An API call without a session gets 401 JSON, never a redirect to the provider.
    let api = Browser::new(proxy.addr())
        .send(
            "GET",
            "/api/catalog/entities",
            &[("accept", "application/json")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.location(), "");

    let (mut browser, done) = sign_in(proxy.addr(), "/catalog?kind=user", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/catalog?kind=user");
    assert!(browser.jar.keys().any(|k| k.starts_with("_stagedoor")));

    let page = browser.get("/catalog?kind=user").await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "web"));
    let seen = header_map(&up.last().headers);
    assert_eq!(seen["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen["x-forwarded-preferred-username"], "alice");
    assert_eq!(seen["x-forwarded-groups"], "engineering,backstage-admins");

    let info: serde_json::Value =
        serde_json::from_str(&browser.get("/oauth2/userinfo").await.body).unwrap();
    assert_eq!(info["provider"], "corp");
    assert_eq!(info["email_verified"], true);
    assert_eq!(info["name"], "Alice Liddell");
}

#[tokio::test]
async fn session_survives_a_restart() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;
    let (browser, _) = sign_in(proxy.addr(), "/", "alice").await;
    assert!(proxy.shutdown().await);

    let again = start(oidc_config(port, &op.issuer, &up, "")).await;
    let mut same = Browser::new(again.addr());
    same.jar = browser.jar.clone();
    let page = same.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        header_map(&up.last().headers)["x-forwarded-email"],
        "alice@example.com"
    );
}

#[tokio::test]
async fn forged_state_on_the_callback_is_refused() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;
    let mut browser = Browser::new(proxy.addr());
    let start_page = browser.get("/oauth2/start").await;
    assert!(
        start_page.location().starts_with(&op.issuer),
        "{}",
        start_page.location()
    );
    let forged = browser
        .get("/oauth2/callback?code=stolen&state=forged")
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    let refused = browser
        .get("/oauth2/callback?error=access_denied&error_description=%3Cscript%3E")
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.body.contains("<script>"));
    assert!(!browser.jar.contains_key("_stagedoor"));
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn replayed_foreign_and_reused_callbacks_are_refused() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;
    let addr = proxy.addr();
    let no_session = |b: &Browser| {
        !b.jar
            .keys()
            .any(|k| k.starts_with("_stagedoor") && !k.ends_with("_csrf"))
    };

    // Alice's callback works once.
    let (mut alice, callback) = reach_callback(addr, "/", "alice").await;
    let done = alice.get(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(!no_session(&alice));
    // Replayed: in the same browser (its sign-in state is spent) and in another one.
    let mut replay = Browser::new(addr);
    replay.jar = alice.jar.clone();
    replay.jar.retain(|k, _| k.ends_with("_csrf"));
    assert_eq!(replay.get(&callback).await.status, StatusCode::BAD_REQUEST);
    assert!(no_session(&replay));
    let mut stranger = Browser::new(addr);
    assert_eq!(
        stranger.get(&callback).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(no_session(&stranger));

    // Reused code: a fresh sign-in's genuine state, with the code alice already spent. The
    // provider refuses the code, and no session comes of it.
    let start_page = stranger.get("/oauth2/start?rd=/").await;
    let state = start_page
        .location()
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("a state")
        .to_string();
    let code = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .expect("a code")
        .to_string();
    let reused = stranger
        .get(&format!("/oauth2/callback?code={code}&state={state}"))
        .await;
    assert!(
        reused.status.is_client_error() || reused.status.is_server_error(),
        "{}",
        reused.status
    );
    assert!(no_session(&stranger));

    // Foreign: a callback (code and state) meant for one browser, opened in another that
    // started a sign-in of its own. Refused before the code is used: the first can finish.
    let (mut owner, owner_callback) = reach_callback(addr, "/", "alice").await;
    let mut other = Browser::new(addr);
    let started = other.get("/oauth2/start?rd=/").await;
    assert!(started.status.is_redirection());
    let foreign = other.get(&owner_callback).await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST);
    assert!(no_session(&other));
    let finished = owner.get(&owner_callback).await;
    assert_eq!(finished.status, StatusCode::SEE_OTHER);
    assert!(!no_session(&owner));

    // None of it reached the upstream.
    assert!(up.seen().is_empty(), "nothing forwarded during sign-in");
}

#[tokio::test]
async fn an_unreachable_provider_gets_a_clear_page_not_a_hang() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = start(oidc_config(port, &dead, &up, "")).await;
    let mut browser = Browser::new(proxy.addr());
    let page = browser.get("/oauth2/start").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.body.contains("Sign-in unavailable"));
}

#[tokio::test]
async fn expiring_access_tokens_are_refreshed_once_for_concurrent_requests() {
    let up = Upstream::named("web").await;
    let port = free_port();
    // Every access token is within the refresh margin, so every request with an old cookie
    // needs a refresh; the provider rotates refresh tokens and accepts each only once.
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 5);
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;
    let (browser, _) = sign_in(proxy.addr(), "/", "alice").await;

    let requests = (0..6).map(|i| {
        let mut tab = Browser::new(proxy.addr());
        tab.jar = browser.jar.clone();
        async move { tab.get(&format!("/tab/{i}")).await }
    });
    let pages = futures_util::future::join_all(requests).await;
    for page in &pages {
        assert_eq!(
            page.status,
            StatusCode::OK,
            "a tab was signed out: {}",
            page.location()
        );
        assert!(
            page.set_cookies()
                .iter()
                .any(|c| c.starts_with("_stagedoor=")),
            "the refreshed session is stored"
        );
    }

    // The refreshed session refreshes again with the rotated refresh token.
    let mut next = Browser::new(proxy.addr());
    next.jar = browser.jar.clone();
    next.get("/once-more").await;
    let page = next.get("/and-again").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        header_map(&up.last().headers)["x-forwarded-email"],
        "alice@example.com"
    );
}

/// A refreshed session on a response whose header lines would otherwise pass through as the
/// upstream wrote them (access log off): the session cookie joins the upstream's own cookie,
/// and `Cache-Control: private, no-store` replaces the upstream's.
#[tokio::test]
async fn a_refreshed_session_cookie_joins_an_upstream_response_unchanged_otherwise() {
    let up = Upstream::start(|_req| async {
        let mut response = http::Response::new(stagedoor::full("web"));
        let headers = response.headers_mut();
        headers.insert("cache-control", "public, max-age=60".parse().unwrap());
        headers.append("set-cookie", "upstream=1".parse().unwrap());
        headers.insert("x-upstream", "kept".parse().unwrap());
        response
    })
    .await;
    let port = free_port();
    // Every access token is within the refresh margin: each request refreshes the session.
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 5);
    let mut config = oidc_config(port, &op.issuer, &up, "");
    config.log.access_log = false;
    let proxy = start(config).await;
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice").await;
    let page = browser.get("/catalog").await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "web"));
    let cookies = page.set_cookies();
    assert!(
        cookies.iter().any(|c| c.starts_with("_stagedoor=")),
        "{cookies:?}"
    );
    assert!(cookies.iter().any(|c| c == "upstream=1"), "{cookies:?}");
    let cache: Vec<_> = page.headers.get_all("cache-control").iter().collect();
    assert_eq!(cache, ["private, no-store"]);
    assert_eq!(page.headers["x-upstream"], "kept");
    assert_eq!(page.headers.get_all("content-length").iter().count(), 1);
    // A response with nothing to add leaves as the upstream wrote it.
    let plain = proxy_to(&up).await;
    let page = Browser::new(plain.addr()).get("/").await;
    let cache: Vec<_> = page.headers.get_all("cache-control").iter().collect();
    assert_eq!(cache, ["public, max-age=60"]);
}

#[tokio::test]
async fn required_claims_are_enforced_from_the_id_token() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let config = oidc_config(
        port,
        &op.issuer,
        &up,
        "required_claims = { sub = \"alice\" }",
    );
    let proxy = start(config).await;
    let (browser, refused) = sign_in(proxy.addr(), "/", "bob").await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(refused.body.contains("Sign-in failed"));
    assert!(!browser.jar.contains_key("_stagedoor"));
    let (_, accepted) = sign_in(proxy.addr(), "/", "alice").await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_out_can_end_the_session_at_the_provider() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let proxy = start(oidc_config(
        port,
        &op.issuer,
        &up,
        "sign_out_at_provider = true",
    ))
    .await;
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice").await;

    let out = browser.get("/oauth2/sign_out").await;
    assert_eq!(out.status, StatusCode::FOUND);
    let location = out.location().to_string();
    assert!(
        location.starts_with(&format!("{}/session/end?", op.issuer)),
        "{location}"
    );
    assert!(location.contains("id_token_hint="), "{location}");
    assert!(
        location.contains(&format!(
            "post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Foauth2%2Fsign_out"
        )),
        "{location}"
    );
    assert!(
        !browser.jar.contains_key("_stagedoor"),
        "Stagedoor's session is cleared at once"
    );
    // The provider accepts the hint and asks to confirm (a bad hint would be a 400).
    let confirm = browser.get(&location).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm.body.to_lowercase().contains("sign"),
        "{}",
        confirm.body
    );
}

#[tokio::test]
async fn unverified_emails_and_other_domains_are_refused() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    // bob's address is not verified by the provider.
    let proxy = start(oidc_config(port, &op.issuer, &up, "")).await;
    let (browser, refused) = sign_in(proxy.addr(), "/", "bob").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("not verified"), "{}", refused.body);
    assert!(
        refused.body.contains("bob@example.com"),
        "the page says who is signed in"
    );
    assert!(!browser.jar.contains_key("_stagedoor"));
    proxy.shutdown().await;

    // alice is verified, but her domain is not the allowed one.
    let mut config = oidc_config(port, &op.issuer, &up, "");
    config.policy.email_domains = vec!["example.org".into()];
    let proxy = start(config).await;
    let (_, refused) = sign_in(proxy.addr(), "/", "alice").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("not allowed"), "{}", refused.body);
    assert!(up.seen().is_empty());
}
