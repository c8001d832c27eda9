//! Identity providers: the clients Stagedoor uses to sign people in.

pub mod http;
pub mod oidc;
