//! Genuine Backstage user tokens, minted with the private key of Backstage's static key store
//! (`auth.keyStore.provider: static`), so that every backend plugin accepts the signed-in user
//! through Backstage's own verification.
//!
//! The format is Backstage's (`@backstage/plugin-auth-backend`'s token factory, checked by
//! `@backstage/backend-defaults`' `UserTokenHandler`): protected header `typ:
//! vnd.backstage.user`, `alg: ES256`, `kid`; claims `iss`, `sub` (the user's entity ref), `ent`
//! (ownership refs), `aud: backstage`, `iat`, `exp`, and `uip`, the "user identity proof": the
//! signature of a limited-user token (`typ: vnd.backstage.limited-user`, claims `sub`, `iat`,
//! `exp`) that Backstage rebuilds byte for byte from the header and claims, so both must be
//! serialized exactly as Backstage's `JSON.stringify` does.

use std::path::Path;

use base64::Engine as _;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Serialize;

use crate::config::{BackstageConfig, ConfigError};
use crate::identity::TokenCache;
use crate::session::now;

const USER_TYP: &str = "vnd.backstage.user";
const LIMITED_USER_TYP: &str = "vnd.backstage.limited-user";

#[derive(Serialize)]
struct Header<'a> {
    typ: &'a str,
    alg: &'a str,
    kid: &'a str,
}

#[derive(Serialize)]
struct LimitedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    ent: &'a [String],
    aud: &'a str,
    iat: u64,
    exp: u64,
    uip: &'a str,
}

/// Mints and caches Backstage user tokens.
pub struct BackstageTokens {
    key: EncodingKey,
    kid: String,
    issuer: String,
    lifetime: u64,
    paths: Vec<String>,
    minted: TokenCache<HeaderValue>,
}

impl std::fmt::Debug for BackstageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackstageTokens")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl BackstageTokens {
    /// `None` unless `backstage.key_file` is set. The key file must be readable by its owner
    /// only, unless `allow_readable_key`.
    pub fn build(config: &BackstageConfig) -> Result<Option<Self>, ConfigError> {
        let Some(path) = config.key_file.as_deref() else {
            return Ok(None);
        };
        let error = |e: String| ConfigError::single("backstage.key_file", e);
        if !config.allow_readable_key {
            check_private(path).map_err(error)?;
        }
        let pem = std::fs::read(path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let key = EncodingKey::from_ec_pem(&pem).map_err(|e| {
            error(format!(
                "{}: not an EC private key in PKCS#8 PEM: {e}",
                path.display()
            ))
        })?;
        let tokens = Self {
            key,
            kid: config.key_id.clone(),
            issuer: config.issuer.trim_end_matches('/').to_string(),
            lifetime: config.token_lifetime.as_secs(),
            paths: config.paths.clone(),
            minted: TokenCache::default(),
        };
        // A key on another curve fails here, not on the first request.
        tokens
            .mint(&["user:default/check".to_string()], now())
            .map_err(|e| error(format!("{}: cannot sign ES256: {e}", path.display())))?;
        Ok(Some(tokens))
    }

    /// True if requests to `path` get a token.
    pub fn covers(&self, path: &str) -> bool {
        self.paths.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// `Bearer <token>` for an identity (`key`), minted by `refs` (user ref first, then the
    /// ownership refs) when none is cached with more than half its lifetime left.
    pub fn token(
        &self,
        key: [u8; 32],
        refs: impl FnOnce() -> Option<Vec<String>>,
    ) -> Option<HeaderValue> {
        let now = now();
        if let Some(token) = self.minted.get(&key, now) {
            return Some(token);
        }
        let token = match self.mint(&refs()?, now) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a Backstage user token");
                return None;
            }
        };
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        let exp = now + self.lifetime;
        self.minted
            .insert(key, now + self.lifetime / 2, exp, bearer.clone(), now);
        Some(bearer)
    }

    /// A user token for `refs[0]` owning `refs`, issued at `iat`.
    fn mint(&self, refs: &[String], iat: u64) -> Result<String, jsonwebtoken::errors::Error> {
        let sub = refs.first().map_or("", String::as_str);
        let exp = iat + self.lifetime;
        let limited = self.sign(
            &Header {
                typ: LIMITED_USER_TYP,
                alg: "ES256",
                kid: &self.kid,
            },
            &LimitedClaims { sub, iat, exp },
        )?;
        let uip = limited.rsplit('.').next().unwrap_or_default();
        self.sign(
            &Header {
                typ: USER_TYP,
                alg: "ES256",
                kid: &self.kid,
            },
            &Claims {
                iss: &self.issuer,
                sub,
                ent: refs,
                aud: "backstage",
                iat,
                exp,
                uip,
            },
        )
    }

    /// A compact JWS over exactly these serializations of header and claims.
    fn sign(
        &self,
        header: &impl Serialize,
        claims: &impl Serialize,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(serde_json::to_vec(header)?);
        let claims = b64.encode(serde_json::to_vec(claims)?);
        let input = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, Algorithm::ES256)?;
        Ok(format!("{input}.{signature}"))
    }
}

/// Refuses a key file that its group or others can read.
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read by others (mode {:o}); it can sign in as any Backstage user: chmod 600 it, or set backstage.allow_readable_key = true",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, mode: u32) -> BackstageConfig {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("backstage.pem");
        let pem = crate::signing::tests_support::p256_pem();
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        BackstageConfig {
            key_file: Some(path),
            key_id: "k1".into(),
            issuer: "https://backstage.example.com/api/auth/".into(),
            ..BackstageConfig::default()
        }
    }

    #[test]
    fn tokens_have_backstages_shape_and_a_verifiable_identity_proof() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let tokens = BackstageTokens::build(&config(dir.path(), 0o600))
            .unwrap()
            .unwrap();
        let refs = vec![
            "user:default/alice".to_string(),
            "group:default/eng".to_string(),
        ];
        let token = tokens.mint(&refs, 1_000).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"typ": USER_TYP, "alg": "ES256", "kid": "k1"})
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "https://backstage.example.com/api/auth");
        assert_eq!(claims["sub"], "user:default/alice");
        assert_eq!(claims["ent"], serde_json::json!(refs));
        assert_eq!(claims["aud"], "backstage");
        assert_eq!(claims["exp"], 1_000 + 3600);

        // Rebuilt as Backstage's createLimitedUserToken does, the limited token verifies.
        let limited = format!(
            "{}.{}.{}",
            b64.encode(format!(
                r#"{{"typ":"{LIMITED_USER_TYP}","alg":"ES256","kid":"k1"}}"#
            )),
            b64.encode(r#"{"sub":"user:default/alice","iat":1000,"exp":4600}"#),
            claims["uip"].as_str().unwrap()
        );
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&tokens.key, Algorithm::ES256).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(
            &limited,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();

        assert!(tokens.covers("/api/catalog") && !tokens.covers("/catalog"));
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = BackstageTokens::build(&config(dir.path(), 0o644)).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let mut allowed = config(dir.path(), 0o644);
        allowed.allow_readable_key = true;
        crate::install_crypto_provider();
        assert!(BackstageTokens::build(&allowed).unwrap().is_some());
    }
}
