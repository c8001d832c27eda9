//! The `stagedoor` binary: exit codes, messages, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_stagedoor");

fn stagedoor(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("STAGEDOOR_CONFIG")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo_config() -> String {
    format!("{}/config.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_config_is_valid() {
    let (code, stdout, stderr) = stagedoor(&["check-config", "--config", &repo_config()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("[upstreams.backstage]"), "{stdout}");
    assert!(stderr.contains("configuration is valid"));
}

#[test]
fn check_config_lints_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[upstreams.web]\nurl = \"http://127.0.0.1:3000\"\n\
         [[providers]]\nkind = \"dev\"\nusers = [{ email = \"a@example.com\" }]\n\
         [[policy.routes]]\nname = \"api\"\npath_prefix = \"/api\"\nallow_any_user = true\n\
         [[policy.routes]]\nname = \"admin\"\npath_prefix = \"/api/admin\"\ngroups = [\"admins\"]\n\
         [[policy.routes]]\npath_regex = \"health\"\npublic = true\n",
    )
    .unwrap();
    let (code, _, stderr) = stagedoor(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: policy.routes[1]: unreachable: api comes first"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: policy.routes[2].path_regex: matches no path"),
        "{stderr}"
    );
}

#[test]
fn config_errors_name_every_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nmax_connections = 0\n[upstreams.web]\nurl = \"ftp://nope\"\n[[routes]]\nupstream = \"missing\"\n",
    )
    .unwrap();
    let (code, _, stderr) = stagedoor(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    for key in [
        "server.max_connections",
        "upstreams.web.url",
        "routes[0].upstream",
    ] {
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn environment_overrides_are_checked_too() {
    let (code, _, stderr) = stagedoor(
        &["check-config", "--config", &repo_config()],
        &[("STAGEDOOR_SERVER__MAX_CONNECTIONS", "lots")],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("server.max_connections"), "{stderr}");
    assert!(
        stderr.contains("STAGEDOOR_"),
        "the source is named: {stderr}"
    );

    let (code, stdout, _) = stagedoor(
        &["check-config", "--config", &repo_config()],
        &[(
            "STAGEDOOR_UPSTREAMS__BACKSTAGE__URL",
            "http://backstage:7007",
        )],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("url = \"http://backstage:7007\""),
        "{stdout}"
    );
}

#[test]
fn unreadable_files_are_config_errors() {
    let (code, _, stderr) = stagedoor(
        &["check-config", "--config", &repo_config()],
        &[
            ("STAGEDOOR_SERVER__TLS__CERT_FILE", "/nonexistent/tls.crt"),
            ("STAGEDOOR_SERVER__TLS__KEY_FILE", "/nonexistent/tls.key"),
            ("STAGEDOOR_SESSION__COOKIE_SECURE", "true"),
        ],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("server.tls") && stderr.contains("/nonexistent/tls.crt"),
        "{stderr}"
    );
}

#[test]
fn keygen_prints_fresh_secrets() {
    let secret = |out: String| out.lines().last().unwrap_or_default().to_string();
    let (code, a, _) = stagedoor(&["keygen"], &[]);
    assert_eq!(code, 0);
    let (_, b, _) = stagedoor(&["keygen"], &[]);
    let (a, b) = (secret(a), secret(b));
    assert_eq!(a.len(), 43, "{a}");
    assert_ne!(a, b);
}

#[test]
fn version() {
    let (code, stdout, _) = stagedoor(&["--version"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("stagedoor {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn runs_until_sigterm_and_exits_0() {
    let mut child = Command::new(BIN)
        .args(["--config", &repo_config()])
        .env("STAGEDOOR_SERVER__LISTEN", "127.0.0.1:0")
        .env("STAGEDOOR_ADMIN__LISTEN", "127.0.0.1:0")
        .env("STAGEDOOR_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let event = lines
        .by_ref()
        .map_while(Result::ok)
        .map(|line| serde_json::from_str::<serde_json::Value>(&line).unwrap())
        .find(|event| event["message"] == "listening")
        .expect("a \"listening\" event");
    let addr: std::net::SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_ok());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Read the shutdown messages to the end, so the child never writes into a closed pipe.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
