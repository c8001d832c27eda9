//! Forward-auth behind a real nginx (`auth_request`): nginx asks Stagedoor about every request
//! and copies the identity it answers onto the upstream request.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use http::StatusCode;

use crate::oidc::sign_in;
use crate::support::{
    Browser, OpenIdProvider, Upstream, free_port, gate_config, header_map, start,
};

struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: the master then stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// nginx on `port` guarding `upstream` with `auth_request` to Stagedoor at `gate`.
fn nginx(port: u16, gate: SocketAddr, upstream: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The server block is the one shipped in deploy/, with this test's addresses.
    let server = include_str!("../../deploy/forward-auth/nginx.conf")
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("http://stagedoor:4180", &format!("http://{gate}"))
        .replace("http://backstage:7007", &format!("http://{upstream}"));
    let conf = format!(
        r#"
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
    uwsgi_temp_path {d}; scgi_temp_path {d};
{server}
}}
"#
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let nginx_bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: `apt-get install nginx-light` (bash .ci/run does)");
    let child = Command::new(nginx_bin)
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-p")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx starts");
    // Owned at once, so it is stopped however this function ends.
    let nginx = Nginx { child, _dir: dir };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return nginx;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not start");
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_the_upstream() {
    let up = Upstream::named("web").await;
    let front = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{front}/oauth2/callback"), 3600);
    let gate_port = free_port();
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n\
         [[policy.routes]]\npath_prefix = \"/health\"\npublic = true\n\
         [[policy.routes]]\npath_prefix = \"/vault\"\ngroups = [\"nobody\"]\n",
        op.issuer
    );
    let mut config = gate_config(front, &up, "", &provider);
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], gate_port));
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let gate = start(config).await;
    let _nginx = nginx(front, gate.addr(), up.addr);
    let front_addr = SocketAddr::from(([127, 0, 0, 1], front));

    // A public route passes without a session; anything else sends the browser to sign in.
    let mut anonymous = Browser::new(front_addr);
    assert_eq!(anonymous.get("/health/ready").await.status, StatusCode::OK);
    let page = anonymous.get("/catalog").await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert!(
        page.location().contains("/oauth2/start?rd=/catalog"),
        "{}",
        page.location()
    );
    let seen_before = up.seen().len();

    // Sign in through nginx; nginx then passes requests with the identity Stagedoor vouched for.
    let (mut browser, done) = sign_in(front_addr, "/catalog?x=1", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = browser
        .send(
            "GET",
            "/catalog?x=1",
            &[("x-forwarded-email", "mallory@example.com")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "web"));
    let seen = header_map(&up.last().headers);
    assert_eq!(seen["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen["x-forwarded-user"], "alice");
    assert_eq!(seen["x-forwarded-groups"], "engineering,backstage-admins");

    // A route alice may not use is refused by nginx on Stagedoor's word.
    assert_eq!(
        browser.get("/vault/secret").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        up.seen().len(),
        seen_before + 1,
        "only the allowed request reached the upstream"
    );
}

/// Traefik's ForwardAuth: the original request in `X-Forwarded-Method`/`-Host`/`-Uri`, and the
/// answer handed to the browser as it is, so `?redirect=true` turns 401 into a sign-in redirect.
#[tokio::test]
async fn traefik_forward_auth_headers_and_redirect_mode() {
    let up = Upstream::named("web").await;
    let port = free_port();
    let op = OpenIdProvider::start(&format!("http://127.0.0.1:{port}/oauth2/callback"), 3600);
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\nscopes = [\"openid\", \"email\", \"profile\", \"groups\"]\n\
         [[policy.routes]]\npath_prefix = \"/health\"\npublic = true\n\
         [[policy.routes]]\npath_prefix = \"/vault\"\ngroups = [\"nobody\"]\n",
        op.issuer
    );
    let mut config = gate_config(port, &up, "", &provider);
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let gate = start(config).await;
    let ask = |method: &'static str, uri: &'static str| {
        [
            ("x-forwarded-method", method),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "portal.example.com"),
            ("x-forwarded-uri", uri),
            ("accept", "text/html"),
        ]
    };
    let mut anonymous = Browser::new(gate.addr());
    let check = async |browser: &mut Browser, path: &str, headers: &[(&str, &str)]| {
        browser
            .send("GET", path, headers, bytes::Bytes::new())
            .await
    };
    let page = check(&mut anonymous, "/oauth2/auth", &ask("GET", "/catalog?x=1")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = check(
        &mut anonymous,
        "/oauth2/auth?redirect=true",
        &ask("GET", "/catalog?x=1"),
    )
    .await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(page.location(), "/oauth2/start?rd=%2Fcatalog%3Fx%3D1");
    // API calls are never redirected.
    let page = check(
        &mut anonymous,
        "/oauth2/auth?redirect=true",
        &ask("POST", "/catalog"),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let page = check(
        &mut anonymous,
        "/oauth2/auth?redirect=true",
        &ask("GET", "/health"),
    )
    .await;
    assert_eq!(page.status, StatusCode::ACCEPTED);
    // Path tricks are judged after normalization.
    let page = check(
        &mut anonymous,
        "/oauth2/auth",
        &ask("GET", "/health/../vault"),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    let (mut alice, done) = sign_in(gate.addr(), "/", "alice").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = check(
        &mut alice,
        "/oauth2/auth?redirect=true",
        &ask("GET", "/catalog"),
    )
    .await;
    assert_eq!(page.status, StatusCode::ACCEPTED);
    assert_eq!(page.headers["x-auth-request-email"], "alice@example.com");
    assert_eq!(page.headers["x-forwarded-email"], "alice@example.com");
    let page = check(
        &mut alice,
        "/oauth2/auth?redirect=true",
        &ask("GET", "/vault/x"),
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(up.seen().is_empty(), "forward-auth never proxies");
}
