//! The identity the upstream learns, and nothing a client made up.
//!
//! Identity headers sent by clients are removed in every spelling. Stagedoor then sets the
//! headers Backstage's `oauth2Proxy` sign-in provider reads (`X-Forwarded-User`, `-Email`,
//! `-Preferred-Username`, `-Groups`, and `X-OAUTH2-PROXY-ID-TOKEN`), and a signed identity
//! token: an ES256 JWT with the user's Backstage entity ref (`sub`), ownership refs (`ent`),
//! email, name, groups and provider, verifiable against `/.well-known/jwks.json`. A token is
//! minted once per identity and reused until half its lifetime is gone, so signing costs
//! nothing on most requests.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use regex::Regex;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backstage::{EntityRef, NameTemplate, normalize_name};
use crate::backstage_token::BackstageTokens;
use crate::config::{Config, ConfigError};
use crate::session::{Session, now};
use crate::signing::Keys;
use crate::wire::{self, put_header};
use crate::{Body, FastMap, full};

const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
const X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
const X_FORWARDED_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-forwarded-preferred-username");
const X_FORWARDED_GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");
const X_FORWARDED_ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-forwarded-access-token");
const X_OAUTH2_PROXY_ID_TOKEN: HeaderName = HeaderName::from_static("x-oauth2-proxy-id-token");

/// Where the signing keys are published.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// A minimal discovery document naming the issuer and [`JWKS_PATH`].
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Most tokens remembered before the expired ones are dropped.
const MAX_MINTED: usize = 50_000;

/// Headers that carry identity to upstreams, here or in oauth2-proxy's and peers' conventions.
/// Compared after lowercasing and turning `_` into `-`, because some servers read
/// `X_Forwarded_Email` as `X-Forwarded-Email`.
pub(crate) const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-oauth2-proxy-id-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-preferred-username",
    "x-auth-request-groups",
    "x-auth-request-access-token",
    "x-stagedoor-identity",
    "x-stagedoor-jwt-assertion",
    "gap-auth",
    "remote-user",
    "x-remote-user",
    "x-webauth-user",
    "x-webauth-email",
    "x-auth-user",
    "x-user",
    "x-email",
];

/// Header names to strip in any spelling: lowercase, with `-` (a client's `_` counts as
/// `-`, which keeps the length and, after the same mapping, the last byte: a name whose length
/// and last byte match no listed name's is ruled out by one bit test).
#[derive(Debug)]
struct NameList {
    names: Vec<String>,
    /// Bit [`NameList::key`] set for every listed name.
    keys: [u64; 4],
}

impl NameList {
    fn new(names: Vec<String>) -> Self {
        let mut keys = [0; 4];
        for name in &names {
            let key = Self::key(name.as_bytes());
            keys[key / 64] |= 1 << (key % 64);
        }
        Self { names, keys }
    }

    /// A bit for the name's length and last byte (`_` read as `-`): the same for every
    /// spelling of a name, and different for most names that differ.
    fn key(name: &[u8]) -> usize {
        let last = match name.last() {
            Some(b'_') => b'-',
            Some(&b) => b,
            None => 0,
        };
        usize::from((name.len() as u8).wrapping_mul(31) ^ last)
    }

    fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        let key = Self::key(name.as_bytes());
        if self.keys[key / 64] & 1 << (key % 64) == 0 {
            return false;
        }
        if !name.contains('_') {
            return self.names.iter().any(|l| *l == name);
        }
        let normalized = name.replace('_', "-");
        self.names.contains(&normalized)
    }

    /// Removes every listed header from `headers`.
    fn strip(&self, headers: &mut HeaderMap) {
        if !headers.keys().any(|n| self.contains(n)) {
            return;
        }
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.contains(n))
            .cloned()
            .collect();
        for name in forged {
            tracing::debug!(header = %name, "removed a client-sent identity header");
            headers.remove(name);
        }
    }
}

/// Removes every identity header in [`IDENTITY_HEADERS`] a client sent.
pub fn strip(headers: &mut HeaderMap) {
    NameList::new(IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect()).strip(headers);
}

/// The four identity headers of one convention.
struct Names {
    user: HeaderName,
    email: HeaderName,
    preferred_username: HeaderName,
    groups: HeaderName,
}

const FORWARDED: Names = Names {
    user: X_FORWARDED_USER,
    email: X_FORWARDED_EMAIL,
    preferred_username: X_FORWARDED_PREFERRED_USERNAME,
    groups: X_FORWARDED_GROUPS,
};

const AUTH_REQUEST: Names = Names {
    user: HeaderName::from_static("x-auth-request-user"),
    email: HeaderName::from_static("x-auth-request-email"),
    preferred_username: HeaderName::from_static("x-auth-request-preferred-username"),
    groups: HeaderName::from_static("x-auth-request-groups"),
};

/// The claims of the signed identity token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    ent: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    groups: &'a [String],
    idp: &'a str,
    iat: u64,
    exp: u64,
}

/// The token minted for one identity, as header values and as head lines.
#[derive(Debug)]
struct Minted {
    jwt_header: HeaderName,
    jwt: HeaderValue,
    /// `Bearer <jwt>`, for `X-OAUTH2-PROXY-ID-TOKEN`, when that is configured.
    bearer: Option<HeaderValue>,
    /// The `jwt_header` line, then the `X-OAUTH2-PROXY-ID-TOKEN` line if any.
    lines: Bytes,
    /// Where the first line ends.
    jwt_end: usize,
}

/// Headers as request-head lines (`name: value\r\n` each).
fn head_lines<'a>(
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + Clone,
) -> Bytes {
    let size = headers
        .clone()
        .map(|(n, v)| wire::header_line_len(n.as_str().len(), v.len()))
        .sum();
    let mut lines = Vec::with_capacity(size);
    for (name, value) in headers {
        put_header(&mut lines, name.as_str().as_bytes(), value.as_bytes());
    }
    Bytes::from(lines)
}

/// The identity headers of one request, ready for the upstream: written straight into a
/// request head after the other headers, or added to a header map.
#[derive(Debug)]
pub struct Injected {
    prepared: Arc<Prepared>,
    minted: Option<Arc<Minted>>,
    /// Whether `X-OAUTH2-PROXY-ID-TOKEN` goes too (`oauth2_proxy_id_token_paths`).
    id_token: bool,
    authorization: Option<HeaderValue>,
}

impl Injected {
    /// Adds the headers to `headers`, replacing any of the same name.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.prepared.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(minted) = &self.minted {
            headers.insert(minted.jwt_header.clone(), minted.jwt.clone());
            if let (true, Some(bearer)) = (self.id_token, &minted.bearer) {
                headers.insert(X_OAUTH2_PROXY_ID_TOKEN, bearer.clone());
            }
        }
        if let Some(bearer) = &self.authorization {
            headers.insert(header::AUTHORIZATION, bearer.clone());
        }
    }

    /// The token lines this request carries.
    fn token_lines(&self) -> &[u8] {
        match &self.minted {
            Some(minted) if self.id_token => &minted.lines,
            Some(minted) => &minted.lines[..minted.jwt_end],
            None => &[],
        }
    }

    /// How many bytes [`Injected::write_to`] adds.
    pub fn head_len(&self) -> usize {
        self.prepared.lines.len()
            + self.token_lines().len()
            + self
                .authorization
                .as_ref()
                .map_or(0, |v| wire::header_line_len("authorization".len(), v.len()))
    }

    /// Writes the headers as request-head lines. The request must not carry any of them:
    /// [`Identity::strip`] removed the identity headers, and `Authorization` is only set
    /// on requests without one.
    pub fn write_to(&self, out: &mut impl BufMut) {
        out.put_slice(&self.prepared.lines);
        out.put_slice(self.token_lines());
        if let Some(bearer) = &self.authorization {
            put_header(out, b"authorization", bearer.as_bytes());
        }
    }
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What [`Identity::inject`] derives from a session once: its identity headers, and the key
/// its tokens are cached under.
#[derive(Debug)]
pub struct Prepared {
    /// The [`Identity`] that made it.
    made_by: u64,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `headers` as request-head lines.
    lines: Bytes,
    key: [u8; 32],
}

/// Tokens by identity ([`identity_key`]), each reused until its renewal time.
pub(crate) struct TokenCache<V> {
    /// (renew at, expires at, token)
    map: RwLock<FastMap<[u8; 32], (u64, u64, V)>>,
}

impl<V: Clone> Default for TokenCache<V> {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
        }
    }
}

impl<V: Clone> TokenCache<V> {
    /// The token for `key` if it is not yet due for renewal at `now`.
    pub(crate) fn get(&self, key: &[u8; 32], now: u64) -> Option<V> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(renew_at, _, _)| now < *renew_at)
            .map(|(_, _, token)| token.clone())
    }

    /// Remembers a token, dropping expired ones when the cache is full.
    pub(crate) fn insert(&self, key: [u8; 32], renew_at: u64, exp: u64, token: V, now: u64) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_MINTED {
            map.retain(|_, (_, exp, _)| *exp > now);
            if map.len() >= MAX_MINTED {
                map.clear();
            }
        }
        map.insert(key, (renew_at, exp, token));
    }
}

/// What the upstream learns about a user, built once from configuration.
pub struct Identity {
    /// Distinguishes this build from those before and after a reload.
    id: u64,
    jwt_header: Option<HeaderName>,
    oauth2_proxy_id_token: bool,
    /// Path prefixes whose requests get `X-OAUTH2-PROXY-ID-TOKEN`.
    id_token_paths: Vec<String>,
    pass_access_token: bool,
    /// [`IDENTITY_HEADERS`], `identity.strip_headers` and `jwt_header`, lowercase with `-`:
    /// one list, so stripping is one pass over the request's headers.
    stripped: NameList,
    issuer: String,
    audience: String,
    lifetime: Duration,
    user_name: NameTemplate,
    namespace: String,
    group_refs: BTreeMap<String, String>,
    group_filter: Option<Regex>,
    keys: Option<Keys>,
    discovery: String,
    minted: TokenCache<Arc<Minted>>,
    backstage: Option<BackstageTokens>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("jwt_header", &self.jwt_header)
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Builds from a validated configuration, loading (or creating) the signing keys when a
    /// token is configured and providers are.
    pub fn build(config: &Config) -> Result<Self, ConfigError> {
        let id = &config.identity;
        let key_error = |e: String| ConfigError::single("identity.signing_key_file", e);
        let token = !id.jwt_header.is_empty() && !config.providers.is_empty();
        let keys = if token {
            Some(
                Keys::load(id.signing_key_file.as_deref(), &id.previous_key_files)
                    .map_err(key_error)?,
            )
        } else {
            None
        };
        let issuer = config
            .auth
            .public_url
            .as_deref()
            .map_or_else(
                || format!("http://{}", config.server.listen),
                str::to_string,
            )
            .trim_end_matches('/')
            .to_string();
        let discovery = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}{JWKS_PATH}"),
            "id_token_signing_alg_values_supported": ["ES256"],
        })
        .to_string();
        let mut stripped: Vec<String> = IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect();
        for extra in id.strip_headers.iter().chain(Some(&id.jwt_header)) {
            let extra = extra.to_ascii_lowercase().replace('_', "-");
            if !extra.is_empty() && !stripped.contains(&extra) {
                stripped.push(extra);
            }
        }
        let invalid = |key: &str, e: String| ConfigError::single(key, e);
        Ok(Self {
            jwt_header: token
                .then(|| HeaderName::from_bytes(id.jwt_header.as_bytes()))
                .transpose()
                .map_err(|e| invalid("identity.jwt_header", e.to_string()))?,
            oauth2_proxy_id_token: id.oauth2_proxy_id_token && token,
            id_token_paths: id.oauth2_proxy_id_token_paths.clone(),
            pass_access_token: id.pass_access_token,
            stripped: NameList::new(stripped),
            issuer,
            audience: id.audience.clone(),
            lifetime: id.token_lifetime,
            user_name: NameTemplate::parse(&id.user_name)
                .map_err(|e| invalid("identity.user_name", e))?,
            namespace: id.namespace.clone(),
            group_refs: id
                .group_refs
                .iter()
                .filter_map(|(g, r)| {
                    Some((g.clone(), EntityRef::parse(r, "group", &id.namespace)?))
                })
                .collect(),
            group_filter: id
                .group_filter
                .as_deref()
                .map(|re| Regex::new(&format!("^(?:{re})$")))
                .transpose()
                .map_err(|e| invalid("identity.group_filter", e.to_string()))?,
            keys,
            discovery,
            minted: TokenCache::default(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            backstage: BackstageTokens::build(&config.backstage)?,
        })
    }

    /// Removes identity headers a client sent: the built-in list and the configured ones.
    pub fn strip(&self, headers: &mut HeaderMap) {
        self.stripped.strip(headers);
    }

    /// The identity headers of a request about to be forwarded: the user's, the tokens, and
    /// a Backstage user token when the request is under `backstage.paths` and carries no
    /// `Authorization` of its own (Backstage's frontend sends its own; those stay). Fails if
    /// the user cannot be expressed in headers or a token: the request must then not be
    /// forwarded.
    pub fn injected(
        &self,
        headers: &HeaderMap,
        path: &str,
        session: &Session,
    ) -> Result<Injected, InvalidIdentity> {
        let mut injected = self.base(path, session)?;
        if let Some(backstage) = &self.backstage
            && backstage.covers(path)
            && !headers.contains_key(header::AUTHORIZATION)
        {
            let refs = || self.refs(session);
            let bearer = backstage.token(injected.prepared.key, refs);
            injected.authorization = Some(bearer.ok_or(InvalidIdentity)?);
        }
        Ok(injected)
    }

    /// The user's headers and tokens for a request to `path`, without a Backstage token.
    fn base(&self, path: &str, session: &Session) -> Result<Injected, InvalidIdentity> {
        let prepared = self.prepared(session)?;
        let minted = match self.jwt_header {
            Some(_) => Some(self.token(session, &prepared.key)?),
            None => None,
        };
        let id_token = self.oauth2_proxy_id_token
            && self
                .id_token_paths
                .iter()
                .any(|p| path.starts_with(p.as_str()));
        Ok(Injected {
            prepared,
            minted,
            id_token,
            authorization: None,
        })
    }

    /// Sets the identity headers (not the Backstage user token) of a request to `path` in
    /// `headers`.
    pub fn inject(
        &self,
        headers: &mut HeaderMap,
        path: &str,
        session: &Session,
    ) -> Result<(), InvalidIdentity> {
        self.base(path, session)?.insert_into(headers);
        Ok(())
    }

    /// The headers [`Identity::inject`] sets for `session` apart from tokens, and its
    /// [`identity_key`]: made at the session's first request, kept in its memo.
    /// A memo made under another configuration (a session shared across a reload) is not
    /// used; the value is then made again for this request.
    fn prepared(&self, session: &Session) -> Result<Arc<Prepared>, InvalidIdentity> {
        match session.memo.get_or_init(|| self.prepare(session)) {
            Some(memo) if memo.made_by == self.id => Ok(Arc::clone(memo)),
            Some(_) => self.prepare(session).ok_or(InvalidIdentity),
            None => Err(InvalidIdentity),
        }
    }

    fn prepare(&self, session: &Session) -> Option<Arc<Prepared>> {
        let mut names = HeaderMap::new();
        set_names(&mut names, session, &FORWARDED).ok()?;
        if self.pass_access_token
            && let Some(token) = session
                .tokens
                .as_ref()
                .and_then(|t| t.access_token.as_deref())
            && let Ok(value) = HeaderValue::from_str(token)
        {
            names.insert(X_FORWARDED_ACCESS_TOKEN, value);
        }
        let headers: Vec<_> = names
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Arc::new(Prepared {
            made_by: self.id,
            lines: head_lines(headers.iter().map(|(n, v)| (n, v))),
            headers,
            key: identity_key(session),
        }))
    }

    /// The headers of a forward-auth answer: oauth2-proxy's `X-Auth-Request-*` names, and
    /// everything [`Identity::inject`] sets, for the ingress to copy onto the request.
    pub fn inject_forward_auth(
        &self,
        headers: &mut HeaderMap,
        path: &str,
        session: &Session,
    ) -> Result<(), InvalidIdentity> {
        set_names(headers, session, &AUTH_REQUEST)?;
        self.inject(headers, path, session)
    }

    /// `/.well-known/jwks.json` and `/.well-known/openid-configuration`, served to anyone.
    pub fn well_known(&self, method: &Method, path: &str) -> Option<Response<Body>> {
        let keys = self.keys.as_ref()?;
        let body = match path {
            JWKS_PATH => keys.jwks().to_string(),
            DISCOVERY_PATH => self.discovery.clone(),
            _ => return None,
        };
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let mut response = Response::new(full(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Short enough that a rotation reaches verifiers quickly.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        *response.status_mut() = StatusCode::OK;
        Some(response)
    }

    /// The user's Backstage entity ref: the `user_name` template, else the email's local part,
    /// else the provider's subject, normalized.
    pub fn user_ref(&self, session: &Session) -> Option<String> {
        let name = self
            .user_name
            .render(session)
            .or_else(|| normalize_name(session.email.split('@').next().unwrap_or_default()))
            .or_else(|| normalize_name(&session.subject))?;
        Some(format!("user:{}/{name}", self.namespace))
    }

    /// The user's ref, then the ownership refs of their groups (mapped, or filtered and
    /// normalized): `sub` and `ent` of the tokens Stagedoor mints.
    pub fn refs(&self, session: &Session) -> Option<Vec<String>> {
        let mut refs = vec![self.user_ref(session)?];
        for group in &session.groups {
            let entity = match self.group_refs.get(group) {
                Some(mapped) => Some(mapped.clone()),
                None if self
                    .group_filter
                    .as_ref()
                    .is_some_and(|re| !re.is_match(group)) =>
                {
                    None
                }
                None => normalize_name(group).map(|n| format!("group:{}/{n}", self.namespace)),
            };
            if let Some(entity) = entity
                && !refs.contains(&entity)
            {
                refs.push(entity);
            }
        }
        Some(refs)
    }

    /// The token for `session`'s identity: the one minted before if it has more than half its
    /// lifetime left, else a new one.
    fn token(&self, session: &Session, key: &[u8; 32]) -> Result<Arc<Minted>, InvalidIdentity> {
        let (keys, Some(jwt_header)) =
            (self.keys.as_ref().ok_or(InvalidIdentity)?, &self.jwt_header)
        else {
            return Err(InvalidIdentity);
        };
        let now = now();
        if let Some(minted) = self.minted.get(key, now) {
            return Ok(minted);
        }
        let ent = self.refs(session).ok_or(InvalidIdentity)?;
        let exp = now + self.lifetime.as_secs();
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: &ent[0],
            ent: &ent,
            email: &session.email,
            name: session.name.as_deref(),
            preferred_username: session.username.as_deref(),
            groups: &session.groups,
            idp: &session.provider,
            iat: now,
            exp,
        };
        let jwt = keys.sign(&claims).map_err(|e| {
            tracing::error!(error = %e, "cannot sign an identity token");
            InvalidIdentity
        })?;
        let jwt_value = HeaderValue::from_str(&jwt).map_err(|_| InvalidIdentity)?;
        let bearer = if self.oauth2_proxy_id_token {
            let value = HeaderValue::from_str(&format!("Bearer {jwt}"));
            Some(value.map_err(|_| InvalidIdentity)?)
        } else {
            None
        };
        let id_token_name = X_OAUTH2_PROXY_ID_TOKEN;
        let lines = head_lines(
            std::iter::once((jwt_header, &jwt_value))
                .chain(bearer.iter().map(|b| (&id_token_name, b))),
        );
        let minted = Arc::new(Minted {
            jwt_end: wire::header_line_len(jwt_header.as_str().len(), jwt_value.len()),
            jwt_header: jwt_header.clone(),
            jwt: jwt_value,
            bearer,
            lines,
        });
        let renew_at = now + self.lifetime.as_secs() / 2;
        self.minted
            .insert(*key, renew_at, exp, Arc::clone(&minted), now);
        Ok(minted)
    }
}

/// Everything a token says about the user, hashed: equal keys mean equal claims.
pub(crate) fn identity_key(session: &Session) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [
        session.provider.as_str(),
        session.subject.as_str(),
        session.email.as_str(),
        session.username.as_deref().unwrap_or("\u{0}none"),
        session.name.as_deref().unwrap_or("\u{0}none"),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    for group in &session.groups {
        hash.update((group.len() as u64).to_le_bytes());
        hash.update(group.as_bytes());
    }
    hash.finalize().into()
}

fn set_names(
    headers: &mut HeaderMap,
    session: &Session,
    names: &Names,
) -> Result<(), InvalidIdentity> {
    let user = HeaderValue::from_str(session.user()).map_err(|_| InvalidIdentity)?;
    headers.insert(names.user.clone(), user);
    let mut set = |name: &HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), v);
        }
    };
    if !session.email.is_empty() {
        set(&names.email, &session.email);
    }
    if let Some(username) = session.username.as_deref() {
        set(&names.preferred_username, username);
    }
    // A comma inside a group name would read as two groups; such names are left out.
    let groups: Vec<&str> = session
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| !g.contains(',') && HeaderValue::from_str(g).is_ok())
        .collect();
    if groups.len() < session.groups.len() {
        tracing::warn!(
            user = %session.log_name(),
            skipped = session.groups.len() - groups.len(),
            "groups with commas or control characters are not forwarded"
        );
    }
    if !groups.is_empty() {
        set(&names.groups, &groups.join(","));
    }
    Ok(())
}

/// The signed-in user cannot be sent upstream (a header value or token cannot be made).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the user's identity cannot be sent upstream")]
pub struct InvalidIdentity;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_are_found_whatever_their_length() {
        let long = format!("x-{}", "a".repeat(140));
        let list = NameList::new(vec!["x-user".into(), long.clone()]);
        let has = |name: &str| list.contains(&HeaderName::from_bytes(name.as_bytes()).unwrap());
        assert!(has("x-user") && has("X_User") && has(&long) && has(&long.replace('-', "_")));
        // Same lengths, other names; other lengths.
        assert!(!has("x-usex") && !has("x-users") && !has(&format!("x-{}", "b".repeat(140))));
        assert!(!has(&format!("x-{}", "a".repeat(141))) && !has("host"));
        // A name ending in `_` is found as the one ending in `-`.
        let list = NameList::new(vec!["x-user-".into()]);
        let has = |name: &str| list.contains(&HeaderName::from_bytes(name.as_bytes()).unwrap());
        assert!(has("x_user_") && has("X-User-") && !has("x-userx"));
        // Every identity header, in every spelling, passes the bit test of the default list.
        let list = NameList::new(IDENTITY_HEADERS.iter().map(|h| h.to_string()).collect());
        for name in IDENTITY_HEADERS {
            for spelling in [
                name.to_string(),
                name.replace('-', "_"),
                name.to_uppercase(),
            ] {
                assert!(list.contains(&HeaderName::from_bytes(spelling.as_bytes()).unwrap()));
            }
        }
        // The headers every request carries are ruled out by it.
        for name in ["host", "cookie", "accept", "user-agent", "accept-encoding"] {
            let key = NameList::key(name.as_bytes());
            assert_eq!(list.keys[key / 64] & 1 << (key % 64), 0, "{name}");
        }
    }

    #[test]
    fn forged_identity_is_removed_in_every_spelling() {
        let mut h = HeaderMap::new();
        for name in [
            "x-forwarded-email",
            "X-Forwarded-User",
            "x_forwarded_email",
            "X_FORWARDED_GROUPS",
            "x-forwarded_preferred-username",
            "x-oauth2-proxy-id-token",
            "remote_user",
            "x-forwarded-for",
            "accept",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("forged"),
            );
        }
        strip(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-forwarded-for"]);
    }

    #[test]
    fn the_access_token_is_passed_only_when_asked() {
        let session = Session {
            sid: None,
            memo: Default::default(),
            subject: "alice".into(),
            email: "alice@example.com".into(),
            email_verified: true,
            username: None,
            name: None,
            groups: Vec::new(),
            provider: "corp".into(),
            created_at: 0,
            refreshed_at: 0,
            expires_at: u64::MAX,
            tokens: Some(crate::session::Tokens {
                access_token: Some("at-123".into()),
                ..Default::default()
            }),
        };
        for (flag, want) in [(false, None), (true, Some("at-123"))] {
            let config = Config::from_toml(&format!(
                "[upstreams.web]\nurl = \"http://a\"\n[identity]\npass_access_token = {flag}\n"
            ))
            .unwrap();
            let identity = Identity::build(&config).unwrap();
            let mut headers = HeaderMap::new();
            identity.inject(&mut headers, "/", &session).unwrap();
            let got = headers
                .get("x-forwarded-access-token")
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, want);
            assert_eq!(headers["x-forwarded-user"], "alice");
        }
    }
}
