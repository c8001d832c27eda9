//! The application state every request shares, built once from a validated [`Config`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::Auth;
use crate::config::{Config, ConfigError, Issues};
use crate::forwarded::TrustedProxies;
use crate::identity::Identity;
use crate::metrics::{Metrics, RouteMetrics};
use crate::routes::Router;
use crate::tls::ReloadingCert;
use crate::upstream::Upstream;

/// Shared state: routing table, upstream pools, listener certificate, switches.
#[derive(Debug)]
pub struct App {
    /// The configuration this state was built from.
    pub config: Config,
    /// Host and path to upstream.
    pub router: Router,
    /// Peers whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// The listener's certificate, when TLS is on.
    pub tls: Option<Arc<ReloadingCert>>,
    /// Sign-in, when providers are configured.
    pub auth: Option<Auth>,
    /// What the upstream learns about the user.
    pub identity: Arc<Identity>,
    /// Prometheus metrics, served on the admin listener.
    pub metrics: Arc<Metrics>,
    /// The counters of answers Stagedoor gives itself (sign-in, refusals, errors).
    pub own_metrics: RouteMetrics,
    ready: AtomicBool,
}

impl App {
    /// Builds everything the configuration describes, reading the files it names
    /// (certificates, CA bundles). Reports every problem at once. Opens no socket.
    pub fn build(config: Config) -> Result<Self, ConfigError> {
        Self::build_with(config, Arc::new(Metrics::new()))
    }

    /// As [`App::build`], counting into `metrics` (kept across reloads).
    pub fn build_with(config: Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut issues = Issues::default();
        let mut upstreams = Vec::new();
        for (name, upstream) in &config.upstreams {
            match Upstream::build(name, upstream, &metrics) {
                Ok(u) => upstreams.push(Arc::new(u)),
                Err(e) => issues.extend(e),
            }
        }
        let tls = match &config.server.tls {
            Some(tls) => ReloadingCert::load(&tls.cert_file, &tls.key_file)
                .map(Arc::new)
                .map_err(|e| issues.add("server.tls", e))
                .ok(),
            None => None,
        };
        let identity = Identity::build(&config)
            .map(Arc::new)
            .map_err(|e| issues.extend(e))
            .ok();
        let auth = identity.as_ref().and_then(|identity| {
            Auth::build(&config, Arc::clone(identity), Arc::clone(&metrics))
                .map_err(|e| issues.extend(e))
                .ok()
                .flatten()
        });
        issues.finish()?;
        let Some(identity) = identity else {
            return Err(ConfigError::single("identity", "cannot be built"));
        };
        if auth.is_none() {
            tracing::warn!("no [[providers]] configured: requests are forwarded without sign-in");
        }
        for lint in crate::policy::lint(&config.policy) {
            tracing::warn!(key = %lint.key, "{}", lint.message);
        }
        Ok(Self {
            auth,
            identity,
            own_metrics: metrics.route("stagedoor"),
            metrics,
            router: Router::new(&config, &upstreams),
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            tls,
            config,
            ready: AtomicBool::new(false),
        })
    }

    /// True while the server accepts traffic: set after the listeners are up, cleared when
    /// shutdown begins so that load balancers stop sending new requests.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
