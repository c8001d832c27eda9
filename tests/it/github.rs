//! GitHub sign-in against an in-process fake of GitHub's OAuth and REST API (there is no
//! GitHub here): verified-email selection and org and team lookups.

use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

use crate::support::{Browser, Upstream, free_port, gate_config, header_map, start};

/// The fake's answers; `verified` switches the user's verified addresses on and off.
async fn fake_github(verified: Arc<Mutex<bool>>, seen_verifier: Arc<Mutex<bool>>) -> Upstream {
    Upstream::start(move |req| {
        let verified = *verified.lock().unwrap();
        let seen_verifier = Arc::clone(&seen_verifier);
        async move {
            let path = req.uri().path().to_string();
            let authorized = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer gho_test");
            let has_agent = req.headers().contains_key("user-agent");
            let body = if path == "/login/oauth/access_token" {
                let form = req.into_body().collect().await.unwrap().to_bytes();
                let form = String::from_utf8_lossy(&form).to_string();
                *seen_verifier.lock().unwrap() = form.contains("code_verifier=");
                if form.contains("code=good-code") {
                    json!({"access_token": "gho_test", "token_type": "bearer", "scope": "read:user,user:email,read:org"})
                } else {
                    json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})
                }
            } else if !authorized || !has_agent {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(stagedoor::full("{\"message\":\"Requires authentication\"}"))
                    .unwrap();
            } else {
                match path.as_str() {
                    "/api/v3/user" => json!({"id": 583231, "login": "octocat", "name": "The Octocat"}),
                    "/api/v3/user/emails" => json!([
                        {"email": "unverified@example.com", "primary": false, "verified": false},
                        {"email": "old@example.com", "primary": false, "verified": verified},
                        {"email": "octocat@example.com", "primary": true, "verified": verified},
                    ]),
                    "/api/v3/user/orgs" => json!([{"login": "acme"}, {"login": "opensource"}]),
                    "/api/v3/user/teams" => json!([
                        {"slug": "platform", "organization": {"login": "acme"}},
                        {"slug": "docs", "organization": {"login": "opensource"}},
                    ]),
                    _ => json!({"message": "Not Found"}),
                }
            };
            let mut response = Response::new(stagedoor::full(body.to_string()));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
    })
    .await
}

async fn github_sign_in(
    code: &str,
    verified: bool,
) -> (StatusCode, Option<serde_json::Value>, Upstream, bool) {
    let flag = Arc::new(Mutex::new(verified));
    let seen_verifier = Arc::new(Mutex::new(false));
    let github = fake_github(Arc::clone(&flag), Arc::clone(&seen_verifier)).await;
    let up = Upstream::named("web").await;
    let port = free_port();
    let provider = format!(
        "[[providers]]\nkind = \"github\"\nclient_id = \"Iv1.test\"\nclient_secret = \"shh\"\nbase_url = \"{}\"\n",
        github.url()
    );
    let policy = format!("allow_unverified_email = {}", !verified);
    let config = gate_config(port, &up, &policy, &provider);
    let proxy = start(config).await;
    let mut browser = Browser::new(proxy.addr());
    let start_page = browser.get("/oauth2/start?rd=%2Fdocs").await;
    let location: http::Uri = start_page.location().parse().unwrap();
    assert_eq!(location.path(), "/login/oauth/authorize");
    let query = location.query().unwrap().to_string();
    let state = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    assert!(
        query.contains("scope=read%3Auser+user%3Aemail+read%3Aorg"),
        "{query}"
    );
    let done = browser
        .get(&format!("/oauth2/callback?code={code}&state={state}"))
        .await;
    let info = (done.status == StatusCode::SEE_OTHER)
        .then(|| (done.location().to_string(), browser.jar.clone()));
    let mut userinfo = None;
    if let Some((location, jar)) = info {
        assert_eq!(location, "/docs");
        let mut signed_in = Browser::new(proxy.addr());
        signed_in.jar = jar;
        assert_eq!(signed_in.get("/docs").await.status, StatusCode::OK);
        userinfo = serde_json::from_str(&signed_in.get("/oauth2/userinfo").await.body).ok();
    }
    let verifier_sent = *seen_verifier.lock().unwrap();
    (done.status, userinfo, up, verifier_sent)
}

#[tokio::test]
async fn github_user_emails_orgs_and_teams() {
    let (status, info, up, verifier_sent) = github_sign_in("good-code", true).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        verifier_sent,
        "the PKCE verifier was not sent to the token endpoint"
    );
    let info = info.unwrap();
    assert_eq!(
        info["email"], "octocat@example.com",
        "the primary verified address"
    );
    assert_eq!(info["email_verified"], true);
    assert_eq!(info["preferred_username"], "octocat");
    assert_eq!(
        info["groups"],
        json!(["acme", "opensource", "acme/platform", "opensource/docs"])
    );
    let seen = header_map(&up.last().headers);
    assert_eq!(
        seen["x-forwarded-user"], "583231",
        "GitHub's stable user id"
    );
    assert_eq!(seen["x-forwarded-preferred-username"], "octocat");
    assert_eq!(
        seen["x-forwarded-groups"],
        "acme,opensource,acme/platform,opensource/docs"
    );
}

#[tokio::test]
async fn github_without_a_verified_email_is_marked_unverified() {
    // Signs in only because this configuration explicitly allows unverified addresses.
    let (status, info, _, _) = github_sign_in("good-code", false).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let info = info.unwrap();
    assert_eq!(info["email"], "octocat@example.com");
    assert_eq!(info["email_verified"], false);
}

#[tokio::test]
async fn github_refusing_the_code_is_a_failed_sign_in() {
    let (status, info, up, _) = github_sign_in("stale-code", true).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(info.is_none());
    assert!(up.seen().is_empty());
}
