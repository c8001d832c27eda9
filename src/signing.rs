//! Stagedoor's own signing keys (ES256, P-256): the one that signs identity tokens, the older
//! ones still published while a rotation runs, and the JWKS document that publishes them.
//!
//! The signing key comes from `identity.signing_key_file`, created with a fresh key on first
//! start if it does not exist, or is generated in memory when no file is configured.

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// The keys, and the JWKS that publishes their public halves.
pub struct Keys {
    signing: EncodingKey,
    /// The signing key's id: its RFC 7638 thumbprint.
    kid: String,
    /// `{"keys": [...]}`, the newest first.
    jwks: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads (or creates) the signing key and the previous keys. Errors name the file.
    pub fn load(signing: Option<&Path>, previous: &[impl AsRef<Path>]) -> Result<Self, String> {
        let pem = match signing {
            Some(path) if path.exists() => read_key_file(path)?,
            Some(path) => {
                let pem = generate_pem()?;
                write_new_key(path, &pem)?;
                tracing::info!(path = %path.display(), "generated a new identity signing key");
                pem
            }
            None => {
                tracing::warn!(
                    "no identity.signing_key_file: identity tokens are signed with a key generated for this run, so upstreams must fetch the keys again after a restart, and replicas disagree"
                );
                generate_pem()?
            }
        };
        let name = signing.map_or("the generated key".to_string(), |p| p.display().to_string());
        let key = EncodingKey::from_ec_pem(pem.as_bytes())
            .map_err(|e| format!("{name}: not an EC private key in PEM: {e}"))?;
        let jwk = published(Jwk::from_encoding_key(&key, Algorithm::ES256), &name)?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        // A key on another curve is caught here rather than on the first request.
        jsonwebtoken::encode(&header(&kid), &serde_json::json!({}), &key)
            .map_err(|e| format!("{name}: cannot sign ES256 (is it a P-256 key?): {e}"))?;
        let mut keys = vec![jwk];
        for path in previous {
            let path = path.as_ref();
            let pem = read_key_file(path)?;
            let name = path.display().to_string();
            let jwk = match EncodingKey::from_ec_pem(pem.as_bytes()) {
                Ok(private) => Jwk::from_encoding_key(&private, Algorithm::ES256),
                Err(_) => DecodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| format!("{name}: not an EC key in PEM: {e}"))
                    .map(|public| Jwk::from_decoding_key(&public, Some(Algorithm::ES256)))?,
            };
            let jwk = published(jwk, &name)?;
            if !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
                keys.push(jwk);
            }
        }
        let jwks = serde_json::to_string(&JwkSet { keys }).map_err(|e| e.to_string())?;
        Ok(Self {
            signing: key,
            kid,
            jwks,
        })
    }

    /// The JWKS document (`application/json`).
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The id of the key that signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as a compact JWT.
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&header(&self.kid), claims, &self.signing)
    }
}

fn header(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    header.typ = Some("JWT".into());
    header
}

/// A public JWK ready to publish: `use: sig`, `alg: ES256`, `kid` its thumbprint.
fn published(jwk: jsonwebtoken::errors::Result<Jwk>, name: &str) -> Result<Jwk, String> {
    let mut jwk = jwk.map_err(|e| format!("{name}: not a P-256 key: {e}"))?;
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| format!("{name}: {e}"))?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    Ok(jwk)
}

fn read_key_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A fresh P-256 private key, PKCS#8 PEM.
fn generate_pem() -> Result<String, String> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate a P-256 key".to_string())?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Writes a new key file readable by its owner only; never replaces an existing file.
fn write_new_key(path: &Path, pem: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Test keys for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// A fresh P-256 private key, PKCS#8 PEM.
    pub(crate) fn p256_pem() -> String {
        super::generate_pem().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_file_is_created_once_and_reused() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let first = Keys::load(Some(&path), &[] as &[&Path]).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Keys::load(Some(&path), &[] as &[&Path]).unwrap();
        assert_eq!(first.kid(), again.kid());

        // Rotation: a new key signs, the old one is still published.
        let new = dir.path().join("new.pem");
        let rotated = Keys::load(Some(&new), &[&path]).unwrap();
        let set: serde_json::Value = serde_json::from_str(rotated.jwks()).unwrap();
        let kids: Vec<&str> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, [rotated.kid(), first.kid()]);
        assert!(
            set["keys"][0].get("d").is_none(),
            "no private part is published"
        );

        // What it signs verifies against what it publishes.
        let token = rotated
            .sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let jwk: Jwk = serde_json::from_value(set["keys"][0].clone()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();

        std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
        let err = Keys::load(Some(&dir.path().join("bad.pem")), &[] as &[&Path]).unwrap_err();
        assert!(err.contains("bad.pem"), "{err}");
    }
}
