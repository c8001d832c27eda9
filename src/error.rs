//! Failures that end a request, mapped once, here, to a safe response.
//!
//! Nothing internal (addresses, error chains) reaches the client; the full chain goes to the log.

use http::{HeaderValue, Response, StatusCode, header};

use crate::pages::{self, html_escape, page};
use crate::{Body, full};

/// Why Stagedoor answered a request itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request's host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The request cannot be forwarded as it is.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream {upstream} failed: {source}")]
    Upstream {
        /// Upstream name.
        upstream: String,
        /// The underlying failure.
        source: crate::BoxError,
    },
    /// The signed-in identity cannot be expressed in headers.
    #[error("identity cannot be forwarded")]
    Identity,
    /// The upstream did not answer in time.
    #[error("upstream {upstream} timed out")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
    },
}

impl ProxyError {
    /// The status code sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Identity => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told, in words safe to show anyone.
    fn public_message(&self) -> &'static str {
        match self {
            Self::NoRoute => "Nothing is served at this address.",
            Self::BadRequest(why) => why,
            Self::Upstream { .. } => {
                "The service behind this gateway could not be reached. Try again in a moment."
            }
            Self::UpstreamTimeout { .. } => {
                "The service behind this gateway did not answer in time. Try again in a moment."
            }
            Self::Identity => "Your identity cannot be passed on to this service.",
        }
    }

    /// The response for this error, as HTML or JSON depending on what the client accepts.
    pub fn into_response(self, accept: Option<&HeaderValue>) -> Response<Body> {
        error_response(self.status(), self.public_message(), accept)
    }
}

/// Walks an error's `source()` chain into one line, for logs.
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(err) = next {
            write!(f, ": {err}")?;
            next = err.source();
        }
        Ok(())
    }
}

/// True if the client prefers JSON: it asks for JSON and not for HTML.
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    accept.contains("json") && !accept.contains("text/html")
}

/// A small page (or JSON object) for `status` with `message`.
pub fn error_response(
    status: StatusCode,
    message: &str,
    accept: Option<&HeaderValue>,
) -> Response<Body> {
    if wants_json(accept) {
        json_response(
            status,
            &serde_json::json!({
                "error": status.canonical_reason().unwrap_or("error"),
                "status": status.as_u16(),
                "message": message,
            }),
        )
    } else {
        pages::html(status, error_page(status, message))
    }
}

/// A JSON response with the headers every answer of ours carries.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    pages::secure_headers(headers);
    response
}

fn error_page(status: StatusCode, message: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    page(
        reason,
        &format!(
            "<p class=\"code\">Error {code}</p>\n<h1>{reason}</h1>\n<p>{message}</p>",
            code = status.as_u16(),
            reason = html_escape(reason),
            message = html_escape(message),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_only_when_preferred() {
        let cases = [
            (None, false),
            (Some("text/html,application/xhtml+xml,*/*;q=0.8"), false),
            (Some("application/json"), true),
            (Some("application/json, text/plain, */*"), true),
            (Some("*/*"), false),
            (Some("text/plain"), false),
        ];
        for (accept, json) in cases {
            let value = accept.map(HeaderValue::from_static);
            assert_eq!(wants_json(value.as_ref()), json, "{accept:?}");
        }
    }

    #[test]
    fn pages_escape_text() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = error_page(StatusCode::BAD_GATEWAY, "<script>");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
