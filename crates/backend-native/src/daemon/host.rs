//! Facts of the host the native backend reads once at start: what one sandbox may get at most
//! ([`bounds`]), this data directory's instance id, and the host's file table.

use std::fs;
use std::path::Path;

use sbx_backend::Bounds;

/// argv + environment of one command: the control protocol carries them in one
/// `SOCK_SEQPACKET` packet of at most `wire::MAX_PACKET` (160 KiB); the rest is the request's
/// JSON framing and escapes.
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// The host's memory and CPUs, its task table, and the size of the file system under
/// `data_dir`.
pub fn bounds(data_dir: &Path) -> Bounds {
    Bounds {
        memory_bytes: memory_mb() << 20,
        cpu_millis: cpus() * 1000,
        host_tasks: Some(task_limit()),
        disk_bytes: Some(disk_bytes(data_dir)),
        max_command_bytes: MAX_COMMAND_BYTES,
        tasks_per_sandbox: 0,
    }
}

fn memory_mb() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

fn cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// Size of the filesystem holding `dir`.
// The casts are no-ops on 64-bit targets only (`fsblkcnt_t`, `c_ulong`).
#[allow(clippy::unnecessary_cast)]
fn disk_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks() as u64 * s.fragment_size() as u64)
        .unwrap_or(1 << 30)
}

/// How many tasks (processes and threads) the host can have: the smaller of `kernel.pid_max`
/// and `kernel.threads-max`.
fn task_limit() -> u64 {
    let read = |file: &str| {
        fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    // 32768 is the kernel's default pid_max: the safe guess when /proc says nothing.
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(32768);
    let threads_max = read("/proc/sys/kernel/threads-max").unwrap_or(pid_max);
    pid_max.min(threads_max)
}

/// Makes memory, not the host's file table, the limit on a sandbox's open files: raises
/// `fs.file-max` to the kernel's maximum, as systemd does at boot (`bump_file_max_and_nr_open`,
/// since v240) on most hosts already.
///
/// A sandbox's descriptors are capped per process (`RLIMIT_NOFILE`) and their kernel memory is
/// charged to its memory cgroup, but nothing caps their number per sandbox, and the kernel's
/// default table (about one entry per 10 KiB of RAM) fills long before that memory runs out: a
/// 512 MiB sandbox held 2.27 M descriptors of a 2.47 M table on a 23 GiB host, and two filled
/// it, after which every unprivileged host process failed with ENFILE (root is exempt, so the
/// daemon would not notice). Test: `escape::descriptor_floods_are_bounded_and_the_host_file_table_keeps_room`.
pub fn raise_file_max() {
    const FILE_MAX: &str = "/proc/sys/fs/file-max";
    let maximum = i64::MAX as u64;
    let current = fs::read_to_string(FILE_MAX)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if current.is_some_and(|value| value >= maximum) {
        return;
    }
    match fs::write(FILE_MAX, maximum.to_string()) {
        Ok(()) => tracing::info!(
            previous = ?current,
            "raised fs.file-max to the kernel's maximum: sandboxes' descriptors are bounded by their memory cgroups"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            current = ?current,
            "cannot raise fs.file-max: a sandbox with enough memory can exhaust the host's file table"
        ),
    }
}

pub use sbx_backend::instance_id;
