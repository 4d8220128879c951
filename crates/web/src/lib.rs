//! The web page served at `/`: a list of sandboxes, a terminal (xterm.js over the terminal
//! WebSocket), "Try it" commands, a countdown and a Reset button. Plain HTML, CSS and
//! JavaScript (`web/src/`), plus xterm.js and its fit addon from npm (`web/node_modules`, made
//! present by `build.rs`). Everything is embedded in the binary: no CDN, no files to ship.
//!
//! Owns: the asset table. Must never: know about sandboxes (the page talks to the API).

/// An embedded file: its bytes and media type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

macro_rules! web {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $path))
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

const ASSETS: &[(&str, Asset)] = &[
    (
        "/",
        Asset {
            bytes: web!("src/index.html"),
            content_type: HTML,
        },
    ),
    (
        "/index.html",
        Asset {
            bytes: web!("src/index.html"),
            content_type: HTML,
        },
    ),
    (
        "/app.js",
        Asset {
            bytes: web!("src/app.js"),
            content_type: JS,
        },
    ),
    (
        "/style.css",
        Asset {
            bytes: web!("src/style.css"),
            content_type: CSS,
        },
    ),
    (
        "/lessons.json",
        Asset {
            bytes: web!("src/lessons.json"),
            content_type: JSON,
        },
    ),
    (
        "/vendor/xterm.js",
        Asset {
            bytes: web!("node_modules/@xterm/xterm/lib/xterm.js"),
            content_type: JS,
        },
    ),
    (
        "/vendor/xterm.css",
        Asset {
            bytes: web!("node_modules/@xterm/xterm/css/xterm.css"),
            content_type: CSS,
        },
    ),
    (
        "/vendor/addon-fit.js",
        Asset {
            bytes: web!("node_modules/@xterm/addon-fit/lib/addon-fit.js"),
            content_type: JS,
        },
    ),
];

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    ASSETS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, asset)| *asset)
}

/// Every path the page is made of.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(path, _)| *path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_the_page_uses_only_them() {
        for path in paths() {
            assert!(!asset(path).unwrap().bytes.is_empty(), "{path} is empty");
        }
        let html = std::str::from_utf8(asset("/").unwrap().bytes).unwrap();
        for reference in [
            "/vendor/xterm.js",
            "/vendor/addon-fit.js",
            "/vendor/xterm.css",
            "/app.js",
            "/style.css",
        ] {
            assert!(html.contains(reference), "{reference}");
            assert!(asset(reference).is_some(), "{reference}");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no CDN"
        );
        assert!(asset("/nope").is_none());
    }
}
