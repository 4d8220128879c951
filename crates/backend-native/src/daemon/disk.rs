//! Each sandbox's writable layer lives on a disk of its own: a sparse ext4 image of the size
//! the sandbox may fill (`<data>/sandboxes/<id>/disk.img`), attached to a loop device. Filling
//! it gives the sandbox ENOSPC, never the host. The image only takes the blocks written.
//!
//! The loop device is attached with `LO_FLAGS_AUTOCLEAR`: it detaches by itself when its last
//! user goes. The daemon holds it open ([`Disk`]) until stage 1 has mounted it inside the
//! sandbox's mount namespace; from then on the mount is the last user, so the device detaches
//! when the sandbox's processes are gone — after a crash of anything too. Nothing is mounted
//! on the host.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `linux/loop.h` (uapi).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, held open until its filesystem is mounted.
#[derive(Debug)]
pub struct Disk {
    pub device: PathBuf,
    _open: OwnedFd,
}

/// Makes a sparse image of `bytes` and an ext4 filesystem on it (no journal: the layer dies
/// with the sandbox; no reserved blocks: the quota is the sandbox's to use).
pub fn create(image: &Path, bytes: u64) -> io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)?;
    file.set_len(bytes)?;
    drop(file);
    let output = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-E",
            "nodiscard,lazy_itable_init=1",
        ])
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run mkfs.ext4 (install e2fsprogs): {e}"),
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let kind = if stderr.contains("No space left on device") {
            io::ErrorKind::StorageFull
        } else {
            io::ErrorKind::Other
        };
        return Err(io::Error::new(
            kind,
            format!("mkfs.ext4 failed: {}", stderr.trim()),
        ));
    }
    Ok(())
}

/// Attaches `image` to a free loop device, set to detach itself once unused.
pub fn attach(image: &Path) -> io::Result<Disk> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")?;
    // Another process may take the free device between the two calls: then try the next.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let device = PathBuf::from(format!("/dev/loop{number}"));
        let loop_device = match open_device(&device) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads the loop_config we pass, which outlives the call.
        let done = unsafe { libc::ioctl(loop_device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if done == 0 {
            return Ok(Disk {
                device,
                _open: OwnedFd::from(loop_device),
            });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(error);
        }
    }
    Err(io::Error::other("no free loop device"))
}

fn open_device(device: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
}
