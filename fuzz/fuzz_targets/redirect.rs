//! Redirect-target validation: whatever is accepted is a local path or an allowed host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stagedoor::redirect::{AllowedHosts, validate};

fuzz_target!(|target: &str| {
    let allowed = AllowedHosts::new(&["backstage.example.com".into(), ".corp.example".into()]);
    if let Some(ok) = validate(target, &allowed) {
        let local = ok.starts_with('/') && !ok.starts_with("//") && !ok.contains('\\');
        // The authority as a browser reads it: up to the first '/', '?' or '#'.
        let lower = ok.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .unwrap_or_default();
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let allowed_host = host == "backstage.example.com"
            || (host.ends_with(".corp.example") || host == "corp.example");
        assert!(local || allowed_host, "accepted {target:?} as {ok:?}");
    }
});
