//! Failures that end a request, mapped once, here, to a safe response.
//!
//! Nothing internal (addresses, error chains) reaches the client; the full chain goes to the log.

use std::fmt::Write as _;

use http::{HeaderValue, Response, StatusCode, header};

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
    let (content_type, body) = if wants_json(accept) {
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "message": message,
        });
        ("application/json", body.to_string())
    } else {
        ("text/html; charset=utf-8", error_page(status, message))
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The shared look of every page Stagedoor serves itself: no external assets.
pub fn page(title: &str, body_html: &str) -> String {
    let mut out = String::with_capacity(1500 + body_html.len());
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
:root{{color-scheme:light dark;--fg:#1b1f24;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de}}
@media (prefers-color-scheme:dark){{:root{{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--card:#161b22;--line:#30363d}}}}
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:var(--bg);color:var(--fg);
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}}
main{{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:2rem 2.25rem;max-width:28rem;margin:1rem}}
h1{{font-size:1.35rem;margin:0 0 .5rem}}
p{{margin:.5rem 0;color:var(--muted)}}
.code{{font:600 .8rem/1 ui-monospace,monospace;letter-spacing:.05em;color:var(--muted);text-transform:uppercase}}
footer{{margin-top:1.5rem;font-size:.8rem;color:var(--muted)}}
</style></head>
<body><main>
{body_html}
<footer>Stagedoor</footer>
</main></body></html>
"#,
        title = html_escape(title),
    );
    out
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
