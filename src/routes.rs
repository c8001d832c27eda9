//! Choosing the upstream for a request from its host and path.
//!
//! The most specific route wins, whatever the order in the file: an exact host beats a
//! `*.` wildcard, which beats a route for any host; then the longest path prefix wins.
//! Prefixes match whole path segments, so `/api` never captures `/apiary`.

use std::sync::Arc;

use crate::config::Config;
use crate::upstream::Upstream;

/// A host pattern: any host, an exact name, or `*.` subdomains.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HostMatch {
    Any,
    /// Lowercase suffix including the leading dot: `.example.com`.
    Wildcard(String),
    /// Lowercase host name.
    Exact(String),
}

impl HostMatch {
    /// `example.com` (exactly) or `*.example.com` (subdomains only), case-insensitive.
    pub(crate) fn parse(pattern: &str) -> Self {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('*') {
            Some(suffix) => Self::Wildcard(suffix.to_string()),
            None => Self::Exact(pattern),
        }
    }

    /// True if `host` (without port) matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }

    fn specificity(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Wildcard(s) => (1, s.len()),
            Self::Exact(_) => (2, 0),
        }
    }
}

#[derive(Debug)]
struct Route {
    host: HostMatch,
    /// Without a trailing slash; empty for `/`.
    prefix: String,
    upstream: Arc<Upstream>,
}

/// The routing table, built once from the configuration.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the table. `upstreams` holds one built upstream per configured name.
    pub fn new(config: &Config, upstreams: &[Arc<Upstream>]) -> Self {
        let find = |name: &str| upstreams.iter().find(|u| u.name() == name).cloned();
        let mut routes: Vec<Route> = if config.routes.is_empty() {
            upstreams
                .first()
                .map(|u| Route {
                    host: HostMatch::Any,
                    prefix: String::new(),
                    upstream: u.clone(),
                })
                .into_iter()
                .collect()
        } else {
            config
                .routes
                .iter()
                .filter_map(|r| {
                    let host = r.host.as_deref().map_or(HostMatch::Any, HostMatch::parse);
                    Some(Route {
                        host,
                        prefix: r.path_prefix.trim_end_matches('/').to_string(),
                        upstream: find(&r.upstream)?,
                    })
                })
                .collect()
        };
        routes.sort_by(|a, b| {
            (b.host.specificity(), b.prefix.len()).cmp(&(a.host.specificity(), a.prefix.len()))
        });
        Self { routes }
    }

    /// The upstream for `host` (without port) and `path`, if any route matches.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Upstream>> {
        self.routes
            .iter()
            .find(|r| r.host.matches(host) && prefix_matches(&r.prefix, path))
            .map(|r| &r.upstream)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml: &str) -> Router {
        let config = Config::from_toml(toml).expect("valid config");
        let metrics = crate::metrics::Metrics::new();
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|(name, u)| Arc::new(Upstream::build(name, u, &metrics).expect("upstream")))
            .collect();
        Router::new(&config, &upstreams)
    }

    #[test]
    fn single_upstream_serves_everything() {
        let r = router("[upstreams.web]\nurl = \"http://127.0.0.1:1\"\n");
        assert_eq!(r.route("any.host", "/").map(|u| u.name()), Some("web"));
        assert_eq!(r.route("x", "/deep/path").map(|u| u.name()), Some("web"));
    }

    #[test]
    fn most_specific_route_wins() {
        let r = router(
            r#"
            [upstreams.web]
            url = "http://127.0.0.1:1"
            [upstreams.api]
            url = "http://127.0.0.1:2"
            [upstreams.docs]
            url = "http://127.0.0.1:3"
            [upstreams.tenant]
            url = "http://127.0.0.1:4"
            [[routes]]
            upstream = "web"
            [[routes]]
            path_prefix = "/api/"
            upstream = "api"
            [[routes]]
            host = "docs.example.com"
            upstream = "docs"
            [[routes]]
            host = "*.tenants.example.com"
            upstream = "tenant"
            "#,
        );
        let table = [
            ("portal.example.com", "/", Some("web")),
            ("portal.example.com", "/api", Some("api")),
            ("portal.example.com", "/api/catalog/entities", Some("api")),
            ("portal.example.com", "/apiary", Some("web")),
            ("DOCS.example.com", "/api/x", Some("docs")),
            ("a.tenants.example.com", "/", Some("tenant")),
            ("tenants.example.com", "/", Some("web")),
            ("eviltenants.example.com", "/", Some("web")),
        ];
        for (host, path, want) in table {
            assert_eq!(r.route(host, path).map(|u| u.name()), want, "{host}{path}");
        }
    }

    #[test]
    fn no_catch_all_means_no_route() {
        let r = router(
            "[upstreams.api]\nurl = \"http://127.0.0.1:2\"\n[[routes]]\npath_prefix = \"/api\"\nupstream = \"api\"\n",
        );
        assert!(r.route("h", "/").is_none());
        assert!(r.route("h", "/api/x").is_some());
    }
}
