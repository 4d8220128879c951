//! The other engines' rows, each next to its baseline measured in the same run: oci over
//! `crun` (create + first exec next to raw `crun run`), and the Docker backend under the
//! engine's default runtime and under runsc (create + first exec next to `docker run --rm`,
//! an exec next to `docker exec`); and the files API on each engine that runs the file agent
//! as a command (a 1 KiB write, a 1 KiB read), next to an exec of `true` on the same sandbox.
//! A daemon of its own, with a profile per engine.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sbx_protocol::CreateSandboxRequest;

use crate::daemon::Daemon;
use crate::oci::{busybox_bundle, create_and_exec, raw_run, relative, row};
use crate::report::Row;
use crate::Api;

const CONFIG: &str = "[limits]\ncreates_per_hour = 0\n\
    [profiles.gvisor]\nbackend = \"oci\"\n\
    [profiles.crun]\nbackend = \"crun\"\n\
    [profiles.docker]\nbackend = \"docker\"\n\
    [profiles.docker-gvisor]\nbackend = \"docker-gvisor\"\n";

/// The image the Docker baselines run: a static busybox, imported once.
const IMAGE: &str = "sbx-bench-busybox:1";

fn docker(args: &[&str]) -> Result<()> {
    let status = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run docker (apt-get install docker.io)")?;
    if !status.success() {
        bail!("docker {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Imports [`IMAGE`] from the busybox bundle's root.
fn busybox_image() -> Result<()> {
    let bundle = busybox_bundle()?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(bundle.path().join("rootfs"))
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let status = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.context("tar's output")?)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("docker import failed: {status}");
    }
    Ok(())
}

/// Times `n` runs of `args` (after one unmeasured).
fn timed(n: usize, mut run: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    run()?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        run()?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// `docker exec NAME true` on a running container, `n` times.
fn raw_docker_exec(n: usize) -> Result<Vec<Duration>> {
    let name = format!("sbx-bench-exec-{}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "none",
        "--name",
        &name,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "600",
    ])?;
    let samples = timed(n, || docker(&["exec", &name, "/bin/true"]));
    let _ = docker(&["rm", "-f", &name]);
    samples
}

/// An exec of `true` on one running sandbox of `profile`, `n` times.
async fn sbx_exec(daemon: &Daemon, profile: &str, n: usize) -> Result<Vec<Duration>> {
    let api = Api(&daemon.client);
    let request = CreateSandboxRequest {
        profile: Some(profile.into()),
        ..Default::default()
    };
    let id = api.create_from(&request).await?;
    let measured = async {
        api.exec_true(&id).await?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            api.exec_true(&id).await?;
            samples.push(started.elapsed());
        }
        Ok(samples)
    }
    .await;
    api.delete(&id).await?;
    measured
}

/// On one running sandbox of `profile`, `n` times each: an exec of `true`, a write of 1 KiB
/// (`PUT …/files`), a read of it (`GET …/files`).
async fn sbx_files(daemon: &Daemon, profile: &str, n: usize) -> Result<[Vec<Duration>; 3]> {
    use futures::StreamExt;
    let api = Api(&daemon.client);
    let request = CreateSandboxRequest {
        profile: Some(profile.into()),
        ..Default::default()
    };
    let id = api.create_from(&request).await?;
    let client = &daemon.client;
    let data = vec![b'x'; 1024];
    let measured = async {
        api.exec_true(&id).await?;
        let mut samples: [Vec<Duration>; 3] = Default::default();
        for _ in 0..n {
            let started = Instant::now();
            api.exec_true(&id).await?;
            samples[0].push(started.elapsed());
            let started = Instant::now();
            client
                .upload(&id, "bench.txt", None, None, data.clone())
                .await
                .context("a write")?;
            samples[1].push(started.elapsed());
            let started = Instant::now();
            let mut stream = client.download(&id, "bench.txt", None).await?;
            let mut read = 0;
            while let Some(chunk) = stream.next().await {
                read += chunk?.len();
            }
            samples[2].push(started.elapsed());
            if read != data.len() {
                bail!("read {read} bytes of {}", data.len());
            }
        }
        Ok(samples)
    }
    .await;
    api.delete(&id).await?;
    measured
}

fn text<T>(result: Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{e:#}"))
}

pub async fn rows(sbx: &Path, n: usize) -> Vec<Row> {
    let n = n.clamp(1, 20);
    let daemon = Daemon::start(sbx, &[], CONFIG).await;
    let mut daemon = match daemon {
        Ok(daemon) => daemon,
        Err(e) => {
            let e = format!("{e:#}");
            return vec![row("crun and docker: the daemon", Err(e), None)];
        }
    };
    // After the daemon: its crun backend has readied a hybrid host for crun.
    eprintln!("crun: raw `crun run true` ×{n}, then sbx create + first exec ×{n}…");
    let crun_raw = text(raw_run("crun", &[], n));
    let crun = text(create_and_exec(&daemon, "crun", n, Some("crun")).await);
    let crun_back_to_back = text(create_and_exec(&daemon, "crun", n, None).await);
    eprintln!("docker: `docker run --rm`, `docker exec`, sbx's docker and docker-gvisor ×{n}…");
    let image = text(busybox_image());
    let baseline = |args: &'static [&'static str]| {
        image.clone().and_then(|()| {
            text(timed(n, || {
                let mut all = vec!["run", "--rm", "--network", "none"];
                all.extend_from_slice(args);
                all.extend_from_slice(&[IMAGE, "/bin/true"]);
                docker(&all)
            }))
        })
    };
    let docker_run = baseline(&[]);
    let docker_runsc = baseline(&["--runtime", "runsc"]);
    let docker_exec = image.clone().and_then(|()| text(raw_docker_exec(n)));
    let sbx_docker = text(create_and_exec(&daemon, "docker", n, None).await);
    let sbx_docker_exec = text(sbx_exec(&daemon, "docker", n).await);
    let sbx_gvisor = text(create_and_exec(&daemon, "docker-gvisor", n, None).await);
    eprintln!("files through the file agent: gvisor, crun, docker, docker-gvisor ×{n}…");
    let mut files = Vec::new();
    for profile in ["gvisor", "crun", "docker", "docker-gvisor"] {
        files.push((profile, sbx_files(&daemon, profile, n).await));
    }
    let stopped = daemon.stop();
    let mut rows = vec![
        row("baseline: `crun run` of `true` (a busybox bundle)", crun_raw.clone(), None),
        row(
            "oci (crun): create + first exec `true`, a warm container ready (target ≤ 2 × raw \
             crun run)",
            crun,
            relative(&crun_raw, 2.0),
        ),
        row(
            "oci (crun): create + first exec `true`, back to back (the pool of 2 drained)",
            crun_back_to_back,
            None,
        ),
        row(
            "baseline: `docker run --rm` of `true` (a busybox image, no network)",
            docker_run.clone(),
            None,
        ),
        row(
            "docker: create + first exec `true` (target ≤ 1.1 × docker run --rm)",
            sbx_docker,
            relative(&docker_run, 1.1),
        ),
        row("baseline: `docker exec` of `true`", docker_exec.clone(), None),
        row(
            "docker: exec `true` on a running sandbox (target ≤ 1.1 × docker exec)",
            sbx_docker_exec,
            relative(&docker_exec, 1.1),
        ),
        row(
            "baseline: `docker run --rm --runtime runsc` of `true`",
            docker_runsc.clone(),
            None,
        ),
        row(
            "docker-gvisor: create + first exec `true` (target ≤ 1.1 × docker run --rm --runtime runsc)",
            sbx_gvisor,
            relative(&docker_runsc, 1.1),
        ),
    ];
    for (profile, measured) in files {
        let [exec, write, read] = match measured {
            Ok([exec, write, read]) => [Ok(exec), Ok(write), Ok(read)],
            Err(e) => {
                let e = format!("{e:#}");
                [Err(e.clone()), Err(e.clone()), Err(e)]
            }
        };
        rows.push(row(
            format!("{profile}: exec `true` (the files' baseline)"),
            exec,
            None,
        ));
        rows.push(row(
            format!("{profile}: write 1 KiB through the file agent"),
            write,
            None,
        ));
        rows.push(row(
            format!("{profile}: read 1 KiB through the file agent"),
            read,
            None,
        ));
    }
    if let Err(e) = stopped {
        rows.push(row(
            "crun and docker: the daemon's stop",
            Err(format!("{e:#}")),
            None,
        ));
    }
    rows
}
