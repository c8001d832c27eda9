//! The admin listener: liveness and readiness for probes. Bound to loopback by default.

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::{App, Body, full};

/// Answers an admin request. `/ping`: the process is alive. `/ready`: configuration loaded,
/// upstreams configured, listeners accepting (503 while shutting down).
pub fn handle<B>(app: &App, request: &Request<B>) -> Response<Body> {
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
