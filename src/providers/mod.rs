//! Identity providers: the clients Stagedoor uses to sign people in.

pub mod github;
pub mod http;
pub mod oidc;

/// Why a sign-in step with a provider failed. Shown to the user only as a generic sentence.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery failed: the issuer is down, or its metadata is invalid.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The token endpoint refused or failed.
    #[error("token request failed: {0}")]
    Token(String),
    /// The ID token did not verify.
    #[error("ID token rejected: {0}")]
    IdToken(String),
}
