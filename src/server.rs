//! Listeners and connections: accept, TLS handshake, HTTP/1.1 and HTTP/2, limits, draining.
//!
//! Shutdown has two steps. `stop` closes the listeners and asks every connection to finish
//! what it is doing (HTTP/1.1 closes after the in-flight response, HTTP/2 sends GOAWAY).
//! If connections are still open when the grace period ends, `force` closes them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, ServerConfig};
use crate::pipeline::{self, Ctx};
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
        let builder = Arc::new(http_builder(server));
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

/// Resolves once the flag is true (or its sender is gone, which means the same).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Public,
    Admin,
}

fn http_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    apps: Arc<ArcSwap<App>>,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
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
            builder: Arc::clone(&builder),
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    role: Role,
    peer: SocketAddr,
    signals: Signals,
}

impl Conn {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        match tls {
            None => self.serve(stream, false).await,
            Some(acceptor) => {
                let timeout = self.app.config.server.header_read_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.serve(stream, true).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(self, io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            apps,
            app,
            builder,
            role,
            peer,
            signals,
        } = self;
        let (mut stop, mut force) = (signals.stop.clone(), signals.force.clone());
        let idle_timeout = app.config.server.idle_timeout;
        let activity = Arc::new(Activity::new());
        let ctx = Arc::new(Ctx {
            peer,
            tls,
            signals: signals.clone(),
        });
        let service = {
            let activity = Arc::clone(&activity);
            service_fn(move |request: Request<Incoming>| {
                let app = apps.load_full();
                let ctx = Arc::clone(&ctx);
                let in_flight = activity.begin();
                async move {
                    let response = match role {
                        Role::Public => pipeline::handle(&app, &ctx, request).await,
                        Role::Admin => admin::handle(&app, &request).await,
                    };
                    Ok::<_, Infallible>(response.map(|body| Guarded {
                        inner: body,
                        _in_flight: in_flight,
                    }))
                }
            })
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %crate::error::DisplayChain(e.as_ref()), "connection ended with an error");
                    }
                    break;
                }
                _ = raised(&mut stop), if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = tick.tick(), if !draining => {
                    if activity.idle_for() >= idle_timeout {
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
                _ = raised(&mut force) => break,
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
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
