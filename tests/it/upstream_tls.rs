//! https upstreams: a private CA, SNI override and a client certificate.

use http::StatusCode;

use crate::support::{TestCa, config, get, mtls_upstream, start};

#[tokio::test]
async fn https_upstream_with_private_ca_sni_and_client_certificate() {
    let ca = TestCa::new();
    let upstream = mtls_upstream(ca.mtls_acceptor("backstage.internal")).await;
    let dir = tempfile::tempdir().unwrap();
    let (client_cert, client_key, _) = ca.leaf("stagedoor");
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("client.crt"), client_cert).unwrap();
    std::fs::write(path("client.key"), client_key).unwrap();

    let base = format!(
        "[upstreams.secure]\nurl = \"https://127.0.0.1:{}\"\ntls_server_name = \"backstage.internal\"\n",
        upstream.port()
    );
    let full = format!(
        "{base}ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        path("ca.pem"),
        path("client.crt"),
        path("client.key")
    );
    let proxy = start(config(&full)).await;
    let (status, _, body) = get(proxy.addr(), "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "sni=backstage.internal client_cert=true");

    // Without the private CA the upstream's certificate is not trusted.
    let untrusted = start(config(&base)).await;
    assert_eq!(
        get(untrusted.addr(), "/", &[]).await.0,
        StatusCode::BAD_GATEWAY
    );

    // Without a client certificate the upstream refuses the connection.
    let anonymous = start(config(&format!("{base}ca_file = \"{}\"\n", path("ca.pem")))).await;
    assert_eq!(
        get(anonymous.addr(), "/", &[]).await.0,
        StatusCode::BAD_GATEWAY
    );
}
