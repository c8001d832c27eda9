//! Sign-in with the development provider: the whole flow over HTTP, hop by hop.

use http::StatusCode;

use crate::support::{Browser, Upstream, dev_config, header_map, start};

/// Signs in as `user` starting from `path`; returns the browser and where it was sent back to.
pub(crate) async fn sign_in(
    addr: std::net::SocketAddr,
    path: &str,
    user: &str,
) -> (Browser, String) {
    let (browser, done) = sign_in_page(addr, path, user).await;
    (browser, done.location().to_string())
}

/// Starts a sign-in with the return address `rd` and submits the development form as `user`;
/// returns the form's answer, whatever it is.
pub(crate) async fn dev_sign_in_with_rd(
    browser: &mut Browser,
    rd: &str,
    user: &str,
) -> crate::support::Page {
    let encoded: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let started = browser.get(&format!("/oauth2/start?rd={encoded}")).await;
    assert_eq!(started.status, StatusCode::FOUND, "rd={rd:?}");
    let form = browser.get(started.location()).await;
    let state = form
        .body
        .split("name=\"state\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no sign-in form for rd={rd:?}: {}", form.body))
        .to_string();
    browser
        .post_form("/oauth2/dev", &[("state", &state), ("user", user)])
        .await
}

/// As [`sign_in`], returning the final response of the sign-in form.
async fn sign_in_page(
    addr: std::net::SocketAddr,
    path: &str,
    user: &str,
) -> (Browser, crate::support::Page) {
    let mut browser = Browser::new(addr);
    let protected = browser.get(path).await;
    assert_eq!(protected.status, StatusCode::FOUND);
    let start = browser.get(protected.location()).await;
    assert_eq!(start.status, StatusCode::FOUND, "{}", start.body);
    assert!(
        start.location().starts_with("/oauth2/dev?state="),
        "{}",
        start.location()
    );
    let state = start
        .location()
        .trim_start_matches("/oauth2/dev?state=")
        .to_string();
    let form = browser.get(start.location()).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(user), "{}", form.body);
    let state = form_urlencoded::parse(format!("s={state}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let done = browser
        .post_form("/oauth2/dev", &[("state", &state), ("user", user)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    (browser, done)
}

#[tokio::test]
async fn browser_is_sent_to_sign_in_and_back_to_the_exact_url() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let mut anonymous = Browser::new(proxy.addr());
    let page = anonymous
        .get("/catalog/default?filter=kind%3Duser&x=1")
        .await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(
        page.location(),
        "/oauth2/start?rd=%2Fcatalog%2Fdefault%3Ffilter%3Dkind%253Duser%26x%3D1"
    );
    assert!(
        up.seen().is_empty(),
        "an anonymous request reached the upstream"
    );

    let (mut browser, back) = sign_in(
        proxy.addr(),
        "/catalog/default?filter=kind%3Duser&x=1",
        "alice@example.com",
    )
    .await;
    assert_eq!(back, "/catalog/default?filter=kind%3Duser&x=1");
    let session_cookie = browser
        .jar
        .get("_stagedoor")
        .expect("session cookie")
        .clone();
    assert!(
        !browser.jar.contains_key("_stagedoor_csrf"),
        "sign-in state is cleared"
    );

    browser.jar.insert("backstage-theme".into(), "dark".into());
    let page = browser
        .send(
            "GET",
            &back,
            &[
                ("x-forwarded-email", "mallory@evil.example"),
                ("x_forwarded_user", "mallory"),
            ],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "web"));
    let seen = header_map(&up.last().headers);
    assert_eq!(seen["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen["x-forwarded-user"], "alice@example.com", "the subject");
    assert_eq!(seen["x-forwarded-preferred-username"], "alice");
    assert_eq!(seen["x-forwarded-groups"], "engineering,admins");
    assert!(
        !seen.contains_key("x_forwarded_user"),
        "forged header passed: {seen:?}"
    );
    assert_eq!(
        seen["cookie"], "backstage-theme=dark",
        "the session cookie must not reach the upstream"
    );
    assert!(!seen["cookie"].contains(&session_cookie));
}

#[tokio::test]
async fn session_cookie_has_safe_attributes() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let mut browser = Browser::new(proxy.addr());
    let start_page = browser.get("/oauth2/start").await;
    let csrf = start_page.set_cookies().join("\n");
    assert!(
        csrf.contains("_stagedoor_csrf=")
            && csrf.contains("HttpOnly")
            && csrf.contains("SameSite=Lax"),
        "{csrf}"
    );
    let (_, done) = sign_in_page(proxy.addr(), "/", "alice@example.com").await;
    let set = done.set_cookies();
    let session = set
        .iter()
        .find(|c| c.starts_with("_stagedoor="))
        .expect("session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(
            session.contains(attribute),
            "{attribute} missing: {session}"
        );
    }
    assert!(
        !session.contains("alice"),
        "the session is readable: {session}"
    );
    assert!(
        set.iter().any(|c| c.starts_with("_stagedoor_csrf=;")),
        "{set:?}"
    );
}

#[tokio::test]
async fn api_requests_get_401_json_never_a_redirect() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let mut browser = Browser::new(proxy.addr());
    for (method, path, headers) in [
        ("GET", "/api/catalog/entities", vec![]),
        ("GET", "/catalog", vec![("accept", "application/json")]),
        (
            "GET",
            "/catalog",
            vec![("x-requested-with", "XMLHttpRequest")],
        ),
        ("POST", "/catalog", vec![]),
    ] {
        let page = browser
            .send(method, path, &headers, bytes::Bytes::new())
            .await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} {headers:?}"
        );
        assert_eq!(page.location(), "");
        assert_eq!(page.headers["content-type"], "application/json");
        let json: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        assert_eq!(json["sign_in"], "/oauth2/start");
    }
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn forged_or_missing_state_is_refused() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let mut browser = Browser::new(proxy.addr());
    browser.get("/oauth2/start").await;
    let page = browser
        .post_form(
            "/oauth2/dev",
            &[("state", "forged"), ("user", "alice@example.com")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Sign-in expired"));
    assert!(!browser.jar.contains_key("_stagedoor"));

    // Without the sign-in cookie (another browser), even the right state is refused.
    let mut other = Browser::new(proxy.addr());
    let start_page = Browser::new(proxy.addr()).get("/oauth2/start").await;
    let state = start_page
        .location()
        .trim_start_matches("/oauth2/dev?state=")
        .to_string();
    let page = other
        .post_form(
            "/oauth2/dev",
            &[("state", &state), ("user", "alice@example.com")],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!other.jar.contains_key("_stagedoor"));
}

#[tokio::test]
async fn hostile_return_addresses_end_at_the_root() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(
        &up,
        "[auth]\nallowed_redirect_hosts = [\"backstage.example.com\"]\n",
    ))
    .await;
    for (rd, want) in [
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("https://backstage.example.com.evil.example/", "/"),
        (
            "https://backstage.example.com/catalog",
            "https://backstage.example.com/catalog",
        ),
    ] {
        let mut browser = Browser::new(proxy.addr());
        let done = dev_sign_in_with_rd(&mut browser, rd, "alice@example.com").await;
        assert_eq!(done.location(), want, "rd={rd}");
    }
}

#[tokio::test]
async fn sign_out_userinfo_and_foreign_sessions() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let (mut browser, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;

    let info = browser.get("/oauth2/userinfo").await;
    let json: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(json["email"], "alice@example.com");
    assert_eq!(json["email_verified"], true);
    assert_eq!(json["provider"], "dev");

    // The same cookie presented to a Stagedoor with another secret is no session at all.
    let other =
        start(dev_config(&up, "").tap_secret("ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY=")).await;
    let mut stranger = Browser::new(other.addr());
    stranger.jar = browser.jar.clone();
    assert_eq!(stranger.get("/").await.status, StatusCode::FOUND);

    let out = browser.get("/oauth2/sign_out").await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.body.contains("Signed out"));
    assert!(
        browser.jar.is_empty(),
        "cookies left after sign-out: {:?}",
        browser.jar
    );
    assert_eq!(browser.get("/").await.status, StatusCode::FOUND);
    assert_eq!(
        browser.get("/oauth2/userinfo").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn several_providers_show_a_chooser() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(
        &up,
        "[[providers]]\nkind = \"dev\"\nid = \"contractors\"\ndisplay_name = \"Contractor sign-in\"\nusers = [{ email = \"carol@example.net\" }]\n",
    ))
    .await;
    let mut browser = Browser::new(proxy.addr());
    let chooser = browser.get("/oauth2/start?rd=%2Fdocs").await;
    assert_eq!(chooser.status, StatusCode::OK);
    assert!(chooser.body.contains("Sign in with Development sign-in"));
    assert!(
        chooser
            .body
            .contains("href=\"/oauth2/start?provider=contractors&amp;rd=%2Fdocs\""),
        "{}",
        chooser.body
    );
    let picked = browser
        .get("/oauth2/start?provider=contractors&rd=%2Fdocs")
        .await;
    let form = browser.get(picked.location()).await;
    assert!(form.body.contains("carol@example.net") && !form.body.contains("alice@example.com"));
    let unknown = browser.get("/oauth2/start?provider=nope").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unauthenticated_websocket_upgrades_are_never_tunneled() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/api/signals", proxy.addr()))
        .await
        .expect_err("no session, no tunnel");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(up.seen().is_empty());
}

trait TapSecret {
    fn tap_secret(self, secret: &str) -> Self;
}

impl TapSecret for stagedoor::Config {
    fn tap_secret(mut self, secret: &str) -> Self {
        self.session.cookie_secret = Some(stagedoor::secret::Secret::new(secret));
        self
    }
}

#[tokio::test]
async fn sessions_from_providers_no_longer_configured_are_no_session() {
    let up = Upstream::named("web").await;
    let proxy = start(dev_config(&up, "")).await;
    let (browser, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    // Same secret, but the provider that signed alice in is gone from the configuration.
    let mut renamed = dev_config(&up, "");
    if let stagedoor::config::ProviderConfig::Dev(dev) = &mut renamed.providers[0] {
        dev.id = "dev-new".into();
    }
    let other = start(renamed).await;
    let mut same = Browser::new(other.addr());
    same.jar = browser.jar.clone();
    assert_eq!(same.get("/").await.status, StatusCode::FOUND);
}

#[tokio::test]
async fn secure_cookies_carry_the_host_prefix() {
    let up = Upstream::named("web").await;
    let mut config = dev_config(&up, "");
    config.session.cookie_secure = true;
    let proxy = start(config).await;
    let page = Browser::new(proxy.addr()).get("/oauth2/start").await;
    let csrf = page.set_cookies().join("\n");
    assert!(csrf.starts_with("__Host-_stagedoor_csrf="), "{csrf}");
    assert!(
        csrf.contains("Secure") && csrf.contains("Path=/") && !csrf.contains("Domain"),
        "{csrf}"
    );
}

#[tokio::test]
async fn policy_routes_public_paths_groups_and_path_confusion() {
    let up = Upstream::named("web").await;
    let routes = r#"
        [[policy.routes]]
        path_prefix = "/healthz"
        public = true
        [[policy.routes]]
        path_prefix = "/admin"
        groups = ["admins"]
        [[policy.routes]]
        path_prefix = "/vault"
        groups = ["nobody-has-this"]
    "#;
    let proxy = start(dev_config(&up, routes)).await;
    let mut anonymous = Browser::new(proxy.addr());

    // A public route needs no session, and a forged identity does not ride along.
    let page = anonymous
        .send(
            "GET",
            "/healthz/live",
            &[("x-forwarded-email", "mallory@example.com")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!header_map(&up.last().headers).contains_key("x-forwarded-email"));

    // No spelling of a private path borrows the public route's rule.
    let before = up.seen().len();
    for path in [
        "/healthz/../admin",
        "/healthz%2f..%2fadmin",
        "//admin",
        "/admin?/healthz",
        "/healthz/%2e%2e/admin",
    ] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, StatusCode::FOUND, "{path} was let through");
    }
    assert_eq!(
        up.seen().len(),
        before,
        "a confused path reached the upstream"
    );

    // Group rules per route; the upstream sees the normalized path the policy judged.
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    let page = alice.get("/admin/./settings//x/../y").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(up.last().uri, "/admin/settings/y");
    let denied = alice.get("/vault/secrets").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.body.contains("alice@example.com") && denied.body.contains("Sign out"));
    let api = alice
        .send(
            "GET",
            "/vault/secrets",
            &[("accept", "application/json")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(api.headers["content-type"], "application/json");
}
