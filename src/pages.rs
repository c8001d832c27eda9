//! The pages Stagedoor shows people itself: one look, no external assets, escaped text.

use std::fmt::Write as _;

use http::{HeaderValue, Response, StatusCode, header};

use crate::{Body, full};

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

const STYLE: &str = r#":root{color-scheme:light dark;--fg:#1b1f24;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--accent:#0b5cad;--accent-fg:#fff}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;--card:#161b22;--line:#30363d;--accent:#4493f8;--accent-fg:#0d1117}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:grid;place-items:center;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:2rem 2.25rem;width:min(28rem,calc(100% - 2rem));margin:1rem}
h1{font-size:1.35rem;margin:0 0 .5rem}
p{margin:.5rem 0;color:var(--muted)}
a{color:var(--accent)}
.code{font:600 .8rem/1 ui-monospace,monospace;letter-spacing:.05em;color:var(--muted);text-transform:uppercase}
ul.choices{list-style:none;padding:0;margin:1.25rem 0 0;display:grid;gap:.6rem}
.button{display:block;width:100%;padding:.7rem 1rem;border-radius:8px;border:1px solid var(--line);background:var(--card);color:var(--fg);font:inherit;text-align:left;text-decoration:none;cursor:pointer}
.button:hover{border-color:var(--accent)}
.button:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.button.primary{background:var(--accent);border-color:var(--accent);color:var(--accent-fg);text-align:center;font-weight:600}
.button small{display:block;color:var(--muted);font-size:.85rem}
.notice{border-left:3px solid #bf8700;padding:.25rem .75rem;margin:1rem 0 0;font-size:.9rem}
footer{margin-top:1.5rem;font-size:.8rem;color:var(--muted)}"#;

/// A whole page around `body_html` (already escaped).
pub fn page(title: &str, body_html: &str) -> String {
    let mut out = String::with_capacity(STYLE.len() + 600 + body_html.len());
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n\
         <title>{title} · Stagedoor</title>\n<style>{STYLE}</style></head>\n\
         <body><main>\n{body_html}\n<footer>Protected by Stagedoor</footer>\n</main></body></html>\n",
        title = html_escape(title),
    );
    out
}

/// An HTML response with the headers every page of ours carries.
pub fn html(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

/// Headers for anything Stagedoor answers itself: never cached, never framed, no scripts.
pub fn secure_headers(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// A provider shown on the chooser: its sign-in link and label.
pub struct Choice<'a> {
    /// Where the button goes.
    pub href: String,
    /// What it says.
    pub label: &'a str,
}

/// "Sign in with ..." when several providers are configured.
pub fn chooser(choices: &[Choice<'_>]) -> String {
    let mut items = String::new();
    for choice in choices {
        let _ = write!(
            items,
            "<li><a class=\"button\" href=\"{}\">Sign in with {}</a></li>",
            html_escape(&choice.href),
            html_escape(choice.label)
        );
    }
    page(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>\n<p>Choose how you want to sign in to continue.</p>\n<ul class=\"choices\">{items}</ul>"
        ),
    )
}

/// A user offered by the development provider's form.
pub struct DevChoice<'a> {
    /// Form value identifying the user.
    pub value: String,
    /// Display name.
    pub name: &'a str,
    /// Email and groups, shown small.
    pub detail: String,
}

/// The development provider's sign-in form.
pub fn dev_sign_in(label: &str, action: &str, state: &str, users: &[DevChoice<'_>]) -> String {
    let mut buttons = String::new();
    for user in users {
        let _ = write!(
            buttons,
            "<li><button class=\"button\" type=\"submit\" name=\"user\" value=\"{}\">{}<small>{}</small></button></li>",
            html_escape(&user.value),
            html_escape(user.name),
            html_escape(&user.detail)
        );
    }
    page(
        label,
        &format!(
            "<h1>{label}</h1>\n<p>Pick the user to sign in as.</p>\n\
             <form method=\"post\" action=\"{action}\">\n\
             <input type=\"hidden\" name=\"state\" value=\"{state}\">\n\
             <ul class=\"choices\">{buttons}</ul>\n</form>\n\
             <p class=\"notice\">Development only: anyone who can reach this page can sign in as any of these users.</p>",
            label = html_escape(label),
            action = html_escape(action),
            state = html_escape(state),
        ),
    )
}

/// A short page with a heading, a sentence and an optional link.
pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> String {
    let link = link
        .map(|(href, label)| {
            format!(
                "<p><a class=\"button primary\" href=\"{}\">{}</a></p>",
                html_escape(href),
                html_escape(label)
            )
        })
        .unwrap_or_default();
    page(
        title,
        &format!(
            "<h1>{}</h1>\n<p>{}</p>\n{link}",
            html_escape(title),
            html_escape(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = chooser(&[Choice {
            href: "/x?a=1&b=\"2\"".into(),
            label: "<Evil>",
        }]);
        assert!(html.contains("Sign in with &lt;Evil&gt;"));
        assert!(html.contains("href=\"/x?a=1&amp;b=&quot;2&quot;\""));
    }
}
