//! The life of a proxied request, in order:
//!
//! 0. **gate**: the path normalized; Stagedoor's own endpoints and published keys answered;
//!    the session (or bearer token) judged by the policy (`auth.rs`);
//! 1. **target**: which host was asked for, and which upstream serves that host and path;
//! 2. **upstream request**: hop-by-hop headers out, client identity headers out and ours in,
//!    forwarding headers set, URI rewritten;
//! 3. **forward**: send, wait for the response head (502/504 on failure);
//! 4. **response**: hop-by-hop headers out, or a tunnel for a protocol upgrade;
//! 5. **log**: one access-log line when the response body is done.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Response, StatusCode, Version};
use http_body::Body as HttpBody;
use hyper::upgrade::OnUpgrade;

use crate::access_log::{Entry, Logged};
use crate::auth::Gate;
use crate::error::{DisplayChain, ProxyError};
use crate::forwarded::{self, Origin};
use crate::headers::{strip_hop_by_hop, upgrade_protocol};
use crate::server::Signals;
use crate::session::Session;
use crate::upstream::{Added, Upstream};
use crate::{App, Body, BoxError, empty, upgrade, wire};

/// What the server knows about the connection a request arrived on.
#[derive(Debug)]
pub struct Ctx {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer as forwarding headers name it.
    pub forwarded_peer: forwarded::Peer,
    /// True on a TLS listener.
    pub tls: bool,
    /// Shutdown signals, for tunnels that outlive the request.
    pub signals: Signals,
}

/// Where a proxied response's header lines may be left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    /// All in the response's header map: for a caller that hands the response to hyper.
    InMap,
    /// Possibly in the body, as a [`PassedHead`](crate::upstream::PassedHead) that the caller writes out itself.
    MayPass,
}

/// Handles one request from a client and returns the response to send back.
pub async fn handle<B>(app: &App, ctx: &Ctx, request: Request<B>, heads: Heads) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // The request head stays here, borrowed by every phase: moving it costs a copy of
    // 224 bytes each time.
    let (mut parts, body) = request.into_parts();
    let body = Body::new(body);
    let host = AskedHost::of(&parts);
    let log_head = app.config.log.access_log.then(|| {
        (
            parts.method.clone(),
            parts.uri.path().to_string(),
            parts.version,
            Instant::now(),
        )
    });

    let mut log = Outcome {
        client: ctx.peer.ip(),
        upstream: None,
        user: None,
    };
    let mut response = route(app, ctx, &mut parts, body, host.as_ref(), &mut log).await;
    wire::spare::give_back_map(std::mem::take(&mut parts.headers));
    if heads == Heads::InMap || log_head.is_some() {
        heads_into_map(&mut response);
    }
    log.upstream
        .as_ref()
        .map_or(&app.own_metrics, |u| u.metrics())
        .request(response.status().as_u16());

    match log_head {
        None => response,
        Some((method, path, version, start)) => {
            let entry = Entry {
                method,
                host: host
                    .as_ref()
                    .map(|h| h.as_str().to_string())
                    .unwrap_or_default(),
                path,
                version,
                client: log.client,
                status: response.status().as_u16(),
                upstream: log.upstream.map(|u| u.name().to_string()),
                user: log.user,
                start,
            };
            response.map(|body| Body::new(Logged::new(body, entry)))
        }
    }
}

/// What the access log learns while a request is handled.
struct Outcome {
    client: IpAddr,
    upstream: Option<Arc<Upstream>>,
    user: Option<String>,
}

/// Phases 1 to 4: Stagedoor's own endpoints, the sign-in gate, then the upstream.
async fn route(
    app: &App,
    ctx: &Ctx,
    parts: &mut Parts,
    body: Body,
    host: Option<&AskedHost>,
    log: &mut Outcome,
) -> Response<Body> {
    let accept = parts.headers.get(header::ACCEPT).cloned();
    // Every later phase (endpoints, policy, routing, the upstream) sees this one spelling.
    if let Err(e) = normalize_path(parts) {
        return e.into_response(accept.as_ref());
    }
    let host_name = host.map_or("", |h| host_of(h.as_str()));
    if let Some(keys) = app.identity.well_known(&parts.method, parts.uri.path()) {
        return keys;
    }
    let (session, set_cookies) = match &app.auth {
        Some(auth) if auth.owns_path(parts.uri.path()) => {
            let trusted = app.trusted.contains(ctx.peer.ip());
            let client = forwarded::client_address(&parts.headers, ctx.peer.ip(), &app.trusted);
            // Boxed: sign-in flows are rare and their future is large.
            return Box::pin(auth.endpoint(parts, body, trusted, client)).await;
        }
        Some(auth) => {
            let client = forwarded::client_address(&parts.headers, ctx.peer.ip(), &app.trusted);
            match auth.gate(parts, host_name, client).await {
                Gate::Pass(session, cookies) => (Some(session), cookies),
                Gate::Public => (None, Vec::new()),
                Gate::Answer(answer) => return answer,
            }
        }
        None => (None, Vec::new()),
    };
    if app.config.log.access_log {
        log.user = session.as_ref().map(|s| s.log_name().to_string());
    }
    let result = match target(app, parts, host.map(|_| host_name)) {
        Ok(upstream) => {
            log.upstream = Some(Arc::clone(upstream));
            let to = Target {
                upstream,
                host,
                session: session.as_deref(),
            };
            forward(app, ctx, to, parts, body, &mut log.client).await
        }
        Err(e) => Err(e),
    };
    let mut response = result.unwrap_or_else(|e| {
        match &e {
            ProxyError::Upstream { source, .. } => {
                tracing::warn!(error = %DisplayChain(source.as_ref()), "upstream request failed");
            }
            ProxyError::UpstreamTimeout { upstream } => {
                tracing::warn!(%upstream, "upstream timed out");
            }
            _ => {}
        }
        e.into_response(accept.as_ref())
    });
    if !set_cookies.is_empty() {
        heads_into_map(&mut response);
        let headers = response.headers_mut();
        for cookie in set_cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        // A refreshed session must never be stored by a shared cache with this response.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
    }
    response
}

/// Moves header lines passed through from the upstream into the response's map.
fn heads_into_map(response: &mut Response<Body>) {
    if let Some(passed) = response.body_mut().take_passed_head() {
        passed.append_to(response.headers_mut());
    }
}

/// Rewrites the request path to its normalized form (see `path.rs`); the query is kept.
fn normalize_path(parts: &mut Parts) -> Result<(), ProxyError> {
    let path = parts.uri.path();
    let normalized = crate::path::normalize(path)
        .ok_or(ProxyError::BadRequest("The request path is not valid."))?;
    let normalized = match normalized {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(normalized) if normalized == path => return Ok(()),
        Cow::Owned(normalized) => normalized,
    };
    let pq = match parts.uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(
        pq.parse()
            .map_err(|_| ProxyError::BadRequest("The request path is not valid."))?,
    );
    parts.uri = http::Uri::from_parts(uri)
        .map_err(|_| ProxyError::BadRequest("The request path is not valid."))?;
    Ok(())
}

/// The authority the client asked for (the URI's, in HTTP/2 and absolute form, or the
/// `Host` header's), as the header value that carries it upstream. It is one that `http`
/// would accept as an [`Authority`].
struct AskedHost(HeaderValue);

impl AskedHost {
    fn of(parts: &Parts) -> Option<Self> {
        if let Some(authority) = parts.uri.authority() {
            return HeaderValue::from_str(authority.as_str()).ok().map(Self);
        }
        let value = parts.headers.get(header::HOST)?;
        // The common `name[:port]` is checked here; anything else by `http`'s parser, which
        // copies it first.
        let bytes = value.as_bytes();
        let valid = is_plain_authority(bytes) || Authority::try_from(bytes).is_ok();
        valid.then(|| Self(value.clone()))
    }

    fn as_str(&self) -> &str {
        // Every byte an `Authority` allows is visible ASCII.
        self.0.to_str().unwrap_or_default()
    }
}

/// A non-empty host of letters, digits, `-` and `.`, and at most one `:` followed by digits
/// only: a subset of what `http`'s `Authority` accepts.
fn is_plain_authority(bytes: &[u8]) -> bool {
    let (host, port) = match memchr::memchr(b':', bytes) {
        Some(colon) => (&bytes[..colon], &bytes[colon + 1..]),
        None => (bytes, &b""[..]),
    };
    let host_ok = host.iter().fold(true, |ok, &b| {
        ok & (b.is_ascii_alphanumeric() | (b == b'-') | (b == b'.'))
    });
    let port_ok = port.iter().fold(true, |ok, &b| ok & b.is_ascii_digit());
    !host.is_empty() && host_ok && port_ok
}

/// What [`Authority::host`] returns for `authority` (the host without userinfo or port; an
/// IPv6 literal keeps its brackets), found with byte scans rather than its string splitting.
fn host_of(authority: &str) -> &str {
    let s = match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let end = if s.starts_with('[') {
        s.bytes().position(|b| b == b']').map_or(s.len(), |i| i + 1)
    } else {
        s.bytes().position(|b| b == b':').unwrap_or(s.len())
    };
    &s[..end]
}

/// Phase 1: the upstream that serves this request; `host` is the asked-for host name.
fn target<'a>(
    app: &'a App,
    parts: &Parts,
    host: Option<&str>,
) -> Result<&'a Arc<Upstream>, ProxyError> {
    if parts.method == http::Method::CONNECT {
        // A reverse proxy, not a forward proxy: no tunnels to arbitrary hosts.
        return Err(ProxyError::BadRequest("CONNECT is not supported here."));
    }
    let host = match host {
        Some(host) => host,
        // HTTP/1.0 may omit Host; HTTP/1.1 must send it (RFC 9112 §3.2).
        None if parts.version <= Version::HTTP_10 => "",
        None => {
            return Err(ProxyError::BadRequest(
                "The request has no valid Host header.",
            ));
        }
    };
    app.router
        .route(host, parts.uri.path())
        .ok_or(ProxyError::NoRoute)
}

/// Where a request goes and as whom.
struct Target<'a> {
    upstream: &'a Arc<Upstream>,
    host: Option<&'a AskedHost>,
    session: Option<&'a Session>,
}

/// Phases 2 to 4: build the upstream request, send it, shape the response.
async fn forward(
    app: &App,
    ctx: &Ctx,
    target: Target<'_>,
    parts: &mut Parts,
    body: Body,
    client: &mut IpAddr,
) -> Result<Response<Body>, ProxyError> {
    let Target {
        upstream,
        host,
        session,
    } = target;
    let upgrade_to = if parts.version == Version::HTTP_11 {
        upgrade_protocol(&parts.headers)
    } else {
        None
    };
    let client_upgrade = upgrade_to
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());

    let host_value = host.map(|h| &h.0);
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // Stripped on every request, signed in or not: a client never chooses its own identity.
    app.identity.strip(headers);
    if let Some(auth) = &app.auth {
        auth.codec().strip_own(headers);
    }
    // Set after every other header, by the upstream client (see `Upstream::send`).
    let identity = session
        .map(|session| app.identity.injected(headers, parts.uri.path(), session))
        .transpose()
        .map_err(|_| ProxyError::Identity)?;
    let origin = Origin {
        peer: &ctx.forwarded_peer,
        proto: if ctx.tls { "https" } else { "http" },
        host: host_value,
    };
    let forwarding;
    (*client, forwarding) = forwarded::apply(headers, origin, &app.trusted);
    let host_header = match host_value {
        Some(value) if upstream.pass_host_header() => value.clone(),
        _ => upstream.host_header().clone(),
    };
    headers.insert(header::HOST, host_header);
    if let Some(protocol) = &upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }

    let uri = upstream
        .uri_for(parts.uri.path_and_query())
        .map_err(|_| ProxyError::BadRequest("The request target is not valid."))?;
    parts.uri = uri;
    // The upstream connection is HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;

    let added = Added {
        forwarding: &forwarding,
        identity: identity.as_ref(),
    };
    let mut response = upstream.send(parts, body, added).await?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_side), Some(_)) = (client_upgrade, upgrade_to) else {
            return Err(ProxyError::Upstream {
                upstream: upstream.name().to_string(),
                source: "upstream switched protocols without being asked".into(),
            });
        };
        let upstream_side = hyper::upgrade::on(&mut response);
        upgrade::tunnel(
            client_side,
            upstream_side,
            upstream.name().to_string(),
            ctx.signals.clone(),
        );
        // Upgrade and Connection stay: they are the answer to the client's upgrade request.
        return Ok(response.map(|_| empty()));
    }

    strip_hop_by_hop(response.headers_mut());
    Ok(response.map(Body::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_agrees_with_http() {
        for text in [
            "portal.example.com",
            "portal.example.com:8443",
            "127.0.0.1:7007",
            "[::1]:7007",
            "[::1]",
            "[2001:db8::1]",
            "user@host.example:80",
            "user:pass@host.example",
            "a@b@c.example:1",
            "x",
        ] {
            let authority: Authority = text.parse().unwrap();
            assert_eq!(host_of(authority.as_str()), authority.host(), "{text}");
        }
    }

    #[test]
    fn a_host_header_is_taken_exactly_when_http_takes_it() {
        let hosts: [&[u8]; 24] = [
            b"portal.example.com",
            b"portal.example.com:8443",
            b"127.0.0.1:7007",
            b"a:",
            b"[::1]:7007",
            b"user@host.example",
            b"Portal-1.Example",
            b"",
            b":",
            b":80",
            b"a:80:90",
            b"a:8x",
            b"a b",
            b"a/b",
            b"a?b",
            b"a#b",
            b"a%20b",
            b"[::1",
            b"host@",
            b"a_b",
            b"a~b",
            b"a\"b",
            b"caf\xc3\xa9",
            b"a\tb",
        ];
        for host in hosts {
            let mut parts = Request::new(()).into_parts().0;
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_bytes(host).unwrap());
            let asked = AskedHost::of(&parts);
            let text = String::from_utf8_lossy(host);
            match Authority::try_from(host) {
                Ok(authority) => assert_eq!(
                    asked.as_ref().map(AskedHost::as_str),
                    Some(authority.as_str()),
                    "{text}"
                ),
                Err(_) => assert!(asked.is_none(), "{text}"),
            }
        }
        // HTTP/2's authority is the URI's, whatever the `Host` header says.
        let (mut parts, ()) = Request::get("https://portal.example.com:8443/x")
            .header(header::HOST, "other.example")
            .body(())
            .unwrap()
            .into_parts();
        parts.version = Version::HTTP_2;
        let asked = AskedHost::of(&parts);
        assert_eq!(
            asked.as_ref().map(AskedHost::as_str),
            Some("portal.example.com:8443")
        );
    }
}
