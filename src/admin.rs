//! The admin listener: liveness and readiness for probes. Bound to loopback by default.

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::{App, Body, full};

/// Answers an admin request. `/ping`: the process is alive. `/ready`: configuration loaded,
/// upstreams configured, listeners accepting (503 while shutting down). `/metrics`:
/// Prometheus metrics (see `metrics.rs`).
pub fn handle<B>(app: &App, request: &Request<B>) -> Response<Body> {
    if request.uri().path() == "/metrics" {
        let mut response = Response::new(full(app.metrics.encode()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        return response;
    }
    let (status, text) = match request.uri().path() {
        "/ping" => (StatusCode::OK, "ok\n"),
        "/ready" if app.is_ready() => (StatusCode::OK, "ready\n"),
        "/ready" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
