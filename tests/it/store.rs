//! The Redis session store, with a real `redis-server`: replicas share sessions, revocation
//! reaches every replica, Redis going away fails closed and recovers by itself, and a shared
//! session is refreshed by one replica only.

use std::time::Duration;

use http::StatusCode;
use stagedoor::Config;
use stagedoor::config::SessionStore;
use stagedoor::secret::Secret;

use crate::signin::sign_in;
use crate::support::{
    Browser, OpenIdProvider, Redis, Upstream, dev_config, free_port, gate_config, header_map, start,
};

fn stored(mut config: Config, redis: &Redis) -> Config {
    config.session.store = SessionStore::Redis;
    config.session.redis_url = Some(Secret::new(redis.url()));
    config
}

/// The same cookies, sent to another replica.
fn at(browser: &Browser, addr: std::net::SocketAddr) -> Browser {
    let mut other = Browser::new(addr);
    other.jar = browser.jar.clone();
    other
}

#[tokio::test]
async fn replicas_share_sessions_and_revocation_reaches_all_of_them() {
    let up = Upstream::named("web").await;
    let redis = Redis::start();
    // bob's address is unverified; he is let in as a second user.
    let config = || {
        let mut config = stored(dev_config(&up, ""), &redis);
        config.policy.allow_unverified_email = true;
        config
    };
    let a = start(config()).await;
    let b = start(config()).await;

    let (alice, _) = sign_in(a.addr(), "/", "alice@example.com").await;
    let ticket = alice.jar.get("_stagedoor").expect("the session cookie");
    assert!(
        ticket.len() < 200,
        "the cookie holds a ticket, not the session: {ticket}"
    );
    let mut on_b = at(&alice, b.addr());
    assert_eq!(on_b.get("/from-b").await.body, "web");
    assert_eq!(
        header_map(&up.last().headers)["x-forwarded-email"],
        "alice@example.com"
    );

    // Signing out on A ends the session everywhere: a copy of the cookie is worth nothing.
    let copied = at(&alice, b.addr());
    let mut on_a = at(&alice, a.addr());
    on_a.get("/oauth2/sign_out").await;
    let mut replay = copied;
    assert_eq!(replay.get("/").await.status, StatusCode::FOUND);

    // The operator revokes a user on A's admin listener; B refuses the session at once.
    let (alice, _) = sign_in(b.addr(), "/", "alice@example.com").await;
    let admin = a.admin_addr().unwrap();
    let revoked = Browser::new(admin)
        .send(
            "POST",
            "/sessions/revoke?provider=dev&subject=alice@example.com",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body, r#"{"revoked":1}"#);
    assert_eq!(
        at(&alice, b.addr()).get("/").await.status,
        StatusCode::FOUND
    );

    // "Sign out everywhere" from one browser ends the user's sessions in the others.
    let (first, _) = sign_in(a.addr(), "/", "alice@example.com").await;
    let (second, _) = sign_in(b.addr(), "/", "alice@example.com").await;
    let (bob, _) = sign_in(b.addr(), "/", "bob@example.com").await;
    at(&first, a.addr())
        .get("/oauth2/sign_out?everywhere=true")
        .await;
    assert_eq!(
        at(&second, b.addr()).get("/").await.status,
        StatusCode::FOUND
    );
    assert_eq!(
        at(&bob, a.addr()).get("/").await.status,
        StatusCode::OK,
        "bob is not alice"
    );
}

#[tokio::test]
async fn redis_going_away_fails_closed_and_recovers() {
    let up = Upstream::named("web").await;
    let mut redis = Redis::start();
    let proxy = start(stored(dev_config(&up, ""), &redis)).await;
    let (mut alice, _) = sign_in(proxy.addr(), "/", "alice@example.com").await;
    assert_eq!(alice.get("/").await.status, StatusCode::OK);
    let seen = up.seen().len();

    redis.stop();
    let page = alice
        .send(
            "GET",
            "/api/x",
            &[("accept", "application/json")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert_eq!(alice.get("/").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        up.seen().len(),
        seen,
        "nothing passed while sessions could not be checked"
    );

    redis.restart();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        status = alice.get("/").await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "the same session works once Redis is back"
    );
    let metrics = Browser::new(proxy.admin_addr().unwrap())
        .get("/metrics")
        .await
        .body;
    assert!(
        !metrics.contains("stagedoor_session_store_errors_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_shared_session_is_refreshed_by_one_replica() {
    let up = Upstream::named("web").await;
    let redis = Redis::start();
    let port = free_port();
    // Access tokens live 5 s, inside the refresh margin: every request needs a refresh, and
    // the provider accepts each rotated refresh token once.
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 5);
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nid = \"corp\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\nscopes = [\"openid\", \"email\", \"profile\", \"offline_access\"]\n",
        op.issuer
    );
    let a = start(stored(gate_config(port, &up, "", &provider), &redis)).await;
    let mut config_b = stored(gate_config(port, &up, "", &provider), &redis);
    config_b.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let b = start(config_b).await;

    let (alice, _) = crate::oidc::sign_in(a.addr(), "/", "alice").await;
    let requests = (0..8).map(|i| {
        let mut tab = at(&alice, if i % 2 == 0 { a.addr() } else { b.addr() });
        async move { tab.get(&format!("/tab/{i}")).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "a replica spent a used refresh token: {statuses:?}"
    );
    // The session goes on refreshing with the rotated token, on either replica.
    assert_eq!(
        at(&alice, b.addr()).get("/again").await.status,
        StatusCode::OK
    );
    assert_eq!(
        at(&alice, a.addr()).get("/and-again").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn back_channel_logout_from_the_provider_ends_the_session_on_every_replica() {
    let up = Upstream::named("web").await;
    let redis = Redis::start();
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nid = \"corp\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\nscopes = [\"openid\", \"email\", \"profile\"]\n",
        op.issuer
    );
    let a = start(stored(gate_config(port, &up, "", &provider), &redis)).await;
    let mut config_b = stored(gate_config(port, &up, "", &provider), &redis);
    config_b.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let b = start(config_b).await;

    let (mut alice, _) = crate::oidc::sign_in(a.addr(), "/", "alice").await;
    let (other, _) = crate::oidc::sign_in(a.addr(), "/", "alice").await;
    assert_eq!(at(&alice, b.addr()).get("/").await.status, StatusCode::OK);

    // alice ends her session at the provider itself (its end-session page and confirmation
    // form); the provider tells Stagedoor over the back channel.
    let confirm = alice.get(&format!("{}/session/end", op.issuer)).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let field = |name: &str| {
        confirm
            .body
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {}", confirm.body))
            .to_string()
    };
    let xsrf = field("xsrf");
    let done = alice
        .post_form(
            &format!("{}/session/end/confirm", op.issuer),
            &[("xsrf", &xsrf), ("logout", "yes")],
        )
        .await;
    assert!(
        done.status.is_redirection() || done.status.is_success(),
        "{}",
        done.status
    );

    let mut ended = false;
    for _ in 0..50 {
        if at(&alice, b.addr()).get("/").await.status == StatusCode::FOUND {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the session ended on the other replica");
    assert_eq!(
        at(&alice, a.addr()).get("/").await.status,
        StatusCode::FOUND
    );
    // Only the provider session that ended: alice's other browser is still signed in.
    assert_eq!(at(&other, b.addr()).get("/").await.status, StatusCode::OK);

    // A forged logout token is refused with 400.
    let forged = Browser::new(a.addr())
        .post_form(
            "/oauth2/backchannel_logout",
            &[("logout_token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.body);
}

/// Signs in as `user` with the development form and returns the form's answer.
async fn dev_sign_in(addr: std::net::SocketAddr, user: &str) -> (Browser, crate::support::Page) {
    let mut browser = Browser::new(addr);
    let done = crate::signin::dev_sign_in_with_rd(&mut browser, "/", user).await;
    (browser, done)
}

#[tokio::test]
async fn sessions_too_large_for_cookies_fit_in_redis() {
    let up = Upstream::named("web").await;
    let redis = Redis::start();
    // An Entra ID-sized group list: far more than six 4 KB cookies hold.
    let many_groups = |mut config: Config| {
        if let Some(stagedoor::config::ProviderConfig::Dev(dev)) = config.providers.first_mut() {
            dev.users[0].groups = (0..1500)
                .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
                .collect();
        }
        config
    };
    let cookies = start(many_groups(dev_config(&up, ""))).await;
    let (_, page) = dev_sign_in(cookies.addr(), "alice@example.com").await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(page.body.contains("Session too large"), "{}", page.body);

    let stored_proxy = start(stored(many_groups(dev_config(&up, "")), &redis)).await;
    let (mut alice, page) = dev_sign_in(stored_proxy.addr(), "alice@example.com").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(
        alice.jar["_stagedoor"].len() < 200,
        "only a ticket in the cookie"
    );
    let info: serde_json::Value =
        serde_json::from_str(&alice.get("/oauth2/userinfo").await.body).unwrap();
    assert_eq!(info["groups"].as_array().unwrap().len(), 1500);
}
