//! Containers started ahead of time, so that a create takes one rather than waiting for the
//! runtime to start a container (gVisor's `runsc` needs about 150 ms for that, `crun` a few).
//!
//! A warm container is built like any sandbox, for a shape the configuration names — a
//! profile's default resources on the host template — under a key of its own (a fresh id):
//! its bundle, root, cgroup, uid slot and runtime container are all named by that key. A
//! create whose sandbox has that shape takes one: the key's bundle records the sandbox it now
//! serves (`sandbox-id`), and its host name becomes the sandbox's id. Its handle carries the
//! key, which every later call uses.
//!
//! Invariant: a warm container is a complete set of host traces for its key, so an interrupted
//! daemon's pool is found and removed by reconciliation like any orphan. While it is pooled,
//! being built or being handed to a create, it is the pool's ([`Pool::holds`]), never an
//! orphan.

use std::collections::BTreeSet;
use std::sync::Mutex;

use sbx_backend::{Limits, SandboxId};

/// A container started ahead of time.
pub struct Warm {
    pub key: SandboxId,
    /// Its bundle's nonce (see `Inner::current`).
    pub nonce: String,
    pub limits: Limits,
    /// Its init's host pid (under gVisor, the sandbox process's), and that process's start
    /// time: what its sandbox is watched by, with no runtime call.
    pub init: i32,
    pub start_time: u64,
}

/// The warm containers, and the keys being built or handed over.
pub struct Pool {
    /// Each shape kept, and how many of it.
    shapes: Vec<(Limits, usize)>,
    state: Mutex<State>,
    /// Woken when a container is taken or the pool closes.
    pub wake: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    ready: Vec<Warm>,
    busy: BTreeSet<SandboxId>,
    closed: bool,
    /// When a create last took a container.
    last_take: Option<std::time::Instant>,
}

/// Marks a key as the pool's for as long as it lives.
pub struct Busy<'a> {
    pool: &'a Pool,
    key: SandboxId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.pool.lock().busy.remove(&self.key);
    }
}

impl Pool {
    /// A pool keeping `count` containers of each shape (shapes that differ; a count of 0
    /// keeps none).
    pub fn new(shapes: &[(Limits, usize)]) -> Pool {
        let mut kept: Vec<(Limits, usize)> = Vec::new();
        for (limits, count) in shapes.iter().filter(|(_, count)| *count > 0) {
            match kept.iter_mut().find(|(l, _)| l == limits) {
                Some((_, most)) => *most = (*most).max(*count),
                None => kept.push((*limits, *count)),
            }
        }
        Pool {
            shapes: kept,
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it keeps anything at all.
    pub fn is_enabled(&self) -> bool {
        !self.shapes.is_empty()
    }

    /// Marks `key` as the pool's (being built) until the guard goes.
    pub fn busy(&self, key: &SandboxId) -> Busy<'_> {
        self.lock().busy.insert(key.clone());
        Busy {
            pool: self,
            key: key.clone(),
        }
    }

    /// A warm container of exactly `limits`, marked busy in the same step (so that it is
    /// never seen as neither pooled nor busy); the refill is woken.
    pub fn take(&self, limits: &Limits) -> Option<(Warm, Busy<'_>)> {
        let warm = {
            let mut state = self.lock();
            let index = state.ready.iter().position(|w| w.limits == *limits)?;
            let warm = state.ready.swap_remove(index);
            state.busy.insert(warm.key.clone());
            state.last_take = Some(std::time::Instant::now());
            warm
        };
        self.wake.notify_one();
        let busy = Busy {
            pool: self,
            key: warm.key.clone(),
        };
        Some((warm, busy))
    }

    /// The first shape with fewer containers than it should have; `None` when every shape
    /// is full or the pool is closed.
    pub fn wanted(&self) -> Option<Limits> {
        let state = self.lock();
        if state.closed {
            return None;
        }
        self.shapes
            .iter()
            .find(|(limits, count)| {
                state.ready.iter().filter(|w| w.limits == *limits).count() < *count
            })
            .map(|(limits, _)| *limits)
    }

    /// Adds a built container; gives it back when the pool has closed meanwhile.
    pub fn add(&self, warm: Warm) -> Option<Warm> {
        let mut state = self.lock();
        if state.closed {
            return Some(warm);
        }
        state.ready.push(warm);
        None
    }

    /// Whether `key` is the pool's: warm, being built, or being handed to a create.
    pub fn holds(&self, key: &str) -> bool {
        let state = self.lock();
        state.busy.iter().any(|k| k.as_str() == key)
            || state.ready.iter().any(|w| w.key.as_str() == key)
    }

    /// Closes the pool (no more refills) and hands back what it held.
    pub fn close(&self) -> Vec<Warm> {
        let mut state = self.lock();
        state.closed = true;
        let ready = std::mem::take(&mut state.ready);
        drop(state);
        self.wake.notify_one();
        ready
    }

    /// How long until `pause` has passed since the last take (`None`: it has). A refill
    /// waits for it: the sandbox just taken gets the host's CPU for its first commands.
    pub fn until_quiet(&self, pause: std::time::Duration) -> Option<std::time::Duration> {
        let since = self.lock().last_take?.elapsed();
        pause.checked_sub(since).filter(|left| !left.is_zero())
    }

    /// How many are warm, and how many the pool keeps when full.
    pub fn counts(&self) -> (usize, usize) {
        let ready = self.lock().ready.len();
        (ready, self.shapes.iter().map(|(_, count)| count).sum())
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Names the UTS namespace of a namespaces runtime's container `name`, from the host: a
/// thread of the daemon joins the namespace of the container's init (`init`, started at
/// `start_time`) and sets it.
pub fn set_hostname_from_host(init: i32, start_time: u64, name: &str) -> Result<(), String> {
    let name = name.to_owned();
    sbx_backend::process::in_namespace_of(init, start_time, "uts", libc::CLONE_NEWUTS, move || {
        nix::unistd::sethostname(&name).map_err(std::io::Error::from)
    })
    .map_err(|e| format!("cannot name the container: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory_mb: u64) -> Limits {
        Limits {
            memory_bytes: memory_mb << 20,
            cpu_millis: 1000,
            pids: 256,
            disk_bytes: 1 << 30,
        }
    }

    fn warm(limits: Limits) -> Warm {
        Warm {
            key: SandboxId::generate(),
            nonce: "n".into(),
            limits,
            init: 0,
            start_time: 0,
        }
    }

    #[test]
    fn shapes_fill_in_order_and_a_take_matches_exactly() {
        let pool = Pool::new(&[(limits(512), 1), (limits(256), 2), (limits(512), 2)]);
        assert!(pool.is_enabled());
        // The same shape twice: the larger count.
        assert_eq!(pool.wanted(), Some(limits(512)));
        assert!(pool.add(warm(limits(512))).is_none());
        assert_eq!(pool.wanted(), Some(limits(512)));
        assert!(pool.add(warm(limits(512))).is_none());
        assert_eq!(pool.wanted(), Some(limits(256)));
        assert!(pool.take(&limits(128)).is_none());
        assert_eq!(pool.until_quiet(std::time::Duration::from_secs(60)), None);
        let (taken, busy) = pool.take(&limits(512)).unwrap();
        assert!(pool.holds(taken.key.as_str()));
        // A refill waits a moment after a take.
        assert!(pool
            .until_quiet(std::time::Duration::from_secs(60))
            .is_some());
        assert_eq!(pool.until_quiet(std::time::Duration::ZERO), None);
        drop(busy);
        assert!(!pool.holds(taken.key.as_str()));
        assert_eq!(pool.wanted(), Some(limits(512)));
    }

    #[test]
    fn a_closed_pool_hands_back_what_it_held_and_takes_nothing_more() {
        let pool = Pool::new(&[(limits(512), 2)]);
        let kept = warm(limits(512));
        let key = kept.key.clone();
        assert!(pool.add(kept).is_none());
        assert!(pool.holds(key.as_str()));
        let back = pool.close();
        assert_eq!(back.len(), 1);
        assert!(pool.is_closed());
        assert_eq!(pool.wanted(), None);
        assert!(pool.add(warm(limits(512))).is_some());
        assert!(pool.take(&limits(512)).is_none());
    }

    #[test]
    fn no_shape_no_pool() {
        let pool = Pool::new(&[(limits(512), 0)]);
        assert!(!pool.is_enabled());
        assert_eq!(pool.wanted(), None);
    }
}
