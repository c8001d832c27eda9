//! Listeners and connections: accept, TLS handshake, HTTP/1.1 and HTTP/2, limits, draining.
//!
//! Shutdown has two steps. `stop` closes the listeners and asks every connection to finish
//! what it is doing (HTTP/1.1 closes after the in-flight response, HTTP/2 sends GOAWAY).
//! If connections are still open when the grace period ends, `force` closes them.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

mod h1;

use crate::config::{ConfigError, ServerConfig};
use crate::pipeline::{self, Ctx, Heads};
use crate::{App, Body, BoxError, Config, admin};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        /// The config key holding the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A server whose listeners are open but not yet accepting.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    public: TcpListener,
    admin: Option<TcpListener>,
}

impl Server {
    /// Builds the application from `config` and opens its listeners.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let app = Arc::new(App::build(config)?);
        let listen = app.config.server.listen;
        let public = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                key: "server.listen",
                addr: listen,
                source,
            })?;
        let admin = if app.config.admin.enabled {
            let addr = app.config.admin.listen;
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        key: "admin.listen",
                        addr,
                        source,
                    })?,
            )
        } else {
            None
        };
        Ok(Self { app, public, admin })
    }

    /// Starts accepting connections.
    pub fn start(self) -> std::io::Result<Running> {
        let addr = self.public.local_addr()?;
        let admin_addr = self.admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let (stop_tx, stop) = watch::channel(false);
        let (force_tx, force) = watch::channel(false);
        let (alive, alive_rx) = mpsc::channel(1);
        let signals = Signals {
            stop,
            force,
            _alive: alive,
        };
        let app = self.app;
        let server = &app.config.server;

        let tls = match &app.tls {
            Some(cert) => {
                let config =
                    crate::tls::server_config(Arc::clone(cert)).map_err(std::io::Error::other)?;
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let watcher = match (&app.tls, &server.tls) {
            (Some(cert), Some(tls)) => Some(cert.spawn_watcher(tls.reload_interval)),
            _ => None,
        };
        let builder = Arc::new(http_builders(server));
        let apps = Arc::new(ArcSwap::from(Arc::clone(&app)));
        let mut tasks = vec![tokio::spawn(accept_loop(
            self.public,
            Role::Public,
            Arc::clone(&apps),
            tls,
            Arc::clone(&builder),
            server.max_connections,
            signals.clone(),
        ))];
        if let Some(listener) = self.admin {
            tasks.push(tokio::spawn(accept_loop(
                listener,
                Role::Admin,
                Arc::clone(&apps),
                None,
                builder,
                ADMIN_MAX_CONNECTIONS,
                signals.clone(),
            )));
        }
        drop(signals);
        app.set_ready(true);
        tracing::info!(%addr, admin = ?admin_addr, tls = app.tls.is_some(), "listening");
        Ok(Running {
            addr,
            admin_addr,
            grace: server.shutdown_grace,
            apps,
            stop_tx,
            force_tx,
            alive_rx,
            tasks,
            watcher,
        })
    }
}

const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A started server. [`Running::shutdown`] stops it gracefully; dropping it closes every
/// listener and connection at once.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    grace: Duration,
    apps: Arc<ArcSwap<App>>,
    stop_tx: watch::Sender<bool>,
    force_tx: watch::Sender<bool>,
    alive_rx: mpsc::Receiver<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Address of the public listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Address of the admin listener, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The application state new requests get.
    pub fn app(&self) -> Arc<App> {
        self.apps.load_full()
    }

    /// Applies a new configuration to new requests: policy, email lists, providers, identity,
    /// upstreams and routes. Requests in flight and open tunnels (WebSockets) keep the state
    /// they started with. Listener settings (addresses, TLS files, limits, timeouts) need a
    /// restart. A configuration that cannot be built is refused and the current one stays.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let current = self.apps.load_full();
        let next = App::build_with(config, Arc::clone(&current.metrics))?;
        let (old, new) = (&current.config, &next.config);
        for (key, changed) in [
            ("server", old.server != new.server),
            ("admin", old.admin != new.admin),
            ("log", old.log != new.log),
        ] {
            if changed {
                tracing::warn!(key, "changed, but takes effect only at the next restart");
            }
        }
        next.set_ready(current.is_ready());
        self.apps.store(Arc::new(next));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the configured grace period,
    /// then closes what is left. Returns true if everything finished in time.
    pub async fn shutdown(mut self) -> bool {
        self.apps.load().set_ready(false);
        let _ = self.stop_tx.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        // Every connection holds a sender; recv() yields None once the last one is gone.
        let drained = tokio::time::timeout(self.grace, self.alive_rx.recv())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?self.grace, "grace period over; closing remaining connections");
            let _ = self.force_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.alive_rx.recv()).await;
        }
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        drained
    }
}

/// Handles every connection and tunnel holds, to learn of shutdown and to be waited for.
#[derive(Debug, Clone)]
pub struct Signals {
    stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    // Held, never used: the receiver learns that every holder is gone.
    _alive: mpsc::Sender<()>,
}

impl Signals {
    /// Resolves when open connections and tunnels must close now.
    pub async fn forced(&mut self) {
        raised(&mut self.force).await;
    }
}

/// Resolves once the flag is true (or its sender is gone, which means the same). Busy
/// connections poll this on every wake-up: once the first poll has registered the task,
/// a poll costs one atomic load until the flag changes.
async fn raised(flag: &mut watch::Receiver<bool>) {
    let probe = flag.clone();
    // Outside tokio's cooperative budget: a task out of budget would otherwise get `Pending`
    // from the first poll without being registered, and later polls would not register it.
    let mut wait = pin!(tokio::task::coop::unconstrained(
        flag.wait_for(|raised| *raised)
    ));
    let mut registered = false;
    poll_fn(|cx| {
        // Unchanged since the first poll: the registration from that poll still stands.
        if registered && matches!(probe.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        registered = true;
        wait.as_mut().poll(cx).map(drop)
    })
    .await;
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Public,
    Admin,
}

/// The HTTP/1.1 and HTTP/2 halves of the server; which one serves a connection is decided by
/// ALPN on TLS, and by the client's first bytes (the HTTP/2 preface, or not) on plain TCP.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

fn http_builders(server: &ServerConfig) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    Builders { h1, h2 }
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    apps: Arc<ArcSwap<App>>,
    tls: Option<TlsAcceptor>,
    builder: Arc<Builders>,
    max_connections: usize,
    mut signals: Signals,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = raised(&mut signals.stop) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = raised(&mut signals.stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let app = apps.load_full();
        let conn = Conn {
            apps: Arc::clone(&apps),
            app: Arc::clone(&app),
            builders: Arc::clone(&builder),
            role,
            peer,
            signals: signals.clone(),
        };
        let tls = tls.clone();
        let counted = matches!(role, Role::Public).then(|| app.metrics.connection());
        tokio::spawn(async move {
            conn.run(stream, tls).await;
            drop(counted);
            drop(permit);
        });
    }
}

struct Conn {
    /// The state each new request gets (swapped by a reload).
    apps: Arc<ArcSwap<App>>,
    /// The state when the connection was accepted: its timeouts.
    app: Arc<App>,
    builders: Arc<Builders>,
    role: Role,
    peer: SocketAddr,
    signals: Signals,
}

/// An idle HTTP/1.1 connection on plain TCP gives up its buffers after this long: it is then
/// only a socket waiting to become readable (see [`Conn::serve_plain`]).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// How a connection's HTTP session ended.
enum Ended {
    /// The connection is finished (closed by either side, drained, or idle too long).
    Closed,
    /// Idle for [`PARK_AFTER`]: the HTTP state is gone, the socket is kept.
    Parked,
}

impl Conn {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve_plain(stream).await,
            // Boxed: a TLS connection's state is large, and the future of a plain one, which
            // lives as long as its connection (parked or not), should not carry room for it.
            Some(acceptor) => Box::pin(self.serve_tls(stream, acceptor)).await,
        }
    }

    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let timeout = self.app.config.server.header_read_timeout;
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                // ALPN decides; without it, the client's first bytes do, as on plain TCP.
                let (io, h2) = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    (Rewind::new(stream, Bytes::new()), true)
                } else {
                    match self.sniff(stream).await {
                        Some(sniffed) => sniffed,
                        None => return,
                    }
                };
                if h2 {
                    self.serve_h2(io, true).await;
                } else {
                    // TLS sessions are not parked: rustls may hold read-ahead plaintext that
                    // would never make the socket readable again.
                    let activity = Arc::new(Activity::new());
                    let _ = self.serve_h1(io, true, &activity).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    /// Plain TCP: HTTP/2 with prior knowledge, or HTTP/1.1. An HTTP/1.1 connection idle for
    /// [`PARK_AFTER`] is parked: its HTTP state is dropped and the socket waits to become
    /// readable, when a fresh HTTP/1.1 session picks it up again.
    async fn serve_plain(self, stream: TcpStream) {
        let (io, h2) = match self.sniff(stream).await {
            Some(sniffed) => sniffed,
            None => return,
        };
        if h2 {
            return self.serve_h2(io, false).await;
        }
        let mut force = self.signals.force.clone();
        let Rewind {
            mut prefix,
            inner: mut stream,
            ..
        } = io;
        loop {
            // The public listener tries Stagedoor's own HTTP/1.1 loop (`h1.rs`) first; hyper
            // takes a connection for anything else (and the admin listener always).
            let next = match self.role {
                // Boxed, so that a parked connection's task does not keep room for a request.
                Role::Public => tokio::select! {
                    next = Box::pin(self.serve_lean(stream, prefix)) => next,
                    _ = raised(&mut force) => return,
                },
                Role::Admin => h1::Next::Hyper(stream, prefix),
            };
            let parked = match next {
                h1::Next::Closed => return,
                h1::Next::Parked(parked) => parked,
                h1::Next::Hyper(rest, unread) => {
                    let activity = Arc::new(Activity::new());
                    match self
                        .serve_h1(Rewind::new(rest, unread), false, &activity)
                        .await
                    {
                        Some(parked) => parked,
                        None => return,
                    }
                }
            };
            let counted = matches!(self.role, Role::Public).then(|| self.app.metrics.parked());
            if !self.wait_parked(&parked).await {
                return;
            }
            drop(counted);
            (stream, prefix) = (parked, Bytes::new());
        }
    }

    /// Waits while parked. True if the client sent something; false if the connection is to
    /// be closed (idle timeout, shutdown).
    async fn wait_parked(&self, stream: &TcpStream) -> bool {
        let (mut stop, mut force) = (self.signals.stop.clone(), self.signals.force.clone());
        let idle = self
            .app
            .config
            .server
            .idle_timeout
            .saturating_sub(PARK_AFTER);
        tokio::select! {
            readable = stream.readable() => readable.is_ok(),
            _ = tokio::time::sleep(idle) => false,
            _ = raised(&mut stop) => false,
            _ = raised(&mut force) => false,
        }
    }

    /// Reads the client's first bytes until they are known to be the HTTP/2 preface or not;
    /// the bytes read are replayed to the server. `None` if the client sent nothing in time.
    async fn sniff<I>(&self, mut io: I) -> Option<(Rewind<I>, bool)>
    where
        I: AsyncRead + Unpin,
    {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut seen = [0u8; PREFACE.len()];
        let mut len = 0;
        let read = async {
            while len < seen.len() {
                let n = io.read(&mut seen[len..]).await?;
                if n == 0 {
                    break;
                }
                len += n;
                if !PREFACE.starts_with(&seen[..len]) {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        let timeout = self.app.config.server.header_read_timeout;
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(())) if len > 0 => {
                let h2 = seen[..len] == *PREFACE;
                Some((Rewind::new(io, Bytes::copy_from_slice(&seen[..len])), h2))
            }
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "connection failed before a request");
                None
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "no request before the header read timeout");
                None
            }
        }
    }

    /// One HTTP/1.1 session on `io`. Returns the socket if the session was parked (plain TCP
    /// only), else `None`.
    async fn serve_h1<I>(&self, io: Rewind<I>, tls: bool, activity: &Arc<Activity>) -> Option<I>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        activity.parking.store(false, Ordering::Relaxed);
        let mut io = io;
        io.parking = Some(Arc::clone(activity));
        let service = request_handler(
            Arc::clone(&self.apps),
            self.role,
            self.ctx(tls),
            Arc::clone(activity),
        );
        let conn = self
            .builders
            .h1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        // Boxed, so that a parked connection frees the session's state.
        let mut conn = Box::pin(conn);
        let may_park = !tls;
        match self.drive(conn.as_mut(), activity, may_park).await {
            Ended::Closed => None,
            Ended::Parked => {
                let parts = Pin::into_inner(conn).into_parts()?;
                let rewind = parts.io.into_inner();
                // Bytes of a next request already read: parking would lose them. Never the
                // case for a connection idle this long, but if it were, close it.
                (parts.read_buf.is_empty() && rewind.prefix.is_empty()).then_some(rewind.inner)
            }
        }
    }

    async fn serve_h2<I>(&self, io: Rewind<I>, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = request_handler(
            Arc::clone(&self.apps),
            self.role,
            self.ctx(tls),
            Arc::clone(&activity),
        );
        // Boxed for the same reason as TLS in `run`.
        let mut conn = Box::pin(self.builders.h2.serve_connection(TokioIo::new(io), service));
        self.drive(conn.as_mut(), &activity, false).await;
    }

    /// What the handler of one HTTP session knows about its connection.
    fn ctx(&self, tls: bool) -> Arc<Ctx> {
        Arc::new(Ctx {
            peer: self.peer,
            forwarded_peer: crate::forwarded::Peer::new(self.peer.ip()),
            tls,
            signals: self.signals.clone(),
        })
    }

    /// Runs an HTTP session until it ends: closes it gracefully on shutdown and after the
    /// idle timeout, parks it after [`PARK_AFTER`] if `may_park`, and drops it when forced.
    async fn drive<C>(&self, mut conn: Pin<&mut C>, activity: &Activity, may_park: bool) -> Ended
    where
        C: Future<Output = hyper::Result<()>> + Graceful,
    {
        let (mut stop, mut force) = (self.signals.stop.clone(), self.signals.force.clone());
        let idle_timeout = self.app.config.server.idle_timeout;
        let mut every = (idle_timeout / 4).max(Duration::from_millis(50));
        if may_park {
            every = every.min(PARK_AFTER / 2);
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %crate::error::DisplayChain(&e), "connection ended with an error");
                    }
                    let parked = activity.parking.load(Ordering::Relaxed);
                    return if parked { Ended::Parked } else { Ended::Closed };
                }
                _ = raised(&mut stop), if !draining => {
                    activity.parking.store(false, Ordering::Relaxed);
                    conn.as_mut().graceful();
                    draining = true;
                }
                _ = tick.tick(), if !draining => {
                    let idle = activity.idle_for();
                    if idle >= idle_timeout {
                        conn.as_mut().graceful();
                        draining = true;
                    } else if may_park && idle >= PARK_AFTER {
                        activity.parking.store(true, Ordering::Relaxed);
                        conn.as_mut().graceful();
                        draining = true;
                    }
                }
                _ = raised(&mut force) => return Ended::Closed,
            }
        }
    }
}

/// Hands each request of an HTTP session to the pipeline (or the admin handler).
fn request_handler(
    apps: Arc<ArcSwap<App>>,
    role: Role,
    ctx: Arc<Ctx>,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = hyper::Response<Guarded>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<Guarded>, Infallible>> + Send + use<>,
> + Clone
+ Send
+ use<> {
    service_fn(move |request: Request<Incoming>| {
        let app = apps.load_full();
        let ctx = Arc::clone(&ctx);
        let in_flight = activity.begin();
        async move {
            let response = match role {
                Role::Public => pipeline::handle(&app, &ctx, request, Heads::InMap).await,
                Role::Admin => admin::handle(&app, &request).await,
            };
            Ok::<_, Infallible>(response.map(|body| Guarded {
                inner: body,
                _in_flight: in_flight,
            }))
        }
    })
}

/// A server connection that can be asked to finish.
trait Graceful {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: HttpBody + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: HttpBody + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

pin_project_lite::pin_project! {
    /// A connection's I/O with bytes already read put back in front. Its shutdown is skipped
    /// while the connection is being parked, so that the socket stays open.
    struct Rewind<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
        parking: Option<Arc<Activity>>,
    }
}

impl<I> Rewind<I> {
    fn new(inner: I, prefix: Bytes) -> Self {
        Self {
            prefix,
            inner,
            parking: None,
        }
    }
}

impl<I: AsyncRead> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this
            .parking
            .as_ref()
            .is_some_and(|a| a.parking.load(Ordering::Relaxed))
        {
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_shutdown(cx)
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    /// Set while an idle HTTP/1.1 session is being parked.
    parking: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            parking: AtomicBool::new(false),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}

/// Marks a request in flight until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection counted as busy while it streams.
    struct Guarded {
        #[pin]
        inner: Body,
        _in_flight: InFlight,
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy accept loop can use up its task's budget just before it starts waiting for the
    /// stop signal: the wait must still be woken by the signal.
    #[tokio::test]
    async fn a_stop_signal_wakes_a_wait_begun_out_of_budget() {
        let (stop, mut flag) = watch::channel(false);
        let mut wait = pin!(raised(&mut flag));
        poll_fn(|cx| {
            while let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                progress.made_progress();
            }
            assert!(wait.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stop.send(true);
        });
        tokio::select! {
            // The timer first: once it fires, a late poll of `wait` must not hide the miss.
            biased;
            () = tokio::time::sleep(Duration::from_secs(3)) => panic!("the stop signal was missed"),
            () = &mut wait => {}
        }
    }
}
