//! The admin listener: liveness and readiness for probes. Bound to loopback by default.

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::{App, Body, full};

/// Answers an admin request. `/ping`: the process is alive. `/ready`: configuration loaded,
/// upstreams configured, listeners accepting (503 while shutting down). `/metrics`:
/// Prometheus metrics (see `metrics.rs`).
/// `POST /sessions/revoke?provider=<id>&subject=<sub>`: ends every stored session of a user
/// (needs `session.store = "redis"`).
pub async fn handle<B>(app: &App, request: &Request<B>) -> Response<Body> {
    if request.uri().path() == "/sessions/revoke" {
        return revoke(app, request).await;
    }
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

async fn revoke<B>(app: &App, request: &Request<B>) -> Response<Body> {
    let json =
        |status: StatusCode, body: serde_json::Value| crate::error::json_response(status, &body);
    if request.method() != http::Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "use POST"}),
        );
    }
    let query = request.uri().query().unwrap_or_default();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let (Some(provider), Some(subject)) = (param("provider"), param("subject")) else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "give provider and subject"}),
        );
    };
    let Some(auth) = &app.auth else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no sign-in is configured"}),
        );
    };
    match auth.revoke_user(&provider, &subject).await {
        Ok(revoked) => {
            tracing::info!(target: "stagedoor::audit", %provider, %subject, revoked, "sessions revoked by the operator");
            json(StatusCode::OK, serde_json::json!({"revoked": revoked}))
        }
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}
