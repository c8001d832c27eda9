//! Sign-in: Stagedoor's own endpoints under `auth.prefix`, and the gate that every other
//! request passes (a session, or a redirect to sign in, or 401 for API calls).
//!
//! ```text
//! GET  {prefix}/start?rd=/x[&provider=id]   chooser, or straight to the one provider
//! GET  {prefix}/dev?state=...               the development provider's form
//! POST {prefix}/dev                         signs in as the chosen user, back to rd
//! GET  {prefix}/sign_out?rd=/x              clears the session
//! GET  {prefix}/userinfo                    the signed-in identity as JSON
//! GET  {prefix}/auth                        forward-auth for ingress controllers
//! POST {prefix}/backchannel_logout          OpenID Connect back-channel logout (Redis store)
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::config::{
    Config, ConfigError, DevProviderConfig, ProviderConfig, SessionStore, decode_cookie_secret,
};
use crate::error::{error_response, json_response, wants_json};
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::pages::{self, Choice, DevChoice};
use crate::policy::{Access, Policy, Refusal};
use crate::providers::github::GitHubProvider;
use crate::providers::oidc::OidcProvider;
use crate::redirect::{self, AllowedHosts};
use crate::session::{Codec, CookieSettings, Session, now};
use crate::store::{Store, StoreError};
use crate::{Body, empty};

/// How long a sign-in may take between start and callback.
const LOGIN_LIFETIME: Duration = Duration::from_secs(600);
/// Refresh an access token this long before it expires.
const REFRESH_MARGIN: u64 = 30;
/// How long a replica may hold a stored session's refresh lock.
const STORE_LOCK: Duration = Duration::from_secs(15);
/// How long the result of a refresh is handed to requests that still carry the old cookie.
const REFRESH_REMEMBERED: Duration = Duration::from_secs(60);
/// Largest form body accepted by the sign-in endpoints.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Sign-in state carried in the encrypted CSRF cookie between start and callback.
#[derive(Serialize, Deserialize)]
struct LoginState {
    /// Random value the callback must echo (CSRF).
    #[serde(rename = "st")]
    state: String,
    /// Where to return after sign-in (validated).
    rd: String,
    /// Which provider was chosen.
    idp: String,
    /// Unix time after which this sign-in attempt is void.
    exp: u64,
    /// OpenID Connect nonce, checked in the ID token.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    /// PKCE code verifier for the code exchange.
    #[serde(rename = "pk", default, skip_serializing_if = "Option::is_none")]
    pkce: Option<String>,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState")
            .field("rd", &self.rd)
            .field("idp", &self.idp)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// A configured provider, ready to sign people in.
#[derive(Debug)]
enum Provider {
    Dev(DevProviderConfig),
    Oidc(Arc<OidcProvider>),
    GitHub(Box<GitHubProvider>),
}

impl Provider {
    fn id(&self) -> &str {
        match self {
            Self::Dev(dev) => &dev.id,
            Self::Oidc(oidc) => oidc.id(),
            Self::GitHub(github) => github.id(),
        }
    }

    fn label(&self) -> &str {
        match self {
            Self::Dev(dev) => &dev.display_name,
            Self::Oidc(oidc) => oidc.display_name(),
            Self::GitHub(github) => github.display_name(),
        }
    }
}

/// What the gate decided about a request that is not for Stagedoor's own endpoints.
#[derive(Debug)]
pub enum Gate {
    /// Signed in: forward with this identity, adding these cookies to the response (a
    /// refreshed session).
    Pass(Arc<Session>, Vec<cookie::Cookie<'static>>),
    /// A public route: forward without identity.
    Public,
    /// Not signed in: send this instead (a redirect to sign in, or 401).
    Answer(Response<Body>),
}

/// Refreshes by hash of the refresh token: when each started, and its result once done.
type Refreshes = HashMap<String, (Instant, watch::Receiver<Option<Option<Session>>>)>;

/// Sign-in configuration and cookie codec, built once.
pub struct Auth {
    prefix: String,
    api_paths: Vec<String>,
    redirect_hosts: AllowedHosts,
    codec: Codec,
    providers: Vec<Provider>,
    /// `auth.public_url` without a trailing slash (empty when only `dev` is configured).
    public_url: String,
    refresh_interval: Option<Duration>,
    /// Refreshes in flight or just done, by refresh token: see [`Auth::refresh`].
    refreshes: std::sync::Mutex<Refreshes>,
    policy: Policy,
    /// Some provider takes bearer JWTs in place of a session.
    accepts_bearer: bool,
    /// `policy.explain_rule`.
    explain_rule: bool,
    metrics: Arc<Metrics>,
    /// The server-side session store, with `session.store = "redis"`.
    store: Option<Store>,
    identity: Arc<Identity>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("prefix", &self.prefix)
            .field("providers", &self.providers)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Builds sign-in from a validated configuration; `None` when no provider is configured.
    pub fn build(
        config: &Config,
        identity: Arc<Identity>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, ConfigError> {
        if config.providers.is_empty() {
            return Ok(None);
        }
        let session = &config.session;
        let current = match config.cookie_secret() {
            Ok(Some(secret)) => decode_cookie_secret(secret.expose())
                .map_err(|e| ConfigError::single("session.cookie_secret", e))?,
            Ok(None) => {
                tracing::warn!(
                    "no session.cookie_secret: using a random one, so sessions end when Stagedoor restarts"
                );
                crate::secret::random_bytes::<32>()
                    .map_err(|e| ConfigError::single("session.cookie_secret", e))?
                    .to_vec()
            }
            Err((key, msg)) => return Err(ConfigError::single(key, msg)),
        };
        let previous = session
            .previous_cookie_secrets
            .iter()
            .filter_map(|s| decode_cookie_secret(s.expose()).ok())
            .collect::<Vec<_>>();
        let codec = Codec::new(
            &current,
            &previous,
            CookieSettings {
                // __Host- cookies cannot be set or shadowed by a sibling subdomain (cookie
                // tossing); browsers accept the prefix only on Secure, host-only, Path=/ cookies.
                name: if session.cookie_secure
                    && session.cookie_domain.is_none()
                    && session.cookie_path == "/"
                {
                    format!("__Host-{}", session.cookie_name)
                } else {
                    session.cookie_name.clone()
                },
                domain: session.cookie_domain.clone(),
                path: session.cookie_path.clone(),
                secure: session.cookie_secure,
                expire: session.expire,
            },
        );
        let public_url = config
            .auth
            .public_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let callback = format!("{public_url}{}/callback", config.auth.prefix);
        let mut providers = Vec::new();
        for (i, provider) in config.providers.iter().enumerate() {
            providers.push(match provider {
                ProviderConfig::Dev(dev) => Provider::Dev(dev.clone()),
                ProviderConfig::Github(github) => {
                    let key = format!("providers[{i}]");
                    let secret = github
                        .secret(&key)
                        .map_err(|(k, msg)| ConfigError::single(k, msg))?;
                    let built = GitHubProvider::new(
                        github.as_ref().clone(),
                        secret,
                        &callback,
                        Arc::clone(&metrics),
                    )
                    .map_err(|e| ConfigError::single(key, e))?;
                    Provider::GitHub(Box::new(built))
                }
                other => {
                    let key = format!("providers[{i}]");
                    let Some(oidc) = other.oidc() else {
                        continue;
                    };
                    let secret = oidc
                        .secret(&key)
                        .map_err(|(k, msg)| ConfigError::single(k, msg))?;
                    let built = OidcProvider::new(oidc, secret, &callback, Arc::clone(&metrics))
                        .map_err(|e| ConfigError::single(key, e))?;
                    Provider::Oidc(Arc::new(built))
                }
            });
        }
        let accepts_bearer = providers
            .iter()
            .any(|p| matches!(p, Provider::Oidc(oidc) if oidc.accepts_bearer()));
        let store = match config.session.store {
            SessionStore::Cookie => None,
            SessionStore::Redis => {
                let url = config
                    .session
                    .redis_url()
                    .map_err(|(k, msg)| ConfigError::single(k, msg))?
                    .ok_or_else(|| ConfigError::single("session.redis_url", "required"))?;
                let store = Store::new(url.expose(), &config.session.redis_prefix)
                    .map_err(|e| ConfigError::single("session.redis_url", e))?;
                Some(store)
            }
        };
        Ok(Some(Self {
            store,
            metrics,
            explain_rule: config.policy.explain_rule,
            identity,
            accepts_bearer,
            prefix: config.auth.prefix.clone(),
            api_paths: config.auth.api_paths.clone(),
            redirect_hosts: AllowedHosts::new(&config.auth.allowed_redirect_hosts),
            codec,
            providers,
            refresh_interval: session.refresh_interval,
            public_url,
            refreshes: std::sync::Mutex::default(),
            policy: Policy::new(
                &config.policy,
                config
                    .providers
                    .iter()
                    .filter(|p| matches!(p, ProviderConfig::Dev(_)))
                    .map(|p| p.id().to_string())
                    .collect(),
            )?,
        }))
    }

    /// The cookie codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// True if `path` is one of Stagedoor's own endpoints.
    pub fn owns_path(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The session of a request to be forwarded, or the answer to send instead. A session whose
    /// access token is about to expire is refreshed first; if that fails, the user signs in again.
    /// A session that no rule admits (any more) gets 403.
    /// `client` is the client's address (see [`crate::forwarded::client_address`]).
    pub async fn gate(&self, parts: &Parts, host: &str, client: IpAddr) -> Gate {
        let path = parts.uri.path();
        let at = Scene { host, path, client };
        let rule = match self.policy.access(host, &parts.method, path, client) {
            Access::Public { rule } => {
                self.audit(None, rule, "public", at);
                return Gate::Public;
            }
            Access::Network { rule } => {
                self.audit(None, rule, "allow network", at);
                return Gate::Public;
            }
            Access::SignedIn { rule } => rule,
        };
        let (session, id) = match self.load(&parts.headers).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => {
                if let Some(token) = self.bearer_token(parts) {
                    // Boxed, like every rare path here: the future of a request that takes
                    // the common path stays small, and it is moved on every request.
                    return Box::pin(self.gate_bearer(parts, token, rule, at)).await;
                }
                self.audit(None, rule, "sign-in required", at);
                return self.challenge(parts);
            }
            Err(e) => return Gate::Answer(self.store_unavailable(parts, &e)),
        };
        // A session from a provider that is no longer configured is no session.
        let Some(provider) = self.providers.iter().find(|p| p.id() == session.provider) else {
            tracing::debug!(provider = %session.provider, "session from an unconfigured provider");
            return self.challenge(parts);
        };
        let (session, cookies) = match provider {
            Provider::Oidc(oidc) if needs_refresh(&session, self.refresh_interval) => {
                let refreshed = match (&self.store, &id) {
                    (Some(store), Some(id)) => {
                        Box::pin(self.refresh_stored(oidc, store, id, &session)).await
                    }
                    _ => Ok(Box::pin(self.refresh(oidc, &session)).await),
                };
                match refreshed {
                    // Stored: the cookie (a ticket) stays as it is.
                    Ok(Some(fresh)) if id.is_some() => (Arc::new(fresh), Vec::new()),
                    Ok(Some(fresh)) => {
                        let cookies = self.codec.write_session(&fresh, &parts.headers);
                        (Arc::new(fresh), cookies)
                    }
                    Ok(None) => return self.challenge(parts),
                    Err(e) => return Gate::Answer(self.store_unavailable(parts, &e)),
                }
            }
            _ => (session, Vec::new()),
        };
        match self.policy.admits(rule, &session) {
            Ok(()) => {
                self.audit(Some(&session), rule, "allow", at);
                Gate::Pass(session, cookies)
            }
            Err(refusal) => {
                self.audit(Some(&session), rule, "deny", at);
                Gate::Answer(self.refused(parts, &session, refusal, Some(rule)))
            }
        }
    }

    /// The bearer token of a request without a session, if some provider accepts bearer tokens.
    fn bearer_token<'p>(&self, parts: &'p Parts) -> Option<&'p str> {
        if !self.accepts_bearer {
            return None;
        }
        let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }

    /// Judges a request that carries a bearer JWT instead of a session: the provider that
    /// issued it verifies it, then the policy decides as for a session.
    async fn gate_bearer(&self, parts: &Parts, token: &str, rule: &str, at: Scene<'_>) -> Gate {
        let issuer = crate::providers::oidc::unverified_issuer(token);
        let provider = self.providers.iter().find_map(|p| match p {
            Provider::Oidc(oidc)
                if oidc.accepts_bearer() && issuer.as_deref().is_some_and(|i| oidc.issued(i)) =>
            {
                Some(oidc)
            }
            _ => None,
        });
        let verified = match provider {
            Some(oidc) => oidc.verify_bearer(token).await.map_err(|e| e.to_string()),
            None => Err("no provider accepts bearer tokens from this issuer".to_string()),
        };
        let session = match verified {
            Ok(session) => session,
            Err(error) => {
                tracing::info!(%error, "bearer token refused");
                self.audit(None, rule, "bearer refused", at);
                let mut response = json_response(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({
                        "error": "invalid_token",
                        "status": 401,
                        "message": "The bearer token is not valid here.",
                    }),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"stagedoor\", error=\"invalid_token\""),
                );
                return Gate::Answer(response);
            }
        };
        match self.policy.admits(rule, &session) {
            Ok(()) => {
                self.audit(Some(&session), rule, "allow bearer", at);
                Gate::Pass(Arc::new(session), Vec::new())
            }
            Err(refusal) => {
                self.audit(Some(&session), rule, "deny bearer", at);
                Gate::Answer(self.refused(parts, &session, refusal, Some(rule)))
            }
        }
    }

    /// No session: 401 for API calls, else a redirect to sign in and back.
    fn challenge(&self, parts: &Parts) -> Gate {
        if self.is_api_request(parts) {
            let mut response = json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({
                    "error": "unauthorized",
                    "status": 401,
                    "message": "Sign in required.",
                    "sign_in": format!("{}/start", self.prefix),
                }),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stagedoor\""),
            );
            return Gate::Answer(response);
        }
        let rd = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        Gate::Answer(redirect_to(&format!(
            "{}/start?rd={}",
            self.prefix,
            encode(rd)
        )))
    }

    /// 403 for a signed-in user no rule admits: who they are, why, and a way out.
    /// `rule` is the deciding rule, named to the user only with `policy.explain_rule`.
    fn refused(
        &self,
        parts: &Parts,
        session: &Session,
        refusal: Refusal,
        rule: Option<&str>,
    ) -> Response<Body> {
        tracing::info!(user = %session.log_name(), provider = %session.provider, reason = ?refusal, "access denied");
        let rule = rule.filter(|_| self.explain_rule);
        if self.is_api_request(parts) {
            let mut body = serde_json::json!({
                "error": "forbidden",
                "status": 403,
                "message": refusal.explain(),
            });
            if let Some(rule) = rule {
                body["rule"] = rule.into();
            }
            return json_response(StatusCode::FORBIDDEN, &body);
        }
        let who = if session.email.is_empty() {
            session.subject.clone()
        } else {
            session.email.clone()
        };
        pages::html(
            StatusCode::FORBIDDEN,
            pages::message(
                "Access denied",
                &match rule {
                    Some(rule) => format!(
                        "You are signed in as {who}. {} (Rule: {rule}.)",
                        refusal.explain()
                    ),
                    None => format!("You are signed in as {who}. {}", refusal.explain()),
                },
                Some((&format!("{}/sign_out", self.prefix), "Sign out")),
            ),
        )
    }

    /// The session a request carries, with its store id when sessions are stored: from the
    /// cookie itself, or from the store by the cookie's ticket.
    async fn load(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(Arc<Session>, Option<String>)>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(self.codec.read_session_shared(headers).map(|s| (s, None)));
        };
        let Some(ticket) = self.codec.read_ticket(headers) else {
            return Ok(None);
        };
        let id = hex(&Sha256::digest(ticket.as_bytes()));
        Ok(Box::pin(store.load(&id))
            .await?
            .map(|s| (Arc::new(s), Some(id))))
    }

    /// Stores a new session: in cookies, or in the store under a fresh ticket whose cookie is
    /// returned. Empty cookies mean the session is too large for cookies.
    async fn save_new(
        &self,
        session: &Session,
        headers: &HeaderMap,
    ) -> Result<Vec<cookie::Cookie<'static>>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(self.codec.write_session(session, headers));
        };
        let ticket =
            crate::secret::random_token().map_err(|e| StoreError::from_message(e.to_string()))?;
        let id = hex(&Sha256::digest(ticket.as_bytes()));
        store.save(&id, session).await?;
        Ok(self.codec.write_ticket(&ticket, headers))
    }

    /// Refreshes a stored session on one replica only: the one that takes the session's lock
    /// spends the refresh token and stores the result; the others wait for it.
    async fn refresh_stored(
        &self,
        provider: &Arc<OidcProvider>,
        store: &Store,
        id: &str,
        session: &Session,
    ) -> Result<Option<Session>, StoreError> {
        if store.lock(id, STORE_LOCK).await? {
            let fresh = self.refresh(provider, session).await;
            let saved = match &fresh {
                Some(fresh) => store.save(id, fresh).await,
                None => store.delete(id).await,
            };
            let _ = store.unlock(id).await;
            saved?;
            return Ok(fresh);
        }
        let started = Instant::now();
        while started.elapsed() < STORE_LOCK {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let access = |s: &Session| s.tokens.as_ref().and_then(|t| t.access_token.clone());
            match store.load(id).await? {
                // Another replica refreshed: its tokens replaced the ones this request saw.
                Some(current) if access(&current) != access(session) => {
                    return Ok(Some(current));
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// 503: sessions cannot be read or written while the store is away. Fails closed.
    fn store_unavailable(&self, parts: &Parts, error: &StoreError) -> Response<Body> {
        tracing::error!(%error, "session store unavailable; refusing requests that need a session");
        self.metrics.store_error();
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again in a moment.",
            parts.headers.get(header::ACCEPT),
        )
    }

    /// OpenID Connect back-channel logout: the provider posts a signed `logout_token`, and the
    /// sessions it names end on every replica (by `sid`, or every session of `sub`). Needs the
    /// Redis store: cookie sessions cannot be reached from here.
    async fn backchannel_logout(&self, form: &[(String, String)]) -> Response<Body> {
        let Some(store) = &self.store else {
            return logout_refused("back-channel logout needs session.store = \"redis\"");
        };
        let Some(token) = form
            .iter()
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.as_str())
        else {
            return logout_refused("no logout_token");
        };
        let issuer = crate::providers::oidc::unverified_issuer(token);
        let provider = self.providers.iter().find_map(|p| match p {
            Provider::Oidc(oidc) if issuer.as_deref().is_some_and(|i| oidc.issued(i)) => Some(oidc),
            _ => None,
        });
        let Some(provider) = provider else {
            tracing::warn!("back-channel logout from an unknown issuer refused");
            return logout_refused("unknown issuer");
        };
        let (sub, sid) = match provider.verify_logout_token(token).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(provider = %provider.id(), error = %e, "back-channel logout token refused");
                return logout_refused("the logout token is not valid");
            }
        };
        let ended = match (&sid, &sub) {
            (Some(sid), _) => store.revoke_sid(provider.id(), sid).await,
            (None, Some(sub)) => store.revoke_user(provider.id(), sub).await,
            (None, None) => Ok(0),
        };
        match ended {
            Ok(count) => {
                tracing::info!(
                    target: "stagedoor::audit",
                    provider = %provider.id(),
                    user = sub.as_deref().unwrap_or("-"),
                    sessions = count,
                    "back-channel logout"
                );
                let mut response = Response::new(empty());
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout could not reach the session store");
                self.metrics.store_error();
                let mut response = logout_refused("the session store is unavailable");
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
            }
        }
    }

    /// Ends every stored session of a user (an operator's revocation); the count ended.
    pub async fn revoke_user(&self, provider: &str, subject: &str) -> Result<usize, StoreError> {
        match &self.store {
            Some(store) => store.revoke_user(provider, subject).await,
            None => Err(StoreError::from_message(
                "sessions are cookies (session.store = \"cookie\"): nothing to revoke server-side"
                    .into(),
            )),
        }
    }

    /// Refreshes `session` once, however many requests carrying it arrive together: a provider
    /// that rotates refresh tokens accepts each one only once. The refresh runs in its own task,
    /// so a client that goes away cannot abandon a refresh halfway and lose the new token.
    async fn refresh(&self, provider: &Arc<OidcProvider>, session: &Session) -> Option<Session> {
        let token = session.tokens.as_ref()?.refresh_token.as_deref()?;
        // Keyed by a hash: the map never holds a usable token.
        let key = hex(&Sha256::digest(token.as_bytes()));
        let mut result = {
            let mut inflight = self
                .refreshes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            inflight.retain(|_, (started, _)| started.elapsed() < REFRESH_REMEMBERED);
            match inflight.get(&key) {
                Some((_, rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let provider = Arc::clone(provider);
                    let session = session.clone();
                    let metrics = Arc::clone(&self.metrics);
                    tokio::spawn(async move {
                        let refreshed = provider.refresh(&session).await;
                        metrics.refresh(provider.id(), refreshed.is_ok());
                        let fresh = match refreshed {
                            Ok(fresh) => {
                                tracing::debug!(user = %fresh.log_name(), "session refreshed");
                                Some(fresh)
                            }
                            Err(e) => {
                                tracing::info!(user = %session.log_name(), error = %e, "session refresh failed; signing in again");
                                None
                            }
                        };
                        let _ = tx.send(Some(fresh));
                    });
                    inflight.insert(key, (Instant::now(), rx.clone()));
                    rx
                }
            }
        };
        let done = result.wait_for(Option::is_some).await.ok()?;
        done.clone().flatten()
    }

    /// A request that should get 401 rather than a redirect to a sign-in page.
    fn is_api_request(&self, parts: &Parts) -> bool {
        let accept = parts.headers.get(header::ACCEPT);
        (parts.method != Method::GET && parts.method != Method::HEAD)
            || parts.headers.contains_key("x-requested-with")
            || parts.headers.contains_key(header::AUTHORIZATION)
            || wants_json(accept)
            || self
                .api_paths
                .iter()
                .any(|p| parts.uri.path().starts_with(p.as_str()))
    }

    /// Answers a request for one of Stagedoor's own endpoints.
    /// `from_trusted_proxy`: the peer is in `server.trusted_proxies`, so the forward-auth
    /// endpoint may believe the original request it describes.
    pub async fn endpoint(
        &self,
        parts: &Parts,
        body: Body,
        from_trusted_proxy: bool,
        client: IpAddr,
    ) -> Response<Body> {
        let sub = parts
            .uri
            .path()
            .strip_prefix(self.prefix.as_str())
            .unwrap_or_default();
        let query = parts.uri.query().unwrap_or_default();
        let accept = parts.headers.get(header::ACCEPT);
        match (&parts.method, sub) {
            (&Method::GET, "/start") => self.start(query).await,
            (&Method::GET, "/callback") => self.callback(parts, query).await,
            (&Method::GET, "/dev") => self.dev_form(parts, query),
            (&Method::POST, "/dev") => match read_form(body).await {
                Some(form) => self.dev_sign_in(parts, &form).await,
                None => error_response(
                    StatusCode::BAD_REQUEST,
                    "The form could not be read.",
                    accept,
                ),
            },
            (&Method::GET | &Method::POST, "/sign_out") => self.sign_out(parts, query).await,
            (&Method::GET, "/userinfo") => self.userinfo(parts).await,
            (&Method::GET | &Method::HEAD, "/auth") => {
                self.forward_auth(parts, from_trusted_proxy, client).await
            }
            (&Method::POST, "/backchannel_logout") => match read_form(body).await {
                Some(form) => self.backchannel_logout(&form).await,
                None => logout_refused("the form could not be read"),
            },
            (
                _,
                "/start"
                | "/callback"
                | "/dev"
                | "/sign_out"
                | "/userinfo"
                | "/auth"
                | "/backchannel_logout",
            ) => error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "This method is not allowed here.",
                accept,
            ),
            _ => error_response(
                StatusCode::NOT_FOUND,
                "Nothing is served at this address.",
                accept,
            ),
        }
    }

    fn safe_rd(&self, rd: Option<&str>) -> String {
        match rd {
            Some(target) => match redirect::validate(target, &self.redirect_hosts) {
                Some(ok) => ok.to_string(),
                None => {
                    tracing::warn!(rd = %target.escape_debug(), "refused redirect target");
                    "/".to_string()
                }
            },
            None => "/".to_string(),
        }
    }

    async fn start(&self, query: &str) -> Response<Body> {
        let rd = self.safe_rd(param(query, "rd").as_deref());
        let chosen = match param(query, "provider") {
            Some(id) => match self.providers.iter().find(|p| p.id() == id) {
                Some(p) => p,
                None => {
                    return pages::html(
                        StatusCode::BAD_REQUEST,
                        pages::message(
                            "Unknown sign-in method",
                            "That sign-in method is not configured here.",
                            Some((
                                &format!("{}/start?rd={}", self.prefix, encode(&rd)),
                                "Choose another",
                            )),
                        ),
                    );
                }
            },
            None if self.providers.len() == 1 => &self.providers[0],
            None => {
                let choices: Vec<Choice<'_>> = self
                    .providers
                    .iter()
                    .map(|p| Choice {
                        href: format!(
                            "{}/start?provider={}&rd={}",
                            self.prefix,
                            p.id(),
                            encode(&rd)
                        ),
                        label: p.label(),
                    })
                    .collect();
                return pages::html(StatusCode::OK, pages::chooser(&choices));
            }
        };
        let Ok(state) = crate::secret::random_token() else {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is unavailable.",
                None,
            );
        };
        let mut login = LoginState {
            state: state.clone(),
            rd,
            idp: chosen.id().to_string(),
            exp: now() + LOGIN_LIFETIME.as_secs(),
            nonce: None,
            pkce: None,
        };
        let location = match chosen {
            Provider::Dev(_) => format!("{}/dev?state={}", self.prefix, encode(&state)),
            Provider::GitHub(github) => {
                let authorization = github.authorize(&state);
                login.pkce = Some(authorization.pkce_verifier);
                authorization.url
            }
            Provider::Oidc(oidc) => match oidc.authorize(&state).await {
                Ok(authorization) => {
                    login.nonce = Some(authorization.nonce);
                    login.pkce = Some(authorization.pkce_verifier);
                    authorization.url
                }
                Err(e) => {
                    tracing::warn!(provider = %oidc.id(), error = %e, "cannot start sign-in");
                    return provider_unavailable();
                }
            },
        };
        let mut response = redirect_to(&location);
        if let Some(cookie) = self.codec.write_csrf(&login, LOGIN_LIFETIME) {
            set_cookie(&mut response, &cookie);
        }
        response
    }

    /// The provider's answer: `code` and `state`, or `error`.
    async fn callback(&self, parts: &Parts, query: &str) -> Response<Body> {
        if let Some(error) = param(query, "error") {
            // Only a plain error code is echoed; a description could be anyone's text.
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            tracing::info!(error = %code, "identity provider refused the sign-in");
            return with_cleared_csrf(
                &self.codec,
                pages::html(
                    StatusCode::FORBIDDEN,
                    pages::message(
                        "Sign-in not completed",
                        &format!("The identity provider did not sign you in ({code})."),
                        Some((&format!("{}/start", self.prefix), "Try again")),
                    ),
                ),
            );
        }
        let Some(login) = self.login_state(parts, param(query, "state").as_deref()) else {
            return self.expired_sign_in();
        };
        let provider = self.providers.iter().find(|p| p.id() == login.idp);
        let (Some(provider), Some(code), Some(pkce)) =
            (provider, param(query, "code"), &login.pkce)
        else {
            return self.expired_sign_in();
        };
        let lifetime = self.codec.settings().expire;
        let redeemed = match (provider, &login.nonce) {
            (Provider::Oidc(oidc), Some(nonce)) => oidc.redeem(&code, pkce, nonce, lifetime).await,
            (Provider::GitHub(github), _) => github.redeem(&code, pkce, lifetime).await,
            _ => return self.expired_sign_in(),
        };
        match redeemed {
            Ok(session) => self.signed_in(parts, &session, &login.rd).await,
            Err(e) => {
                tracing::warn!(provider = %provider.id(), error = %e, "sign-in failed");
                self.metrics.sign_in(provider.id(), "error");
                // The sign-in attempt is spent either way: its state cannot be replayed.
                with_cleared_csrf(
                    &self.codec,
                    pages::html(
                        StatusCode::BAD_GATEWAY,
                        pages::message(
                            "Sign-in failed",
                            "The identity provider's answer could not be verified. Try again in a moment.",
                            Some((&format!("{}/start", self.prefix), "Try again")),
                        ),
                    ),
                )
            }
        }
    }

    /// The sign-in attempt in the CSRF cookie, if `state` matches it and it is still fresh.
    fn login_state(&self, parts: &Parts, state: Option<&str>) -> Option<LoginState> {
        let login: LoginState = self.codec.read_csrf(&parts.headers)?;
        let echoed = state?;
        // Both values are ours and random; equal length is a given for genuine ones.
        if !constant_time_eq(login.state.as_bytes(), echoed.as_bytes()) {
            tracing::warn!("sign-in refused: state does not match the sign-in cookie");
            return None;
        }
        (login.exp > now()).then_some(login)
    }

    fn dev_provider(&self, id: &str) -> Option<&DevProviderConfig> {
        self.providers.iter().find_map(|p| match p {
            Provider::Dev(dev) if dev.id == id => Some(dev),
            _ => None,
        })
    }

    fn expired_sign_in(&self) -> Response<Body> {
        pages::html(
            StatusCode::BAD_REQUEST,
            pages::message(
                "Sign-in expired",
                "This sign-in page is no longer valid. Start again to sign in.",
                Some((&format!("{}/start", self.prefix), "Sign in")),
            ),
        )
    }

    fn dev_form(&self, parts: &Parts, query: &str) -> Response<Body> {
        let state = param(query, "state");
        let Some(login) = self.login_state(parts, state.as_deref()) else {
            return self.expired_sign_in();
        };
        let Some(dev) = self.dev_provider(&login.idp) else {
            return self.expired_sign_in();
        };
        let users: Vec<DevChoice<'_>> = dev
            .users
            .iter()
            .map(|u| DevChoice {
                value: u.email.clone(),
                name: u.name.as_deref().unwrap_or(&u.email),
                detail: if u.groups.is_empty() {
                    u.email.clone()
                } else {
                    format!("{} · {}", u.email, u.groups.join(", "))
                },
            })
            .collect();
        let action = format!("{}/dev", self.prefix);
        pages::html(
            StatusCode::OK,
            pages::dev_sign_in(&dev.display_name, &action, &login.state, &users),
        )
    }

    async fn dev_sign_in(&self, parts: &Parts, form: &[(String, String)]) -> Response<Body> {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(login) = self.login_state(parts, field("state")) else {
            return self.expired_sign_in();
        };
        let Some(dev) = self.dev_provider(&login.idp) else {
            return self.expired_sign_in();
        };
        let Some(user) = dev
            .users
            .iter()
            .find(|u| Some(u.email.as_str()) == field("user"))
        else {
            return pages::html(
                StatusCode::BAD_REQUEST,
                pages::message(
                    "Unknown user",
                    "That user is not configured for development sign-in.",
                    None,
                ),
            );
        };
        let created = now();
        let session = Session {
            subject: user.email.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            username: user
                .username
                .clone()
                .or_else(|| user.email.split('@').next().map(str::to_string)),
            name: user.name.clone(),
            groups: user.groups.clone(),
            provider: dev.id.clone(),
            created_at: created,
            refreshed_at: created,
            expires_at: created + self.codec.settings().expire.as_secs(),
            tokens: None,
            sid: None,
            memo: Default::default(),
        };
        self.signed_in(parts, &session, &login.rd).await
    }

    /// Stores the session, clears the sign-in state and sends the browser back.
    async fn signed_in(&self, parts: &Parts, session: &Session, rd: &str) -> Response<Body> {
        // Judged by the global rules: a user no rule admits at all is told at once.
        if let Err(refusal) = self.policy.admits_anywhere(session) {
            self.metrics.sign_in(&session.provider, "refused");
            let mut response = self.refused(parts, session, refusal, None);
            set_cookie(&mut response, &self.codec.clear_csrf());
            return response;
        }
        let cookies = match self.save_new(session, &parts.headers).await {
            Ok(cookies) => cookies,
            Err(e) => {
                let mut response = self.store_unavailable(parts, &e);
                set_cookie(&mut response, &self.codec.clear_csrf());
                return response;
            }
        };
        if cookies.is_empty() {
            tracing::warn!(user = %session.log_name(), groups = session.groups.len(), "session too large for cookies");
            let mut response = pages::html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::message(
                    "Session too large",
                    "Your account carries more groups than fit in a browser cookie. Ask the operator to narrow the groups claim.",
                    None,
                ),
            );
            set_cookie(&mut response, &self.codec.clear_csrf());
            return response;
        }
        tracing::info!(user = %session.log_name(), provider = %session.provider, "signed in");
        self.metrics.sign_in(&session.provider, "ok");
        // See other (303): the browser follows with a GET even after the form POST.
        let mut response = redirect_to(rd);
        *response.status_mut() = StatusCode::SEE_OTHER;
        for cookie in cookies {
            set_cookie(&mut response, &cookie);
        }
        set_cookie(&mut response, &self.codec.clear_csrf());
        response
    }

    /// Ends the session (in the store too). `everywhere=true` ends every stored session of
    /// the user.
    async fn sign_out(&self, parts: &Parts, query: &str) -> Response<Body> {
        let (session, id) = match self.load(&parts.headers).await {
            Ok(Some((session, id))) => (Some(session), id),
            Ok(None) => (None, None),
            Err(e) => return self.store_unavailable(parts, &e),
        };
        if let (Some(store), Some(id), Some(session)) = (&self.store, &id, &session) {
            let everywhere = param(query, "everywhere").is_some_and(|v| v == "true" || v == "1");
            let ended = if everywhere {
                store
                    .revoke_user(&session.provider, &session.subject)
                    .await
                    .map(drop)
            } else {
                store.delete(id).await
            };
            if let Err(e) = ended {
                return self.store_unavailable(parts, &e);
            }
        }
        let at_provider = match &session {
            Some(s) => match self.providers.iter().find(|p| p.id() == s.provider) {
                Some(Provider::Oidc(oidc)) => {
                    let back = format!("{}{}/sign_out", self.public_url, self.prefix);
                    oidc.logout_url(s, &back).await
                }
                _ => None,
            },
            None => None,
        };
        let rd = param(query, "rd")
            .and_then(|rd| redirect::validate(&rd, &self.redirect_hosts).map(str::to_string));
        let mut response = match (at_provider, rd) {
            (Some(url), _) => redirect_to(&url),
            (None, Some(rd)) => redirect_to(&rd),
            (None, None) => pages::html(
                StatusCode::OK,
                pages::message(
                    "Signed out",
                    "You have been signed out.",
                    Some((&format!("{}/start", self.prefix), "Sign in again")),
                ),
            ),
        };
        if let Some(session) = &session {
            tracing::info!(user = %session.log_name(), provider = %session.provider, "signed out");
        }
        for cookie in self.codec.clear_all(&parts.headers) {
            set_cookie(&mut response, &cookie);
        }
        response
    }

    /// Forward-auth: an ingress controller asks whether the request it holds may pass.
    /// 202 with `X-Auth-Request-*` identity headers, 401 without a session (or, with
    /// `?redirect=true`, a redirect to sign in for browsers), 403 when denied.
    /// The original request comes from `X-Original-Method`/`X-Original-URL` (nginx
    /// `auth_request`) or `X-Forwarded-Method`/`-Host`/`-Uri` (Traefik), believed only from a
    /// trusted proxy; otherwise the site root is judged.
    async fn forward_auth(
        &self,
        parts: &Parts,
        from_trusted_proxy: bool,
        client: IpAddr,
    ) -> Response<Body> {
        let (method, host, target) = if from_trusted_proxy {
            original_request(&parts.headers)
        } else {
            (Method::GET, None, "/".to_string())
        };
        let host = host
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let host_name = host.rsplit_once(':').map_or(host.as_str(), |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host.as_str()
            }
        });
        let (path, query) = target
            .split_once('?')
            .map_or((target.as_str(), None), |(p, q)| (p, Some(q)));
        let Some(path) = crate::path::normalize(path) else {
            return error_response(
                StatusCode::FORBIDDEN,
                "The request path is not valid.",
                None,
            );
        };
        let uri = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        let Ok(synthetic) = http::Request::builder().method(method).uri(uri).body(()) else {
            return error_response(StatusCode::FORBIDDEN, "The request is not valid.", None);
        };
        let (mut synthetic, ()) = synthetic.into_parts();
        synthetic.headers = parts.headers.clone();
        // nginx turns 401 into its own redirect, so by default the answer is never one.
        // Traefik hands the answer to the browser as it is: `?redirect=true` sends browsers
        // to sign in (API calls still get 401).
        let redirect = parts
            .uri
            .query()
            .and_then(|q| param(q, "redirect"))
            .is_some_and(|v| v == "true" || v == "1");
        if !redirect {
            synthetic
                .headers
                .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        }
        match self.gate(&synthetic, host_name, client).await {
            Gate::Public => accepted(),
            Gate::Pass(session, cookies) => {
                let mut response = accepted();
                // Both conventions: X-Auth-Request-* (oauth2-proxy's), and the X-Forwarded-*
                // names Backstage reads, for an ingress to copy onto the upstream request.
                if self
                    .identity
                    .inject_forward_auth(response.headers_mut(), synthetic.uri.path(), &session)
                    .is_err()
                {
                    return error_response(
                        StatusCode::FORBIDDEN,
                        "Your identity cannot be passed on.",
                        None,
                    );
                }
                for cookie in cookies {
                    set_cookie(&mut response, &cookie);
                }
                response
            }
            Gate::Answer(answer) => answer,
        }
    }

    async fn userinfo(&self, parts: &Parts) -> Response<Body> {
        let loaded = match self.load(&parts.headers).await {
            Ok(loaded) => loaded.map(|(s, _)| s),
            Err(e) => return self.store_unavailable(parts, &e),
        };
        match loaded {
            Some(s) => json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "user": s.user(),
                    "email": s.email,
                    "email_verified": s.email_verified,
                    "preferred_username": s.username,
                    "name": s.name,
                    "groups": s.groups,
                    "provider": s.provider,
                    "expires_at": s.expires_at,
                }),
            ),
            None => json_response(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "unauthorized", "status": 401, "message": "Not signed in."}),
            ),
        }
    }
}

/// True when the access token is about to expire, or the refresh interval has passed.
fn needs_refresh(session: &Session, interval: Option<Duration>) -> bool {
    let now = now();
    session.tokens.as_ref().is_some_and(|t| {
        t.refresh_token.is_some()
            && (t
                .access_expires_at
                .is_some_and(|at| at <= now + REFRESH_MARGIN)
                || interval
                    .is_some_and(|i| now >= session.refreshed_at.saturating_add(i.as_secs())))
    })
}

/// Where a decided request came from and went to, for its audit event.
#[derive(Clone, Copy)]
struct Scene<'a> {
    host: &'a str,
    path: &'a str,
    client: IpAddr,
}

impl Auth {
    /// One structured event, and one count, per access decision.
    fn audit(&self, session: Option<&Session>, rule: &str, outcome: &'static str, at: Scene<'_>) {
        self.metrics.decision(outcome, rule);
        tracing::info!(
            target: "stagedoor::audit",
            user = session.map_or("-", Session::log_name),
            provider = session.map_or("-", |s| s.provider.as_str()),
            rule,
            outcome,
            host = at.host,
            path = at.path,
            client = %at.client,
            "access decision"
        );
    }
}

fn with_cleared_csrf(codec: &Codec, mut response: Response<Body>) -> Response<Body> {
    set_cookie(&mut response, &codec.clear_csrf());
    response
}

/// The request an ingress controller asks about: method, host and path with query.
fn original_request(headers: &http::HeaderMap) -> (Method, Option<String>, String) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let method = get("x-original-method")
        .or_else(|| get("x-forwarded-method"))
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    if let Some(url) = get("x-original-url").and_then(|u| u.parse::<http::Uri>().ok()) {
        let target = url
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        return (method, url.authority().map(|a| a.to_string()), target);
    }
    let host = get("x-forwarded-host").map(str::to_string);
    let target = get("x-forwarded-uri").unwrap_or("/").to_string();
    (method, host, target)
}

/// 400 for a back-channel logout request, as the specification asks (§2.8).
fn logout_refused(description: &str) -> Response<Body> {
    let mut response = json_response(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": "invalid_request", "error_description": description}),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn accepted() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    pages::secure_headers(response.headers_mut());
    response
}

fn provider_unavailable() -> Response<Body> {
    pages::html(
        StatusCode::BAD_GATEWAY,
        pages::message(
            "Sign-in unavailable",
            "The identity provider cannot be reached right now. Try again in a moment.",
            None,
        ),
    )
}

fn redirect_to(location: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    } else {
        headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    }
    pages::secure_headers(headers);
    response
}

fn set_cookie(response: &mut Response<Body>, cookie: &cookie::Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The first value of `name` in a query string, decoded.
fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A form body, at most [`MAX_FORM_BYTES`].
async fn read_form(mut body: Body) -> Option<Vec<(String, String)>> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.ok()?.data_ref() {
            if bytes.len() + data.len() > MAX_FORM_BYTES {
                return None;
            }
            bytes.extend_from_slice(data);
        }
    }
    Some(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Tokens;

    fn session(refresh: bool, expires_in: Option<u64>, refreshed_ago: u64) -> Session {
        let t = now();
        Session {
            sid: None,
            memo: Default::default(),
            subject: "s".into(),
            email: String::new(),
            email_verified: false,
            username: None,
            name: None,
            groups: Vec::new(),
            provider: "p".into(),
            created_at: t - refreshed_ago,
            refreshed_at: t - refreshed_ago,
            expires_at: t + 3600,
            tokens: Some(Tokens {
                access_token: Some("a".into()),
                refresh_token: refresh.then(|| "r".into()),
                id_token: None,
                access_expires_at: expires_in.map(|s| t + s),
            }),
        }
    }

    #[test]
    fn when_sessions_are_refreshed() {
        let minute = Some(Duration::from_secs(60));
        let table = [
            (
                "access token expiring",
                session(true, Some(10), 0),
                None,
                true,
            ),
            (
                "access token valid",
                session(true, Some(3600), 0),
                None,
                false,
            ),
            ("no refresh token", session(false, Some(10), 0), None, false),
            ("no expiry given", session(true, None, 0), None, false),
            (
                "interval passed",
                session(true, Some(3600), 120),
                minute,
                true,
            ),
            (
                "interval not yet passed",
                session(true, Some(3600), 10),
                minute,
                false,
            ),
        ];
        for (name, s, interval, want) in table {
            assert_eq!(needs_refresh(&s, interval), want, "{name}");
        }
        let mut no_tokens = session(true, Some(10), 0);
        no_tokens.tokens = None;
        assert!(!needs_refresh(&no_tokens, minute));
    }

    #[test]
    fn state_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
