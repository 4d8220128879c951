//! End-to-end tests: the real `sbx` binary, a real daemon per test, the real API and CLI.
//! Each test ends with `TestDaemon::finish`, which stops the daemon and checks that nothing
//! it made is left on the host. They need root (as CI is).

#[path = "e2e/daemon.rs"]
mod daemon;

#[path = "e2e/abuse.rs"]
mod abuse;
#[path = "e2e/api.rs"]
mod api;
#[path = "e2e/archives.rs"]
mod archives;
#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/auth.rs"]
mod auth;
#[cfg(feature = "backend-fake")]
#[path = "e2e/backends.rs"]
mod backends;
#[path = "e2e/browser.rs"]
mod browser;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/docker.rs"]
mod docker;
#[path = "e2e/e2b.rs"]
mod e2b;
#[path = "e2e/escape.rs"]
mod escape;
#[path = "e2e/exec.rs"]
mod exec;
#[path = "e2e/exhaustion.rs"]
mod exhaustion;
#[path = "e2e/files.rs"]
mod files;
#[path = "e2e/gvisor.rs"]
mod gvisor;
#[path = "e2e/http.rs"]
mod http;
#[path = "e2e/isolation.rs"]
mod isolation;
#[path = "e2e/leaks.rs"]
mod leaks;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/pause.rs"]
mod pause;
#[path = "e2e/ports.rs"]
mod ports;
#[path = "e2e/projects.rs"]
mod projects;
#[path = "e2e/runtimes.rs"]
mod runtimes;
#[path = "e2e/snapshots.rs"]
mod snapshots;
#[path = "e2e/templates.rs"]
mod templates;
#[path = "e2e/terminal.rs"]
mod terminal;
#[path = "e2e/warm.rs"]
mod warm;
