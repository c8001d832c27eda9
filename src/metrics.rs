//! Prometheus metrics, served on the admin listener at `/metrics` (OpenMetrics text).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `stagedoor_requests_total` | counter | `route` (upstream name, or `stagedoor` for answers Stagedoor gives itself), `class` (`2xx` ... `5xx`) |
//! | `stagedoor_upstream_response_seconds` | histogram | `upstream`: time to the response head |
//! | `stagedoor_auth_decisions_total` | counter | `outcome` (`allow`, `deny`, `public`, `network`, `sign-in required`, `bearer refused`), `rule` |
//! | `stagedoor_sign_ins_total` | counter | `provider`, `result` (`ok`, `refused`, `error`) |
//! | `stagedoor_session_refreshes_total` | counter | `provider`, `result` (`ok`, `error`) |
//! | `stagedoor_idp_requests_total` | counter | `result` (`ok`, `error`): calls to identity providers |
//! | `stagedoor_idp_request_seconds` | histogram | none |
//! | `stagedoor_connections_active` | gauge | none: open client connections on the public listener |
//! | `stagedoor_connections_parked` | gauge | none: of those, idle HTTP/1.1 connections holding no buffers |
//! | `stagedoor_session_store_errors_total` | counter | none: requests refused because Redis was unreachable |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{OnceLock, PoisonError, RwLock};

use crate::FastMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Counters by outcome, for one rule.
type Outcomes = Vec<(&'static str, Counter)>;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Handles on one route's request counters and upstream latency, so that counting a request
/// costs neither an allocation nor a hash of its labels.
pub struct RouteMetrics {
    route: String,
    requests: Family<RequestLabels, Counter>,
    upstream: Histograms<UpstreamLabels>,
    by_class: [OnceLock<Counter>; 5],
    latency: OnceLock<Histogram>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    /// A request answered with `status`.
    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        class: STATUS_CLASSES[class],
                    })
                    .clone()
            })
            .inc();
    }

    /// The upstream answered (its response head) after `seconds`.
    pub fn upstream_response(&self, seconds: f64) {
        self.latency
            .get_or_init(|| {
                self.upstream
                    .get_or_create(&UpstreamLabels {
                        upstream: self.route.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

/// Every metric Stagedoor keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream: Histograms<UpstreamLabels>,
    decisions: Family<DecisionLabels, Counter>,
    /// The counters of `decisions` by rule and outcome, so a decision costs no allocation.
    /// Rules are named by the configuration, so this stays small.
    decided: RwLock<FastMap<Box<str>, Outcomes>>,
    sign_ins: Family<ProviderLabels, Counter>,
    refreshes: Family<ProviderLabels, Counter>,
    idp_requests: Family<ResultLabels, Counter>,
    idp_latency: Histogram,
    connections: Gauge,
    parked: Gauge,
    store_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "stagedoor_requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        let upstream: Histograms<UpstreamLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "stagedoor_upstream_response_seconds",
            "Time from sending a request upstream to its response head",
            upstream.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "stagedoor_auth_decisions",
            "Access decisions, by outcome and the rule that decided",
            decisions.clone(),
        );
        let sign_ins = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "stagedoor_sign_ins",
            "Completed sign-ins, by provider and result",
            sign_ins.clone(),
        );
        let refreshes = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "stagedoor_session_refreshes",
            "Session refreshes at the provider, by provider and result",
            refreshes.clone(),
        );
        let idp_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "stagedoor_idp_requests",
            "HTTP requests to identity providers, by result",
            idp_requests.clone(),
        );
        let idp_latency = latency_histogram();
        registry.register(
            "stagedoor_idp_request_seconds",
            "Duration of HTTP requests to identity providers",
            idp_latency.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "stagedoor_connections_parked",
            "Idle HTTP/1.1 client connections parked without buffers",
            parked.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "stagedoor_connections_active",
            "Open client connections on the public listener",
            connections.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "stagedoor_session_store_errors",
            "Requests refused because the session store (Redis) could not be reached",
            store_errors.clone(),
        );
        Self {
            store_errors,
            registry,
            requests,
            upstream,
            decisions,
            decided: RwLock::default(),
            sign_ins,
            refreshes,
            idp_requests,
            idp_latency,
            connections,
            parked,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }

    /// The request counters of one route: an upstream's name, or `stagedoor` for answers
    /// Stagedoor gives itself. Each label set is looked up once, at its first use.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            requests: self.requests.clone(),
            upstream: self.upstream.clone(),
            by_class: Default::default(),
            latency: OnceLock::new(),
        }
    }

    /// The policy decided.
    pub fn decision(&self, outcome: &'static str, rule: &str) {
        let decided = self.decided.read().unwrap_or_else(PoisonError::into_inner);
        let known = decided
            .get(rule)
            .and_then(|outcomes| outcomes.iter().find(|(o, _)| *o == outcome));
        if let Some((_, counter)) = known {
            counter.inc();
            return;
        }
        drop(decided);
        let counter = self
            .decisions
            .get_or_create(&DecisionLabels {
                outcome,
                rule: rule.to_string(),
            })
            .clone();
        counter.inc();
        let mut decided = self.decided.write().unwrap_or_else(PoisonError::into_inner);
        let outcomes = decided.entry(rule.into()).or_default();
        if !outcomes.iter().any(|(o, _)| *o == outcome) {
            outcomes.push((outcome, counter));
        }
    }

    /// A sign-in ended: `ok`, `refused` (by the policy) or `error`.
    pub fn sign_in(&self, provider: &str, result: &'static str) {
        self.sign_ins
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result,
            })
            .inc();
    }

    /// A session refresh ended.
    pub fn refresh(&self, provider: &str, ok: bool) {
        self.refreshes
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// An HTTP request to an identity provider ended after `seconds`.
    pub fn idp_request(&self, ok: bool, seconds: f64) {
        self.idp_requests
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.idp_latency.observe(seconds);
    }

    /// The session store failed a request.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// A client connection opened; the guard counts it until dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.connections.clone())
    }

    /// Counts a parked connection in `stagedoor_connections_parked` while it stays parked.
    pub fn parked(&self) -> ConnectionGuard {
        self.parked.inc();
        ConnectionGuard(self.parked.clone())
    }
}

/// Counts an open connection in `stagedoor_connections_active` while it lives.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
