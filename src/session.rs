//! Sessions in cookies: what a signed-in user carries, sealed with AES-256-GCM.
//!
//! A session is serialized, encrypted and authenticated under the cookie's name (the `cookie`
//! crate's private jar), then split into numbered chunks (`_stagedoor_0`, `_stagedoor_1`, ...)
//! when it is too large for one cookie. Chunks are reassembled before decryption, so a missing,
//! reordered or foreign chunk fails authentication like any other tampering. Older secrets are
//! still accepted for reading, so the secret can be rotated without signing everyone out.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::HeaderMap;
use http::header::{self, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::FastMap;
use crate::identity::Prepared;

/// Largest cookie value Stagedoor sets; browsers cap name plus value near 4096 bytes.
const MAX_CHUNK: usize = 3800;
/// Most chunks written or read back (about 22 KiB, within `server.max_header_bytes`'s
/// default); a larger session is refused rather than written.
const MAX_CHUNKS: usize = 6;

/// Who is signed in, as carried in the session cookie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Stable subject identifier from the provider.
    #[serde(rename = "sub")]
    pub subject: String,
    /// Email address, as the provider gave it.
    #[serde(rename = "em", default)]
    pub email: String,
    /// Whether the provider says the email address was verified.
    #[serde(rename = "ev", default)]
    pub email_verified: bool,
    /// Preferred username (login name), if the provider gave one.
    #[serde(rename = "un", default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Display name.
    #[serde(rename = "nm", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Groups (or roles, orgs and teams) from the provider.
    #[serde(rename = "gr", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Id of the provider that signed the user in.
    #[serde(rename = "idp")]
    pub provider: String,
    /// Unix time the user signed in.
    #[serde(rename = "iat")]
    pub created_at: u64,
    /// Unix time the session was last refreshed at the provider (sign-in counts).
    #[serde(rename = "rfa", default)]
    pub refreshed_at: u64,
    /// Unix time the session ends.
    #[serde(rename = "exp")]
    pub expires_at: u64,
    /// The provider's tokens, for refresh and for later forwarding.
    #[serde(rename = "tk", default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// The provider's session id (`sid` of the ID token), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// What the identity module derives from this session, kept for the session's next
    /// requests. Not part of the session: never serialized, never compared, empty in a clone.
    #[serde(skip)]
    pub memo: Memo,
}

/// A value computed from a session at its first use (see [`Session::memo`]).
#[derive(Default)]
pub struct Memo(OnceLock<Option<Arc<Prepared>>>);

impl Memo {
    /// The value, computed by `init` if this is the first use.
    pub fn get_or_init(
        &self,
        init: impl FnOnce() -> Option<Arc<Prepared>>,
    ) -> Option<&Arc<Prepared>> {
        self.0.get_or_init(init).as_ref()
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// Sessions opened from cookies, by sealed value, so that a session's later requests skip
/// decryption and parsing. Only values that opened are kept, and an entry is used only while
/// its session has not expired, so the cache admits nothing the cookie alone would not. It is
/// bounded in entries and in bytes: when full, expired entries go, and if that is not enough,
/// all of them.
#[derive(Debug, Default)]
pub struct OpenedSessions {
    inner: RwLock<Opened>,
}

#[derive(Debug, Default)]
struct Opened {
    map: FastMap<Box<str>, Arc<Session>>,
    /// Sum of the sealed values' lengths; the opened sessions take about as much again.
    bytes: usize,
}

/// Most sessions [`OpenedSessions`] holds.
const MAX_OPENED: usize = 10_000;
/// Most bytes of sealed values it holds (sessions with large tokens or many groups reach
/// the limit before the count does): about 32 MiB with the sessions themselves.
const MAX_OPENED_BYTES: usize = 16 << 20;

impl OpenedSessions {
    fn get(&self, sealed: &str, now: u64) -> Option<Arc<Session>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .map
            .get(sealed)
            .filter(|s| s.expires_at > now)
            .map(Arc::clone)
    }

    fn insert(&self, sealed: String, session: Arc<Session>, now: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        // The same value opened twice at once (two requests): kept once, counted once.
        if let Some(known) = inner.map.get_mut(sealed.as_str()) {
            *known = session;
            return;
        }
        let full =
            |o: &Opened| o.map.len() >= MAX_OPENED || o.bytes + sealed.len() > MAX_OPENED_BYTES;
        if full(&inner) {
            inner.map.retain(|_, s| s.expires_at > now);
            inner.bytes = inner.map.keys().map(|k| k.len()).sum();
            if full(&inner) {
                inner.map.clear();
                inner.bytes = 0;
            }
        }
        inner.bytes += sealed.len();
        inner.map.insert(sealed.into_boxed_str(), session);
    }
}

/// Tokens from the provider. `Debug` never prints them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    /// Access token.
    #[serde(rename = "at", default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Refresh token.
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// ID token (compact JWT).
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Unix time the access token expires.
    #[serde(rename = "ax", default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("access_expires_at", &self.access_expires_at)
            .finish()
    }
}

impl Session {
    /// The user as forwarded in `X-Forwarded-User`: the provider's stable subject, as
    /// oauth2-proxy does (usernames can change hands; subjects do not).
    pub fn user(&self) -> &str {
        &self.subject
    }

    /// How logs name the user: the email if there is one, else the subject.
    pub fn log_name(&self) -> &str {
        if self.email.is_empty() {
            &self.subject
        } else {
            &self.email
        }
    }
}

/// Seconds since the Unix epoch.
///
/// Expiry is judged to the second, several times per signed-in request. On Linux this reads
/// the coarse clock, which the kernel keeps in the vDSO's memory at each tick (a few ms
/// behind, never ahead), instead of reading and scaling the time-stamp counter.
pub fn now() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        u64::try_from(t.tv_sec).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cookie attributes from configuration.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// Base name of the session cookie; chunks append `_0`, `_1`, ...
    pub name: String,
    /// `Domain` attribute, if any.
    pub domain: Option<String>,
    /// `Path` attribute.
    pub path: String,
    /// `Secure` attribute.
    pub secure: bool,
    /// Session lifetime.
    pub expire: Duration,
}

/// Seals and opens Stagedoor's cookies.
pub struct Codec {
    /// The first key seals; all of them open.
    keys: Vec<Key>,
    settings: CookieSettings,
    csrf_name: String,
    opened: OpenedSessions,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("keys", &self.keys.len())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Codec {
    /// A codec sealing with `current` and also opening with `previous`. Each secret is at
    /// least 32 bytes (checked by the configuration).
    pub fn new(current: &[u8], previous: &[Vec<u8>], settings: CookieSettings) -> Self {
        let keys = std::iter::once(current)
            .chain(previous.iter().map(Vec::as_slice))
            .map(Key::derive_from)
            .collect();
        let csrf_name = format!("{}_csrf", settings.name);
        Self {
            keys,
            settings,
            csrf_name,
            opened: OpenedSessions::default(),
        }
    }

    /// The cookie settings.
    pub fn settings(&self) -> &CookieSettings {
        &self.settings
    }

    /// True if `name` is one of Stagedoor's cookies (removed before forwarding).
    pub fn owns(&self, name: &str) -> bool {
        let base = &self.settings.name;
        name == base
            || name == self.csrf_name
            || name
                .strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    fn seal(&self, name: &str, plaintext: String) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.private_mut(self.keys.first()?)
            .add(Cookie::new(name.to_string(), plaintext));
        jar.get(name).map(|c| c.value().to_string())
    }

    fn open(&self, name: &str, sealed: &str) -> Option<String> {
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            jar.private(key)
                .decrypt(Cookie::new(name.to_string(), sealed.to_string()))
                .map(|c| c.value().to_string())
        })
    }

    fn base_cookie(&self, name: String, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(name, value);
        cookie.set_http_only(true);
        cookie.set_secure(self.settings.secure);
        cookie.set_same_site(SameSite::Lax);
        cookie.set_path(self.settings.path.clone());
        if let Some(domain) = &self.settings.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }

    fn removal(&self, name: String) -> Cookie<'static> {
        let mut cookie = self.base_cookie(name, String::new());
        cookie.make_removal();
        cookie
    }

    /// The `Set-Cookie` values that store `session`, clearing chunks of an older, larger one.
    /// Empty if the session is too large for [`MAX_CHUNKS`] cookies.
    pub fn write_session(&self, session: &Session, request: &HeaderMap) -> Vec<Cookie<'static>> {
        match serde_json::to_string(session) {
            Ok(json) => self.write_sealed(json, request),
            Err(_) => Vec::new(),
        }
    }

    /// The `Set-Cookie` values that store a server-side session's ticket.
    pub fn write_ticket(&self, ticket: &str, request: &HeaderMap) -> Vec<Cookie<'static>> {
        let json = serde_json::json!({ "t": ticket }).to_string();
        self.write_sealed(json, request)
    }

    /// The ticket of a server-side session in the request's cookies.
    pub fn read_ticket(&self, request: &HeaderMap) -> Option<String> {
        let json = self.read_sealed(request)?;
        let value: serde_json::Value = serde_json::from_str(&json).ok()?;
        value["t"].as_str().map(str::to_string)
    }

    fn write_sealed(&self, json: String, request: &HeaderMap) -> Vec<Cookie<'static>> {
        let base = &self.settings.name;
        let Some(sealed) = self.seal(base, json) else {
            return Vec::new();
        };
        let max_age = cookie::time::Duration::seconds(
            i64::try_from(self.settings.expire.as_secs()).unwrap_or(i64::MAX),
        );
        if sealed.len() > MAX_CHUNK * MAX_CHUNKS {
            return Vec::new();
        }
        let mut names = Vec::new();
        if sealed.len() <= MAX_CHUNK {
            names.push((base.clone(), sealed));
        } else {
            let chunks = sealed.as_bytes().chunks(MAX_CHUNK);
            for (i, chunk) in chunks.enumerate() {
                // The sealed value is base64, so every chunk boundary is a char boundary.
                names.push((
                    format!("{base}_{i}"),
                    String::from_utf8_lossy(chunk).into_owned(),
                ));
            }
        }
        let mut out: Vec<Cookie<'static>> = names
            .iter()
            .map(|(name, value)| {
                let mut c = self.base_cookie(name.clone(), value.clone());
                c.set_max_age(max_age);
                c
            })
            .collect();
        for existing in request_cookie_names(request) {
            if existing != self.csrf_name
                && self.owns(&existing)
                && !names.iter().any(|(n, _)| *n == existing)
            {
                out.push(self.removal(existing));
            }
        }
        out
    }

    /// The session in the request's cookies, if there is one that opens and has not expired.
    pub fn read_session(&self, request: &HeaderMap) -> Option<Session> {
        self.open_session(&self.sealed_session(request)?)
    }

    /// As [`Codec::read_session`], shared: a sealed value this codec opened before is not
    /// decrypted and parsed again (see [`OpenedSessions`]).
    pub fn read_session_shared(&self, request: &HeaderMap) -> Option<Arc<Session>> {
        let sealed = self.sealed_session(request)?;
        let now = now();
        if let Some(session) = self.opened.get(&sealed, now) {
            return Some(session);
        }
        let session = Arc::new(self.open_session(&sealed)?);
        self.opened
            .insert(sealed.into_owned(), Arc::clone(&session), now);
        Some(session)
    }

    fn open_session(&self, sealed: &str) -> Option<Session> {
        let json = self.open_sealed(sealed)?;
        let session: Session = serde_json::from_str(&json).ok()?;
        if session.expires_at <= now() {
            tracing::debug!("session expired");
            return None;
        }
        Some(session)
    }

    /// The opened content of the session cookie (joined from its chunks).
    fn read_sealed(&self, request: &HeaderMap) -> Option<String> {
        self.open_sealed(&self.sealed_session(request)?)
    }

    fn open_sealed(&self, sealed: &str) -> Option<String> {
        let json = self.open(&self.settings.name, sealed);
        if json.is_none() {
            tracing::debug!("session cookie did not open (tampered, truncated or another secret)");
        }
        json
    }

    /// The session cookie's value as the request carries it, its chunks joined; not opened.
    /// Borrowed from the request when it is a single cookie (the common case).
    fn sealed_session<'a>(&self, request: &'a HeaderMap) -> Option<Cow<'a, str>> {
        let base = &self.settings.name;
        let find = |name: &str| {
            cookie_pairs(request)
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
        };
        if let Some(single) = find(base) {
            return Some(Cow::Borrowed(single));
        }
        let mut joined = String::new();
        for i in 0..=MAX_CHUNKS {
            match find(&format!("{base}_{i}")) {
                Some(chunk) if i < MAX_CHUNKS => joined.push_str(chunk),
                Some(_) => return None,
                None => break,
            }
        }
        (!joined.is_empty()).then_some(Cow::Owned(joined))
    }

    /// `Set-Cookie` values that remove every Stagedoor cookie the request carries.
    pub fn clear_all(&self, request: &HeaderMap) -> Vec<Cookie<'static>> {
        request_cookie_names(request)
            .into_iter()
            .filter(|name| self.owns(name))
            .map(|name| self.removal(name))
            .collect()
    }

    /// The short-lived cookie that carries sign-in state between start and callback.
    pub fn write_csrf<T: Serialize>(
        &self,
        state: &T,
        lifetime: Duration,
    ) -> Option<Cookie<'static>> {
        let sealed = self.seal(&self.csrf_name, serde_json::to_string(state).ok()?)?;
        let mut c = self.base_cookie(self.csrf_name.clone(), sealed);
        c.set_max_age(cookie::time::Duration::seconds(
            i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
        ));
        Some(c)
    }

    /// The sign-in state from the request, if its cookie opens.
    pub fn read_csrf<T: DeserializeOwned>(&self, request: &HeaderMap) -> Option<T> {
        let cookies = request_cookies(request);
        let (_, sealed) = cookies.iter().find(|(n, _)| *n == self.csrf_name)?;
        serde_json::from_str(&self.open(&self.csrf_name, sealed)?).ok()
    }

    /// A removal for the sign-in state cookie.
    pub fn clear_csrf(&self) -> Cookie<'static> {
        self.removal(self.csrf_name.clone())
    }

    /// Removes Stagedoor's cookies from a request about to be forwarded, keeping the others.
    pub fn strip_own(&self, headers: &mut HeaderMap) {
        let (mut ours, mut theirs) = (false, false);
        // Only names are read here, so values are not checked (or copied) on this pass.
        for value in headers.get_all(header::COOKIE) {
            for pair in pieces(value.as_bytes(), b';') {
                match std::str::from_utf8(pair_name(pair)) {
                    Ok("") => {}
                    Ok(name) if self.owns(name) => ours = true,
                    _ => theirs = true,
                }
            }
        }
        if !ours {
            return;
        }
        if !theirs {
            headers.remove(header::COOKIE);
            return;
        }
        // Rebuilt from bytes, so the client's other cookies stay even in a header that is not
        // plain ASCII.
        let mut kept = Vec::new();
        for value in headers.get_all(header::COOKIE) {
            for pair in pieces(value.as_bytes(), b';').map(<[u8]>::trim_ascii) {
                let ours = std::str::from_utf8(pair_name(pair)).is_ok_and(|n| self.owns(n));
                if pair.is_empty() || ours {
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair);
            }
        }
        headers.remove(header::COOKIE);
        if let Ok(value) = HeaderValue::from_bytes(&kept)
            && !value.is_empty()
        {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// The `name=value` pairs of the request's `Cookie` headers, in order, borrowed: the pairs
/// `cookie::Cookie::split_parse` finds, without its allocations.
fn cookie_pairs(request: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    request
        .get_all(header::COOKIE)
        .iter()
        // As `request_cookies` reads them (sign-out, chunk clean-up): plain ASCII headers only.
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| str_pieces(v, b';'))
        .filter_map(|pair| {
            let at = memchr::memchr(b'=', pair.as_bytes())?;
            let name = pair.get(..at)?.trim_ascii();
            let value = pair.get(at + 1..)?.trim_ascii();
            (!name.is_empty()).then_some((name, value))
        })
}

/// As [`pieces`], for text split at an ASCII `separator` (so at char boundaries).
fn str_pieces(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    spans(text.as_bytes(), separator).filter_map(|piece| text.get(piece))
}

/// The name of a `name=value` cookie pair, trimmed.
fn pair_name(pair: &[u8]) -> &[u8] {
    pieces(pair, b'=').next().unwrap_or_default().trim_ascii()
}

/// The pieces of `bytes` between `separator`s. Cookie headers are long (a session is a few
/// hundred bytes), so the separators are found with `memchr`, not byte by byte (as
/// `str::split` does for a `char`, without first checking the whole value).
fn pieces(bytes: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    spans(bytes, separator).filter_map(|piece| bytes.get(piece))
}

/// Where the pieces of `bytes` between `separator`s lie.
fn spans(bytes: &[u8], separator: u8) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    memchr::memchr_iter(separator, bytes)
        .chain(std::iter::once(bytes.len()))
        .map(move |end| {
            let piece = start..end;
            start = end + 1;
            piece
        })
}

/// All `name=value` pairs from the request's `Cookie` headers.
fn request_cookies(request: &HeaderMap) -> Vec<(String, String)> {
    request
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .map(|c| (c.name().to_string(), c.value().to_string()))
        .collect()
}

fn request_cookie_names(request: &HeaderMap) -> Vec<String> {
    request_cookies(request)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cookie_pairs` finds the pairs the `cookie` crate's parser finds.
    #[test]
    fn cookie_pairs_agree_with_the_cookie_parser() {
        for header in [
            "a=1",
            "a=1; b=2",
            " a = 1 ;b=2;; c=3 ",
            "a=1;b",
            "=x; a=1",
            "a==b=c; d=",
            "a=\"quoted\"; b= spaced value ",
            ";;;",
            "_stagedoor=abc/DEF+12==; other=1",
            "a=1;\tb=2",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_static(header));
            let ours: Vec<(String, String)> = cookie_pairs(&headers)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(ours, request_cookies(&headers), "{header:?}");
        }
    }

    fn settings() -> CookieSettings {
        CookieSettings {
            name: "_stagedoor".into(),
            domain: None,
            path: "/".into(),
            secure: true,
            expire: Duration::from_secs(3600),
        }
    }

    fn session(groups: usize) -> Session {
        Session {
            sid: None,
            memo: Default::default(),
            subject: "alice-1".into(),
            email: "alice@example.com".into(),
            email_verified: true,
            username: Some("alice".into()),
            name: Some("Alice".into()),
            groups: (0..groups)
                .map(|i| format!("group-with-a-long-name-{i:04}"))
                .collect(),
            provider: "dev".into(),
            created_at: now(),
            refreshed_at: now(),
            expires_at: now() + 3600,
            tokens: None,
        }
    }

    /// The request a browser sends back after receiving `set`.
    fn request_with(set: &[Cookie<'static>]) -> HeaderMap {
        let pairs: Vec<String> = set
            .iter()
            .filter(|c| !c.value().is_empty())
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap(),
        );
        h
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"ffffffffffffffffffffffffffffffff";

    #[test]
    fn round_trip_with_attributes() {
        let codec = Codec::new(SECRET, &[], settings());
        let cookies = codec.write_session(&session(2), &HeaderMap::new());
        assert_eq!(cookies.len(), 1);
        let c = &cookies[0];
        assert_eq!(
            (c.http_only(), c.secure(), c.same_site()),
            (Some(true), Some(true), Some(SameSite::Lax))
        );
        assert!(!c.value().contains("alice"), "the session is encrypted");
        assert_eq!(
            codec.read_session(&request_with(&cookies)),
            Some(session(2))
        );
    }

    #[test]
    fn large_sessions_are_chunked_and_reassembled() {
        let codec = Codec::new(SECRET, &[], settings());
        let big = session(300);
        let cookies = codec.write_session(&big, &HeaderMap::new());
        assert!(cookies.len() > 2, "{} cookies", cookies.len());
        assert!(cookies.iter().all(|c| c.value().len() <= MAX_CHUNK));
        assert_eq!(codec.read_session(&request_with(&cookies)), Some(big));

        // A smaller session written over it clears the stale chunks.
        let small = codec.write_session(&session(1), &request_with(&cookies));
        let removed: Vec<&str> = small
            .iter()
            .filter(|c| c.value().is_empty())
            .map(|c| c.name())
            .collect();
        assert_eq!(removed.len(), cookies.len());

        // Reordered or missing chunks do not open.
        let mut shuffled = cookies.clone();
        let (a, b) = (
            shuffled[0].value().to_string(),
            shuffled[1].value().to_string(),
        );
        shuffled[0].set_value(b);
        shuffled[1].set_value(a);
        assert_eq!(codec.read_session(&request_with(&shuffled)), None);
        assert_eq!(codec.read_session(&request_with(&cookies[1..])), None);
        assert_eq!(
            codec.read_session(&request_with(&cookies[..cookies.len() - 1])),
            None
        );
    }

    #[test]
    fn tampered_foreign_and_expired_sessions_are_no_session() {
        let codec = Codec::new(SECRET, &[], settings());
        let mut cookies = codec.write_session(&session(0), &HeaderMap::new());
        let value = cookies[0].value().to_string();
        let mut tampered = value.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        cookies[0].set_value(String::from_utf8(tampered).unwrap());
        assert_eq!(codec.read_session(&request_with(&cookies)), None);
        cookies[0].set_value(value[..value.len() / 2].to_string());
        assert_eq!(codec.read_session(&request_with(&cookies)), None);

        let foreign = Codec::new(OTHER, &[], settings());
        let theirs = foreign.write_session(&session(0), &HeaderMap::new());
        assert_eq!(codec.read_session(&request_with(&theirs)), None);

        let mut old = session(0);
        old.expires_at = now() - 1;
        let expired = codec.write_session(&old, &HeaderMap::new());
        assert_eq!(codec.read_session(&request_with(&expired)), None);

        // A cookie sealed under another name (the CSRF cookie) does not open as a session.
        let csrf = codec
            .write_csrf(&session(0), Duration::from_secs(60))
            .unwrap();
        let renamed = Cookie::new("_stagedoor", csrf.value().to_string());
        assert_eq!(codec.read_session(&request_with(&[renamed])), None);
    }

    #[test]
    fn a_session_opened_once_is_shared_until_it_expires() {
        let codec = Codec::new(SECRET, &[], settings());
        let cookies = codec.write_session(&session(0), &HeaderMap::new());
        let first = codec.read_session_shared(&request_with(&cookies)).unwrap();
        let again = codec.read_session_shared(&request_with(&cookies)).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "opened once");
        assert_eq!(*first, session(0));

        // Tampered values are refused every time, and never remembered.
        let mut tampered = cookies.clone();
        let value = tampered[0].value().to_string();
        tampered[0].set_value(format!("{}A", &value[..value.len() - 1]));
        for _ in 0..2 {
            assert_eq!(codec.read_session_shared(&request_with(&tampered)), None);
        }
        assert_eq!(codec.opened.inner.read().unwrap().map.len(), 1);

        // A remembered session that has since expired is not handed out.
        let mut short = session(0);
        short.expires_at = now() + 1;
        let cookies = codec.write_session(&short, &HeaderMap::new());
        assert!(codec.read_session_shared(&request_with(&cookies)).is_some());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(codec.read_session_shared(&request_with(&cookies)), None);
    }

    #[test]
    fn remembered_sessions_are_bounded_in_bytes() {
        let opened = OpenedSessions::default();
        let now = now();
        let one = Arc::new(session(0));
        let big = "x".repeat(MAX_OPENED_BYTES / 4);
        for i in 0..3 {
            opened.insert(format!("{i}{big}"), Arc::clone(&one), now);
        }
        opened.insert(format!("0{big}"), Arc::clone(&one), now);
        {
            let inner = opened.inner.read().unwrap();
            assert_eq!(inner.map.len(), 3, "the fourth value was the first again");
            assert_eq!(inner.bytes, 3 * (big.len() + 1));
        }
        // A fourth distinct value would pass the limit: the unexpired ones cannot be dropped
        // one by one, so all go.
        opened.insert(format!("3{big}"), Arc::clone(&one), now);
        let inner = opened.inner.read().unwrap();
        assert_eq!(inner.map.len(), 1);
        assert_eq!(inner.bytes, big.len() + 1);
        assert!(inner.bytes <= MAX_OPENED_BYTES);
    }

    #[test]
    fn previous_secrets_still_open() {
        let old = Codec::new(OTHER, &[], settings());
        let cookies = old.write_session(&session(0), &HeaderMap::new());
        let rotated = Codec::new(SECRET, &[OTHER.to_vec()], settings());
        assert_eq!(
            rotated.read_session(&request_with(&cookies)),
            Some(session(0))
        );
    }

    #[test]
    fn own_cookies_are_stripped_before_forwarding() {
        let codec = Codec::new(SECRET, &[], settings());
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("backstage=1; _stagedoor=x; _stagedoor_0=y; _stagedoor_csrf=z; _stagedoor_x=keep; theme=dark"),
        );
        codec.strip_own(&mut h);
        assert_eq!(
            h[header::COOKIE],
            "backstage=1; _stagedoor_x=keep; theme=dark"
        );
        let mut only_ours = HeaderMap::new();
        only_ours.insert(header::COOKIE, HeaderValue::from_static("_stagedoor=x"));
        codec.strip_own(&mut only_ours);
        assert!(!only_ours.contains_key(header::COOKIE));
        // None of ours: left exactly as sent.
        let mut none_ours = HeaderMap::new();
        none_ours.insert(header::COOKIE, HeaderValue::from_static("a=1;b=2 ;  c"));
        codec.strip_own(&mut none_ours);
        assert_eq!(none_ours[header::COOKIE], "a=1;b=2 ;  c");
        // Split across two headers: what is kept is joined into one.
        let mut split = HeaderMap::new();
        split.append(
            header::COOKIE,
            HeaderValue::from_static("_stagedoor_1=x; a=1"),
        );
        split.append(header::COOKIE, HeaderValue::from_static("b=2"));
        codec.strip_own(&mut split);
        assert_eq!(split.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(split[header::COOKIE], "a=1; b=2");
        // Ours is found, and the others kept, in a header that is not plain ASCII too.
        let mut utf8 = HeaderMap::new();
        let value = "theme=caf\u{e9}; _stagedoor=x; b=2".as_bytes();
        utf8.insert(header::COOKIE, HeaderValue::from_bytes(value).unwrap());
        codec.strip_own(&mut utf8);
        assert_eq!(
            utf8[header::COOKIE].as_bytes(),
            "theme=caf\u{e9}; b=2".as_bytes()
        );
    }

    #[test]
    fn the_session_cookie_is_found_as_the_cookie_crate_would() {
        let codec = Codec::new(SECRET, &[], settings());
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("junk; =x; a=1"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static(" _stagedoor = first ; _stagedoor=second"),
        );
        assert_eq!(codec.sealed_session(&h).as_deref(), Some("first"));
        let mut chunked = HeaderMap::new();
        chunked.insert(
            header::COOKIE,
            HeaderValue::from_static("_stagedoor_0=ab; _stagedoor_1=cd"),
        );
        assert_eq!(codec.sealed_session(&chunked).as_deref(), Some("abcd"));
    }
}
