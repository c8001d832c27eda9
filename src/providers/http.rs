//! The HTTP client for talking to identity providers (discovery, JWKS, token, userinfo).
//!
//! It never follows redirects (an identity provider that redirects a back-channel call is
//! misconfigured or compromised), times out, and caps response bodies.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::metrics::Metrics;
use crate::tls;

/// Longest wait for a provider's answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest provider response read (discovery documents and JWKS are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be sent or the connection broke.
    #[error("request to the identity provider failed: {0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    /// No answer in time.
    #[error("the identity provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The body was unreadable or too large.
    #[error("the identity provider's response could not be read: {0}")]
    Body(String),
}

/// A future of a provider response, as openidconnect's client trait wants it.
pub type ResponseFuture<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, HttpError>> + Send + 'a>>;

/// A pooled client for one provider.
#[derive(Debug, Clone)]
pub struct IdpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
}

impl IdpClient {
    /// A client trusting `ca_file` (PEM) if given, else the system's CAs.
    pub fn new(ca_file: Option<&Path>, metrics: Arc<Metrics>) -> Result<Self, String> {
        let tls = tls::client_config(ca_file, None).map_err(|(_, e)| e)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self { client, metrics })
    }

    /// Sends one request; what openidconnect's `request_async` calls.
    pub fn call(&self, request: http::Request<Vec<u8>>) -> ResponseFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.send(request).await;
            self.metrics
                .idp_request(result.is_ok(), started.elapsed().as_secs_f64());
            result
        })
    }

    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, HttpError> {
        {
            let request = request.map(|body| Full::new(Bytes::from(body)));
            let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
                .await
                .map_err(|_| HttpError::Timeout(TIMEOUT))?
                .map_err(HttpError::Send)?;
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(TIMEOUT, Limited::new(body, MAX_BODY).collect())
                .await
                .map_err(|_| HttpError::Timeout(TIMEOUT))?
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        }
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for IdpClient {
    type Error = HttpError;
    type Future = ResponseFuture<'c>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        IdpClient::call(self, request)
    }
}
