//! The layering rules of ARCHITECTURE.md, checked over `cargo metadata` and the CLI's sources.

use std::collections::BTreeMap;
use std::path::Path;

/// Crate → the workspace crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sbx-protocol", &[]),
    ("sbx-backend", &[]),
    ("sbx-store", &[]),
    ("sbx-config", &[]),
    ("sbx-backend-native", &["sbx-backend"]),
    (
        "sbx-lifecycle",
        &["sbx-backend", "sbx-config", "sbx-protocol", "sbx-store"],
    ),
    (
        "sbx-api",
        &["sbx-config", "sbx-lifecycle", "sbx-protocol", "sbx-web"],
    ),
    ("sbx-web", &[]),
    ("sbx-api-client", &["sbx-protocol"]),
];

/// The wire types may only build on serde-level crates.
const PROTOCOL_DEPENDENCIES: &[&str] = &["base64", "serde", "serde_json", "utoipa"];

fn workspace_dependencies() -> BTreeMap<String, Vec<String>> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_downwards() {
    let packages = workspace_dependencies();
    for (name, allowed) in ALLOWED {
        let deps = packages
            .get(*name)
            .unwrap_or_else(|| panic!("no crate {name}"));
        for dep in deps.iter().filter(|d| d.starts_with("sbx")) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} must not depend on {dep}"
            );
        }
    }
    for dep in &packages["sbx-protocol"] {
        assert!(
            PROTOCOL_DEPENDENCIES.contains(&dep.as_str()),
            "sbx-protocol must not depend on {dep}"
        );
    }
}

#[test]
fn the_cli_talks_to_the_daemon_only_through_the_api_client() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut stack = vec![cli];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for forbidden in ["sbx_store", "sbx_backend", "sbx_lifecycle", "sbx_api::"] {
                assert!(
                    !text.contains(forbidden),
                    "{} uses {forbidden}",
                    path.display()
                );
            }
        }
    }
}
