//! Integration tests: one binary (each `tests/*.rs` would link the whole graph again).

mod proxy;
mod streaming;
mod support;
