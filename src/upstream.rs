//! Upstreams: where requests go, and the pooled client that takes them there.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::ServerName;

use crate::config::{ConfigError, Issues, UpstreamConfig, parse_upstream_url};
use crate::error::ProxyError;
use crate::{Body, tls};

/// One configured upstream and its connection pool.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    scheme: Scheme,
    authority: Authority,
    /// Path put in front of every forwarded path; empty or `/base` (no trailing slash).
    base_path: String,
    host_header: HeaderValue,
    pass_host_header: bool,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Upstream {
    /// Builds the upstream and its client; files (CA bundle, client certificate) are read here.
    pub fn build(name: &str, config: &UpstreamConfig) -> Result<Self, ConfigError> {
        let key = format!("upstreams.{name}");
        let url_error = |e: String| ConfigError::single(format!("{key}.url"), e);
        let uri = parse_upstream_url(&config.url).map_err(url_error)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(url_error("needs a scheme and a host".into()));
        };
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|e| url_error(e.to_string()))?;

        let tls = if scheme == Scheme::HTTPS {
            let identity = config
                .client_cert_file
                .as_deref()
                .zip(config.client_key_file.as_deref());
            tls::client_config(config.ca_file.as_deref(), identity)
                .map_err(|(field, e)| ConfigError::single(format!("{key}.{field}"), e))
        } else {
            tls::unused_client_config().map_err(|e| ConfigError::single(&key, e))
        };
        let server_name = config
            .tls_server_name
            .clone()
            .map(ServerName::try_from)
            .transpose()
            .map_err(|e| ConfigError::single(format!("{key}.tls_server_name"), e.to_string()));
        let (tls, server_name) = match (tls, server_name) {
            (Ok(tls), Ok(name)) => (tls, name),
            (tls, name) => {
                let mut issues = Issues::default();
                for err in [tls.err(), name.err()].into_iter().flatten() {
                    issues.extend(err);
                }
                return Err(issues.into_error());
            }
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .build(connector);
        Ok(Self {
            name: name.to_string(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            host_header,
            pass_host_header: config.pass_host_header,
            timeout: config.timeout,
            client,
        })
    }

    /// The configured name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the client's `Host` is sent on (else [`Upstream::host_header`]).
    pub fn pass_host_header(&self) -> bool {
        self.pass_host_header
    }

    /// The upstream's own authority as a `Host` value.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The absolute URI for a request whose path and query are `pq`.
    pub fn uri_for(&self, pq: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = pq.map_or("/", PathAndQuery::as_str);
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if self.base_path.is_empty() {
            builder.path_and_query(pq).build()
        } else {
            builder
                .path_and_query(format!("{}{pq}", self.base_path))
                .build()
        }
    }

    /// Sends `request` and waits for the response head, at most the configured timeout.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if is_timeout(&e) => Err(ProxyError::UpstreamTimeout {
                upstream: self.name.clone(),
            }),
            Ok(Err(e)) => Err(ProxyError::Upstream {
                upstream: self.name.clone(),
                source: Box::new(e),
            }),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: self.name.clone(),
            }),
        }
    }
}

/// True if a connect timeout is somewhere in the error's chain.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_prefixed() {
        let up = Upstream::build("a", &UpstreamConfig::new("http://10.0.0.1:7007/base/")).unwrap();
        let pq: PathAndQuery = "/api/x?y=1".parse().unwrap();
        assert_eq!(
            up.uri_for(Some(&pq)).unwrap().to_string(),
            "http://10.0.0.1:7007/base/api/x?y=1"
        );
        let up = Upstream::build("a", &UpstreamConfig::new("http://10.0.0.1:7007")).unwrap();
        assert_eq!(
            up.uri_for(Some(&pq)).unwrap().to_string(),
            "http://10.0.0.1:7007/api/x?y=1"
        );
        assert_eq!(
            up.uri_for(None).unwrap().to_string(),
            "http://10.0.0.1:7007/"
        );
    }

    #[test]
    fn unreadable_ca_file_names_the_key() {
        let mut cfg = UpstreamConfig::new("https://backstage.internal");
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        let err = Upstream::build("api", &cfg).unwrap_err();
        assert_eq!(err.issues[0].key, "upstreams.api.ca_file");
        assert!(err.issues[0].message.contains("/nonexistent/ca.pem"));
    }
}
