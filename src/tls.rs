//! TLS: the listener's certificate (re-read when its files change) and the upstream client's
//! trust and identity. One crypto provider, aws-lc-rs, for everything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a file, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// All certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certs(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate found (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no usable PEM private key ({e})"))
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs = parse_certs(cert_pem)?;
    let key = parse_key(key_pem)?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("certificate and key do not fit together: {e}"))
}

// === impl ReloadingCert ===

/// The listener's certificate, swapped in place when the files on disk change.
/// Open connections keep the certificate they shook hands with.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    loaded: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the certificate and key; an error names the file and the problem.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let cert_pem = read(cert_file)?;
        let key_pem = read(key_file)?;
        let key = certified_key(&cert_pem, &key_pem)?;
        Ok(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(key),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Re-reads the files. Returns `Ok(true)` if a new certificate is now served, `Ok(false)` if
    /// nothing changed; on error the old certificate stays.
    pub fn reload(&self) -> Result<bool, String> {
        let cert_pem = read(&self.cert_file)?;
        let key_pem = read(&self.key_file)?;
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| "certificate state poisoned")?;
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        // cert-manager writes the two files one after the other: a pair that does not fit
        // together yet is reported and retried on the next tick.
        let key = certified_key(&cert_pem, &key_pem)?;
        self.current.store(Arc::new(key));
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// Polls the files every `interval` until the returned task is aborted.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_error = None;
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(true) => {
                        last_error = None;
                        tracing::info!(cert_file = %this.cert_file.display(), "TLS certificate reloaded");
                    }
                    Ok(false) => last_error = None,
                    Err(e) => {
                        // Log once per distinct problem, not every tick.
                        if last_error.as_ref() != Some(&e) {
                            tracing::warn!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                            last_error = Some(e);
                        }
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's TLS configuration: HTTP/2 and HTTP/1.1 offered by ALPN.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS settings for connections to one upstream. Errors are `(key suffix, message)`.
pub fn client_config(
    ca_file: Option<&Path>,
    client_identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, (&'static str, String)> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path).map_err(|e| ("ca_file", e))? {
                roots
                    .add(cert)
                    .map_err(|e| ("ca_file", format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A broken system certificate is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("ca_file", e.to_string()))?
        .with_root_certificates(roots);
    match client_identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_file, key_file)) => {
            let certs = load_certs(cert_file).map_err(|e| ("client_cert_file", e))?;
            let key = parse_key(&read(key_file).map_err(|e| ("client_key_file", e))?)
                .map_err(|e| ("client_key_file", format!("{}: {e}", key_file.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ("client_key_file", e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn reload_swaps_only_on_a_valid_change() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (cert, key) = self_signed("a.test");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let rc = ReloadingCert::load(&cert_path, &key_path).unwrap();
        let first = rc.current.load_full();
        assert_eq!(rc.reload(), Ok(false));

        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(rc.reload().unwrap_err().contains("certificate"));
        assert!(Arc::ptr_eq(&first, &rc.current.load_full()));

        // A new certificate with the old key: the pair does not fit and is refused.
        let (cert2, key2) = self_signed("b.test");
        std::fs::write(&cert_path, &cert2).unwrap();
        assert!(rc.reload().unwrap_err().contains("do not fit"));
        std::fs::write(&key_path, &key2).unwrap();
        assert_eq!(rc.reload(), Ok(true));
        assert!(!Arc::ptr_eq(&first, &rc.current.load_full()));
    }

    #[test]
    fn load_errors_name_the_file() {
        let err = ReloadingCert::load(Path::new("/nope/tls.crt"), Path::new("/nope/tls.key"))
            .unwrap_err();
        assert!(err.contains("/nope/tls.crt"), "{err}");
    }
}
