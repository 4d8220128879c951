//! Capability sets inside a sandbox.
//!
//! Root inside a sandbox keeps a subset of Docker's default set — only capabilities that act on
//! objects the sandbox's own user namespace owns — and never `CAP_SYS_ADMIN`, `CAP_NET_RAW`,
//! `CAP_SYS_CHROOT`, `CAP_MKNOD` or `CAP_SYS_PTRACE`. Every other user has no capability at all.

use caps::{CapSet, Capability, CapsHashSet};

/// What root inside the sandbox may keep.
pub const ROOT: [Capability; 10] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_NET_BIND_SERVICE,
];

/// Limits the calling process (init, root in its user namespace) to [`ROOT`]: the bounding set
/// shrinks for good, so no descendant can regain anything else.
pub fn limit_to_root_set() -> Result<(), String> {
    let keep: CapsHashSet = ROOT.into_iter().collect();
    for cap in bounding()? {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("cannot drop {cap} from the bounding set: {e}"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("cannot clear inheritable set: {e}"))?;
    // Effective must stay a subset of permitted at every step (capset(2)).
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| format!("cannot set effective set: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| format!("cannot set permitted set: {e}"))?;
    Ok(())
}

/// Empties every set the process could carry past `setuid` to a non-root uid.
pub fn drop_all_for_user() -> Result<(), String> {
    for cap in bounding()? {
        // Dropping from the bounding set needs CAP_SETPCAP, which init's children hold.
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|e| format!("cannot drop {cap} from the bounding set: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("cannot clear ambient set: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("cannot clear inheritable set: {e}"))?;
    Ok(())
}

fn bounding() -> Result<CapsHashSet, String> {
    caps::read(None, CapSet::Bounding).map_err(|e| format!("cannot read the bounding set: {e}"))
}
