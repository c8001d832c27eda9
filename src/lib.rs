//! Stagedoor: an identity-aware reverse proxy for Backstage and other internal tools.
//!
//! The library exists so that tests (and embedders) can start the whole server in-process:
//! [`Server::bind`] opens the listeners, [`Running`] reports their addresses and stops them.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod backstage;
pub mod backstage_token;
pub mod body;
pub mod config;
pub mod error;
pub mod forwarded;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod pages;
pub mod path;
pub mod pipeline;
pub mod policy;
pub mod providers;
pub mod redirect;
pub mod routes;
pub mod secret;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod wire;

pub use app::App;
pub use config::Config;
pub use server::{Running, Server};

/// The error type carried between layers; mapped to a response once, in [`error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use body::Body;

/// A hash map with a fast (not flooding-proof) hasher, for per-request lookups whose keys a
/// client cannot choose: hashes, names from the configuration, cookies Stagedoor sealed.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Modification time and length of a file, to notice that it changed (configuration and
/// emails files are polled with it); `None` if it cannot be read.
pub fn file_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A body holding `data`, sent in one frame.
pub fn full(data: impl Into<bytes::Bytes>) -> Body {
    Body::full(data)
}

/// An empty body.
pub fn empty() -> Body {
    Body::empty()
}

/// Installs aws-lc-rs as the process's rustls provider. Call once before any TLS use;
/// later calls are harmless.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
