//! Upstreams: where requests go, and the pools of HTTP/1.1 connections that take them there.
//!
//! Two clients share each upstream. A request without a body on plain TCP (the common case)
//! goes through the lean client (`upstream/lean.rs`), which writes and reads its connection in
//! the request's own task. Requests with a body, upgrades and TLS upstreams go through hyper's
//! connection API. Both pools are Stagedoor's own: a stack of idle connections per upstream,
//! the most recent on top. A connection goes back to its stack when the response body it
//! carried has been read to the end; a body dropped half-way closes its connection instead. A
//! request that finds its pooled connection closed by the upstream (a keep-alive race) is sent
//! again on a new one: by hyper only if it was never written, by the lean client only if its
//! method is idempotent and nothing came back.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod lean;

pub use lean::PassedHead;

/// Headers Stagedoor adds to a request after the client's own: written straight into the
/// head of a request the lean client sends, else inserted into its map.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    /// This hop's forwarding headers.
    pub forwarding: &'a Forwarding<'a>,
    /// The signed-in user's identity headers and tokens.
    pub identity: Option<&'a Injected>,
}

use crate::config::{ConfigError, Issues, UpstreamConfig, parse_upstream_url};
use crate::error::ProxyError;
use crate::forwarded::Forwarding;
use crate::identity::Injected;
use crate::metrics::{Metrics, RouteMetrics};
use crate::{Body, BoxError, tls, wire};

/// One configured upstream and its connection pool.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    /// Path put in front of every forwarded path; empty or `/base` (no trailing slash).
    base_path: String,
    host_header: HeaderValue,
    pass_host_header: bool,
    timeout: Duration,
    connect: Connector,
    pool: Arc<Pool>,
    metrics: RouteMetrics,
}

impl Upstream {
    /// Builds the upstream; files (CA bundle, client certificate) are read here.
    pub fn build(
        name: &str,
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Self, ConfigError> {
        let key = format!("upstreams.{name}");
        let url_error = |e: String| ConfigError::single(format!("{key}.url"), e);
        let uri = parse_upstream_url(&config.url).map_err(url_error)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(url_error("needs a scheme and a host".into()));
        };
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| url_error(e.to_string()))?;
        // IPv6 literals come bracketed in the authority; resolver and SNI want them bare.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = if scheme == Scheme::HTTPS {
            Some(Self::tls(&key, config, &host)?)
        } else {
            None
        };
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        Ok(Self {
            name: name.to_string(),
            base_path: uri.path().trim_end_matches('/').to_string(),
            host_header,
            pass_host_header: config.pass_host_header,
            timeout: config.timeout,
            connect: Connector {
                host,
                port,
                timeout: config.connect_timeout,
                tls,
            },
            pool: Arc::new(Pool {
                idle: Mutex::new(Vec::new()),
                lean: Mutex::new(Vec::new()),
                max_idle: config.pool_max_idle,
                idle_timeout: config.pool_idle_timeout,
                ticks: AtomicU64::new(0),
                reaper: std::sync::Once::new(),
            }),
            metrics: metrics.route(name),
        })
    }

    /// The TLS client and the name it checks the upstream's certificate against.
    fn tls(
        key: &str,
        config: &UpstreamConfig,
        host: &str,
    ) -> Result<(TlsConnector, ServerName<'static>), ConfigError> {
        let identity = config
            .client_cert_file
            .as_deref()
            .zip(config.client_key_file.as_deref());
        let client = tls::client_config(config.ca_file.as_deref(), identity)
            .map_err(|(field, e)| ConfigError::single(format!("{key}.{field}"), e));
        let (name, name_key) = match &config.tls_server_name {
            Some(name) => (name.clone(), format!("{key}.tls_server_name")),
            None => (host.to_string(), format!("{key}.url")),
        };
        let name =
            ServerName::try_from(name).map_err(|e| ConfigError::single(name_key, e.to_string()));
        match (client, name) {
            (Ok(mut client), Ok(name)) => {
                client.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok((TlsConnector::from(Arc::new(client)), name))
            }
            (client, name) => {
                let mut issues = Issues::default();
                for err in [client.err(), name.err()].into_iter().flatten() {
                    issues.extend(err);
                }
                Err(issues.into_error())
            }
        }
    }

    /// The configured name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This upstream's request counters.
    pub fn metrics(&self) -> &RouteMetrics {
        &self.metrics
    }

    /// Whether the client's `Host` is sent on (else [`Upstream::host_header`]).
    pub fn pass_host_header(&self) -> bool {
        self.pass_host_header
    }

    /// The upstream's own authority as a `Host` value.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The request target (origin form) for a request whose path and query are `pq`.
    pub fn uri_for(&self, pq: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        if self.base_path.is_empty() {
            let pq = pq
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            return Ok(Uri::from(pq));
        }
        let pq = pq.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .path_and_query(format!("{}{pq}", self.base_path))
            .build()
    }

    /// Sends the request `parts` (already in upstream form) and `body` with the `added`
    /// headers, and waits for the response head, at most the configured timeout (connecting
    /// included). The request head is borrowed, not moved: the common request is written
    /// from it as it is.
    pub async fn send(
        &self,
        parts: &mut http::request::Parts,
        body: Body,
        added: Added<'_>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        // One clock read for both the deadline and the latency metric. A timeout too long
        // to add to the clock is no deadline.
        let sent = tokio::time::Instant::now();
        let deadline = sent.checked_add(self.timeout);
        let lean = self.connect.tls.is_none()
            && body.is_end_stream()
            && !parts.headers.contains_key(http::header::UPGRADE);
        let response = if lean {
            // Written straight into the head: no map inserts.
            drop(body);
            self.exchange_lean(parts, added, deadline).await?
        } else {
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = std::mem::take(&mut parts.uri);
            *request.version_mut() = parts.version;
            *request.headers_mut() = std::mem::take(&mut parts.headers);
            added.forwarding.insert_into(request.headers_mut());
            if let Some(identity) = added.identity {
                identity.insert_into(request.headers_mut());
            }
            // Boxed: the common request, above, should not carry room for this one.
            Box::pin(self.within(deadline, self.exchange_hyper(request))).await?
        };
        self.metrics.upstream_response(sent.elapsed().as_secs_f64());
        Ok(response)
    }

    /// `work`, or a timeout error if it has not finished by `deadline`.
    async fn within<T>(
        &self,
        deadline: Option<tokio::time::Instant>,
        work: impl Future<Output = Result<T, ProxyError>>,
    ) -> Result<T, ProxyError> {
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or_else(|_| Err(self.timed_out())),
            None => work.await,
        }
    }

    /// A request with a body, an upgrade, or to a TLS upstream: through hyper's client.
    async fn exchange_hyper(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        loop {
            let (mut sender, pooled) = match self.pool.take() {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare and its future is large.
                None => (Box::pin(self.open()).await?, false),
            };
            // A pooled connection may still be finishing its previous exchange.
            if pooled && !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // After a protocol switch the connection belongs to the tunnel.
                    let reuse = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                    let home = reuse.then(|| (sender, Arc::downgrade(&self.pool)));
                    return Ok(response.map(|body| PooledBody(Kind::Hyper { body, home })));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the upstream had closed a pooled connection. Try again.
                    Some(unsent) if pooled => request = unsent,
                    _ => return Err(self.failed(Box::new(e.into_error()))),
                },
            }
        }
    }

    /// A request without a body on plain TCP: written and answered in this task, on a
    /// connection of the lean pool (`upstream/lean.rs`).
    async fn exchange_lean(
        &self,
        parts: &http::request::Parts,
        added: Added<'_>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let mut head = lean::request_head(parts, added);
        let head_request = parts.method == http::Method::HEAD;
        let result = loop {
            let (mut conn, pooled) = match self.pool.take_lean() {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare and its future is large.
                None => match Box::pin(self.within(deadline, self.connect_tcp())).await {
                    Ok(tcp) => (lean::Conn::new(tcp), false),
                    Err(e) => break Err(e),
                },
            };
            match conn.exchange(&head, head_request, deadline).await {
                Ok((response, framing, passed)) => {
                    let body = lean::LeanBody::new(conn, framing, passed, &self.pool);
                    break Ok(response.map(|()| PooledBody(Kind::Lean(body))));
                }
                // The upstream had closed a pooled connection: safe to send again if a
                // repeat cannot do harm.
                Err(lean::Failed::Stale(_)) if pooled && parts.method.is_idempotent() => {}
                Err(lean::Failed::Stale(e)) => break Err(self.failed(Box::new(e))),
                Err(lean::Failed::TimedOut) => break Err(self.timed_out()),
                Err(lean::Failed::Other(e)) => break Err(self.failed(e)),
            }
        };
        head.clear();
        wire::spare::give_back(head);
        result
    }

    fn timed_out(&self) -> ProxyError {
        ProxyError::UpstreamTimeout {
            upstream: self.name.clone(),
        }
    }

    fn failed(&self, source: BoxError) -> ProxyError {
        ProxyError::Upstream {
            upstream: self.name.clone(),
            source,
        }
    }

    /// A new TCP connection to the upstream, within the connect timeout.
    async fn connect_tcp(&self) -> Result<TcpStream, ProxyError> {
        let c = &self.connect;
        let tcp =
            match tokio::time::timeout(c.timeout, TcpStream::connect((c.host.as_str(), c.port)))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return Err(self.failed(Box::new(e))),
                Err(_) => return Err(self.timed_out()),
            };
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        Ok(tcp)
    }

    /// Opens a new connection: TCP, TLS for `https`, then the HTTP/1.1 handshake.
    async fn open(&self) -> Result<http1::SendRequest<Body>, ProxyError> {
        let c = &self.connect;
        let tcp = self.connect_tcp().await?;
        let peer = tcp.peer_addr().ok();
        let sender = match &c.tls {
            None => handshake(tcp, peer).await,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(c.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| self.timed_out())?
                    .map_err(|e| self.failed(Box::new(e)))?;
                handshake(tls, peer).await
            }
        };
        sender.map_err(|e| self.failed(Box::new(e)))
    }
}

/// The HTTP/1.1 handshake on a new connection, whose I/O then runs in a task of its own.
async fn handshake<I>(
    io: I,
    peer: Option<SocketAddr>,
) -> Result<http1::SendRequest<Body>, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    spawn_connection(conn.with_upgrades(), peer);
    Ok(sender)
}

/// How to reach the upstream.
struct Connector {
    host: String,
    port: u16,
    timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

/// Drives one upstream connection until it closes.
fn spawn_connection<F>(conn: F, peer: Option<SocketAddr>)
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(?peer, error = %e, "upstream connection ended with an error");
        }
    });
}

/// Idle connections of one upstream, the most recently used on top.
#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Idle connections of the lean client, and since which tick.
    lean: Mutex<Vec<(lean::Conn, u64)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// The reaper's ticks, [`FRESH_TICKS`] to an idle timeout: a coarse clock, so that taking
    /// and returning a connection costs no clock read.
    ticks: AtomicU64,
    reaper: std::sync::Once,
}

/// An idle connection is used again only within this many reaper ticks of its return: after
/// three to four quarters of the idle timeout, never more.
const FRESH_TICKS: u64 = 4;
/// The reaper's shortest tick.
const MIN_TICK: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    /// The tick it was returned in.
    since: u64,
}

impl Pool {
    /// The most recently used idle connection that is still open and fresh.
    fn take(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && self.is_fresh(entry.since) {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request, unless the pool is full or it is closed.
    fn put(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() || self.keeps_nothing() {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle {
                sender,
                since: self.tick(),
            });
        }
        self.reaper.call_once(|| self.spawn_reaper());
    }

    /// The most recently used idle lean connection that is still open and fresh.
    fn take_lean(&self) -> Option<lean::Conn> {
        let mut idle = self.lean.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if self.is_fresh(since) && conn.is_usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a lean connection for the next request, unless the pool is full. Its read buffer
    /// waits apart (`wire::spare`) until the connection is used again.
    fn put_lean(self: &Arc<Self>, mut conn: lean::Conn) {
        if self.keeps_nothing() {
            return;
        }
        {
            let mut idle = self.lean.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() >= self.max_idle {
                return;
            }
            conn.free_buffer();
            idle.push((conn, self.tick()));
        }
        self.reaper.call_once(|| self.spawn_reaper());
    }

    fn tick(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    fn is_fresh(&self, since: u64) -> bool {
        self.tick().wrapping_sub(since) < FRESH_TICKS
    }

    /// Too short an idle timeout to count in ticks: nothing is kept.
    fn keeps_nothing(&self) -> bool {
        self.idle_timeout < MIN_TICK * FRESH_TICKS as u32
    }

    /// Counts ticks and closes connections no longer fresh, until the pool is dropped.
    fn spawn_reaper(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / FRESH_TICKS as u32).max(MIN_TICK);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                // Ticks elapsed by the clock, so a reaper running late still ages connections.
                let elapsed = start.elapsed().as_nanos() / every.as_nanos().max(1);
                let ticks = u64::try_from(elapsed).unwrap_or(u64::MAX);
                pool.ticks.fetch_max(ticks, Ordering::Relaxed);
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.retain(|e| !e.sender.is_closed() && pool.is_fresh(e.since));
                drop(idle);
                let mut lean = pool.lean.lock().unwrap_or_else(|p| p.into_inner());
                lean.retain(|(conn, since)| pool.is_fresh(*since) && conn.is_usable());
            }
        });
    }
}

/// An upstream response body that hands its connection back to the pool once read to the
/// end. Dropped before the end, it lets the connection close.
#[derive(Debug)]
pub struct PooledBody(Kind);

#[derive(Debug)]
enum Kind {
    /// From hyper's client.
    Hyper {
        body: Incoming,
        home: Option<(http1::SendRequest<Body>, Weak<Pool>)>,
    },
    /// From the lean client, which pools its connection itself.
    Lean(lean::LeanBody),
}

impl PooledBody {
    /// The response's header lines, if the lean client kept them out of its map.
    pub fn take_passed_head(&mut self) -> Option<Box<PassedHead>> {
        match &mut self.0 {
            Kind::Lean(body) => body.take_passed_head(),
            Kind::Hyper { .. } => None,
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Kind::Hyper { body, home } = &mut self.0
            && body.is_end_stream()
        {
            release(home);
        }
    }
}

fn release(home: &mut Option<(http1::SendRequest<Body>, Weak<Pool>)>) {
    if let Some((sender, pool)) = home.take()
        && let Some(pool) = pool.upgrade()
    {
        pool.put(sender);
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Hyper { body, home } => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                if frame.is_none() {
                    release(home);
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Kind::Lean(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper { body, .. } => body.is_end_stream(),
            Kind::Lean(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Hyper { body, .. } => body.size_hint(),
            Kind::Lean(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(config: &UpstreamConfig) -> Result<Upstream, ConfigError> {
        Upstream::build("api", config, &Metrics::new())
    }

    #[test]
    fn base_path_is_prefixed() {
        let up = build(&UpstreamConfig::new("http://10.0.0.1:7007/base/")).unwrap();
        let pq: PathAndQuery = "/api/x?y=1".parse().unwrap();
        assert_eq!(
            up.uri_for(Some(&pq)).unwrap().to_string(),
            "/base/api/x?y=1"
        );
        let up = build(&UpstreamConfig::new("http://10.0.0.1:7007")).unwrap();
        assert_eq!(up.uri_for(Some(&pq)).unwrap().to_string(), "/api/x?y=1");
        assert_eq!(up.uri_for(None).unwrap().to_string(), "/");
    }

    #[test]
    fn unreadable_ca_file_names_the_key() {
        let mut cfg = UpstreamConfig::new("https://backstage.internal");
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        let err = build(&cfg).unwrap_err();
        assert_eq!(err.issues[0].key, "upstreams.api.ca_file");
        assert!(err.issues[0].message.contains("/nonexistent/ca.pem"));
    }
}
