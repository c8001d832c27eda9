//! Integration tests: one binary (each `tests/*.rs` would link the whole graph again).

// Test code may fail loudly: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backstage;
mod browser;
mod cli;
mod deploy;
mod faults;
mod forward_auth;
mod github;
mod hostile;
mod id_tokens;
mod identity;
mod limits;
mod metrics;
mod oidc;
mod policy;
mod pool;
mod proxy;
mod reload;
mod shutdown;
mod signin;
mod store;
mod streaming;
mod support;
mod tls;
mod upstream_tls;
mod websocket;
mod wire;
