//! The layering rules of ARCHITECTURE.md, checked over `cargo metadata` and the CLI's sources.

use std::collections::BTreeMap;
use std::path::Path;

/// Crate → the workspace crates it may depend on. Backend crates (`sbx-backend-*`) are not
/// listed: one rule covers them all (see [`BACKEND_PREFIX`]).
const ALLOWED: &[(&str, &[&str])] = &[
    ("sbx-protocol", &[]),
    ("sbx-backend", &[]),
    ("sbx-store", &[]),
    ("sbx-config", &[]),
    // Lifecycle has domain types of its own: no wire format.
    ("sbx-lifecycle", &["sbx-backend", "sbx-config", "sbx-store"]),
    (
        "sbx-api",
        &[
            "sbx-config",
            "sbx-e2b",
            "sbx-lifecycle",
            "sbx-protocol",
            "sbx-web",
        ],
    ),
    // The E2B-compatible surfaces: lifecycle's operations in E2B's wire formats.
    ("sbx-e2b", &["sbx-config", "sbx-e2b-proto", "sbx-lifecycle"]),
    ("sbx-e2b-proto", &[]),
    // The image store: layers and templates on the host, behind the seam's `Images`.
    ("sbx-images", &["sbx-backend"]),
    ("sbx-web", &[]),
    ("sbx-api-client", &["sbx-protocol"]),
];

/// The binaries at the top: they may depend on anything (the factory of backends is in `sbx`).
const TOP: &[&str] = &["sbx", "sbx-bench"];

/// Backend crates: each builds on the trait crate alone, and only the factory (in `sbx`)
/// depends on them — so a new backend is its crate and a line in the factory, nothing else.
const BACKEND_PREFIX: &str = "sbx-backend-";

/// Crates above the seam that must not reach the host: no system-call crates.
const HOST_FREE: &[(&str, &[&str])] = &[
    ("sbx-lifecycle", &["nix", "rustix", "libc"]),
    ("sbx-api", &["nix", "rustix"]),
    ("sbx-e2b", &["nix", "rustix", "libc"]),
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
fn every_crate_has_a_place_in_the_layers() {
    let packages = workspace_dependencies();
    for name in packages.keys() {
        let placed = TOP.contains(&name.as_str())
            || name.starts_with(BACKEND_PREFIX)
            || ALLOWED.iter().any(|(allowed, _)| allowed == name);
        assert!(
            placed,
            "crate {name} is not placed in ALLOWED, TOP or the backends"
        );
    }
}

#[test]
fn backends_build_on_the_seam_and_only_the_factory_builds_on_them() {
    let packages = workspace_dependencies();
    let backends: Vec<&String> = packages
        .keys()
        .filter(|name| name.starts_with(BACKEND_PREFIX))
        .collect();
    assert!(backends.len() >= 3, "{backends:?}");
    for backend in &backends {
        for dep in packages[*backend].iter().filter(|d| d.starts_with("sbx")) {
            assert!(
                dep == "sbx-backend" || dep == "sbx-images",
                "{backend} must not depend on {dep}"
            );
        }
    }
    for (name, deps) in &packages {
        if TOP.contains(&name.as_str()) {
            continue;
        }
        if let Some(dep) = deps.iter().find(|d| d.starts_with(BACKEND_PREFIX)) {
            panic!("{name} must not depend on the backend {dep}: only the factory in sbx may");
        }
    }
    // Within `sbx`, the factory is the one file that names a backend crate.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in rust_files(&src) {
        if path.ends_with("backends.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for backend in &backends {
            let module = backend.replace('-', "_");
            assert!(
                !text.contains(&module),
                "{} names {module}: backends are made in src/backends.rs only",
                path.display()
            );
        }
    }
}

#[test]
fn lifecycle_and_api_stay_off_the_host() {
    let packages = workspace_dependencies();
    for (name, forbidden) in HOST_FREE {
        for dep in &packages[*name] {
            assert!(
                !forbidden.contains(&dep.as_str()),
                "{name} must not depend on {dep}: host access belongs to the backends"
            );
        }
    }
    // No host paths in their sources either: what the host looks like is a backend's business.
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["lifecycle/src", "api/src"] {
        for path in rust_files(&crates.join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            for host_path in [
                "\"/proc",
                "\"/sys/",
                "\"/dev/",
                "\"/run/",
                "\"/var/lib",
                "cgroup",
            ] {
                assert!(
                    !text.contains(host_path),
                    "{} mentions the host path {host_path}",
                    path.display()
                );
            }
        }
    }
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
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
