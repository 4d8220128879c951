//! Escape and abuse attempts, from inside a sandbox, as the default user and as root: each test
//! names an attack, runs it for real (Python `ctypes` where the attack needs a system call with
//! crafted arguments, not just its number) and checks that every attempt fails with the
//! expected error. Each test plants traces on the host first (a marker file with random
//! contents in `/tmp` and in the daemon's data directory, a host process) and ends by checking
//! that the host shows no damage and the daemon still works, then `finish`es (leak check).
//!
//! `isolation.rs` holds the first line of these checks (system calls refused by number, host
//! files invisible, resource limits); this file holds the behavioural attacks. x86-64 only (the
//! seccomp filter is).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::StreamExt;

use sbx_protocol::{ExecRequest, ExecResult};

use crate::daemon::{assert_host_healthy, processes_mentioning, TestDaemon};

const USERS: [Option<&str>; 2] = [None, Some("root")];

/// Helpers every attack script starts with. `attempt(name, action, *expected)` runs `action`
/// and records whether it failed with one of the `expected` errno names (a success is
/// `succeeded`, which only the loopback UDP sends expect); `check(name, holds)` records a
/// plain observation; `sys_(nr, *args)` is a raw system call that raises `OSError` like `os`
/// functions do; `write_file` writes unbuffered, so that the error comes from the write.
/// `ARGS` is the JSON the test passes as argv[1].
const PRELUDE: &str = r#"
import ctypes, errno, json, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
ARGS = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
DENIED = ('EPERM', 'EACCES', 'ENOSYS')
results = {}
def sys_(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if ret == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret
def record(name, got, *expected):
    results[name] = [got, got in expected]
def attempt(name, action, *expected):
    try:
        action()
        got = 'succeeded'
    except OSError as e:
        got = errno.errorcode.get(e.errno, str(e.errno))
    record(name, got, *expected)
def write_file(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def check(name, holds, detail=''):
    results[name] = [detail or ('holds' if holds else 'does not hold'), bool(holds)]
def report():
    print(json.dumps(results))
"#;

/// Host traces an attack must not reach: marker files with random contents (in a fresh
/// `/tmp` directory and in the daemon's data directory) and a host process.
struct Host {
    secret: String,
    tmp_dir: tempfile::TempDir,
    markers: Vec<PathBuf>,
    bystander: Child,
}

impl Host {
    fn plant(d: &TestDaemon) -> Host {
        let secret = random_hex();
        let tmp_dir = tempfile::Builder::new()
            .prefix("sbx-escape-")
            .tempdir_in("/tmp")
            .unwrap();
        let markers = vec![
            tmp_dir.path().join("secret"),
            d.data_dir().join("escape-secret"),
        ];
        for marker in &markers {
            std::fs::write(marker, &secret).unwrap();
        }
        let bystander = Command::new("sleep").arg("300").spawn().unwrap();
        Host {
            secret,
            tmp_dir,
            markers,
            bystander,
        }
    }

    fn marker_paths(&self) -> Vec<String> {
        self.markers
            .iter()
            .map(|m| m.to_string_lossy().into_owned())
            .collect()
    }

    fn bystander_pid(&self) -> u32 {
        self.bystander.id()
    }

    /// The host shows no damage: markers unchanged and nothing planted next to them, the host
    /// process alive, the host and the daemon healthy.
    async fn assert_unharmed(mut self, d: &TestDaemon) {
        for marker in &self.markers {
            assert_eq!(
                std::fs::read_to_string(marker).unwrap(),
                self.secret,
                "{} changed",
                marker.display()
            );
        }
        let planted: Vec<_> = std::fs::read_dir(self.tmp_dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            planted,
            ["secret"],
            "files appeared in the host's marker dir"
        );
        assert!(
            self.bystander.try_wait().unwrap().is_none(),
            "the host process died"
        );
        assert_host_healthy(d).await;
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.bystander.kill();
        let _ = self.bystander.wait();
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `PRELUDE + script` with `python3` as `user`, `args` as its JSON argv[1].
async fn python(
    d: &TestDaemon,
    id: &str,
    user: Option<&str>,
    script: &str,
    args: &serde_json::Value,
) -> ExecResult {
    let request = ExecRequest {
        cmd: vec![
            "python3".into(),
            "-c".into(),
            format!("{PRELUDE}\n{script}\nreport()\n"),
            args.to_string(),
        ],
        user: user.map(Into::into),
        timeout: Some(60.0.into()),
        ..Default::default()
    };
    d.client.exec(id, &request).await.expect("exec")
}

/// Runs an attack script and asserts that every attempt it recorded failed as expected.
async fn assert_attempts_fail(
    d: &TestDaemon,
    id: &str,
    user: Option<&str>,
    script: &str,
    args: &serde_json::Value,
) -> BTreeMap<String, (String, bool)> {
    let result = python(d, id, user, script, args).await;
    assert_eq!(
        result.exit_code, 0,
        "as {user:?}: the attack script broke: {}{}",
        result.stdout, result.stderr
    );
    let results: BTreeMap<String, (String, bool)> = serde_json::from_str(result.stdout.trim())
        .unwrap_or_else(|e| panic!("as {user:?}: {e}: {}", result.stdout));
    let worked: Vec<_> = results.iter().filter(|(_, (_, ok))| !ok).collect();
    assert!(
        worked.is_empty(),
        "as {user:?}: these attempts did not fail as they must: {worked:#?}\nall: {results:#?}"
    );
    results
}

const HOST_FILES: &str = r#"
markers, secret = ARGS['markers'], ARGS['secret']
home = os.path.expanduser('~')
pids = sorted(p for p in os.listdir('/proc') if p.isdigit()) + ['self', 'thread-self']
def read(path):
    with open(path) as f:
        f.read()
for pid in pids:
    for link in ('root', 'cwd'):
        base = f'/proc/{pid}/{link}'
        for marker in markers:
            for path in (base + marker, base + '/../../../..' + marker, base + '/..' * 8 + marker):
                attempt(f'read {path}', lambda: read(path), 'ENOENT', 'EACCES')
        try:
            above, top = os.stat(base + '/..' * 16), os.stat('/')
            check(f'climbing {base}/.. ends at the sandbox root', (above.st_dev, above.st_ino) == (top.st_dev, top.st_ino))
        except OSError as e:
            record(f'climb {base}/..', errno.errorcode[e.errno], 'EACCES')
for marker in markers:
    directory = os.path.dirname(marker)
    attempt(f'plant a file next to {marker}', lambda: open(directory + '/planted', 'w'), 'ENOENT', 'EACCES')
    attempt(f'plant a file through /proc/self/root next to {marker}',
        lambda: open('/proc/self/root/../..' + directory + '/planted', 'w'), 'ENOENT', 'EACCES')
    for n, target in enumerate((marker, '../' * 12 + marker.lstrip('/'), '/proc/1/root' + marker,
                                '/proc/self/root/..' + marker)):
        link = f'{home}/link-{abs(hash(marker))}-{n}'
        os.symlink(target, link)
        attempt(f'read through a symlink to {target}', lambda: read(link), 'ENOENT', 'EACCES')
    attempt(f'hard link {marker}', lambda: os.link(marker, home + '/hard'), 'ENOENT')
# Hard links to files the user does not own: refused (protected_hardlinks, unmapped owner) or
# across mounts.
attempt('hard link /etc/passwd into home', lambda: os.link('/etc/passwd', home + '/passwd'), 'EPERM')
attempt('hard link /etc/passwd in place', lambda: os.link('/etc/passwd', '/etc/passwd2'), 'EPERM', 'EACCES')
attempt('hard link /usr/bin/env', lambda: os.link('/usr/bin/env', home + '/env'), 'EXDEV')
# Nothing in the sandbox's own files holds the secret (the host's read-only system
# directories, /usr and the like, are the only host directories inside; no marker is there).
found = []
for top in ('/etc', '/home', '/root', '/tmp', '/var', '/run', '/opt', '/srv', '/mnt', '/dev', '/sys'):
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path) and secret in open(path, errors='replace').read(1 << 20):
                    found.append(path)
            except OSError:
                pass
check('no file of the sandbox holds the host secret', not found, ' '.join(found))
"#;

/// Reading or writing host files through `/proc/*/root` and `/proc/*/cwd` (every visible
/// process, `self`, `thread-self`, with `..` climbs), symlinks to host paths (they resolve
/// inside the sandbox), hard links to files the user does not own, planting files next to the
/// host's markers, and a scan of the sandbox's files for the host secret.
#[tokio::test]
async fn host_files_are_out_of_reach_through_proc_roots_and_links() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    // A few more processes to look through (as the user and as root).
    d.sh(&id, "sleep 600 > /dev/null 2>&1 &").await;
    d.sh_as(&id, Some("root"), "sleep 600 > /dev/null 2>&1 &")
        .await;
    let args = serde_json::json!({"markers": host.marker_paths(), "secret": host.secret});
    for user in USERS {
        let results = assert_attempts_fail(&d, &id, user, HOST_FILES, &args).await;
        assert!(results.len() > 50, "too few attempts: {results:?}");
        d.sh_as(&id, user, "rm -f $HOME/link-* $HOME/hard").await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const EXECUTABLES: &str = r#"
sbx = ARGS['sbx']
for mode, flags in (('write', os.O_WRONLY), ('read-write', os.O_RDWR), ('truncate', os.O_WRONLY | os.O_TRUNC)):
    attempt(f'open /proc/self/exe for {mode}', lambda: os.open('/proc/self/exe', flags), 'ETXTBSY', 'EROFS', 'EACCES')
    for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
        attempt(f'open /proc/{pid}/exe for {mode}', lambda: os.open(f'/proc/{pid}/exe', flags),
            'ETXTBSY', 'EROFS', 'EACCES', 'ENOENT')
# Init runs the host's sbx binary: nothing of it may be reachable.
attempt('read /proc/1/exe', lambda: os.open('/proc/1/exe', os.O_RDONLY), 'EACCES')
attempt('readlink /proc/1/exe', lambda: os.readlink('/proc/1/exe'), 'EACCES')
attempt('list /proc/1/map_files', lambda: os.listdir('/proc/1/map_files'), 'EACCES', 'EPERM')
attempt('open /proc/1/mem', lambda: os.open('/proc/1/mem', os.O_RDWR), 'EACCES')
attempt('list /proc/1/fd', lambda: os.listdir('/proc/1/fd'), 'EACCES')
attempt('stat the host sbx binary', lambda: os.stat(sbx), 'ENOENT')
attempt('exec /proc/1/exe', lambda: os.execv('/proc/1/exe', ['sbx', '--version']), 'EACCES')
# The host's binaries in the read-only /usr.
attempt('write /usr/bin/python3', lambda: os.open(os.path.realpath('/usr/bin/python3'), os.O_WRONLY), 'ETXTBSY', 'EROFS', 'EACCES')
attempt('rename over /usr/bin/env', lambda: os.rename('/etc/hostname', '/usr/bin/env'), 'EXDEV', 'EROFS', 'EACCES')
"#;

/// runc CVE-2019-5736: overwriting the runtime's host binary through `/proc/self/exe` or
/// `/proc/1/exe`; reading init's binary, memory, mappings or descriptors; running it.
#[tokio::test]
async fn host_binaries_cannot_be_overwritten_through_proc_exe() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let sbx = std::fs::metadata(crate::daemon::SBX).unwrap();
    let id = d.create().await.id;
    let args = serde_json::json!({"sbx": crate::daemon::SBX});
    for user in USERS {
        assert_attempts_fail(&d, &id, user, EXECUTABLES, &args).await;
        let shell = d.sh_as(&id, user, "echo x > /proc/self/exe").await;
        assert_ne!(shell.exit_code, 0, "as {user:?}: {shell:?}");
    }
    let after = std::fs::metadata(crate::daemon::SBX).unwrap();
    assert_eq!(
        (sbx.len(), sbx.modified().unwrap()),
        (after.len(), after.modified().unwrap()),
        "the host's sbx binary changed"
    );
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const KERNEL_FILES: &str = r#"
# Absent, refused, or masked by /dev/null (then it opens and gives nothing).
for path in ('/proc/kcore', '/proc/kmsg', '/proc/keys', '/proc/timer_list', '/proc/sched_debug'):
    try:
        with open(path, 'rb') as f:
            data = f.read(4096)
        check(f'{path} gives no data', not data, repr(data[:32]))
    except OSError as e:
        record(f'read {path}', errno.errorcode[e.errno], 'ENOENT', 'EACCES', 'EPERM')
for path in ('/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg', '/dev/sda', '/dev/vda', '/dev/nvme0n1',
             '/dev/loop0', '/dev/loop-control', '/dev/mapper/control', '/dev/fuse', '/dev/net/tun',
             '/dev/userfaultfd', '/dev/console', '/dev/tty0', '/dev/ttyS0', '/dev/vsock', '/dev/kvm',
             '/dev/cpu/0/msr', '/dev/dri/card0'):
    attempt(f'open {path}', lambda: os.open(path, os.O_RDWR), 'ENOENT')
# /sys is an empty, read-only directory: no uevent_helper, no cgroup files, no firmware.
check('/sys is empty', os.listdir('/sys') == [], repr(os.listdir('/sys')))
for path in ('/sys/kernel/uevent_helper', '/sys/fs/cgroup/release_agent', '/sys/kernel/mm/transparent_hugepage/enabled',
             '/sys/power/state', '/sys/class/net/lo/mtu'):
    attempt(f'write {path}', lambda: write_file(path, b'x'), 'ENOENT', 'EACCES')
for path in ('/sys/kernel', '/sys/fs'):
    attempt(f'mkdir {path}', lambda: os.mkdir(path), 'EACCES', 'EROFS')
# Device nodes: mknod needs CAP_MKNOD in the host's user namespace; every writable mount is nodev.
home = os.path.expanduser('~')
for directory in (home, '/tmp', '/dev/shm', '/dev'):
    for name, kind, major, minor in (('sda', 0o060000, 8, 0), ('mem', 0o020000, 1, 1), ('kmsg', 0o020000, 1, 11),
                                     ('loop0', 0o060000, 7, 0), ('vda', 0o060000, 254, 0)):
        attempt(f'mknod {directory}/{name}', lambda: os.mknod(f'{directory}/{name}', kind | 0o666, os.makedev(major, minor)),
            'EPERM', 'EROFS', 'EACCES')
"#;

/// Host memory and devices: `/proc/kcore`, `/proc/kmsg`, `/dev/mem`, disks, `/dev/kmsg` and
/// other device nodes (absent); `mknod` of block and character devices anywhere; writes to
/// `/sys` (`uevent_helper`, cgroup files).
#[tokio::test]
async fn kernel_memory_devices_and_sysfs_are_out_of_reach() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, KERNEL_FILES, &serde_json::json!({})).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const LEAVE_THE_ROOT: &str = r#"
markers = ARGS['markers']
MS_BIND, MS_REC, MS_REMOUNT, MNT_DETACH = 0x1000, 0x4000, 0x20, 2
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWCGROUP, CLONE_NEWPID = 0x20000, 0x10000000, 0x02000000, 0x20000000
work = f'/tmp/escape-{os.getuid()}'
os.makedirs(work + '/jail/old', exist_ok=True)
# The classic chroot escape: chroot into a subdirectory while holding a descriptor outside it,
# fchdir out, climb, chroot to where the climb ends.
outside = os.open('/', os.O_RDONLY)
attempt('chroot into a jail', lambda: os.chroot(work + '/jail'), *DENIED)
os.fchdir(outside)
for _ in range(64):
    os.chdir('..')
attempt('chroot to the top of the climb', lambda: os.chroot('.'), *DENIED)
check('the climb ends at the sandbox root', os.stat('.').st_ino == os.stat('/').st_ino and os.listdir('.') == os.listdir('/'))
for marker in markers:
    attempt(f'read {marker} after the climb', lambda: open('.' + marker), 'ENOENT')
# pivot_root onto a new root, with real directories.
attempt('pivot_root', lambda: sys_(155, (work + '/jail').encode(), (work + '/jail/old').encode()), *DENIED)
# New namespaces, to become "root" of a user namespace and remount: refused before the remount.
for name, flags in (('user', CLONE_NEWUSER), ('mount', CLONE_NEWNS), ('user+mount', CLONE_NEWUSER | CLONE_NEWNS),
                    ('user+mount+cgroup+pid', CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWPID)):
    attempt(f'unshare({name})', lambda: sys_(272, flags), *DENIED)
import subprocess
for command in (['unshare', '-Ur', 'sh', '-c', 'mount -o remount,rw /usr && touch /usr/escaped'],
                ['unshare', '-Urm', 'sh', '-c', 'mount --bind / /mnt && ls /mnt'],
                ['unshare', '-UrmC', '--mount-proc', 'true']):
    status = subprocess.run(command, capture_output=True).returncode
    check(' '.join(command) + ' fails', status != 0, f'exit {status}')
# The old mount API with real arguments.
attempt('remount /usr read-write', lambda: sys_(165, None, b'/usr', None, MS_REMOUNT | MS_BIND, None), *DENIED)
attempt('bind / elsewhere', lambda: sys_(165, b'/', (work + '/jail').encode(), None, MS_BIND | MS_REC, None), *DENIED)
attempt('mount tmpfs over /usr', lambda: sys_(165, b'tmpfs', b'/usr', b'tmpfs', 0, None), *DENIED)
attempt('mount proc', lambda: sys_(165, b'proc', (work + '/jail').encode(), b'proc', 0, None), *DENIED)
attempt('unmount a /proc mask', lambda: sys_(166, b'/proc/sys', MNT_DETACH), *DENIED)
attempt('unmount /usr', lambda: sys_(166, b'/usr', MNT_DETACH), *DENIED)
# The new mount API: detached copies, superblocks, attribute changes.
AT_FDCWD, OPEN_TREE_CLONE, AT_RECURSIVE = -100, 1, 0x8000
attempt('open_tree(/usr, clone)', lambda: sys_(428, AT_FDCWD, b'/usr', OPEN_TREE_CLONE), *DENIED)
attempt('fsopen(tmpfs)', lambda: sys_(430, b'tmpfs', 0), *DENIED)
attempt('fspick(/usr)', lambda: sys_(433, AT_FDCWD, b'/usr', 0), *DENIED)
attr = struct.pack('<QQQQ', 0, 1, 0, 0)  # clear MOUNT_ATTR_RDONLY
attempt('mount_setattr(/usr, read-write)', lambda: sys_(442, AT_FDCWD, b'/usr', AT_RECURSIVE, attr, len(attr)), *DENIED)
attempt('write /usr afterwards', lambda: open('/usr/escaped', 'w'), 'EROFS', 'EACCES')
"#;

/// Leaving the sandbox's root: the fchdir/chroot climb, `pivot_root` with real directories,
/// `unshare -U` (alone or with mount, cgroup, pid namespaces) then remounting `/usr` read-write
/// or binding `/`, the old and the new mount API with real arguments, unmounting `/proc` masks.
#[tokio::test]
async fn chroot_pivot_root_and_new_namespaces_cannot_leave_the_root() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    let args = serde_json::json!({"markers": host.marker_paths()});
    for user in USERS {
        assert_attempts_fail(&d, &id, user, LEAVE_THE_ROOT, &args).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const ENTER_NAMESPACES: &str = r#"
NAMESPACES = [ns for ns in ('mnt', 'net', 'pid', 'user', 'uts', 'ipc', 'cgroup', 'time') if os.path.exists(f'/proc/self/ns/{ns}')]
mine = {ns: os.readlink(f'/proc/self/ns/{ns}') for ns in NAMESPACES}
opened = 0
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()) + ['self']:
    for ns in NAMESPACES:
        try:
            fd = os.open(f'/proc/{pid}/ns/{ns}', os.O_RDONLY)
        except OSError as e:
            # Init is not dumpable: its namespace files cannot even be opened.
            record(f'open /proc/{pid}/ns/{ns}', errno.errorcode[e.errno], 'EACCES')
            continue
        opened += 1
        attempt(f'setns(/proc/{pid}/ns/{ns})', lambda: sys_(308, fd, 0), *DENIED)
        os.close(fd)
check('some namespace files could be opened (the attempt is real)', opened > 0, str(opened))
check('still in the same namespaces', mine == {ns: os.readlink(f'/proc/self/ns/{ns}') for ns in NAMESPACES})
import subprocess
status = subprocess.run(['nsenter', '-t', '1', '-a', 'true'], capture_output=True).returncode
check('nsenter -t 1 -a fails', status != 0, f'exit {status}')
"#;

/// `setns` into the namespaces of every visible process (init's included) through a real
/// descriptor on `/proc/N/ns/*`, and `nsenter -t 1`.
#[tokio::test]
async fn setns_into_any_visible_namespace_fails() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    d.sh(&id, "sleep 600 > /dev/null 2>&1 &").await;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, ENTER_NAMESPACES, &serde_json::json!({})).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const TOUCH_INIT: &str = r#"
PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_POKEDATA = 16, 0x4206, 5
attempt('ptrace(ATTACH, 1)', lambda: sys_(101, PTRACE_ATTACH, 1, 0, 0), *DENIED)
attempt('ptrace(SEIZE, 1)', lambda: sys_(101, PTRACE_SEIZE, 1, 0, 0), *DENIED)
attempt('ptrace(POKEDATA, 1)', lambda: sys_(101, PTRACE_POKEDATA, 1, 0x400000, 0), 'EPERM', 'ESRCH', 'EACCES')
buffer = ctypes.create_string_buffer(64)
local = struct.pack('<QQ', ctypes.addressof(buffer), 64)
remote = struct.pack('<QQ', 0x400000, 64)
attempt('process_vm_readv(1)', lambda: sys_(310, 1, local, 1, remote, 1, 0), *DENIED)
attempt('process_vm_writev(1)', lambda: sys_(311, 1, local, 1, remote, 1, 0), *DENIED)
attempt('open /proc/1/mem', lambda: os.open('/proc/1/mem', os.O_RDWR), 'EACCES')
pidfd = sys_(434, 1, 0)
for fd in range(6):
    attempt(f'pidfd_getfd(init, {fd})', lambda: sys_(438, pidfd, fd, 0), *DENIED)
# Signals: refused for the user; for root the kernel drops them (init of a pid namespace gets
# no signal from inside that it has no handler for, SIGKILL and SIGSTOP included). Either way
# the test then checks that init still serves.
for signal in (9, 15, 19, 2, 1, 11):
    for send in (lambda: os.kill(1, signal), lambda: sys_(424, pidfd, signal, None, 0)):
        try:
            send()
        except OSError as e:
            record(f'signal {signal} to init', errno.errorcode[e.errno], 'EPERM')
"#;

/// `ptrace` of init (attach, seize, poke), `process_vm_readv/writev`, `/proc/1/mem`,
/// `pidfd_getfd` of init's descriptors (its control socket), and signals to init: none of it
/// works or harms the sandbox.
#[tokio::test]
async fn init_cannot_be_traced_read_or_killed() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, TOUCH_INIT, &serde_json::json!({})).await;
        let init = d.sh_as(&id, user, "ps -o comm= -p 1").await;
        assert_eq!(init.stdout, "sbx-init\n", "as {user:?}");
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const CGROUP_ESCAPE: &str = r#"
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWCGROUP = 0x20000, 0x10000000, 0x02000000
work = f'/tmp/cgroup-{os.getuid()}'
os.makedirs(work, exist_ok=True)
# CVE-2022-0492: mount a v1 hierarchy, set release_agent, enable notify_on_release.
for options in (b'rdma', b'memory', b'pids', b'none,name=escape'):
    attempt(f'mount cgroup -o {options.decode()}', lambda: sys_(165, b'cgroup', work.encode(), b'cgroup', 0, options), *DENIED)
attempt('mount cgroup2', lambda: sys_(165, b'cgroup2', work.encode(), b'cgroup2', 0, None), *DENIED)
attempt('fsopen(cgroup)', lambda: sys_(430, b'cgroup', 0), *DENIED)
attempt('fsopen(cgroup2)', lambda: sys_(430, b'cgroup2', 0), *DENIED)
attempt('unshare(user+mount+cgroup)', lambda: sys_(272, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP), *DENIED)
check('the mount failed: no release_agent appeared', not os.path.exists(work + '/release_agent'))
# No view of any cgroup hierarchy is mounted, and no cgroup control file exists anywhere.
mounts = open('/proc/self/mountinfo').read().splitlines()
cgroup_mounts = [m for m in mounts if m.split(' - ')[1].split()[0] in ('cgroup', 'cgroup2')]
check('no cgroup filesystem mounted', not cgroup_mounts, repr(cgroup_mounts))
found = []
for dirpath, dirnames, filenames in os.walk('/'):
    if dirpath == '/':
        dirnames[:] = [n for n in dirnames if n not in ('proc', 'usr')]
    for name in filenames:
        if name in ('release_agent', 'notify_on_release', 'cgroup.procs', 'tasks', 'cgroup.kill', 'memory.limit_in_bytes', 'memory.max'):
            found.append(os.path.join(dirpath, name))
check('no cgroup control file anywhere', not found, ' '.join(found))
for path in ('/sys/fs/cgroup/release_agent', '/sys/fs/cgroup/memory/release_agent',
             '/sys/fs/cgroup/notify_on_release', '/sys/fs/cgroup/cgroup.procs'):
    attempt(f'write {path}', lambda: write_file(path, b'/tmp/x'), 'ENOENT', 'EACCES')
# The cgroup namespace is rooted at the sandbox's own cgroup, for every process.
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()) + ['self']:
    lines = open(f'/proc/{pid}/cgroup').read().splitlines()
    check(f'/proc/{pid}/cgroup shows only the namespace root', all(l.endswith(':/') for l in lines), repr(lines))
"#;

/// Cgroup `release_agent` / `notify_on_release` (CVE-2022-0492): mounting cgroupfs (v1
/// hierarchies, cgroup2, `fsopen`), a new cgroup namespace, then looking for any view of a
/// cgroup hierarchy to write to.
#[tokio::test]
async fn cgroup_release_agent_escape_is_closed() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, CGROUP_ESCAPE, &serde_json::json!({})).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const KERNEL_INTERFACES: &str = r#"
def buffer(data, size):
    return ctypes.create_string_buffer(data.ljust(size, b'\0'), size)
# bpf: an array map, and a socket filter program "r0 = 0; exit".
attempt('bpf(MAP_CREATE)', lambda: sys_(321, 0, buffer(struct.pack('<IIII', 2, 4, 8, 1), 128), 128), *DENIED)
insns = ctypes.create_string_buffer(struct.pack('<BBhi', 0xb7, 0, 0, 0) + struct.pack('<BBhi', 0x95, 0, 0, 0))
license = ctypes.create_string_buffer(b'GPL')
prog = struct.pack('<IIQQ', 1, 2, ctypes.addressof(insns), ctypes.addressof(license))
attempt('bpf(PROG_LOAD)', lambda: sys_(321, 5, buffer(prog, 128), 128), *DENIED)
# userfaultfd, by system call and by device.
attempt('userfaultfd(user mode only)', lambda: sys_(323, os.O_CLOEXEC | os.O_NONBLOCK | 1), *DENIED)
attempt('userfaultfd(all)', lambda: sys_(323, os.O_CLOEXEC), *DENIED)
attempt('open /dev/userfaultfd', lambda: os.open('/dev/userfaultfd', os.O_RDWR), 'ENOENT')
# Keyrings: the kernel's keys are not namespaced.
KEY_SPEC_PROCESS, KEY_SPEC_SESSION, KEY_SPEC_USER = -2, -3, -4
attempt('keyctl(GET_KEYRING_ID, session)', lambda: sys_(250, 0, KEY_SPEC_SESSION, 1), *DENIED)
attempt('keyctl(JOIN_SESSION_KEYRING)', lambda: sys_(250, 1, b'sbx-escape'), *DENIED)
attempt('keyctl(READ, user keyring)', lambda: sys_(250, 11, KEY_SPEC_USER, buffer(b'', 4096), 4096), *DENIED)
attempt('add_key(user)', lambda: sys_(248, b'user', b'sbx-escape', b'secret', 6, KEY_SPEC_PROCESS), *DENIED)
attempt('request_key(user)', lambda: sys_(249, b'user', b'sbx-escape', None, 0), *DENIED)
# perf_event_open: a software clock on this process, hardware cycles system-wide, a tracepoint.
def perf_attr(kind, config):
    return buffer(struct.pack('<IIQQQQQ', kind, 128, config, 0, 0, 0, 1), 128)
attempt('perf_event_open(cpu-clock, self)', lambda: sys_(298, perf_attr(1, 0), 0, -1, -1, 0), *DENIED)
attempt('perf_event_open(cycles, all processes)', lambda: sys_(298, perf_attr(0, 0), -1, 0, -1, 0), *DENIED)
attempt('perf_event_open(tracepoint)', lambda: sys_(298, perf_attr(2, 1), -1, 0, -1, 0), *DENIED)
# io_uring, plain and with a kernel polling thread.
attempt('io_uring_setup', lambda: sys_(425, 8, buffer(b'', 120)), *DENIED)
attempt('io_uring_setup(SQPOLL)', lambda: sys_(425, 8, buffer(struct.pack('<III', 0, 0, 2), 120)), *DENIED)
# "Shocker": open_by_handle_at with a crafted handle for inode 2 (the root directory of an
# ext4 file system) relative to the host's /usr mount, which is the host's root file system.
for mount in ('/usr', '/'):
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    handle = ctypes.create_string_buffer(struct.pack('<Ii', 8, 1) + struct.pack('<II', 2, 0))
    attempt(f'open_by_handle_at({mount}, inode 2)', lambda: sys_(304, mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY), *DENIED)
mount_id = ctypes.c_int(0)
attempt('name_to_handle_at(/usr)', lambda: sys_(303, -100, b'/usr', buffer(struct.pack('<I', 128), 136), ctypes.byref(mount_id), 0), *DENIED)
# Odds and ends of the same family.
attempt('fanotify_init', lambda: sys_(300, 0, os.O_RDONLY), *DENIED)
attempt('iopl(3)', lambda: sys_(172, 3), *DENIED)
attempt('ioperm(0x80)', lambda: sys_(173, 0x80, 1, 1), *DENIED)
attempt('kcmp(self, 1)', lambda: sys_(312, os.getpid(), 1, 0, 0, 0), *DENIED)
attempt('kexec_file_load', lambda: sys_(320, -1, -1, 0, None, 0), *DENIED)
attempt('finit_module(/dev/null)', lambda: sys_(313, os.open('/dev/null', os.O_RDONLY), b'', 0), *DENIED)
"#;

/// The kernel interfaces behind most container escapes, called with real arguments (not just
/// their numbers): `bpf` (map, program), `userfaultfd`, keyrings (`keyctl`, `add_key`,
/// `request_key`), `perf_event_open` (self, system-wide, tracepoint), `io_uring` (plain and
/// SQPOLL), the "shocker" `open_by_handle_at` with a handle for inode 2 of the host's root file
/// system, `fanotify`, port I/O, modules, `kexec`.
#[tokio::test]
async fn kernel_interfaces_fail_when_called_with_real_arguments() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, KERNEL_INTERFACES, &serde_json::json!({})).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const SOCKETS: &str = r#"
token = ARGS['token'].encode()
for host, port in ARGS['udp']:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    # Loopback is the sandbox's own: the send works there and the host checks nothing arrived.
    expected = ('succeeded',) if host.startswith('127.') else ('ENETUNREACH', 'EACCES')
    attempt(f'udp to {host}:{port}', lambda: s.sendto(token, (host, port)), *expected)
    s.close()
for name in ARGS['abstract']:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        s = socket.socket(socket.AF_UNIX, kind)
        attempt(f'connect abstract @{name} ({kind})', lambda: s.connect('\0' + name), 'ECONNREFUSED')
        s.close()
for path in ARGS['paths']:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    attempt(f'connect {path}', lambda: s.connect(path), 'ENOENT')
    s.close()
unix = open('/proc/net/unix').read()
check('no host abstract socket listed', not any(name in unix for name in ARGS['abstract']))
sockets = []
for dirpath, dirnames, filenames in os.walk('/'):
    if dirpath == '/':
        dirnames[:] = [n for n in dirnames if n not in ('proc', 'usr', 'sys')]
    for name in filenames + dirnames:
        path = os.path.join(dirpath, name)
        if os.path.exists(path) and __import__('stat').S_ISSOCK(os.lstat(path).st_mode):
            sockets.append(path)
check('no Unix socket file in the sandbox', not sockets, ' '.join(sockets))
"#;

/// Reaching the host through sockets other than TCP (which `isolation.rs` covers): UDP to the
/// host's addresses and loopback ports, abstract Unix sockets of the host (a test's own and
/// every one the host lists), the daemon's control sockets and well-known host sockets by path.
#[tokio::test]
async fn no_udp_abstract_or_unix_socket_reaches_the_host() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};

    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    let token = random_hex();
    let mut udp = Vec::new();
    let mut udp_targets = Vec::new();
    for address in host_ipv4_addresses()
        .into_iter()
        .chain(["127.0.0.1".to_string()])
    {
        let socket = std::net::UdpSocket::bind((address.as_str(), 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        udp_targets.push(serde_json::json!([
            address,
            socket.local_addr().unwrap().port()
        ]));
        udp.push(socket);
    }
    let name = format!("sbx-escape-{token}");
    let stream = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    stream.set_nonblocking(true).unwrap();
    let dgram_name = format!("{name}-dgram");
    let dgram =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&dgram_name).unwrap()).unwrap();
    dgram.set_nonblocking(true).unwrap();
    let mut abstract_names = vec![name.clone(), dgram_name];
    abstract_names.extend(host_abstract_socket_names().into_iter().take(20));
    let control = d
        .data_dir()
        .join("sandboxes")
        .join(d.key(&id))
        .join("ctl.sock");
    assert!(
        control.exists(),
        "the control socket is where the test expects"
    );
    let paths = [
        control.to_string_lossy().into_owned(),
        "/run/docker.sock".into(),
        "/var/run/docker.sock".into(),
        "/run/containerd/containerd.sock".into(),
        "/run/dbus/system_bus_socket".into(),
        "/run/systemd/private".into(),
    ];
    let args = serde_json::json!({
        "token": token, "udp": udp_targets, "abstract": abstract_names, "paths": paths,
    });
    for user in USERS {
        assert_attempts_fail(&d, &id, user, SOCKETS, &args).await;
    }
    let mut buffer = [0u8; 256];
    for socket in &udp {
        let received = socket.recv_from(&mut buffer);
        assert!(
            received.is_err(),
            "a sandbox reached a host UDP socket: {received:?}"
        );
    }
    assert!(
        stream.accept().is_err(),
        "a sandbox reached a host abstract socket"
    );
    assert!(
        dgram.recv(&mut buffer).is_err(),
        "a sandbox reached a host abstract socket"
    );
    host.assert_unharmed(&d).await;
    d.finish().await;
}

fn host_ipv4_addresses() -> Vec<String> {
    let output = Command::new("hostname").arg("-I").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|a| !a.contains(':'))
        .map(String::from)
        .collect()
}

/// Abstract Unix socket names the host's network namespace lists.
fn host_abstract_socket_names() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut names: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter_map(|path| path.strip_prefix('@'))
        .filter(|name| name.is_ascii() && !name.contains('\0'))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
}

const SIGNALS: &str = r#"
limits = ctypes.create_string_buffer(16)
for label, pid in ARGS['pids'].items():
    for signal in (9, 15, 19):
        attempt(f'kill {label} ({pid}) with {signal}', lambda: os.kill(pid, signal), 'ESRCH')
        attempt(f'kill the group of {label} ({pid}) with {signal}', lambda: os.kill(-pid, signal), 'ESRCH')
    attempt(f'tkill {label}', lambda: sys_(200, pid, 9), 'ESRCH')
    attempt(f'pidfd_open {label}', lambda: sys_(434, pid, 0), 'ESRCH')
    attempt(f'sched_setaffinity {label}', lambda: os.sched_setaffinity(pid, {0}), 'ESRCH')
    attempt(f'prlimit {label}', lambda: sys_(302, pid, 7, None, limits), 'ESRCH')
# Every process the caller may signal, but the caller and init: none but those two exist here.
attempt('kill -9 -1', lambda: os.kill(-1, 9), 'ESRCH')
"#;

/// Signalling host processes: `kill -9` of a host process, its group, the daemon and the
/// sandbox's own init by their host pids, `kill -9 -1`, `tkill`, `pidfd_open`; the host
/// process must still be alive afterwards.
#[tokio::test]
async fn host_processes_cannot_be_signalled() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    let (init, _) = processes_mentioning(&d.key(&id))
        .into_iter()
        .next()
        .expect("the sandbox's init");
    // (Host pid 1 is init inside: `init_cannot_be_traced_read_or_killed` covers it.)
    let pids = serde_json::json!({
        "the host process": host.bystander_pid(),
        "the daemon": d.pid(),
        "the sandbox's init": init,
    });
    for user in USERS {
        assert_attempts_fail(&d, &id, user, SIGNALS, &serde_json::json!({"pids": pids})).await;
        let shell = d
            .sh_as(&id, user, &format!("kill -9 {}", host.bystander_pid()))
            .await;
        assert_ne!(shell.exit_code, 0, "as {user:?}: {shell:?}");
    }
    let shell = d.sh_as(&id, Some("root"), "kill -9 -1").await;
    assert_ne!(shell.exit_code, 0, "{shell:?}");
    assert!(
        processes_mentioning(&d.key(&id))
            .iter()
            .any(|(pid, _)| *pid == init),
        "the sandbox's init died"
    );
    host.assert_unharmed(&d).await;
    d.finish().await;
}

const DESCRIPTORS_PER_PROCESS: &str = r#"
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
check('soft and hard limits are bounded', soft <= hard <= 65536, f'{soft} {hard}')
opened, error = 0, None
try:
    while True:
        os.open('/dev/null', os.O_RDONLY)
        opened += 1
except OSError as e:
    error = errno.errorcode[e.errno]
check('the flood stops with EMFILE at the limit', error == 'EMFILE' and opened + 3 <= soft, f'{error} after {opened}')
raised = struct.pack('<QQ', hard + 1, hard + 1)
attempt('raise RLIMIT_NOFILE above the hard limit', lambda: sys_(302, 0, 7, raised, None), 'EPERM')
"#;

/// Every process of the sandbox forks, then opens descriptors until it cannot; it ends when
/// every child has reached its limit and held it for a while.
const DESCRIPTOR_FLOOD: &str = r#"
import os, sys, time
children = int(sys.argv[1])
for _ in range(children):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            while True:
                os.open('/dev/null', os.O_RDONLY)
        except OSError:
            pass
        time.sleep(10)
        os._exit(0)
try:
    while True:
        os.wait()
except ChildProcessError:
    pass
"#;

/// Exhausting host file descriptors: a process stops at `RLIMIT_NOFILE` (bounded, and root
/// cannot raise it); with two sandboxes flooding from every process they may have, each is
/// stopped by its memory cgroup (descriptors' kernel memory is charged to it), never by the
/// host's file table (`fs.file-max`, which the daemon raises): an unprivileged host process can
/// open files throughout. Before that fix, two default sandboxes filled this host's table.
#[tokio::test]
async fn descriptor_floods_are_bounded_and_the_host_file_table_keeps_room() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(
            &d,
            &id,
            user,
            DESCRIPTORS_PER_PROCESS,
            &serde_json::json!({}),
        )
        .await;
    }
    let floods: Vec<_> = [id, d.create().await.id]
        .into_iter()
        .map(|id| {
            let client = d.client.clone();
            tokio::spawn(async move {
                let request = ExecRequest {
                    cmd: vec![
                        "python3".into(),
                        "-c".into(),
                        DESCRIPTOR_FLOOD.into(),
                        "240".into(),
                    ],
                    timeout: Some(90.0.into()),
                    ..Default::default()
                };
                // A flood may end its own sandbox (the memory cgroup's OOM killer may pick
                // init): that is the sandbox's loss, not the host's.
                let _ = client.exec(&id, &request).await;
            })
        })
        .collect();
    let file_max: u64 = read_number("/proc/sys/fs/file-max");
    let mut peak = 0;
    let start = Instant::now();
    while !floods.iter().all(|f| f.is_finished()) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the floods never ended"
        );
        let in_use = read_number("/proc/sys/fs/file-nr");
        peak = peak.max(in_use);
        crate::daemon::assert_unprivileged_host_process_opens_files();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for flood in floods {
        flood.await.unwrap();
    }
    assert!(
        peak < file_max,
        "host file table: peak {peak} of {file_max} in use"
    );
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// The first number of a `/proc/sys` file.
fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const PRIORITIES: &str = r#"
SCHED_FIFO, SCHED_RR = 1, 2
for name, policy in (('SCHED_FIFO', SCHED_FIFO), ('SCHED_RR', SCHED_RR)):
    attempt(f'sched_setscheduler({name})', lambda: os.sched_setscheduler(0, policy, os.sched_param(1)), 'EPERM')
# SCHED_DEADLINE: runtime 10 ms every 20 ms.
deadline = struct.pack('<IIQIIQQQ', 48, 6, 0, 0, 0, 10_000_000, 20_000_000, 20_000_000)
attempt('sched_setattr(SCHED_DEADLINE)', lambda: sys_(314, 0, deadline, 0), 'EPERM')
attempt('nice -20', lambda: os.setpriority(os.PRIO_PROCESS, 0, -20), 'EACCES', 'EPERM')
IOPRIO_CLASS_RT = 1
attempt('ioprio_set(realtime)', lambda: sys_(251, 1, 0, (IOPRIO_CLASS_RT << 13) | 0), 'EPERM')
attempt('oom_score_adj -1000', lambda: write_file('/proc/self/oom_score_adj', b'-1000'), 'EACCES', 'EPERM')
def hard_limit(resource):
    limits = ctypes.create_string_buffer(16)
    sys_(302, 0, resource, None, limits)
    return struct.unpack('<QQ', limits.raw)[1]
for name, resource in (('RLIMIT_NOFILE', 7), ('RLIMIT_RTPRIO', 14), ('RLIMIT_MEMLOCK', 8), ('RLIMIT_NICE', 13)):
    hard = hard_limit(resource)
    if hard == 2**64 - 1:
        continue
    raised = struct.pack('<QQ', hard + 1, hard + 1)
    attempt(f'raise {name} above the hard limit', lambda: sys_(302, 0, resource, raised, None), 'EPERM')
"#;

/// Starving the host through shared kernel resources that cgroups do not share out: real-time
/// and deadline scheduling (not bounded by the CFS quota), a negative nice value, real-time
/// I/O priority, an OOM-killer exemption, raising hard rlimits.
#[tokio::test]
async fn host_priorities_and_hard_limits_cannot_be_raised() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    for user in USERS {
        assert_attempts_fail(&d, &id, user, PRIORITIES, &serde_json::json!({})).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// Run in sandbox A (as root, in the background): a file in `/dev/shm`, a System V shared
/// memory segment, a POSIX message queue, an abstract Unix socket and a loopback TCP
/// listener. Prints `ready` once all exist.
const OTHER_SANDBOX_OWNER: &str = r#"
import ctypes, os, socket, sys, time
name, key = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
open(f'/dev/shm/{name}', 'w').write('secret of a')
assert libc.shmget(key, 4096, 0o1000 | 0o666) >= 0
assert libc.mq_open(f'/{name}'.encode(), os.O_CREAT | os.O_RDWR, 0o666, None) >= 0
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind('\0' + name)
unix.listen(8)
tcp = socket.socket()
tcp.bind(('127.0.0.1', 47123))
tcp.listen(8)
if os.fork():
    os._exit(0)
os.setsid()
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
open('/tmp/ready', 'w').close()
time.sleep(600)
"#;

const OTHER_SANDBOX: &str = r#"
name, key = ARGS['name'], ARGS['key']
attempt('open /dev/shm of the other sandbox', lambda: open(f'/dev/shm/{name}'), 'ENOENT')
def shm():
    if libc.shmget(key, 0, 0) < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
attempt('shmget the other sandbox\'s segment', shm, 'ENOENT')
def mq():
    if libc.mq_open(f'/{name}'.encode(), os.O_RDWR) < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
attempt('mq_open the other sandbox\'s queue', mq, 'ENOENT')
check('no System V segment visible', open('/proc/sysvipc/shm').read().count('\n') == 1)
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
attempt('connect to the other sandbox\'s abstract socket', lambda: unix.connect('\0' + name), 'ECONNREFUSED')
tcp = socket.socket()
attempt('connect to the other sandbox\'s loopback port', lambda: tcp.connect(('127.0.0.1', 47123)), 'ECONNREFUSED')
check('its abstract socket is not listed', name not in open('/proc/net/unix').read())
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    for sub in ('root/dev/shm', 'root/tmp', 'cwd'):
        try:
            entries = os.listdir(f'/proc/{pid}/{sub}')
        except OSError:
            continue
        check(f'/proc/{pid}/{sub} shows nothing of the other sandbox', name not in entries and 'ready' not in entries)
"#;

/// Another sandbox's `/dev/shm`, System V and POSIX IPC objects, abstract Unix sockets and
/// loopback ports (each proven reachable from its own sandbox first), through `/proc/*/root`
/// too.
#[tokio::test]
async fn another_sandbox_ipc_sockets_and_shm_are_invisible() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let a = d.create().await.id;
    let b = d.create().await.id;
    let name = format!("sbx-a-{}", random_hex());
    let key = 0x5b5e_0001;
    let owner = ExecRequest {
        cmd: vec![
            "python3".into(),
            "-c".into(),
            OTHER_SANDBOX_OWNER.into(),
            name.clone(),
            key.to_string(),
        ],
        user: Some("root".into()),
        ..Default::default()
    };
    let started = d.client.exec(&a, &owner).await.unwrap();
    assert_eq!(started.exit_code, 0, "{started:?}");
    let ready = d
        .sh(&a, "for i in $(seq 100); do test -e /tmp/ready && break; sleep 0.1; done; test -e /tmp/ready")
        .await;
    assert_eq!(ready.exit_code, 0, "sandbox a never got ready");
    // Positive control: from a, the very same attempts reach a's objects.
    let args = serde_json::json!({"name": name, "key": key});
    let own = python(&d, &a, Some("root"), OTHER_SANDBOX, &args).await;
    let own: BTreeMap<String, (String, bool)> =
        serde_json::from_str(own.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {own:?}"));
    for attack in [
        "open /dev/shm of the other sandbox",
        "shmget the other sandbox's segment",
        "mq_open the other sandbox's queue",
        "connect to the other sandbox's abstract socket",
        "connect to the other sandbox's loopback port",
    ] {
        assert_eq!(
            own[attack].0, "succeeded",
            "{attack} in its own sandbox: {own:?}"
        );
    }
    for user in USERS {
        assert_attempts_fail(&d, &b, user, OTHER_SANDBOX, &args).await;
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// runc CVE-2024-21626 ("Leaky Vessels"): a working directory that points outside the root
/// through a descriptor init holds (`/proc/self/fd/N`) or through init's links.
#[tokio::test]
async fn a_working_directory_cannot_start_outside_the_root() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let id = d.create().await.id;
    let climb = host
        .marker_paths()
        .iter()
        .map(|m| format!("cat ../../../../../../..{m} 2>/dev/null && echo LEAK; "))
        .collect::<String>();
    let mut directories: Vec<String> = (3..12).map(|fd| format!("/proc/self/fd/{fd}")).collect();
    directories.extend(
        [
            "/proc/1/cwd",
            "/proc/1/root",
            "/proc/self/root/../..",
            "/proc/thread-self/fd/3",
        ]
        .map(String::from),
    );
    for user in USERS {
        for cwd in &directories {
            let request = ExecRequest {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("{climb}stat -c %d:%i / ../../../../.."),
                ],
                user: user.map(Into::into),
                cwd: Some(cwd.clone()),
                ..Default::default()
            };
            // Refused (the usual outcome), or started inside the sandbox's own tree.
            if let Ok(result) = d.client.exec(&id, &request).await {
                if result.exit_code == 0 {
                    let inodes: Vec<&str> = result.stdout.lines().collect();
                    assert!(
                        !result.stdout.contains("LEAK")
                            && inodes.len() == 2
                            && inodes[0] == inodes[1],
                        "as {user:?} in {cwd}: {result:?}"
                    );
                }
                assert!(!result.stdout.contains(&host.secret));
            }
        }
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// Takes every inotify instance and POSIX message-queue byte the kernel lets it have, then
/// holds them in the background. Prints the counts once done.
const COUNTER_HOG: &str = r#"
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
tag = sys.argv[1]
instances = 0
while libc.inotify_init1(0) >= 0:
    instances += 1
inotify_error = errno.errorcode[ctypes.get_errno()]
queues = 0
while libc.mq_open(f'/{tag}-{queues}'.encode(), os.O_CREAT | os.O_RDWR, 0o600, None) >= 0:
    queues += 1
mq_error = errno.errorcode[ctypes.get_errno()]
print(instances, inotify_error, queues, mq_error, flush=True)
if os.fork():
    os._exit(0)
os.setsid()
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
time.sleep(600)
"#;

/// What host root (or another sandbox) can still get: an inotify instance and a message queue.
const COUNTER_PROBE: &str = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def outcome(ret):
    return 'ok' if ret >= 0 else errno.errorcode[ctypes.get_errno()]
name = f'/sbx-probe-{os.getpid()}'.encode()
print('inotify', outcome(libc.inotify_init1(0)), 'mq', outcome(libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o600, None)))
libc.mq_unlink(name)
"#;

/// Exhausting per-user kernel counters that cgroups do not cover (inotify instances, POSIX
/// message-queue bytes): they are charged to the owner of the sandbox's user namespace, so a
/// sandbox must own its namespace, or it takes host root's budget (and every other
/// sandbox's). Host root and another sandbox must still get both while a sandbox, as user and
/// as root, holds all it can.
#[tokio::test]
async fn per_user_kernel_counters_are_charged_to_the_sandbox() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let hog = d.create().await.id;
    let other = d.create().await.id;
    for user in USERS {
        let request = ExecRequest {
            cmd: vec![
                "python3".into(),
                "-c".into(),
                COUNTER_HOG.into(),
                format!("hog-{}", user.unwrap_or("user")),
            ],
            user: user.map(Into::into),
            ..Default::default()
        };
        let held = d.client.exec(&hog, &request).await.unwrap();
        let fields: Vec<&str> = held.stdout.split_whitespace().collect();
        assert_eq!(
            (fields.len(), fields.get(1), fields.get(3)),
            (4, Some(&"EMFILE"), Some(&"EMFILE")),
            "as {user:?}: {held:?}"
        );
        let host_probe = Command::new("python3")
            .args(["-c", COUNTER_PROBE])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&host_probe.stdout),
            "inotify ok mq ok\n",
            "host root, while a sandbox holds its counters as {user:?}: {}",
            String::from_utf8_lossy(&host_probe.stderr)
        );
        let request = ExecRequest {
            cmd: vec!["python3".into(), "-c".into(), COUNTER_PROBE.into()],
            ..Default::default()
        };
        let other_probe = d.client.exec(&other, &request).await.unwrap();
        assert_eq!(
            other_probe.stdout, "inotify ok mq ok\n",
            "another sandbox, while one holds its counters as {user:?}: {other_probe:?}"
        );
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// Opens pseudo-terminals until refused, then holds them in the background.
const PTY_HOG: &str = r#"
import errno, os, time
held = []
try:
    while True:
        held.append(os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY))
except OSError as e:
    print(len(held), errno.errorcode[e.errno], flush=True)
if os.fork():
    os._exit(0)
os.setsid()
null = os.open('/dev/null', os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
time.sleep(600)
"#;

/// Exhausting the kernel's one pool of pseudo-terminals (shared by every sandbox's devpts,
/// 3072 by default): a sandbox stops at its own cap (64), and another sandbox can still open
/// a terminal, through the API too.
#[tokio::test]
async fn one_sandbox_cannot_take_every_pseudo_terminal() {
    let d = TestDaemon::start().await;
    let host = Host::plant(&d);
    let hog = d.create().await.id;
    let other = d.create().await.id;
    for user in USERS {
        let request = ExecRequest {
            cmd: vec!["python3".into(), "-c".into(), PTY_HOG.into()],
            user: user.map(Into::into),
            ..Default::default()
        };
        let held = d.client.exec(&hog, &request).await.unwrap();
        let (count, error) = held.stdout.trim().split_once(' ').expect("count and error");
        assert_eq!(error, "ENOSPC", "as {user:?}: {held:?}");
        assert!(count.parse::<u32>().unwrap() <= 64, "as {user:?}: {held:?}");
    }
    let probe = d
        .sh(
            &other,
            "python3 -c \"import os; os.open('/dev/ptmx', os.O_RDWR); print('ok')\"",
        )
        .await;
    assert_eq!(probe.stdout, "ok\n", "{probe:?}");
    let request = sbx_protocol::TerminalRequest {
        cmd: vec!["tty".into()],
        ..Default::default()
    };
    let mut terminal = d
        .client
        .terminal(&other, &request)
        .await
        .expect("a terminal in another sandbox");
    let mut output = String::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(15), terminal.next()).await
    {
        match message {
            sbx_api_client::Message::Binary(bytes) => {
                output.push_str(&String::from_utf8_lossy(&bytes))
            }
            sbx_api_client::Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(
        output.contains("/dev/pts/"),
        "the other sandbox's terminal: {output:?}"
    );
    host.assert_unharmed(&d).await;
    d.finish().await;
}

/// The profiles of every backend this host runs (the default is native).
const EVERY_BACKEND: &str = "[profiles.gvisor]\nbackend = \"oci\"\n\
    [profiles.crun]\nbackend = \"crun\"\n[profiles.runc]\nbackend = \"runc\"\n\
    [profiles.docker]\nbackend = \"docker\"\n\
    [profiles.docker-gvisor]\nbackend = \"docker-gvisor\"\n";

/// What no backend may let through, whatever kernel answers: the host's files (through
/// `/proc/*/root`, `..` climbs and symlinks), the runtime's binary (CVE-2019-5736), kernel
/// memory and the host's kernel knobs, cgroup release agents, the host's clock, modules,
/// namespaces of other processes, the host's processes and the daemon's port, the network.
/// Privileged calls must be refused (EPERM, EACCES or ENOSYS); the rest may fail any way.
const ANY_BACKEND: &str = r#"
markers, bystander, port = ARGS['markers'], ARGS['bystander'], ARGS['port']
ANY = ('EPERM', 'EACCES', 'ENOSYS', 'ENOENT', 'EROFS', 'ETXTBSY', 'ESRCH', 'EXDEV', 'EINVAL',
       'ECONNREFUSED', 'ENETUNREACH', 'EHOSTUNREACH', 'ETIMEDOUT', 'ENOTDIR', 'EBADF', 'ENODEV',
       'ENXIO', 'EIO', 'timeout')
def read(path):
    with open(path, 'rb') as f:
        f.read(1)
def connect(host, p):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, p))
    except socket.timeout:
        raise OSError(errno.ETIMEDOUT, 'timeout')
    finally:
        s.close()
home = os.path.expanduser('~')
for pid in ['1', 'self'] + sorted(p for p in os.listdir('/proc') if p.isdigit())[:8]:
    for marker in markers:
        for path in (f'/proc/{pid}/root{marker}', f'/proc/{pid}/root' + '/..' * 8 + marker,
                     f'/proc/{pid}/cwd' + '/..' * 8 + marker):
            attempt(f'read {path}', lambda: read(path), *ANY)
for n, marker in enumerate(markers):
    link = f'{home}/escape-link-{n}'
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink('../' * 12 + marker.lstrip('/'), link)
    attempt(f'read through a symlink to {marker}', lambda: read(link), *ANY)
    attempt(f'plant a file next to {marker}', lambda: open(os.path.dirname(marker) + '/planted', 'w'), *ANY)
for flags in (os.O_WRONLY, os.O_RDWR | os.O_TRUNC):
    attempt(f'open /proc/self/exe with {flags}', lambda: os.open('/proc/self/exe', flags), *ANY)
    attempt(f'open /proc/1/exe with {flags}', lambda: os.open('/proc/1/exe', flags), *ANY)
for path in ('/dev/mem', '/dev/kmem', '/dev/port', '/proc/kcore', '/dev/sda', '/dev/vda'):
    attempt(f'read {path}', lambda: read(path), *ANY)
for path in ('/proc/sysrq-trigger', '/proc/sys/kernel/core_pattern', '/proc/sys/kernel/hostname',
             '/sys/kernel/uevent_helper', '/proc/sys/vm/drop_caches'):
    attempt(f'write {path}', lambda: write_file(path, b'x'), *ANY)
for agent in ('/sys/fs/cgroup/release_agent', '/sys/fs/cgroup/memory/release_agent',
              '/sys/fs/cgroup/pids/release_agent', '/sys/fs/cgroup/cpu/release_agent'):
    attempt(f'write {agent}', lambda: write_file(agent, b'/tmp/x'), *ANY)
# gVisor answers calls it does not implement with ENOTSUP.
REFUSED = DENIED + ('ENOTSUP', 'EOPNOTSUPP')
timeval = struct.pack('<qq', 946684800, 0)
attempt('settimeofday', lambda: sys_(164, timeval, None), *REFUSED)
attempt('init_module', lambda: sys_(175, b'\0' * 64, 64, b''), *REFUSED)
attempt('kexec_load', lambda: sys_(246, 0, 0, None, 0), *REFUSED)
attempt('open_by_handle_at', lambda: sys_(304, -100, b'\x08\0\0\0\x01\0\0\0' + b'\0' * 8, 0), *REFUSED)
attempt('swapoff', lambda: sys_(168, b'/dev/sda'), *REFUSED + ('ENOENT',))
for ns in ('mnt', 'pid', 'net', 'user', 'uts', 'ipc'):
    try:
        fd = os.open(f'/proc/1/ns/{ns}', os.O_RDONLY)
    except OSError as e:
        record(f'open /proc/1/ns/{ns}', errno.errorcode.get(e.errno, str(e.errno)), *ANY)
        continue
    # pid 1 is the sandbox's own init: joining its namespaces leaves nothing; what matters is
    # that no host namespace is reachable, which the reads above show.
    os.close(fd)
attempt('kill the host process', lambda: os.kill(bystander, 9), *ANY)
attempt('reach the daemon on the host loopback', lambda: connect('127.0.0.1', port), *ANY)
attempt('reach the network', lambda: connect('1.1.1.1', 53), *ANY)
"#;

/// The escape attempts that make sense on any backend, as the user and as root, on a sandbox
/// of every backend this host runs: native, oci over runsc, crun and runc, docker and docker
/// over runsc. Each backend's own details (errnos, seccomp) are the other tests' business.
#[tokio::test]
async fn no_backend_lets_a_sandbox_reach_the_host() {
    let d = TestDaemon::start_with(crate::daemon::Options {
        config: Some(EVERY_BACKEND),
        ..Default::default()
    })
    .await;
    let host = Host::plant(&d);
    let port: u16 = d.url.rsplit(':').next().unwrap().parse().unwrap();
    let args = serde_json::json!({
        "markers": host.marker_paths(),
        "bystander": host.bystander_pid(),
        "port": port,
    });
    for profile in [
        "default",
        "gvisor",
        "crun",
        "runc",
        "docker",
        "docker-gvisor",
    ] {
        let sandbox = d
            .create_with(sbx_protocol::CreateSandboxRequest {
                profile: Some(profile.into()),
                ..Default::default()
            })
            .await;
        for user in USERS {
            let results = python(&d, &sandbox.id, user, ANY_BACKEND, &args).await;
            assert_eq!(
                results.exit_code, 0,
                "{profile} as {user:?}: the attack script broke: {}{}",
                results.stdout, results.stderr
            );
            let results: BTreeMap<String, (String, bool)> =
                serde_json::from_str(results.stdout.trim()).unwrap();
            let worked: Vec<_> = results.iter().filter(|(_, (_, ok))| !ok).collect();
            assert!(
                worked.is_empty(),
                "{profile} as {user:?}: these attempts did not fail as they must: {worked:#?}"
            );
            assert!(results.len() > 40, "{profile}: too few attempts");
        }
        d.client.delete(&sandbox.id).await.unwrap();
    }
    host.assert_unharmed(&d).await;
    d.finish().await;
}
