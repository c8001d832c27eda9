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
    "x-remote-user",
    "x-webauth-user",
    "x-webauth-email",
    "x-auth-user",
    "x-user",
    "x-email",
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

/// The four identity headers of one convention.
struct Names {
    user: HeaderName,
    email: HeaderName,
    preferred_username: HeaderName,
    groups: HeaderName,
}

/// Sets the identity headers Backstage's `oauth2Proxy` sign-in provider reads. Fails if the
/// user cannot be expressed as a header value: the request must then not be forwarded.
pub fn inject(headers: &mut HeaderMap, session: &Session) -> Result<(), InvalidIdentity> {
    let names = Names {
        user: X_FORWARDED_USER,
        email: X_FORWARDED_EMAIL,
        preferred_username: X_FORWARDED_PREFERRED_USERNAME,
        groups: X_FORWARDED_GROUPS,
    };
    set_identity(headers, session, names)
}

/// Sets the `X-Auth-Request-*` headers of a forward-auth answer (oauth2-proxy's names, which
/// ingress-nginx and Traefik examples copy onto the upstream request).
pub fn inject_auth_request(
    headers: &mut HeaderMap,
    session: &Session,
) -> Result<(), InvalidIdentity> {
    let names = Names {
        user: HeaderName::from_static("x-auth-request-user"),
        email: HeaderName::from_static("x-auth-request-email"),
        preferred_username: HeaderName::from_static("x-auth-request-preferred-username"),
        groups: HeaderName::from_static("x-auth-request-groups"),
    };
    set_identity(headers, session, names)
}

fn set_identity(
    headers: &mut HeaderMap,
    session: &Session,
    names: Names,
) -> Result<(), InvalidIdentity> {
    let user = HeaderValue::from_str(session.user()).map_err(|_| InvalidIdentity)?;
    headers.insert(names.user, user);
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if !session.email.is_empty() {
        set(names.email, &session.email);
    }
    if let Some(username) = session.username.as_deref() {
        set(names.preferred_username, username);
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
        set(names.groups, &groups.join(","));
    }
    Ok(())
}

/// The signed-in user's id cannot be sent as a header value.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the user id cannot be sent in a header")]
pub struct InvalidIdentity;

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
