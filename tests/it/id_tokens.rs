//! ID token verification: a small in-process identity provider mints the tokens each case
//! needs (forged, expired, wrong audience, ...) and Stagedoor must refuse every bad one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::{Response, StatusCode};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Browser, Upstream, free_port, gate_config, start};

const CLIENT_ID: &str = "stagedoor";

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap(); // P-256
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Self {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// What the fake provider publishes and answers; tests change it between sign-ins.
#[derive(Default)]
struct State {
    keys: Vec<Jwk>,
    id_token: String,
    access_token: String,
}

struct FakeIdp {
    issuer: String,
    state: Arc<Mutex<State>>,
    _server: Upstream,
}

impl FakeIdp {
    async fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let issuer_cell: Arc<Mutex<String>> = Arc::default();
        let (s, i) = (Arc::clone(&state), Arc::clone(&issuer_cell));
        let server = Upstream::start(move |req| {
            let state = Arc::clone(&s);
            let issuer = i.lock().unwrap().clone();
            async move {
                let body = match req.uri().path() {
                    "/.well-known/openid-configuration" => json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/authorize"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["ES256"],
                    }),
                    "/jwks" => serde_json::to_value(JwkSet {
                        keys: state.lock().unwrap().keys.clone(),
                    })
                    .unwrap(),
                    "/token" => {
                        let st = state.lock().unwrap();
                        json!({
                            "access_token": st.access_token,
                            "token_type": "Bearer",
                            "expires_in": 3600,
                            "id_token": st.id_token,
                        })
                    }
                    _ => json!({}),
                };
                let mut response = Response::new(stagedoor::full(body.to_string()));
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                response
            }
        })
        .await;
        let issuer = server.url();
        *issuer_cell.lock().unwrap() = issuer.clone();
        Self {
            issuer,
            state,
            _server: server,
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn answer(&self, id_token: String) {
        let mut st = self.state.lock().unwrap();
        st.id_token = id_token;
        st.access_token = "access-token-1".into();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a correct ID token for this sign-in would carry.
fn good_claims(issuer: &str, nonce: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "alice",
        "aud": CLIENT_ID,
        "exp": now() + 300,
        "iat": now(),
        "nonce": nonce,
        "email": "alice@example.com",
        "email_verified": true,
    })
}

/// Starts a sign-in, lets `token` build the ID token from the sign-in's nonce, and returns
/// Stagedoor's answer to the callback.
async fn callback_with(
    addr: SocketAddr,
    idp: &FakeIdp,
    token: impl FnOnce(&str) -> String,
) -> (StatusCode, bool) {
    let mut browser = Browser::new(addr);
    let start_page = browser.get("/oauth2/start").await;
    let location: http::Uri = start_page.location().parse().unwrap();
    let query = location.query().unwrap();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    assert_eq!(param("code_challenge_method"), "S256");
    idp.answer(token(&param("nonce")));
    let done = browser
        .get(&format!(
            "/oauth2/callback?code=c0de&state={}",
            param("state")
        ))
        .await;
    (done.status, browser.jar.contains_key("_stagedoor"))
}

async fn setup() -> (FakeIdp, stagedoor::Running, Upstream) {
    let idp = FakeIdp::start().await;
    let up = Upstream::named("web").await;
    let port = free_port();
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"s\"\nuse_userinfo = false\n",
        idp.issuer
    );
    let config = gate_config(port, &up, "", &provider);
    let proxy = start(config).await;
    (idp, proxy, up)
}

#[tokio::test]
async fn only_a_correct_id_token_signs_in() {
    let (idp, proxy, _up) = setup().await;
    let key = SigningKey::new("k1");
    let other = SigningKey::new("k1"); // same kid, different key: a forgery
    idp.publish(&[&key]);
    let iss = idp.issuer.clone();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());

    let check = |name: &'static str, accepted: bool, result: (StatusCode, bool)| {
        let signed_in = result.0 == StatusCode::SEE_OTHER && result.1;
        assert_eq!(signed_in, accepted, "{name}: {result:?}");
        if !accepted {
            assert_eq!(result.0, StatusCode::BAD_GATEWAY, "{name}");
        }
    };

    let r = callback_with(proxy.addr(), &idp, |n| key.sign(&good_claims(&iss, n))).await;
    check("valid", true, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let mut c = good_claims(&iss, n);
        c["aud"] = json!("someone-else");
        key.sign(&c)
    })
    .await;
    check("wrong aud", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let mut c = good_claims(&iss, n);
        c["iss"] = json!("https://evil.example");
        key.sign(&c)
    })
    .await;
    check("wrong iss", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let mut c = good_claims(&iss, n);
        c["exp"] = json!(now() - 600);
        c["iat"] = json!(now() - 900);
        key.sign(&c)
    })
    .await;
    check("expired", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let mut c = good_claims(&iss, n);
        c["nonce"] = json!("replayed-nonce");
        key.sign(&c)
    })
    .await;
    check("wrong nonce", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| other.sign(&good_claims(&iss, n))).await;
    check("bad signature", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let header = json!({"alg": "none", "kid": "k1"});
        format!("{}.{}.", b64(&header), b64(&good_claims(&iss, n)))
    })
    .await;
    check("alg none", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        // HS256 keyed with the public key, hoping the verifier uses it as an HMAC secret.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let public = serde_json::to_vec(&key.jwk).unwrap();
        jsonwebtoken::encode(
            &header,
            &good_claims(&iss, n),
            &EncodingKey::from_secret(&public),
        )
        .unwrap()
    })
    .await;
    check("HS256 with the public key", false, r);

    let r = callback_with(proxy.addr(), &idp, |n| {
        let mut c = good_claims(&iss, n);
        c["at_hash"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
        key.sign(&c)
    })
    .await;
    check("at_hash mismatch", false, r);
}

#[tokio::test]
async fn rotated_keys_are_fetched_again() {
    let (idp, proxy, _up) = setup().await;
    let old = SigningKey::new("old");
    idp.publish(&[&old]);
    let iss = idp.issuer.clone();
    let first = callback_with(proxy.addr(), &idp, |n| old.sign(&good_claims(&iss, n))).await;
    assert_eq!(first.0, StatusCode::SEE_OTHER);

    // The provider rotates to a key Stagedoor has not seen; the next ID token uses it.
    let new = SigningKey::new("new");
    idp.publish(&[&new]);
    let rotated = callback_with(proxy.addr(), &idp, |n| new.sign(&good_claims(&iss, n))).await;
    assert_eq!(
        rotated,
        (StatusCode::SEE_OTHER, true),
        "the new key was not fetched"
    );

    // A kid the provider does not publish at all is refused.
    let stray = SigningKey::new("stray");
    let refused = callback_with(proxy.addr(), &idp, |n| stray.sign(&good_claims(&iss, n))).await;
    assert_eq!(refused.0, StatusCode::BAD_GATEWAY);
}
