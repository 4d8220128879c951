//! Host keys: what a native sandbox's host traces are named by.
//!
//! A sandbox built to order has its id as its key. One built from a pooled helper has the key
//! the pool gave that helper before any sandbox wanted it; `<data>/sandboxes/<key>/sandbox-id`
//! then names the sandbox, and [`Keys`] keeps the same map in memory (rebuilt from those files
//! at start), so that everything by id — destroy without a handle after a crash, listing what
//! the host holds — finds the key again.
//!
//! The [`sbx_backend::Handle`] carries both (`NativeHandle`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::sync::Mutex;

use sbx_backend::{BackendError, Handle, SandboxId};
use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::KIND;

/// What the native backend stores in a [`Handle`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NativeHandle {
    /// The sandbox's id.
    pub id: String,
    /// Its host key when that is not its id (handles of earlier versions have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Host pid of init.
    pub pid: i32,
    /// Init's start time (clock ticks since boot), which pins `pid` to one process.
    pub start_time: u64,
    /// Which 65536-id range the sandbox's users map to.
    pub slot: u32,
}

impl NativeHandle {
    pub fn parse(handle: &Handle) -> Result<NativeHandle, BackendError> {
        if handle.backend != KIND {
            return Err(BackendError::other(format!(
                "handle of backend {:?} given to the native backend",
                handle.backend
            )));
        }
        serde_json::from_value(handle.data.clone())
            .map_err(|e| BackendError::other_from("malformed native handle", e))
    }

    pub fn to_handle(&self) -> Handle {
        Handle {
            backend: KIND.into(),
            data: serde_json::to_value(self).expect("plain struct serialises"),
        }
    }

    pub fn id(&self) -> Result<SandboxId, BackendError> {
        SandboxId::parse(&self.id).map_err(|e| BackendError::other_from("malformed handle", e))
    }

    pub fn key(&self) -> Result<SandboxId, BackendError> {
        match &self.key {
            Some(key) => {
                SandboxId::parse(key).map_err(|e| BackendError::other_from("malformed handle", e))
            }
            None => self.id(),
        }
    }
}

/// Sandbox id → host key, for sandboxes whose key is not their id.
pub struct Keys {
    aliases: Mutex<HashMap<SandboxId, SandboxId>>,
}

impl Keys {
    /// Reads the map the host holds (`sandbox-id` files).
    pub fn load(layout: &Layout) -> Keys {
        let mut aliases = HashMap::new();
        let mut keys: Vec<SandboxId> = fs::read_dir(layout.sandboxes())
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| SandboxId::parse(&e.file_name().to_string_lossy()).ok())
                    .collect()
            })
            .unwrap_or_default();
        // In a stable order, so that the same host gives the same map.
        keys.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        for key in keys {
            if let Ok(Some(id)) = read_owner(layout, &key) {
                aliases.insert(id, key);
            }
        }
        Keys {
            aliases: Mutex::new(aliases),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, SandboxId>> {
        self.aliases.lock().expect("key map is never poisoned")
    }

    /// Hands the traces of `key` to sandbox `id`: on the host first (so that a crash right
    /// after leaves the map behind), then here.
    pub fn assign(&self, layout: &Layout, id: &SandboxId, key: &SandboxId) -> io::Result<()> {
        let file = layout.owner_file(key);
        let temporary = file.with_extension("new");
        fs::write(&temporary, id.as_str())?;
        fs::rename(&temporary, &file)?;
        self.lock().insert(id.clone(), key.clone());
        Ok(())
    }

    /// The key of sandbox `id`: the one it was assigned, else its id.
    pub fn key_of(&self, id: &SandboxId) -> SandboxId {
        self.lock().get(id).cloned().unwrap_or_else(|| id.clone())
    }

    /// Whether `id` was given another key.
    pub fn has_alias(&self, id: &SandboxId) -> bool {
        self.lock().contains_key(id)
    }

    pub fn forget(&self, id: &SandboxId) {
        self.lock().remove(id);
    }
}

/// The sandbox the traces of `key` serve, when it is not `key` itself (`None`: no owner file,
/// the key is its own). A file that cannot be read or names no sandbox is an error: the
/// traces belong to someone, and must not pass for an orphan of their key.
pub fn read_owner(layout: &Layout, key: &SandboxId) -> io::Result<Option<SandboxId>> {
    let text = match fs::read_to_string(layout.owner_file(key)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    SandboxId::parse(text.trim())
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}
