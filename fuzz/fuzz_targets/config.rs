//! Configuration parsing and validation: any text is a configuration or a list of problems.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = stagedoor::Config::from_toml(text) {
        let _ = stagedoor::policy::lint(&config.policy);
        let _ = config.to_toml();
    }
});
