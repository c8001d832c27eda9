//! Test servers and clients on 127.0.0.1:0: a recording upstream, the proxy, raw sockets.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stagedoor::{Body, Config, Running, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// An HTTP/1.1 upstream that records each request and answers with a handler.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// An upstream answering every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        recorded.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// An upstream that answers `name` as its body, for routing tests.
    pub async fn named(name: &'static str) -> Self {
        Self::start(move |_req| async move { text(name) }).await
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw a request")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub fn text(body: &'static str) -> Response<Body> {
    Response::new(stagedoor::full(body))
}

/// A proxy configuration with loopback listeners on ephemeral ports and no access log noise.
pub fn config(toml: &str) -> Config {
    let mut config = Config::from_toml(toml).unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.listen = loopback;
    config.admin.listen = loopback;
    config.validate().unwrap();
    config
}

/// A proxy in front of a single upstream.
pub async fn proxy_to(upstream: &Upstream) -> Running {
    start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n",
        upstream.url()
    )))
    .await
}

pub async fn start(config: Config) -> Running {
    stagedoor::install_crypto_provider();
    Server::bind(config).await.unwrap().start().unwrap()
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a GET with extra headers and returns status, headers and body.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw bytes on a fresh connection and reads until the server closes or 2 s pass.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Header values as a map of lowercase name to the values joined with ", ".
pub fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = HashMap::new();
    for (k, v) in headers {
        let v = v.to_str().unwrap_or("<binary>").to_string();
        map.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    map
}

/// A throwaway certificate authority for TLS tests.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `name`: (certificate PEM, key PEM, certificate DER).
    pub fn leaf(&self, name: &str) -> (String, String, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A client that trusts this CA and offers `alpn`.
    pub fn connector(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A server identity for `name` that requires client certificates issued by this CA.
    pub fn mtls_acceptor(&self, name: &str) -> tokio_rustls::TlsAcceptor {
        let (cert, key, _) = self.leaf(name);
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()),
            provider(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An https upstream requiring client certificates; answers with the SNI name it was asked for.
pub async fn mtls_upstream(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                let has_client_cert = tls.get_ref().1.peer_certificates().is_some();
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let body = format!("sni={sni} client_cert={has_client_cert}");
                    async move { Ok::<_, Infallible>(Response::new(stagedoor::full(body))) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A cookie-keeping HTTP/1.1 client that does not follow redirects, so tests see every hop.
pub struct Browser {
    pub addr: SocketAddr,
    pub jar: std::collections::BTreeMap<String, String>,
    /// `http://host:port` of the last request, for relative redirects.
    pub last_origin: String,
}

/// A response as a browser sees it.
pub struct Page {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl Browser {
    /// The `Cookie` header this browser sends (for clients other than its own, such as a
    /// WebSocket handshake).
    pub fn cookie_header(&self) -> String {
        let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cookies.join("; ")
    }

    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            jar: Default::default(),
            last_origin: format!("http://{addr}"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, &[], Bytes::new()).await
    }

    pub async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            Bytes::from(body),
        )
        .await
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Page {
        let uri = if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.addr)
        };
        let parsed: http::Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
        self.last_origin = format!("http://{}", parsed.authority().unwrap());
        let mut req = Request::builder().method(method).uri(uri);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        }
        if !self.jar.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client()
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let page = Page {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for set in page.set_cookies() {
            let cookie = cookie::Cookie::parse(set).unwrap();
            let removed = cookie
                .max_age()
                .is_some_and(|a| a.is_zero() || a.is_negative());
            if removed || cookie.value().is_empty() {
                self.jar.remove(cookie.name());
            } else {
                self.jar
                    .insert(cookie.name().to_string(), cookie.value().to_string());
            }
        }
        page
    }
}

/// A configuration with the development provider in front of `upstream`.
pub fn dev_config(upstream: &Upstream, extra: &str) -> Config {
    config(&format!(
        r#"
        [upstreams.web]
        url = "{}"
        [session]
        cookie_secure = false
        cookie_secret = "{TEST_SECRET}"
        [[providers]]
        kind = "dev"
        users = [
          {{ email = "alice@example.com", name = "Alice", groups = ["engineering", "admins"] }},
          {{ email = "bob@example.com", name = "Bob", email_verified = false }},
        ]
        {extra}
        "#,
        upstream.url()
    ))
}

/// A real OpenID provider (the `oidc-provider` npm package) on loopback, for one client whose
/// callback is `redirect_uri`. Stopped when dropped.
pub struct OpenIdProvider {
    pub issuer: String,
    child: std::process::Child,
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenIdProvider {
    pub fn start(redirect_uri: &str, access_token_ttl: u32) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/oidc-provider.mjs");
        let modules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/node/node_modules/oidc-provider"
        );
        assert!(
            std::path::Path::new(modules).is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix tests/node` (bash .ci/run does)"
        );
        let mut command = std::process::Command::new("node");
        command
            .arg(script)
            .env("REDIRECT_URI", redirect_uri)
            .env("CLIENT_ID", "stagedoor")
            .env("CLIENT_SECRET", "stagedoor-secret")
            .env("ACCESS_TOKEN_TTL", access_token_ttl.to_string());
        let (child, issuer) = spawn_until_listening(command);
        Self {
            issuer: issuer.expect("oidc-provider started"),
            child,
        }
    }
}

/// Starts a Node fixture and waits for its `listening <address>` line; `None` if it ended
/// first. Its output is drained afterwards so it never blocks on a full pipe.
fn spawn_until_listening(
    mut command: std::process::Command,
) -> (std::process::Child, Option<String>) {
    use std::io::BufRead;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening ").map(str::to_string));
    std::thread::spawn(move || lines.for_each(drop));
    (child, address)
}

/// A real Backstage backend (auth with the `oauth2Proxy` provider and Stagedoor's verifying
/// module, catalog with users alice and bob) from `tests/backstage`. Stopped when dropped.
pub struct Backstage {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Drop for Backstage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Backstage {
    /// Starts Backstage on `port`; its `stagedoor` provider trusts tokens from `issuer`, and
    /// `env` goes to `tests/backstage/backend.mjs`. Tests pick the port, start Stagedoor, then
    /// Backstage, so that Backstage's own outgoing connections cannot take Stagedoor's port.
    pub fn start_on(port: u16, issuer: &str, env: &[(&str, &str)]) -> Self {
        let root = env!("CARGO_MANIFEST_DIR");
        for (path, install) in [
            (
                "tests/backstage/node_modules/@backstage/backend-defaults",
                "npm ci --prefix tests/backstage",
            ),
            (
                "integrations/backstage/dist/index.js",
                "cd integrations/backstage && npm ci && npm run build",
            ),
        ] {
            assert!(
                std::path::Path::new(root).join(path).exists(),
                "{path} is missing: run `{install}` (bash .ci/run does)"
            );
        }
        let mut command = std::process::Command::new("node");
        command
            .arg(format!("{root}/tests/backstage/backend.mjs"))
            .env("PORT", port.to_string())
            .env("STAGEDOOR_ISSUER", issuer)
            .envs(env.iter().copied());
        let (child, ready) = spawn_until_listening(command);
        let backstage = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        assert!(
            ready.is_some(),
            "the Backstage fixture did not start (run it by hand: PORT=7007 node tests/backstage/backend.mjs)"
        );
        backstage
    }
}

/// A real Redis (Debian's `redis-server`) on a free loopback port, persisting to a temporary
/// directory so that a restart keeps its data. Stopped when dropped.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and data.
    pub fn restart(&mut self) {
        let bin = ["/usr/bin/redis-server", "/usr/sbin/redis-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "redis-server is not installed: `apt-get install redis-server` (bash .ci/run does)",
            );
        let child = std::process::Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    /// Stops it (SIGTERM: it writes its data and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port, for a server whose address must be known before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The cookie secret every test configuration uses.
pub const TEST_SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A gate on `127.0.0.1:port` in front of `upstream`, admitting verified `example.com`
/// users; `policy` adds lines to `[policy]` and `providers` holds the `[[providers]]` entries.
pub fn gate_config(port: u16, upstream: &Upstream, policy: &str, providers: &str) -> Config {
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:{port}"
        [admin]
        enabled = false
        [upstreams.web]
        url = "{upstream}"
        [auth]
        public_url = "http://127.0.0.1:{port}"
        [session]
        cookie_secure = false
        cookie_secret = "{TEST_SECRET}"
        [policy]
        email_domains = ["example.com"]
        {policy}
        {providers}
        "#,
        upstream = upstream.url()
    );
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}
