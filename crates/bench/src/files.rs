//! Files: a 1 GiB upload and download through the API (MB/s each way, and how much the
//! daemon's memory grows while they run), and the latency of small-file calls.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use futures::StreamExt as _;
use sbx_api_client::Client;

use crate::Api;

/// The size of the file moved each way.
pub const FILE_BYTES: usize = 1 << 30;
pub const THROUGHPUT_TARGET_MB_S: f64 = 500.0;
pub const RSS_GROWTH_TARGET_MIB: u64 = 32;

pub struct FilesReport {
    pub upload_mb_s: f64,
    pub download_mb_s: f64,
    /// The same bytes through one plain pipe on the host (`head -c … /dev/zero | cat`): what
    /// this machine's pipes and system calls allow at all.
    pub pipe_mb_s: Option<f64>,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
}

/// Samples the daemon's VmRSS every 10 ms while `work` runs; the peak.
async fn peak_rss<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, u64) {
    let mut peak = crate::daemon_status_kib(pid, "VmRSS:").unwrap_or(0);
    tokio::pin!(work);
    loop {
        tokio::select! {
            value = &mut work => {
                peak = peak.max(crate::daemon_status_kib(pid, "VmRSS:").unwrap_or(0));
                return (value, peak);
            }
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                peak = peak.max(crate::daemon_status_kib(pid, "VmRSS:").unwrap_or(0));
            }
        }
    }
}

pub async fn throughput(client: &Client, pid: u32) -> Result<FilesReport> {
    let api = Api(client);
    let id = api.create().await?;
    let block = bytes::Bytes::from(
        (0..1usize << 20)
            .map(|i| (i * 7 + i / 4093) as u8)
            .collect::<Vec<u8>>(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = crate::daemon_status_kib(pid, "VmRSS:").context("no VmRSS")?;
    let chunks = (0..FILE_BYTES >> 20).map(move |_| Ok::<_, std::io::Error>(block.clone()));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let started = Instant::now();
    let (written, up_peak) =
        peak_rss(pid, client.upload(&id, "/home/user/big", None, None, body)).await;
    let upload = started.elapsed();
    let written = written.context("upload")?;
    ensure!(
        written.size == FILE_BYTES as u64,
        "uploaded {} bytes",
        written.size
    );
    // Untimed: the upload's gigabyte written back to the sandbox's disk first, so that the
    // download measures sbx, not the kernel's writeback of the upload competing with it.
    api.sh(&id, "sync").await?;
    let started = Instant::now();
    let (read, down_peak) = peak_rss(pid, async {
        let mut stream = client.download(&id, "/home/user/big", None).await?;
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            total += chunk?.len();
        }
        Ok::<usize, sbx_api_client::ClientError>(total)
    })
    .await;
    let download = started.elapsed();
    ensure!(
        read.context("download")? == FILE_BYTES,
        "downloaded a different size"
    );
    api.delete(&id).await?;
    let mb = FILE_BYTES as f64 / 1e6;
    let started = Instant::now();
    let piped = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("head -c {FILE_BYTES} /dev/zero | cat > /dev/null"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    let pipe_mb_s = piped.then(|| mb / started.elapsed().as_secs_f64());
    Ok(FilesReport {
        upload_mb_s: mb / upload.as_secs_f64(),
        download_mb_s: mb / download.as_secs_f64(),
        pipe_mb_s,
        rss_before_kib,
        rss_peak_kib: up_peak.max(down_peak),
    })
}

/// `n` stats, listings and reads of a small file: their latencies.
pub async fn small(client: &Client, n: usize) -> Result<[Vec<Duration>; 3]> {
    let api = Api(client);
    let id = api.create().await?;
    client
        .upload(&id, "small.txt", None, None, b"hello\n".to_vec())
        .await
        .context("upload")?;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..n {
        let start = Instant::now();
        client.stat(&id, "small.txt").await.context("stat")?;
        times[0].push(start.elapsed());
        let start = Instant::now();
        client.list_files(&id, ".", 1).await.context("list")?;
        times[1].push(start.elapsed());
        let start = Instant::now();
        let mut stream = client
            .download(&id, "small.txt", None)
            .await
            .context("read")?;
        while let Some(chunk) = stream.next().await {
            chunk.context("read")?;
        }
        times[2].push(start.elapsed());
    }
    api.delete(&id).await?;
    Ok(times)
}
