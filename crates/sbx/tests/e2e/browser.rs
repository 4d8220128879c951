//! The web page in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/terminal.mjs`), against a daemon started here. Screenshots of every step
//! land in `artifacts/browser/` at the top of the workspace.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{text, TestDaemon};

#[tokio::test]
async fn the_web_page_drives_a_terminal_in_chromium() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tests = workspace.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} (apt-get install chromium; .ci/run does)"
    );
    if !tests.join("node_modules/playwright-core").exists() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&tests)
            .status()
            .expect("the browser test needs npm");
        assert!(npm.success(), "npm ci in tests/browser failed");
    }
    let artifacts = workspace.join("artifacts/browser");
    let _ = std::fs::remove_dir_all(&artifacts);
    let d = TestDaemon::start().await;
    let mut node = tokio::process::Command::new("node");
    node.arg(tests.join("terminal.mjs"))
        .arg(&d.url)
        .arg(&artifacts)
        .env("CHROMIUM", &chromium)
        .env("SBX_KEY", &d.admin_key)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), node.output())
        .await
        .expect("the browser test finished in time")
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser test failed (screenshots in {}):\n{}{}",
        artifacts.display(),
        text(&output.stdout),
        text(&output.stderr)
    );
    let shots = std::fs::read_dir(&artifacts).unwrap().count();
    assert!(shots >= 6, "only {shots} screenshots");
    d.finish().await;
}
