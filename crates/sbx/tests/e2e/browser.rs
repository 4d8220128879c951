//! The web page in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/terminal.mjs`), against a daemon started here. Screenshots of every step
//! land in `artifacts/browser/` at the top of the workspace.

use std::path::Path;
use std::time::Duration;

use crate::daemon::{text, TestDaemon};

#[tokio::test]
async fn the_web_page_drives_a_terminal_in_chromium() {
    let (workspace, tests, chromium) = prepare();
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

/// Seed 004 in Chromium (`tests/browser/projects.mjs`): the page lists alice's projects,
/// switches her active sandbox between them (files restored each time), previews a dev server
/// started from those files beside the terminal, makes a project, saves the sandbox's files
/// into it and ends her sandbox; the API agrees afterwards.
#[tokio::test]
async fn the_web_page_switches_projects_and_previews_them_in_chromium() {
    use sbx_protocol::{CreateFragmentRequest, CreateProjectRequest, FileContent};
    let (workspace, tests, chromium) = prepare();
    let artifacts = workspace.join("artifacts/browser-projects");
    let _ = std::fs::remove_dir_all(&artifacts);
    let d = TestDaemon::start().await;
    let (key, alice) = d.user("alice").await;
    let server = "import http.server\n\
                  http.server.ThreadingHTTPServer(('127.0.0.1', 3000), http.server.SimpleHTTPRequestHandler).serve_forever()\n";
    let files = |heading: &str| -> std::collections::BTreeMap<String, FileContent> {
        [
            (
                "index.html".to_owned(),
                FileContent::Text(format!("<h1>{heading}</h1>")),
            ),
            ("server.py".to_owned(), FileContent::Text(server.to_owned())),
        ]
        .into()
    };
    let site = alice
        .create_project(&CreateProjectRequest {
            name: "site".into(),
            port: Some(3000),
            files: Some(files("site v1")),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = site.latest_fragment.unwrap();
    alice
        .create_fragment(
            "site",
            &CreateFragmentRequest {
                files: Some(files("site v2")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    alice
        .create_project(&CreateProjectRequest {
            name: "blog".into(),
            port: Some(3000),
            files: Some(files("blog")),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut node = tokio::process::Command::new("node");
    node.arg(tests.join("projects.mjs"))
        .arg(&d.url)
        .arg(&artifacts)
        .env("CHROMIUM", &chromium)
        .env("SBX_KEY", &key)
        .env("SITE_FRAGMENT", &first)
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
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let made: Vec<String> = seen["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    // The API agrees: every sandbox the page made is gone (the last one ended from the page),
    // none is active, and the project made on the page holds the file saved from its sandbox.
    assert_eq!(made.len(), 4);
    for old in &made {
        let gone = alice.get(old).await.unwrap();
        assert_eq!(format!("{:?}", gone.state), "Destroyed");
    }
    assert_eq!(
        alice.active("alice").await.unwrap_err().code(),
        Some("user_not_found")
    );
    let fresh = alice.fragment("fresh", "latest").await.unwrap();
    assert_eq!(fresh.fragment.source, format!("sandbox:{}", made[3]));
    assert!(fresh.entries.iter().any(|e| e.path == "index.html"));
    d.finish().await;
}

/// The workspace, `tests/browser` with its npm packages installed, and Chromium's path.
fn prepare() -> (std::path::PathBuf, std::path::PathBuf, String) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tests = workspace.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} (apt-get install chromium; .ci/run does)"
    );
    crate::daemon::npm_installed(&tests, "playwright-core");
    (workspace, tests, chromium)
}
