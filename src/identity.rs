//! The identity the upstream learns: headers set from the session, and the same headers sent
//! by clients removed first, so a client can never choose its own identity.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::session::Session;

const X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
const X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
const X_FORWARDED_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-forwarded-preferred-username");
const X_FORWARDED_GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");

/// Headers that carry identity to upstreams, here or in oauth2-proxy's and peers' conventions.
/// Compared after lowercasing and turning `_` into `-`, because some servers read
/// `X_Forwarded_Email` as `X-Forwarded-Email`.
const IDENTITY_HEADERS: &[&str] = &[
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
    "gap-auth",
    "remote-user",
];

/// True if `name` is an identity header in any spelling.
fn is_identity(name: &HeaderName) -> bool {
    let name = name.as_str();
    if !name.contains('_') {
        return IDENTITY_HEADERS.contains(&name);
    }
    let normalized = name.replace('_', "-");
    IDENTITY_HEADERS.contains(&normalized.as_str())
}

/// Removes every identity header a client sent.
pub fn strip(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers.keys().filter(|n| is_identity(n)).cloned().collect();
    for name in forged {
        tracing::debug!(header = %name, "removed a client-sent identity header");
        headers.remove(name);
    }
}

/// Sets the identity headers Backstage's `oauth2Proxy` sign-in provider reads.
pub fn inject(headers: &mut HeaderMap, session: &Session) {
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(X_FORWARDED_USER, session.user());
    if !session.email.is_empty() {
        set(X_FORWARDED_EMAIL, &session.email);
    }
    if let Some(username) = session.username.as_deref() {
        set(X_FORWARDED_PREFERRED_USERNAME, username);
    }
    if !session.groups.is_empty() {
        set(X_FORWARDED_GROUPS, &session.groups.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
