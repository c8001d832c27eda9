//! Secrets: values that must never reach a log, a `Debug` print or `check-config` output.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug` and `Serialize` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call only where the secret is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// `N` bytes from the system's secure random generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut out)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(out)
}

/// 32 random bytes as base64url: state values, secrets from `stagedoor keygen`.
pub fn random_token() -> Result<String, String> {
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// Resolves a secret given either inline (`key`) or as a file (`key_file`, for mounted
/// Kubernetes Secrets). Trailing newlines in files are ignored. Errors name the key.
pub fn resolve(
    key: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, (String, String)> {
    match (inline, file) {
        (Some(_), Some(_)) => Err((
            key.to_string(),
            format!("give either {key} or {key}_file, not both"),
        )),
        (Some(secret), None) => Ok(Some(secret.clone())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(Secret(
                text.trim_end_matches(['\r', '\n']).to_string(),
            ))),
            Err(e) => Err((
                format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )),
        },
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn inline_or_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "from-file\n").unwrap();
        let inline = Secret::new("x");
        assert_eq!(
            resolve("k", None, Some(&path)).unwrap().unwrap().expose(),
            "from-file"
        );
        assert_eq!(
            resolve("k", Some(&inline), None).unwrap().unwrap().expose(),
            "x"
        );
        assert_eq!(resolve("k", None, None).unwrap(), None);
        assert_eq!(resolve("k", Some(&inline), Some(&path)).unwrap_err().0, "k");
        let missing = dir.path().join("missing");
        assert_eq!(resolve("k", None, Some(&missing)).unwrap_err().0, "k_file");
    }
}
