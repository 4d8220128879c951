//! `sbx serve`: the daemon. Wires configuration → store → backend → lifecycle → api, reconciles
//! the host with the store, serves until SIGINT/SIGTERM, then destroys every sandbox it runs and
//! removes its cgroup parents: a graceful stop leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::daemon;
use tokio::net::TcpListener;

/// How long in-flight requests may take to finish once a stop is asked for.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); every setting has a default, so none is needed.
    #[arg(long, env = "SBX_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070, or the configuration's].
    #[arg(long, env = "SBX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where sbx keeps its database, templates and sandboxes
    /// [default: /var/lib/sbx for root, else $XDG_DATA_HOME/sbx or ~/.local/share/sbx].
    #[arg(long, env = "SBX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Sandboxes to keep half-built ahead of time, so that a create skips process start-up and
    /// the cgroup move (0 turns this off) [default: 2].
    #[arg(long, env = "SBX_WARM_POOL")]
    warm_pool: Option<usize>,
    /// On stop, leave the sandboxes running for the next daemon to adopt (for upgrades).
    #[arg(long)]
    keep_sandboxes: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SBX_LOG_FORMAT")]
    log_format: LogFormat,
    /// Serve without authentication: every request acts as the admin. For local development
    /// only; refused unless the daemon listens on a loopback address.
    #[arg(long)]
    insecure_no_auth: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    raise_fd_limit();
    return_large_buffers_to_the_host();
    warm_blocking_pool().await;
    let config = sbx_config::Config::load(args.config.as_deref())?;
    crate::backends::check(&config)?;
    let listen = args.listen.unwrap_or(config.daemon.listen);
    let warm_pool = args.warm_pool.unwrap_or(config.daemon.warm_pool);
    let keep_sandboxes = args.keep_sandboxes || config.daemon.keep_sandboxes;
    if args.insecure_no_auth && !listen.ip().is_loopback() {
        anyhow::bail!(
            "--insecure-no-auth would give anyone who can reach {listen} root-equivalent access; it is allowed on loopback addresses only"
        );
    }
    let data_dir = daemon::data_dir(args.data_dir, &config)?;
    let _lock = daemon::DataDirLock::acquire(&data_dir, &format!("the daemon at http://{listen}"))?;
    // Bound first: a daemon that cannot listen fails before it touches the host.
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let service = daemon::open(&config, &data_dir, warm_pool)?;
    if args.insecure_no_auth {
        let warning = "AUTHENTICATION IS OFF (--insecure-no-auth): every request to this daemon acts as the admin; for local development only";
        eprintln!("\n*** WARNING: {warning} ***\n");
        tracing::warn!("{warning}");
    } else {
        let admin_key = data_dir.join(daemon::ADMIN_KEY_FILE);
        match service.access().init_keys(&admin_key) {
            Ok(Some(file)) => tracing::info!(
                file = %file.display(),
                "created the admin key (readable by this user only); `sbx` on this host uses it, elsewhere set SBX_API_KEY"
            ),
            Ok(None) => {}
            Err(e) => {
                service.shutdown_backends().await;
                service.access().close();
                anyhow::bail!("cannot set up API keys: {}", e.detail());
            }
        }
    }
    service.access().audit(
        &sbx_lifecycle::Caller::system(),
        "daemon.started",
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": listen.to_string(),
            "authentication": !args.insecure_no_auth,
        }),
    );
    let settings = sbx_api::Settings {
        allowed_origins: config.daemon.allowed_origins.clone(),
        terminals: config.terminals.clone(),
        trusted_proxies: config.daemon.trusted_proxies.clone(),
        no_auth: args.insecure_no_auth,
        body_timeout: config.daemon.body_timeout,
        spool: sbx_api::spool::SpoolSettings {
            dir: data_dir.clone(),
            max_bytes: config.exec.max_output_bytes,
            // Spool files live beside the sandbox disks, in the reserve they never promise: a
            // quarter of it (the audit trail and the store live there too).
            budget: std::sync::Arc::new(sbx_api::spool::SpoolBudget::new(
                (config.capacity.disk_reserve_mb << 20) / 4,
            )),
        },
        max_upload_bytes: config.files.max_upload_bytes,
    };
    let e2b = sbx_e2b::E2b::new(
        service.clone(),
        config.e2b.clone(),
        crate::daemon::e2b_secret(&data_dir)?,
        config.files.max_upload_bytes,
    );
    let state = sbx_api::AppState::new(service.clone(), settings, e2b);
    let limits = sbx_api::server::Limits {
        header_timeout: config.daemon.header_timeout,
        write_timeout: config.daemon.write_timeout,
        max_connections: config.daemon.max_connections,
        max_connections_per_ip: config.daemon.max_connections_per_ip,
        trusted_proxies: config.daemon.trusted_proxies.clone(),
    };
    let result = serve(listener, state, limits, &data_dir, keep_sandboxes).await;
    // Whatever happened: the backends' background work goes (the native warm pool, and the
    // cgroup parents of this instance once no sandbox is left).
    service.shutdown_backends().await;
    service.access().audit(
        &sbx_lifecycle::Caller::system(),
        "daemon.stopped",
        serde_json::json!({ "clean": result.is_ok() }),
    );
    service.access().close();
    result
}

/// Reconciles, serves until a stop signal (or a server failure), then destroys every sandbox.
async fn serve(
    listener: TcpListener,
    state: sbx_api::AppState,
    limits: sbx_api::server::Limits,
    data_dir: &Path,
    keep_sandboxes: bool,
) -> anyhow::Result<()> {
    let service = state.service.clone();
    let report = service
        .reconcile()
        .await
        .context("cannot reconcile the store with the host")?;
    if !report.adopted.is_empty() || !report.failed.is_empty() || !report.orphans_removed.is_empty()
    {
        tracing::warn!(
            adopted = report.adopted.len(),
            failed = report.failed.len(),
            finished = report.finished.len(),
            orphans = report.orphans_removed.len(),
            "reconciled with what a previous daemon left"
        );
    }
    service.start_reaper();
    service
        .start_backends()
        .await
        .map_err(|e| anyhow::anyhow!(e.detail()))?;
    for backend in service.backends().iter() {
        // Said for the operator; a backend slow to answer does not hold the start up.
        match tokio::time::timeout(std::time::Duration::from_secs(5), backend.health()).await {
            Ok(health) => tracing::info!(
                backend = backend.kind(),
                healthy = health.healthy,
                detail = %health.detail,
                "backend ready"
            ),
            Err(_) => tracing::warn!(
                backend = backend.kind(),
                "backend started; its health check did not answer within 5 s"
            ),
        }
    }
    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "sbx daemon listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(sbx_api::server::serve(
        listener,
        sbx_api::router(state),
        limits,
        stop_rx,
    ));

    let outcome = tokio::select! {
        signal = stop_signal() => {
            tracing::info!(signal, "stopping");
            Ok(())
        }
        result = &mut server => match result {
            Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped unexpectedly")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the HTTP server failed")),
            Err(e) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
        },
    };
    let _ = stop_tx.send(true);
    // Destroying the sandboxes ends the exec streams that would otherwise hold the drain open.
    let first = service.shutdown(keep_sandboxes).await;
    if !server.is_finished() && tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        tracing::warn!("requests still running after the drain period; stopping anyway");
        server.abort();
    }
    // A create that was in flight during the first pass is destroyed by this one.
    let second = service.shutdown(keep_sandboxes).await;
    outcome?;
    first
        .and(second)
        .map_err(|e| anyhow::anyhow!(e.detail()))
        .context("shutdown left sandboxes behind")?;
    tracing::info!("stopped");
    Ok(())
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can only be killed; keep serving.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SBX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Large buffers (a request's stdin, up to 32 MiB) go back to the host when freed: glibc's
/// malloc otherwise raises its mmap threshold after the first such free and serves the next
/// ones from its heaps, where freed memory may stay part of the daemon's footprint for good.
fn return_large_buffers_to_the_host() {
    // SAFETY: mallopt only changes a tunable of the allocator (under its own lock, so any
    // thread may call it); a failure leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Threads the blocking pool starts with (they stay: see `main`).
const BLOCKING_THREADS: usize = 4;

/// Starts a few threads of the runtime's blocking pool now, while the host can. Later, when
/// the host's task table is full, a blocking task waits for one of them instead of making
/// tokio panic with "OS can't spawn worker thread" (it panics only with no thread at all), and
/// the operation that could not get a new process fails with a clean "at capacity".
async fn warm_blocking_pool() {
    let started: Vec<_> = (0..BLOCKING_THREADS)
        // Busy at once, so that each needs a thread of its own.
        .map(|_| tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(20))))
        .collect();
    for task in started {
        let _ = task.await;
    }
}

/// Each sandbox holds a pidfd and each running command three pipes in the daemon: lift the
/// soft descriptor limit to the hard one (stage 1 lowers it again for sandboxes).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass, which outlives the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
