//! `sbx`: one binary. `sbx serve` is the daemon; every other subcommand is a client of its API.
//!
//! Owns: wiring (config → store → backend → lifecycle → api) in [`serve`], and the CLI verbs in
//! [`cli`]. Must never: hold business logic, or let a CLI verb touch the store or a backend.

mod backends;
mod cli;
mod daemon;
mod maintenance;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A backend may re-execute this binary as a helper; that must happen before any thread
    // (the async runtime) exists.
    backends::run_helper_if_requested();
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Threads of the blocking pool stay once started: when the host cannot start a thread
        // (its task table is full), tokio queues blocking work on the threads it has, and only
        // panics if it has none (see `serve::warm_blocking_pool`).
        .thread_keep_alive(std::time::Duration::from_secs(365 * 24 * 3600))
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sbx: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::run(args));
    // A blocking read of stdin (`sbx shell`) may still be waiting; do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}
