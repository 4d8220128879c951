//! Host uid ranges of sandboxes, allocated host-wide.
//!
//! A sandbox's uids 0–65535 map to the host range `ID_BASE + slot·65536`. The kernel counts
//! many things per host uid (inotify instances and watches, message-queue bytes, pending
//! signals, …), so two sandboxes sharing a range share those limits: one can use up the
//! other's. A daemon alone never gives a slot twice, but every daemon instance on the host
//! (each data directory is one) starts from slot 0 — a sandbox of a second daemon once
//! exhausted the inotify instances of a sandbox of the first. So slots are claimed in one
//! registry for the whole host: a file per slot, `/run/sbx/uid-slots/<slot>`, holding the
//! instance and sandbox that own it, made and removed under a lock (`flock` on
//! `/run/sbx/uid-slots/.lock`) that every daemon takes.
//!
//! A claim is stale when its owner is gone: a claim of this instance for a sandbox it does not
//! have, or a claim of another instance older than [`CLAIM_GRACE`] whose sandbox has no cgroup
//! (the owner crashed and its data directory went, or it is being built: the grace covers
//! that). A stale claim is taken over. `/run` is a tmpfs: a reboot empties the registry, and
//! the sandboxes with it.
//!
//! Every backend that gives sandboxes a user namespace of their own (native; oci with `crun`
//! or `runc`) takes its ranges from this one registry: [`sandbox_alive`] knows the cgroups of
//! each, so that no backend takes over another's live claim.
//!
//! Must never: give a slot that a live claim holds.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::{BackendError, SandboxId};

/// Where the registry lives.
pub const REGISTRY: &str = "/run/sbx/uid-slots";
/// First host uid/gid of sandbox ranges: above systemd's container range (0x00080000–
/// 0x6FFFFFFF) so a sandbox never shares ids with host users or other container managers.
pub const ID_BASE: u32 = 0x7000_0000;
/// Ids in one sandbox's range (its uids 0–65535).
pub const ID_RANGE: u32 = 65536;
/// Number of ranges above [`ID_BASE`], hence of such sandboxes alive at once on the host.
pub const ID_SLOTS: u32 = (u32::MAX - ID_BASE) / ID_RANGE - 1;
/// The cgroup parents (under each hierarchy) of the backends that take ranges from here:
/// `<parent>/<instance>/<sandbox>`.
const CGROUP_PARENTS: [&str; 2] = ["sbx", "sbx-oci"];

/// The first host id of `slot`'s range.
pub fn id_base(slot: u32) -> u32 {
    ID_BASE + slot * ID_RANGE
}

/// Whether `sandbox` of daemon `instance` (a claim's words) still has a cgroup on the host,
/// under any backend's parent and hierarchy: the liveness test [`Slots::allocate`] wants.
pub fn sandbox_alive(instance: &str, sandbox: &str) -> bool {
    let plausible = instance.len() == 12
        && instance.bytes().all(|b| b.is_ascii_hexdigit())
        && SandboxId::parse(sandbox).is_ok();
    if !plausible {
        return false;
    }
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_owned()]
    } else {
        fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    hierarchies.iter().any(|h| {
        CGROUP_PARENTS
            .iter()
            .any(|parent| h.join(parent).join(instance).join(sandbox).is_dir())
    })
}
/// How long a fresh claim of another instance counts as live without its cgroup.
const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// This instance's view of the registry.
pub struct Slots {
    dir: PathBuf,
    instance: String,
    /// The slots this instance holds, and for which sandbox.
    own: Mutex<BTreeMap<u32, SandboxId>>,
    count: u32,
}

/// The registry's lock, held while it lives.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Slots {
    /// Opens the registry at `dir` for `instance`, which has `count` slots to give and holds
    /// `own` already (its sandboxes on the host): their claims are made again where missing,
    /// and the instance's other claims (of sandboxes an earlier run of it did not finish
    /// making) are removed.
    pub fn open(
        dir: &Path,
        instance: &str,
        count: u32,
        own: BTreeMap<u32, SandboxId>,
    ) -> io::Result<Slots> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let slots = Slots {
            dir: dir.to_owned(),
            instance: instance.to_owned(),
            own: Mutex::new(BTreeMap::new()),
            count,
        };
        {
            let _lock = slots.lock()?;
            let unfinished = format!(".{instance}.new");
            for entry in fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                let name = name.to_str().unwrap_or_default();
                // A claim this instance was writing when it died.
                if name.starts_with('.') && name.ends_with(&unfinished) {
                    let _ = fs::remove_file(entry.path());
                    continue;
                }
                let Some(slot) = name.parse::<u32>().ok() else {
                    continue;
                };
                let claim = fs::read_to_string(entry.path()).unwrap_or_default();
                if claim.split_whitespace().next() == Some(instance) && !own.contains_key(&slot) {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        for (slot, id) in own {
            slots.claim(slot, &id)?;
        }
        Ok(slots)
    }

    fn lock(&self) -> io::Result<Locked> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Locked(file))
    }

    fn path(&self, slot: u32) -> PathBuf {
        self.dir.join(slot.to_string())
    }

    /// Writes `slot`'s claim for `id` whole or not at all (a new file renamed over it): a
    /// daemon killed half-way leaves no empty claim that no one would ever remove.
    fn write_claim(&self, slot: u32, id: &SandboxId) -> io::Result<()> {
        let new = self.dir.join(format!(".{slot}.{}.new", self.instance));
        fs::write(&new, format!("{} {id}\n", self.instance))?;
        fs::rename(&new, self.path(slot))
    }

    /// Records `slot` as this instance's for `id` (adoption after a restart, too).
    pub fn claim(&self, slot: u32, id: &SandboxId) -> io::Result<()> {
        let _lock = self.lock()?;
        self.write_claim(slot, id)?;
        self.own
            .lock()
            .expect("slot map is never poisoned")
            .insert(slot, id.clone());
        Ok(())
    }

    /// A free slot for sandbox `id`, claimed. `alive(instance, sandbox)` says whether another
    /// instance's sandbox still exists on the host.
    pub fn allocate(
        &self,
        id: &SandboxId,
        alive: impl Fn(&str, &str) -> bool,
    ) -> Result<u32, BackendError> {
        let _lock = self
            .lock()
            .map_err(|e| BackendError::io("cannot lock the uid slot registry", e))?;
        let mut own = self.own.lock().expect("slot map is never poisoned");
        for slot in 0..self.count {
            if own.contains_key(&slot) {
                continue;
            }
            let path = self.path(slot);
            if let Ok(text) = fs::read_to_string(&path) {
                let mut words = text.split_whitespace();
                let (instance, sandbox) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let young = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| SystemTime::now().duration_since(at).ok())
                    .is_none_or(|age| age < CLAIM_GRACE);
                let stale = instance == self.instance || (!young && !alive(instance, sandbox));
                if !stale {
                    continue;
                }
                tracing::info!(
                    slot,
                    instance,
                    sandbox,
                    "taking over a stale uid slot claim"
                );
            }
            self.write_claim(slot, id)
                .map_err(|e| BackendError::io("cannot claim a uid slot", e))?;
            own.insert(slot, id.clone());
            return Ok(slot);
        }
        Err(BackendError::Capacity {
            resource: crate::SharedResource::Processes,
            detail: "no free uid range for a new sandbox on this host".into(),
        })
    }

    /// Gives `slot` back if this instance holds it for `id` (and only then: a rollback and a
    /// destroy of the same id may both free it, and by then another sandbox may hold it).
    pub fn free(&self, slot: u32, id: &SandboxId) {
        let lock = self.lock();
        let mut own = self.own.lock().expect("slot map is never poisoned");
        if own.get(&slot) != Some(id) {
            return;
        }
        own.remove(&slot);
        let path = self.path(slot);
        let ours = fs::read_to_string(&path)
            .is_ok_and(|text| text.split_whitespace().next() == Some(self.instance.as_str()));
        if ours {
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(slot, %error, "cannot remove a uid slot claim");
            }
        }
        drop(lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_never_share_a_slot_and_stale_claims_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("uid-slots");
        let a = Slots::open(&registry, "aaaaaaaaaaaa", 8, BTreeMap::new()).unwrap();
        let b = Slots::open(&registry, "bbbbbbbbbbbb", 8, BTreeMap::new()).unwrap();
        let id = |_: u8| SandboxId::generate();
        let everyone_alive = |_: &str, _: &str| true;
        let first = a.allocate(&id(0), everyone_alive).unwrap();
        let second = b.allocate(&id(1), everyone_alive).unwrap();
        let third = a.allocate(&id(2), everyone_alive).unwrap();
        assert_eq!((first, second, third), (0, 1, 2));
        // Freed slots are reused, by whoever asks first; a slot is freed only for its sandbox.
        let first_id = a.own.lock().unwrap()[&first].clone();
        a.free(first, &SandboxId::generate());
        assert!(
            registry.join("0").exists(),
            "another sandbox's free is ignored"
        );
        a.free(first, &first_id);
        assert!(!registry.join("0").exists());
        assert_eq!(b.allocate(&id(3), everyone_alive).unwrap(), 0);
        // A claim of a vanished instance, old enough, is taken over; a young one is not.
        fs::write(registry.join("3"), "cccccccccccc sb-gone\n").unwrap();
        assert_eq!(a.allocate(&id(4), |_, _| false).unwrap(), 4);
        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(registry.join("3"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(a.allocate(&id(5), |_, _| false).unwrap(), 3);
        // A restarted instance claims its own again; its stale claims are reused.
        drop(a);
        let again = Slots::open(
            &registry,
            "aaaaaaaaaaaa",
            8,
            BTreeMap::from([(2, SandboxId::generate())]),
        )
        .unwrap();
        let next = again.allocate(&id(6), everyone_alive).unwrap();
        assert_eq!(
            next, 3,
            "slot 3 (its own, unknown to it now) is stale, 2 is held"
        );
    }
}
