//! TLS termination: ALPN, and certificates swapped on disk while connections stay open.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{TestCa, Upstream, config, start};

fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
}

async fn connect(connector: &TlsConnector, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn terminates_tls_and_reloads_the_certificate_without_dropping_connections() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a, der_a) = ca.leaf("localhost");
    write_pair(dir.path(), &cert_a, &key_a);
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server.tls]\ncert_file = \"{0}/tls.crt\"\nkey_file = \"{0}/tls.key\"\nreload_interval = \"100ms\"\n[upstreams.web]\nurl = \"{1}\"\n",
        dir.path().display(),
        up.url()
    )))
    .await;
    let h1 = ca.connector(&[b"http/1.1"]);

    // A keep-alive connection made with certificate A.
    let stream = connect(&h1, proxy.addr()).await;
    assert_eq!(served_cert(&stream), der_a);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        sender.send_request(get("/one")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");

    // Certificate B appears on disk; new connections get it.
    let (cert_b, key_b, der_b) = ca.leaf("localhost");
    write_pair(dir.path(), &cert_b, &key_b);
    let mut swapped = false;
    for _ in 0..100 {
        if served_cert(&connect(&h1, proxy.addr()).await) == der_b {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the new certificate was never served");

    // The connection made before the swap is still open and still works.
    assert_eq!(
        sender.send_request(get("/two")).await.unwrap().status(),
        StatusCode::OK
    );

    // Garbage on disk is refused; the last good certificate keeps serving.
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_cert(&connect(&h1, proxy.addr()).await), der_b);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.leaf("localhost");
    write_pair(dir.path(), &cert, &key);
    let up = Upstream::named("web").await;
    let proxy = start(config(&format!(
        "[server.tls]\ncert_file = \"{0}/tls.crt\"\nkey_file = \"{0}/tls.key\"\n[upstreams.web]\nurl = \"{1}\"\n",
        dir.path().display(),
        up.url()
    )))
    .await;
    let stream = connect(&ca.connector(&[b"h2", b"http/1.1"]), proxy.addr()).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get("https://localhost/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(up.last().headers["host"], "localhost");
}
