//! Redirect-target validation: whatever is accepted is a local path or an allowed host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stagedoor::redirect::{AllowedHosts, validate};

fuzz_target!(|target: &str| {
    let allowed = AllowedHosts::new(&["backstage.example.com".into(), ".corp.example".into()]);
    if let Some(ok) = validate(target, &allowed) {
        let local = ok.starts_with('/') && !ok.starts_with("//") && !ok.contains('\\');
        let uri: Option<http::Uri> = ok.parse().ok();
        // Hosts compare without regard to case.
        let host = uri
            .as_ref()
            .and_then(|u| u.host())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let allowed_host = host == "backstage.example.com"
            || (host.ends_with(".corp.example") || host == "corp.example");
        assert!(local || allowed_host, "accepted {target:?} as {ok:?}");
    }
});
