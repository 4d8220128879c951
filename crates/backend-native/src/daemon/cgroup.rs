//! Cgroups for sandboxes, on cgroup v1 (one hierarchy per controller) and v2 (unified).
//!
//! Owns: finding the hierarchies, creating `<root>/sbx/<instance>/<sandbox-id>` with its limits,
//! killing everything inside, reading usage, removing it.
//! Must never: touch a cgroup outside `sbx/<instance>/` — another daemon instance owns its own.
//!
//! Every path derives from the mount points held in [`Driver`], so that the file-writing
//! logic of both versions is unit-tested against a plain directory.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbx_backend::Limits;

/// CFS period used for CPU quotas (100 ms, the kernel default).
const CPU_PERIOD_US: u64 = 100_000;
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Which cgroup layout the host has.
#[derive(Debug, Clone)]
pub enum Driver {
    /// Controller name → mount point of its hierarchy (`cpuacct` is optional, for usage).
    V1(BTreeMap<String, PathBuf>),
    /// Mount point of the unified hierarchy.
    V2(PathBuf),
}

/// The cgroup(s) of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    version: Version,
    /// One directory per distinct hierarchy (v1) or the one directory (v2).
    dirs: Vec<PathBuf>,
    /// Directory by controller (v1: differs per controller; v2: all the same).
    by_controller: BTreeMap<&'static str, PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Resource usage read from a sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
}

impl Driver {
    /// Finds the hierarchies from `/proc/self/mountinfo`. Prefers v2 when its root offers the
    /// memory, pids and cpu controllers; otherwise needs v1 memory, pids, cpu and freezer.
    pub fn detect() -> Result<Driver, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        Driver::from_mountinfo(&mountinfo, |path| {
            fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    fn from_mountinfo(
        mountinfo: &str,
        read_controllers: impl Fn(&Path) -> String,
    ) -> Result<Driver, String> {
        let mut v1 = BTreeMap::new();
        for line in mountinfo.lines() {
            // Fields: id parent major:minor root mountpoint options [optional…] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let super_options = right.nth(1).unwrap_or_default();
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                "cgroup2" => {
                    let controllers = read_controllers(&mount_point);
                    let offered: Vec<&str> = controllers.split_whitespace().collect();
                    if V2_CONTROLLERS.iter().all(|c| offered.contains(c)) {
                        return Ok(Driver::V2(mount_point));
                    }
                }
                "cgroup" => {
                    for option in super_options.split(',') {
                        if V1_CONTROLLERS.contains(&option) || option == "cpuacct" {
                            v1.entry(option.to_owned())
                                .or_insert_with(|| mount_point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let missing: Vec<&str> = V1_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !v1.contains_key(*c))
            .collect();
        if missing.is_empty() {
            Ok(Driver::V1(v1))
        } else {
            Err(format!(
                "no usable cgroup hierarchy: cgroup v2 lacks the memory, pids or cpu controller \
                 and cgroup v1 lacks {}",
                missing.join(", ")
            ))
        }
    }

    pub fn version_name(&self) -> &'static str {
        match self {
            Driver::V1(_) => "v1",
            Driver::V2(_) => "v2",
        }
    }

    /// The directory holding every sandbox cgroup of `instance`, per hierarchy.
    pub fn instance_dirs(&self, instance: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = match self {
            Driver::V1(mounts) => mounts
                .values()
                .map(|m| m.join("sbx").join(instance))
                .collect(),
            Driver::V2(root) => vec![root.join("sbx").join(instance)],
        };
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Makes sure the parents of sandbox cgroups exist (and on v2 delegate the controllers).
    pub fn prepare_instance(&self, instance: &str) -> io::Result<()> {
        match self {
            Driver::V1(mounts) => {
                for dir in self.instance_dirs(instance) {
                    fs::create_dir_all(&dir)?;
                }
                // Socket accounting (see `set_limits`) is switched on for the whole kernel by
                // the first cgroup that gets a TCP limit and off with the last one: a static
                // key, patched into the kernel's text each time, which cost every create and
                // destroy a millisecond and more when sandboxes came one at a time. The
                // instance's parent keeps it on (unlimited itself) for the daemon's lifetime.
                if let Some(memory) = mounts.get("memory") {
                    let tcp = memory
                        .join("sbx")
                        .join(instance)
                        .join("memory.kmem.tcp.limit_in_bytes");
                    if tcp.exists() {
                        write_file(&tcp, "-1")?;
                    }
                }
                Ok(())
            }
            Driver::V2(root) => {
                let enable = V2_CONTROLLERS
                    .iter()
                    .map(|c| format!("+{c}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut dir = root.clone();
                for part in ["sbx", instance] {
                    write_file(&dir.join("cgroup.subtree_control"), &enable)?;
                    dir.push(part);
                    match fs::create_dir(&dir) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                        _ => {}
                    }
                }
                write_file(&dir.join("cgroup.subtree_control"), &enable)
            }
        }
    }

    /// Sandbox ids with a cgroup under `instance` (in any hierarchy).
    pub fn list(&self, instance: &str) -> Vec<String> {
        let mut names = Vec::new();
        for dir in self.instance_dirs(instance) {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Removes the instance directories when no sandbox cgroup is left in them.
    pub fn remove_instance_if_empty(&self, instance: &str) {
        for dir in self.instance_dirs(instance) {
            let _ = fs::remove_dir(&dir);
        }
    }

    pub fn sandbox(&self, instance: &str, name: &str) -> SandboxCgroup {
        let mut by_controller = BTreeMap::new();
        let version = match self {
            Driver::V1(mounts) => {
                for (controller, mount) in mounts {
                    let controller = match controller.as_str() {
                        "memory" => "memory",
                        "pids" => "pids",
                        "cpu" => "cpu",
                        "freezer" => "freezer",
                        "cpuacct" => "cpuacct",
                        _ => continue,
                    };
                    by_controller.insert(controller, mount.join("sbx").join(instance).join(name));
                }
                Version::V1
            }
            Driver::V2(root) => {
                let dir = root.join("sbx").join(instance).join(name);
                for controller in V2_CONTROLLERS {
                    by_controller.insert(controller, dir.clone());
                }
                Version::V2
            }
        };
        let mut dirs: Vec<PathBuf> = by_controller.values().cloned().collect();
        dirs.sort();
        dirs.dedup();
        SandboxCgroup {
            version,
            dirs,
            by_controller,
        }
    }
}

impl SandboxCgroup {
    /// Creates the cgroup (with no limits yet). An existing cgroup of the same name is reused.
    pub fn make(&self) -> io::Result<()> {
        for dir in &self.dirs {
            match fs::create_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot create cgroup {}: {e}", dir.display()),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the limits (also to a cgroup that processes already joined).
    pub fn set_limits(&self, limits: &Limits) -> io::Result<()> {
        let quota = limits.cpu_millis * CPU_PERIOD_US / 1000;
        match self.version {
            Version::V1 => {
                let memory = &self.by_controller["memory"];
                write_file(
                    &memory.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                // memory+swap only exists with swap accounting; when it does, grant no swap.
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write_file(&memsw, &limits.memory_bytes.to_string())?;
                }
                // v1 charges socket buffers to a cgroup only once it has a TCP limit (v2 always
                // counts them as memory): without one, a 128 MiB sandbox parked 977 MiB in
                // loopback TCP buffers, all of it the host's. The limit covers every protocol
                // that accounts socket memory (TCP, UDP). Written before any socket exists.
                let tcp = memory.join("memory.kmem.tcp.limit_in_bytes");
                if tcp.exists() {
                    write_file(&tcp, &limits.memory_bytes.to_string())?;
                }
                write_file(
                    &self.by_controller["pids"].join("pids.max"),
                    &limits.pids.to_string(),
                )?;
                let cpu = &self.by_controller["cpu"];
                write_file(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_file(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            Version::V2 => {
                let dir = &self.dirs[0];
                write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write_file(&swap, "0")?;
                }
                write_file(&dir.join("pids.max"), &limits.pids.to_string())?;
                write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid into to join the sandbox's cgroups.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Pids currently in the cgroup (any hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every process in the cgroup and waits until it is empty.
    ///
    /// v2 writes `cgroup.kill`. v1 has no such file: freeze, SIGKILL each pid, thaw, repeat, so
    /// that a process forking in a loop cannot outrun the killer.
    pub fn kill_all(&self, deadline: Duration) -> io::Result<()> {
        let start = Instant::now();
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} processes survived SIGKILL", pids.len()),
                ));
            }
            match self.version {
                Version::V2 => {
                    let kill = self.dirs[0].join("cgroup.kill");
                    if kill.exists() {
                        write_file(&kill, "1")?;
                    } else {
                        signal_all(&pids);
                    }
                }
                Version::V1 => {
                    let freezer = self.by_controller.get("freezer");
                    if let Some(freezer) = freezer {
                        let _ = write_file(&freezer.join("freezer.state"), "FROZEN");
                    }
                    signal_all(&self.pids());
                    if let Some(freezer) = freezer {
                        let _ = write_file(&freezer.join("freezer.state"), "THAWED");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Freezes every process of the cgroup, and waits until the kernel says they all are
    /// (v1 `freezer.state` reads `FROZEN`; v2 `cgroup.events` says `frozen 1`). A freeze that
    /// does not finish within `deadline` (a process stuck in the kernel) is undone.
    pub fn freeze(&self, deadline: Duration) -> io::Result<()> {
        let start = Instant::now();
        let (file, value) = self.freezer_file(true)?;
        write_file(&file, value)?;
        let mut asked = Instant::now();
        loop {
            if self.frozen()? {
                return Ok(());
            }
            // Asked again now and then: the kernel then signals every process not frozen yet
            // (one that was starting or in the middle of a system call when first asked).
            if asked.elapsed() > Duration::from_millis(50) {
                write_file(&file, value)?;
                asked = Instant::now();
            }
            if start.elapsed() > deadline {
                let _ = self.thaw();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the sandbox did not freeze within {deadline:?}"),
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Lets every process of the cgroup run again (nothing if it was not frozen).
    pub fn thaw(&self) -> io::Result<()> {
        let (file, value) = self.freezer_file(false)?;
        write_file(&file, value)
    }

    /// Whether every process of the cgroup is frozen.
    pub fn frozen(&self) -> io::Result<bool> {
        match self.version {
            Version::V1 => {
                let state = fs::read_to_string(self.freezer_dir()?.join("freezer.state"))?;
                Ok(state.trim() == "FROZEN")
            }
            Version::V2 => {
                let events = fs::read_to_string(self.dirs[0].join("cgroup.events"))?;
                Ok(events.lines().any(|l| l.trim() == "frozen 1"))
            }
        }
    }

    fn freezer_dir(&self) -> io::Result<&PathBuf> {
        self.by_controller
            .get("freezer")
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no freezer hierarchy"))
    }

    fn freezer_file(&self, freeze: bool) -> io::Result<(PathBuf, &'static str)> {
        Ok(match self.version {
            Version::V1 => (
                self.freezer_dir()?.join("freezer.state"),
                if freeze { "FROZEN" } else { "THAWED" },
            ),
            Version::V2 => (
                self.dirs[0].join("cgroup.freeze"),
                if freeze { "1" } else { "0" },
            ),
        })
    }

    /// Removes the cgroup directories; absent is fine. Retries briefly while the kernel is still
    /// releasing exited processes (EBUSY).
    pub fn remove(&self, deadline: Duration) -> io::Result<()> {
        let start = Instant::now();
        for dir in &self.dirs {
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove cgroup {}: {e}", dir.display()),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        let read = |controller: &str, file: &str| -> Option<String> {
            let dir = self.by_controller.get(controller)?;
            fs::read_to_string(dir.join(file)).ok()
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        match self.version {
            Version::V1 => Usage {
                memory_bytes: number(read("memory", "memory.usage_in_bytes")),
                cpu_usec: number(read("cpuacct", "cpuacct.usage")).map(|ns| ns / 1000),
                pids: number(read("pids", "pids.current")),
            },
            Version::V2 => Usage {
                memory_bytes: number(read("memory", "memory.current")),
                cpu_usec: read("cpu", "cpu.stat").and_then(|stat| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse().ok())
                }),
                pids: number(read("pids", "pids.current")),
            },
        }
    }
}

fn signal_all(pids: &[i32]) {
    for &pid in pids {
        // The pid was read from this sandbox's cgroup a moment ago; while frozen (v1) it cannot
        // exit and be reused, and a process in the cgroup can only be one of ours.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {value:?} to {}: {e}", path.display()),
        )
    })
}

/// Mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(code) = u8::from_str_radix(digits, 8) {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_without_v2_controllers_uses_v1() {
        let driver = Driver::from_mountinfo(HYBRID, |_| "hugetlb\n".into()).unwrap();
        let Driver::V1(mounts) = driver else {
            panic!("expected v1")
        };
        assert_eq!(mounts["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpuacct"));
    }

    #[test]
    fn unified_host_with_controllers_uses_v2() {
        let info = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let driver =
            Driver::from_mountinfo(info, |_| "cpuset cpu io memory hugetlb pids rdma\n".into())
                .unwrap();
        assert!(matches!(driver, Driver::V2(p) if p == Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn no_controllers_is_a_clear_error() {
        let info = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let error = Driver::from_mountinfo(info, |_| String::new()).unwrap_err();
        assert!(error.contains("memory, pids, cpu, freezer"), "{error}");
    }

    #[test]
    fn co_mounted_v1_controllers_share_one_directory() {
        let info = "\
1 0 0:1 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /cg/memory rw - cgroup cgroup rw,memory
3 0 0:3 / /cg/pids rw - cgroup cgroup rw,pids
4 0 0:4 / /cg/freezer rw - cgroup cgroup rw,freezer
";
        let driver = Driver::from_mountinfo(info, |_| String::new()).unwrap();
        let cgroup = driver.sandbox("inst", "sb-x");
        assert_eq!(cgroup.dirs.len(), 4, "{:?}", cgroup.dirs);
        assert_eq!(cgroup.by_controller["cpu"], cgroup.by_controller["cpuacct"]);
    }

    fn limits() -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            cpu_millis: 1500,
            pids: 64,
            disk_bytes: 1 << 30,
        }
    }

    #[test]
    fn v1_writes_each_limit_to_its_controller() {
        let root = tempfile::tempdir().unwrap();
        let mut mounts = BTreeMap::new();
        for c in ["memory", "pids", "cpu", "freezer", "cpuacct"] {
            mounts.insert(c.to_owned(), root.path().join(c));
        }
        let driver = Driver::V1(mounts);
        driver.prepare_instance("inst").unwrap();
        let cgroup = driver.sandbox("inst", "sb-a");
        cgroup.make().unwrap();
        cgroup.set_limits(&limits()).unwrap();
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/sbx/inst/sb-a/memory.limit_in_bytes"),
            "268435456"
        );
        assert_eq!(read("pids/sbx/inst/sb-a/pids.max"), "64");
        assert_eq!(read("cpu/sbx/inst/sb-a/cpu.cfs_quota_us"), "150000");
        assert_eq!(read("cpu/sbx/inst/sb-a/cpu.cfs_period_us"), "100000");
        assert_eq!(driver.list("inst"), vec!["sb-a".to_owned()]);
        assert_eq!(cgroup.procs_files().len(), 5);
    }

    #[test]
    fn v2_delegates_controllers_and_writes_unified_files() {
        let root = tempfile::tempdir().unwrap();
        let driver = Driver::V2(root.path().to_owned());
        driver.prepare_instance("inst").unwrap();
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(read("sbx/cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(
            read("sbx/inst/cgroup.subtree_control"),
            "+memory +pids +cpu"
        );
        let cgroup = driver.sandbox("inst", "sb-b");
        cgroup.make().unwrap();
        cgroup.set_limits(&limits()).unwrap();
        assert_eq!(read("sbx/inst/sb-b/memory.max"), "268435456");
        assert_eq!(read("sbx/inst/sb-b/pids.max"), "64");
        assert_eq!(read("sbx/inst/sb-b/cpu.max"), "150000 100000");
        assert_eq!(
            cgroup.procs_files(),
            vec![root.path().join("sbx/inst/sb-b/cgroup.procs")]
        );
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
