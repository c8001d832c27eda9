//! The deployment files under `deploy/` stay true to the configuration schema: every
//! Stagedoor configuration they ship parses with unknown keys rejected and passes validation,
//! and every `STAGEDOOR_*` variable a manifest sets names a real key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use stagedoor::Config;

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

#[test]
fn every_shipped_configuration_is_valid() {
    let mut tomls = Vec::new();
    files(&deploy(), "toml", &mut tomls);
    assert!(tomls.len() >= 3, "{tomls:?}");
    // The Secret's files, where the manifests mount them.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("cookie-secret"),
        crate::support::TEST_SECRET,
    )
    .unwrap();
    std::fs::write(secrets.path().join("oidc-client-secret"), "client-secret").unwrap();
    let mount = format!("{}/", secrets.path().display());
    for path in tomls {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/etc/stagedoor/secrets/", &mount);
        if let Err(e) = Config::from_toml(&text) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
// figment's Jail fixes the closure's error type.
#[allow(clippy::result_large_err)]
fn every_environment_variable_in_the_manifests_is_a_key() {
    let mut manifests = Vec::new();
    files(&deploy(), "yaml", &mut manifests);
    assert!(!manifests.is_empty());
    // (manifest, variable, its literal value)
    let mut vars = Vec::new();
    for path in &manifests {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines().map(str::trim).peekable();
        while let Some(line) = lines.next() {
            if let Some(name) = line.strip_prefix("- name: STAGEDOOR_") {
                let value = lines
                    .peek()
                    .and_then(|next| next.strip_prefix("value:"))
                    .map(|v| v.trim().trim_matches('"').to_string());
                vars.push((path.clone(), format!("STAGEDOOR_{}", name.trim()), value));
            }
        }
    }
    assert!(
        !vars.is_empty(),
        "the manifests set no STAGEDOOR_* variable"
    );
    let base = deploy().join("kubernetes/standalone/stagedoor.toml");
    for (path, name, value) in vars {
        figment::Jail::expect_with(|jail| {
            // From a Secret (no literal value): a path or string.
            jail.set_env(
                &name,
                value.as_deref().unwrap_or("/etc/stagedoor/secrets/x"),
            );
            let figment = Figment::new()
                .merge(Toml::file(&base))
                .merge(Env::prefixed("STAGEDOOR_").split("__"));
            figment
                .extract::<Config>()
                .map(drop)
                .map_err(|e| format!("{}: {name}: {e}", path.display()).into())
        });
    }
}
