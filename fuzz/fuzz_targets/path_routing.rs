//! Path normalization and policy matching: a normalized path is canonical (normalizing it
//! again changes nothing), and deciding on it never panics.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use stagedoor::Config;
use stagedoor::policy::Policy;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let config = Config::from_toml(
            r#"
            [upstreams.web]
            url = "http://127.0.0.1:1"
            [policy]
            email_domains = ["example.com"]
            [[policy.routes]]
            path_prefix = "/public"
            public = true
            [[policy.routes]]
            path_glob = "/static/**/*.js"
            public = true
            [[policy.routes]]
            path_regex = "/api/(admin|v[0-9]+)/.*"
            groups = ["admins"]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Policy::new(&config.policy, Vec::new()).unwrap_or_else(|e| panic!("{e}"))
    })
}

fuzz_target!(|path: &str| {
    let Some(normalized) = stagedoor::path::normalize(path) else {
        return;
    };
    assert!(normalized.starts_with('/'), "{path:?} -> {normalized:?}");
    assert!(!normalized.contains("//"), "{path:?} -> {normalized:?}");
    assert_eq!(
        stagedoor::path::normalize(&normalized).as_deref(),
        Some(&*normalized),
        "not canonical: {path:?}"
    );
    let client = std::net::IpAddr::from([192, 0, 2, 1]);
    let _ = policy().access("portal.example.com", &Method::GET, &normalized, client);
});
