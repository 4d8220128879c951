//! Makes the page's npm dependencies (xterm.js and its fit addon, pinned by
//! `web/package-lock.json`) present for `include_bytes!`: runs `npm ci` in `web/` when they
//! are missing or the lock file is newer than the install. Nothing is fetched at run time.

use std::path::Path;
use std::process::Command;

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    for watched in ["package.json", "package-lock.json", "src"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    let installed = web.join("node_modules/.package-lock.json");
    let lock = web.join("package-lock.json");
    let fresh = match (installed.metadata(), lock.metadata()) {
        (Ok(i), Ok(l)) => match (i.modified(), l.modified()) {
            (Ok(i), Ok(l)) => i >= l,
            _ => false,
        },
        _ => false,
    };
    if fresh && web.join("node_modules/@xterm/xterm/lib/xterm.js").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&web)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`npm ci` in {} failed ({status}); the web page needs its npm packages",
            web.display()
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): building sbx needs Node.js and npm for the web page's xterm.js \
             (apt-get install nodejs npm)"
        ),
    }
}
