//! OpenID Connect sign-in: discovery, authorization code flow with PKCE (S256), `state` and
//! `nonce`, ID token verification (signature from the JWKS, `iss`, `aud`, `azp`, `exp`, `iat`,
//! `nonce`, `at_hash`), and the userinfo endpoint.
//!
//! The provider's metadata and keys are fetched on first use and kept for an hour. When an ID
//! token names a key Stagedoor does not know (the provider rotated its keys), they are fetched
//! again at once, at most every 30 seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenClaims, CoreTokenResponse,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, RefreshToken, Scope, SignatureVerificationError,
    TokenResponse,
};
use serde_json::Value;
use tokio::sync::Mutex;

use super::ProviderError;
use super::http::{HttpError, IdpClient};
use crate::config::OidcProviderConfig;
use crate::secret::Secret;
use crate::session::{Session, Tokens, now};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long discovered metadata and keys are trusted before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Least time between two fetches forced by an unknown key.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

struct Discovered {
    client: Client,
    /// The provider's keys as `jsonwebtoken` reads them, for bearer tokens.
    keys: Vec<jsonwebtoken::jwk::Jwk>,
    userinfo: Option<String>,
    end_session: Option<openidconnect::EndSessionUrl>,
    fetched: Instant,
}

/// What the browser is sent to, and what the callback must check.
pub struct Authorization {
    /// The provider's authorization URL.
    pub url: String,
    /// Nonce bound into the ID token.
    pub nonce: String,
    /// PKCE verifier for the code exchange.
    pub pkce_verifier: String,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// One OpenID Connect provider.
pub struct OidcProvider {
    config: OidcProviderConfig,
    secret: Option<Secret>,
    redirect: RedirectUrl,
    http: IdpClient,
    cache: Mutex<Cache>,
}

/// Discovered metadata and keys, and when a refetch was last forced by an unknown key.
#[derive(Default)]
struct Cache {
    current: Option<Arc<Discovered>>,
    last_forced: Option<Instant>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.config.id)
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// A provider that sends browsers back to `callback_url`.
    pub fn new(
        config: OidcProviderConfig,
        secret: Option<Secret>,
        callback_url: &str,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        let redirect = RedirectUrl::new(callback_url.to_string()).map_err(|e| e.to_string())?;
        let http = IdpClient::new(config.ca_file.as_deref(), metrics)?;
        Ok(Self {
            config,
            secret,
            redirect,
            http,
            cache: Mutex::default(),
        })
    }

    /// The provider's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The label on the chooser.
    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    async fn discovered(&self, force: bool) -> Result<Arc<Discovered>, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(d) = cache.current.as_ref() {
            let forced_recently = cache
                .last_forced
                .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
            let refetch = if force {
                !forced_recently
            } else {
                d.fetched.elapsed() >= METADATA_TTL
            };
            if !refetch {
                return Ok(Arc::clone(d));
            }
        }
        if force {
            cache.last_forced = Some(Instant::now());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| ProviderError::Discovery(e.to_string()))?;
        let metadata = match ProviderMetadataWithLogout::discover_async(issuer, &self.http).await {
            Ok(metadata) => metadata,
            Err(e) => {
                let error = crate::error::DisplayChain(&e).to_string();
                // Keys that are merely old are better than none while the provider is away.
                if let Some(current) = cache.current.as_ref() {
                    tracing::warn!(provider = %self.config.id, %error, "provider metadata refresh failed; keeping the previous copy");
                    return Ok(Arc::clone(current));
                }
                return Err(ProviderError::Discovery(error));
            }
        };
        let userinfo = metadata.userinfo_endpoint().map(|u| u.url().to_string());
        let keys = bearer_keys(metadata.jwks());
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_string())),
        )
        .set_redirect_uri(self.redirect.clone());
        let fresh = Arc::new(Discovered {
            client,
            keys,
            userinfo,
            end_session,
            fetched: Instant::now(),
        });
        tracing::info!(provider = %self.config.id, issuer = %self.config.issuer, "provider metadata and keys fetched");
        cache.current = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Starts a sign-in: the URL to send the browser to, bound to `state`.
    pub async fn authorize(&self, state: &str) -> Result<Authorization, ProviderError> {
        let discovered = self.discovered(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let mut request = discovered
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        for (name, value) in &self.config.extra_auth_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, _, nonce) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Redeems the authorization code, verifies the ID token and builds the session.
    pub async fn redeem(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        lifetime: Duration,
    ) -> Result<Session, ProviderError> {
        let discovered = self.discovered(false).await?;
        let response: CoreTokenResponse = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| ProviderError::Token(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| ProviderError::Token(crate::error::DisplayChain(&e).to_string()))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| ProviderError::IdToken("the token response has no ID token".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let discovered = match self.verify(&discovered, id_token, &response, Some(&nonce)) {
            Ok(()) => discovered,
            Err(VerifyError::UnknownKey) => {
                // The provider may have rotated its keys since they were fetched.
                let fresh = self.discovered(true).await?;
                self.verify(&fresh, id_token, &response, Some(&nonce))
                    .map_err(VerifyError::into_error)?;
                fresh
            }
            Err(e) => return Err(e.into_error()),
        };
        let claims = verified_payload(id_token)?;
        self.check_required_claims(&claims)?;
        let userinfo = match &discovered.userinfo {
            Some(url) if self.config.use_userinfo => {
                self.userinfo(url, response.access_token().secret()).await
            }
            _ => None,
        };
        let created = now();
        let tokens = Tokens {
            access_token: Some(response.access_token().secret().clone()),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            // Kept only when sign-out needs it as a hint: it is the largest part of a session.
            id_token: self
                .config
                .sign_out_at_provider
                .then(|| id_token.to_string()),
            access_expires_at: response
                .expires_in()
                .map(|d| created.saturating_add(d.as_secs())),
        };
        Ok(self.session(&claims, userinfo.as_ref(), tokens, created, lifetime))
    }

    /// Uses the refresh token for new tokens; the identity is re-read from the new ID token
    /// when the provider sends one.
    pub async fn refresh(&self, session: &Session) -> Result<Session, ProviderError> {
        let Some(refresh) = session
            .tokens
            .as_ref()
            .and_then(|t| t.refresh_token.clone())
        else {
            return Err(ProviderError::Token("no refresh token".into()));
        };
        let discovered = self.discovered(false).await?;
        let response: CoreTokenResponse = discovered
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
            .map_err(|e| ProviderError::Token(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| ProviderError::Token(crate::error::DisplayChain(&e).to_string()))?;
        let refreshed_at = now();
        let mut claims = serde_json::json!({ "sub": session.subject });
        let mut discovered = discovered;
        if let Some(id_token) = response.id_token() {
            // Verified as at sign-in, except that a refreshed ID token carries no nonce
            // (OpenID Connect Core §12.2); keys are fetched again if the provider rotated them.
            match self.verify(&discovered, id_token, &response, None) {
                Ok(()) => {}
                Err(VerifyError::UnknownKey) => {
                    discovered = self.discovered(true).await?;
                    self.verify(&discovered, id_token, &response, None)
                        .map_err(VerifyError::into_error)?;
                }
                Err(e) => return Err(e.into_error()),
            }
            claims = verified_payload(id_token)?;
            if claims["sub"].as_str() != Some(session.subject.as_str()) {
                return Err(ProviderError::IdToken(
                    "refresh returned another subject".into(),
                ));
            }
            self.check_required_claims(&claims)?;
        }
        let userinfo = match &discovered.userinfo {
            Some(url) if self.config.use_userinfo => {
                self.userinfo(url, response.access_token().secret()).await
            }
            _ => None,
        };
        // Claims the provider sent again replace the old ones.
        let fresh = self.session(
            &claims,
            userinfo.as_ref(),
            Tokens::default(),
            0,
            Duration::ZERO,
        );
        let mut next = session.clone();
        next.refreshed_at = refreshed_at;
        if !fresh.email.is_empty() {
            next.email = fresh.email;
            next.email_verified = fresh.email_verified;
        }
        // A fresh answer is authoritative for groups, so a removal takes effect.
        if response.id_token().is_some() || userinfo.is_some() {
            next.groups = fresh.groups;
        }
        next.name = fresh.name.or(next.name);
        next.username = fresh.username.or(next.username);
        let tokens = next.tokens.get_or_insert_with(Tokens::default);
        tokens.access_token = Some(response.access_token().secret().clone());
        tokens.access_expires_at = response
            .expires_in()
            .map(|d| refreshed_at.saturating_add(d.as_secs()));
        // Providers that rotate refresh tokens send a new one; others keep the old one valid.
        tokens.refresh_token = Some(
            response
                .refresh_token()
                .map_or(refresh, |t| t.secret().clone()),
        );
        if let (Some(id_token), true) = (response.id_token(), self.config.sign_out_at_provider) {
            tokens.id_token = Some(id_token.to_string());
        }
        Ok(next)
    }

    /// True if this provider's JWTs are accepted as bearer tokens.
    pub fn accepts_bearer(&self) -> bool {
        !self.config.bearer_audiences.is_empty()
    }

    /// True if `iss` is this provider's issuer.
    pub fn issued(&self, iss: &str) -> bool {
        iss == self.config.issuer
    }

    /// Verifies a bearer JWT from a script or CI job (signature by the provider's keys, `iss`,
    /// `aud` in `bearer_audiences`, `exp`) and reads the identity from its claims. The result
    /// lives until the token expires and holds no tokens of its own.
    pub async fn verify_bearer(&self, token: &str) -> Result<Session, ProviderError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ProviderError::IdToken(format!("not a JWT: {e}")))?;
        let discovered = self.discovered(false).await?;
        let claims = match self.decode_bearer(&discovered, token, &header) {
            Err(VerifyError::UnknownKey) => {
                let fresh = self.discovered(true).await?;
                self.decode_bearer(&fresh, token, &header)
            }
            other => other,
        }
        .map_err(VerifyError::into_error)?;
        self.check_required_claims(&claims)?;
        let created = now();
        let expires = claims["exp"].as_u64().unwrap_or(created);
        let mut session = self.session(
            &claims,
            None,
            Tokens::default(),
            created,
            Duration::from_secs(expires.saturating_sub(created)),
        );
        session.tokens = None;
        Ok(session)
    }

    /// Verifies a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.6):
    /// signed by the provider, `iss` its issuer, `aud` this client, `iat` and `exp`, the
    /// back-channel logout event, no `nonce`, and `sub` or `sid`. Returns `(sub, sid)`.
    pub async fn verify_logout_token(
        &self,
        token: &str,
    ) -> Result<(Option<String>, Option<String>), ProviderError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ProviderError::IdToken(format!("not a JWT: {e}")))?;
        let audience = [self.config.client_id.clone()];
        let required = ["exp", "iat", "iss", "aud"];
        let discovered = self.discovered(false).await?;
        let claims = match self.decode_jwt(&discovered, token, &header, &audience, &required) {
            Err(VerifyError::UnknownKey) => {
                let fresh = self.discovered(true).await?;
                self.decode_jwt(&fresh, token, &header, &audience, &required)
            }
            other => other,
        }
        .map_err(VerifyError::into_error)?;
        let event = "http://schemas.openid.net/event/backchannel-logout";
        if claims["events"].get(event).is_none_or(|e| !e.is_object()) {
            return Err(ProviderError::IdToken(
                "not a back-channel logout event".into(),
            ));
        }
        if claims.get("nonce").is_some() {
            return Err(ProviderError::IdToken(
                "a logout token carries no nonce".into(),
            ));
        }
        let text = |name: &str| claims[name].as_str().map(str::to_string);
        let (sub, sid) = (text("sub"), text("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(ProviderError::IdToken("neither sub nor sid".into()));
        }
        Ok((sub, sid))
    }

    fn decode_bearer(
        &self,
        discovered: &Discovered,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Value, VerifyError> {
        self.decode_jwt(
            discovered,
            token,
            header,
            &self.config.bearer_audiences,
            &["exp", "iss", "aud", "sub"],
        )
    }

    /// A JWT signed by one of the provider's keys, from its issuer, for one of `audiences`.
    fn decode_jwt(
        &self,
        discovered: &Discovered,
        token: &str,
        header: &jsonwebtoken::Header,
        audiences: &[String],
        required: &[&str],
    ) -> Result<Value, VerifyError> {
        use jsonwebtoken::Algorithm as A;
        // Keys published by the provider are asymmetric; anything else is a forgery attempt.
        if !matches!(
            header.alg,
            A::RS256
                | A::RS384
                | A::RS512
                | A::PS256
                | A::PS384
                | A::PS512
                | A::ES256
                | A::ES384
                | A::EdDSA
        ) {
            return Err(VerifyError::Other(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let jwk = match &header.kid {
            Some(kid) => discovered
                .keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid)),
            None if discovered.keys.len() == 1 => discovered.keys.first(),
            None => None,
        }
        .ok_or(VerifyError::UnknownKey)?;
        if let Some(alg) = jwk.common.key_algorithm
            && format!("{alg:?}") != format!("{:?}", header.alg)
        {
            return Err(VerifyError::Other(
                "the token's algorithm is not its key's".into(),
            ));
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .map_err(|e| VerifyError::Other(e.to_string()))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(required);
        validation.leeway = 30;
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| VerifyError::Other(e.to_string()))
    }

    /// Where to send the browser to end the session at the provider too (RP-initiated
    /// logout), when `sign_out_at_provider` is on and the provider has an end-session endpoint.
    pub async fn logout_url(&self, session: &Session, post_logout: &str) -> Option<String> {
        if !self.config.sign_out_at_provider {
            return None;
        }
        let discovered = self.discovered(false).await.ok()?;
        let endpoint = discovered.end_session.clone()?;
        let mut request = LogoutRequest::from(endpoint)
            .set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Ok(url) = PostLogoutRedirectUrl::new(post_logout.to_string()) {
            request = request.set_post_logout_redirect_uri(url);
        }
        let hint = session.tokens.as_ref().and_then(|t| t.id_token.as_deref());
        if let Some(id_token) = hint.and_then(|t| t.parse::<CoreIdToken>().ok()) {
            request = request.set_id_token_hint(&id_token);
        }
        Some(request.http_get_url().to_string())
    }

    fn check_required_claims(&self, claims: &Value) -> Result<(), ProviderError> {
        for (name, expected) in &self.config.required_claims {
            if claim(claims, name).and_then(Value::as_str) != Some(expected.as_str()) {
                return Err(ProviderError::IdToken(format!(
                    "claim {name} is not {expected:?}"
                )));
            }
        }
        Ok(())
    }

    /// Verifies an ID token; `nonce` is `None` only for tokens from a refresh.
    fn verify(
        &self,
        discovered: &Discovered,
        id_token: &CoreIdToken,
        response: &CoreTokenResponse,
        nonce: Option<&Nonce>,
    ) -> Result<(), VerifyError> {
        let verifier = discovered.client.id_token_verifier();
        let checked = match nonce {
            Some(nonce) => id_token.claims(&verifier, nonce),
            None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        };
        let claims: &CoreIdTokenClaims = match checked {
            Ok(c) => c,
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => return Err(VerifyError::UnknownKey),
            Err(e) => return Err(VerifyError::Other(e.to_string())),
        };
        // openidconnect leaves at_hash to the caller.
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token
                .signing_alg()
                .map_err(|e| VerifyError::Other(e.to_string()))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| VerifyError::Other(e.to_string()))?;
            let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
                .map_err(|e| VerifyError::Other(e.to_string()))?;
            if actual != *expected {
                return Err(VerifyError::Other(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        Ok(())
    }

    async fn userinfo(&self, url: &str, access_token: &str) -> Option<Value> {
        let request = http::Request::get(url)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {access_token}"),
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .ok()?;
        match self.http.call(request).await {
            Ok(response) if response.status().is_success() => {
                serde_json::from_slice(response.body()).ok()
            }
            Ok(response) => {
                tracing::warn!(provider = %self.config.id, status = %response.status(), "userinfo refused");
                None
            }
            Err(e) => {
                tracing::warn!(provider = %self.config.id, error = %e, "userinfo failed");
                None
            }
        }
    }

    /// The session for verified ID token claims, filled in from userinfo where the token is
    /// silent (and only if userinfo is about the same subject).
    fn session(
        &self,
        claims: &Value,
        userinfo: Option<&Value>,
        tokens: Tokens,
        created: u64,
        lifetime: Duration,
    ) -> Session {
        let subject = claims["sub"].as_str().unwrap_or_default().to_string();
        let userinfo = userinfo.filter(|u| u["sub"].as_str() == Some(subject.as_str()));
        let lookup = |path: &str| -> Option<&Value> {
            claim(claims, path)
                .or_else(|| userinfo.and_then(|u| claim(u, path)))
                .filter(|v| !v.is_null())
        };
        let string = |path: &str| lookup(path).and_then(Value::as_str).map(str::to_string);
        let email_verified = match lookup("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let groups = match lookup(&self.config.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => s
                .split([',', ' '])
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Session {
            email: string(&self.config.email_claim).unwrap_or_default(),
            email_verified,
            username: string(&self.config.username_claim),
            name: string("name"),
            groups,
            provider: self.config.id.clone(),
            created_at: created,
            refreshed_at: created,
            expires_at: created.saturating_add(lifetime.as_secs()),
            subject,
            tokens: Some(tokens),
            sid: string("sid"),
            memo: Default::default(),
        }
    }
}

enum VerifyError {
    UnknownKey,
    Other(String),
}

impl VerifyError {
    fn into_error(self) -> ProviderError {
        match self {
            Self::UnknownKey => {
                ProviderError::IdToken("signed with a key the provider does not publish".into())
            }
            Self::Other(e) => ProviderError::IdToken(e),
        }
    }
}

/// The provider's JWKS as `jsonwebtoken` keys; keys it cannot use are left out.
fn bearer_keys(jwks: &openidconnect::core::CoreJsonWebKeySet) -> Vec<jsonwebtoken::jwk::Jwk> {
    let Ok(Value::Object(set)) = serde_json::to_value(jwks) else {
        return Vec::new();
    };
    match set.get("keys") {
        Some(Value::Array(keys)) => keys
            .iter()
            .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
            .filter_map(|k| serde_json::from_value(k.clone()).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// The claims of a JWT, unverified: only for choosing which provider should verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let claims = jwt_payload(token).ok()?;
    claims["iss"].as_str().map(str::to_string)
}

/// The JSON payload of an ID token whose signature has already been verified, for claims the
/// typed API does not carry (groups, nested role claims).
fn verified_payload(id_token: &CoreIdToken) -> Result<Value, ProviderError> {
    jwt_payload(&id_token.to_string())
}

/// The JSON payload of a compact JWT, without looking at its signature.
fn jwt_payload(compact: &str) -> Result<Value, ProviderError> {
    let payload = compact
        .split('.')
        .nth(1)
        .ok_or_else(|| ProviderError::IdToken("not a compact JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| ProviderError::IdToken(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::IdToken(e.to_string()))
}

/// A claim by dotted path: `realm_access.roles` reads `{"realm_access": {"roles": [...]}}`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(direct) = claims.get(path) {
        return Some(direct);
    }
    path.split('.')
        .try_fold(claims, |value, key| value.get(key))
}

impl From<HttpError> for ProviderError {
    fn from(e: HttpError) -> Self {
        ProviderError::Discovery(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_dotted_path() {
        let v = serde_json::json!({"realm_access": {"roles": ["a", "b"]}, "x.y": 1});
        assert_eq!(
            claim(&v, "realm_access.roles"),
            Some(&serde_json::json!(["a", "b"]))
        );
        assert_eq!(claim(&v, "x.y"), Some(&serde_json::json!(1)));
        assert_eq!(claim(&v, "realm_access.nope"), None);
    }
}
