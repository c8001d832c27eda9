//! Stagedoor's pages in a real browser: headless Chromium driven by playwright-core
//! (`tests/node/signin.mjs`). `.ci/run` installs Debian's chromium and the npm package.

use std::process::Command;

use http::Response;

use crate::support::{Upstream, config, start};

/// An upstream page that shows who it was told the user is.
async fn whoami_upstream() -> Upstream {
    Upstream::start(|req| async move {
        let email = req
            .headers()
            .get("x-forwarded-email")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_string();
        let html = format!(
            "<!doctype html><html lang=\"en\"><title>Backstage</title><h1>Catalog</h1><p>Signed in as {email}</p></html>"
        );
        let mut response = Response::new(stagedoor::full(html));
        response
            .headers_mut()
            .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        response
    })
    .await
}

const PROVIDERS: &str = r#"
[[providers]]
kind = "dev"
users = [
  { email = "alice@example.com", name = "Alice Liddell", groups = ["engineering", "backstage-admins"] },
  { email = "bob@example.com", name = "Bob Builder", groups = ["contractors"] },
]
"#;

#[tokio::test]
async fn sign_in_pages_in_headless_chromium() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/signin.mjs");
    let modules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/node_modules/playwright-core"
    );
    assert!(
        std::path::Path::new(modules).is_dir(),
        "playwright-core is not installed: run `npm ci --prefix tests/node` (bash .ci/run does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: `apt-get install chromium` (bash .ci/run does)"
    );

    let up = whoami_upstream().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let session = "[session]\ncookie_secure = false\n";
    let single = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n[upstreams.dead]\nurl = \"{dead_url}\"\n[[routes]]\nupstream = \"web\"\n[[routes]]\npath_prefix = \"/broken\"\nupstream = \"dead\"\n{session}{PROVIDERS}[[policy.routes]]\npath_prefix = \"/forbidden\"\ngroups = [\"nobody\"]\n",
        up.url()
    )))
    .await;
    let chooser = start(config(&format!(
        "[upstreams.web]\nurl = \"{}\"\n{session}{PROVIDERS}[[providers]]\nkind = \"dev\"\nid = \"contractors\"\ndisplay_name = \"Contractor sign-in\"\nusers = [{{ email = \"carol@example.net\", name = \"Carol\" }}]\n",
        up.url()
    )))
    .await;

    // A third Stagedoor signs in through a real OpenID provider.
    let port = crate::support::free_port();
    let op = crate::support::OpenIdProvider::start(
        &format!("http://127.0.0.1:{port}/oauth2/callback"),
        3600,
    );
    let provider = format!(
        "[[providers]]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"stagedoor\"\nclient_secret = \"stagedoor-secret\"\n",
        op.issuer
    );
    let oidc = start(crate::support::gate_config(port, &up, "", &provider)).await;

    let shots = concat!(env!("CARGO_TARGET_TMPDIR"), "/browser-shots");
    let mut node = Command::new("node");
    node.arg(script)
        .env("STAGEDOOR_URL", format!("http://{}", single.addr()))
        .env("CHOOSER_URL", format!("http://{}", chooser.addr()))
        .env("OIDC_URL", format!("http://{}", oidc.addr()))
        .env("OIDC_ISSUER", &op.issuer)
        .env("SHOTS_DIR", shots);
    // The servers keep running on this test's runtime while node drives the browser.
    let output = tokio::task::spawn_blocking(move || node.output());
    let output = output.await.unwrap().expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches(" ok").count(), 8, "{stdout}");
}
