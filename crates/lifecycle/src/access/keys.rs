//! Who is asking: API keys, web sessions, and what a caller may see.
//!
//! A key reads `sbx_<id>_<secret>`. The id is public (logs and the audit trail name keys by
//! it); of the secret only a SHA-256 is stored, and a presented secret's hash is compared in
//! constant time. Keys live in the store and in memory (loaded at start, changed only through
//! this module), so a revoked key is refused from the next request on.
//!
//! A web session is a random token in an HttpOnly cookie, traded for a key at `POST /v1/login`;
//! it acts as that key, ends with it (revocation) and after [`SESSION_LIFETIME`]. Sessions live
//! in memory only: a daemon restart logs browsers out.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::model::{CreatedKey, KeyInfo};
use sbx_store::KeyRow;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Access, AuthFailure, Caller, LoginRefusal};
use crate::{now_ms, Error};

/// How long a web session lasts.
pub const SESSION_LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// Sessions kept at most, all keys together; a login past it is refused (no one else's
/// session is ever ended to make room).
const MAX_SESSIONS: usize = 10_000;
/// Sessions of one key at most; a new login ends that key's oldest (one key logging in 10,000
/// times once logged every other user out).
pub const MAX_SESSIONS_PER_KEY: usize = 16;
/// The user of the key a fresh daemon makes.
pub const ADMIN_USER: &str = "admin";
const KEY_PREFIX: &str = "sbx_";
const E2B_PREFIX: &str = "e2b_";

/// A key in the form E2B's SDKs accept (some versions refuse any key but `e2b_` followed by
/// lowercase hex digits before sending it): `e2b_` and the hex digits of the key's own text.
/// It stands for the same key, and is refused with it.
pub fn e2b_form(key: &str) -> String {
    format!("{E2B_PREFIX}{}", encode_hex(key.as_bytes()))
}

struct Session {
    key_id: String,
    expires_at: i64,
}

/// Keys by id, sessions by the hash of their token, and a signal for the streams each key and
/// session has open.
#[derive(Default)]
pub(crate) struct Keys {
    by_id: RwLock<HashMap<String, KeyRow>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    ended: Mutex<Ended>,
}

/// One signal per credential with open streams: it turns true when the key is revoked or the
/// session ends.
#[derive(Default)]
struct Ended {
    signals: HashMap<String, tokio::sync::watch::Sender<bool>>,
    /// Size after the last sweep of signals nobody watches.
    swept_at: usize,
    /// The signal of callers without a credential (the daemon itself, `--insecure-no-auth`):
    /// it never turns true, and its sender lives as long as the service.
    never: tokio::sync::watch::Sender<bool>,
}

impl Ended {
    fn watch(&mut self, credential: String) -> tokio::sync::watch::Receiver<bool> {
        if self.signals.len() >= (self.swept_at * 2).max(64) {
            self.signals.retain(|_, s| s.receiver_count() > 0);
            self.swept_at = self.signals.len();
        }
        self.signals
            .entry(credential)
            .or_insert_with(|| tokio::sync::watch::Sender::new(false))
            .subscribe()
    }

    fn end(&mut self, credential: &str) {
        if let Some(signal) = self.signals.remove(credential) {
            signal.send_replace(true);
        }
    }
}

fn key_credential(id: &str) -> String {
    format!("key:{id}")
}

fn session_credential(hash: &[u8; 32]) -> String {
    format!("session:{}", encode_hex(hash))
}

impl Keys {
    fn get(&self, id: &str) -> Option<KeyRow> {
        self.by_id
            .read()
            .expect("key map is never poisoned")
            .get(id)
            .cloned()
    }

    fn put(&self, row: KeyRow) {
        self.by_id
            .write()
            .expect("key map is never poisoned")
            .insert(row.id.clone(), row);
    }
}

impl Access {
    /// Loads the keys; on a daemon without any, makes an admin key and writes it to
    /// `admin_key_file` (mode 0600). Returns the file when it wrote one.
    pub fn init_keys(&self, admin_key_file: &Path) -> Result<Option<PathBuf>, Error> {
        let rows = self.store.keys()?;
        let fresh = rows.is_empty();
        for row in rows {
            self.keys.put(row);
        }
        if !fresh {
            return Ok(None);
        }
        let (key, row) = new_key(ADMIN_USER, true);
        write_secret_file(admin_key_file, &key).map_err(|e| {
            Error::internal(format!(
                "cannot write the admin key to {}: {e}",
                admin_key_file.display()
            ))
        })?;
        if let Err(e) = self.store.insert_key(&row) {
            let _ = std::fs::remove_file(admin_key_file);
            return Err(e.into());
        }
        self.audit(
            &Caller::system(),
            "key.created",
            serde_json::json!({ "target_key_id": row.id, "for_user": row.user, "admin": true }),
        );
        self.keys.put(row);
        Ok(Some(admin_key_file.to_owned()))
    }

    /// The caller a key stands for (in sbx's form, or E2B's: see [`e2b_form`]).
    pub fn authenticate(&self, presented: &str) -> Result<Caller, AuthFailure> {
        let decoded;
        let presented = match presented.strip_prefix(E2B_PREFIX) {
            Some(hex) => {
                decoded = decode_hex(hex)
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or(AuthFailure::Malformed)?;
                decoded.as_str()
            }
            None => presented,
        };
        let (id, secret) = presented
            .strip_prefix(KEY_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| !id.is_empty() && !secret.is_empty())
            .ok_or(AuthFailure::Malformed)?;
        let row = self.keys.get(id).ok_or(AuthFailure::UnknownKey)?;
        let hash = Sha256::digest(secret.as_bytes());
        let stored = decode_hex(&row.hash).unwrap_or_default();
        if !bool::from(stored.as_slice().ct_eq(hash.as_slice())) {
            return Err(AuthFailure::WrongSecret);
        }
        if row.revoked_at.is_some() {
            return Err(AuthFailure::Revoked);
        }
        Ok(caller_of(&row))
    }

    /// Trades a key for a web session token. A key has at most [`MAX_SESSIONS_PER_KEY`]: its
    /// oldest ends (and its streams with it).
    pub fn login(&self, key: &str) -> Result<(String, Caller), LoginRefusal> {
        let caller = self.authenticate(key).map_err(LoginRefusal::Auth)?;
        let key_id = caller.key_id.clone().unwrap_or_default();
        let token = format!("sbxs_{}", random_base32(32));
        let now = now_ms();
        let mut sessions = self
            .keys
            .sessions
            .lock()
            .expect("session map is never poisoned");
        let expired: Vec<[u8; 32]> = sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(hash, _)| *hash)
            .collect();
        if !expired.is_empty() {
            let mut ended = self.keys.ended.lock().expect("signals are never poisoned");
            for hash in &expired {
                sessions.remove(hash);
                ended.end(&session_credential(hash));
            }
        }
        let mut own: Vec<([u8; 32], i64)> = sessions
            .iter()
            .filter(|(_, s)| s.key_id == key_id)
            .map(|(hash, s)| (*hash, s.expires_at))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_KEY {
            own.sort_by_key(|(_, expires_at)| *expires_at);
            let mut ended = self.keys.ended.lock().expect("signals are never poisoned");
            for (hash, _) in &own[..=own.len() - MAX_SESSIONS_PER_KEY] {
                sessions.remove(hash);
                ended.end(&session_credential(hash));
            }
        } else if sessions.len() >= MAX_SESSIONS {
            return Err(LoginRefusal::Full);
        }
        sessions.insert(
            Sha256::digest(token.as_bytes()).into(),
            Session {
                key_id,
                expires_at: now + SESSION_LIFETIME_MS,
            },
        );
        Ok((token, caller))
    }

    /// A signal that turns true when the credential `caller` acts with ends: its key is
    /// revoked, or the web session it came with ends. Streams that outlive a request (exec
    /// streams, terminals, event feeds) watch it and close.
    pub fn credential_ended(&self, caller: &Caller) -> tokio::sync::watch::Receiver<bool> {
        let credential = match (&caller.session, &caller.key_id) {
            (Some(session), _) => format!("session:{session}"),
            (None, Some(key)) => key_credential(key),
            // The daemon itself, or a daemon without authentication: nothing to revoke.
            (None, None) => {
                let ended = self.keys.ended.lock().expect("signals are never poisoned");
                return ended.never.subscribe();
            }
        };
        let receiver = self
            .keys
            .ended
            .lock()
            .expect("signals are never poisoned")
            .watch(credential.clone());
        // The credential may have ended between the request's authentication and now (its
        // signal was sent before this stream watched it): then it has ended for this stream
        // too. Checked after watching, so that an end after the check reaches the watcher.
        if !self.credential_live(caller) {
            self.keys
                .ended
                .lock()
                .expect("signals are never poisoned")
                .end(&credential);
        }
        receiver
    }

    /// Whether `caller`'s key is not revoked and its session (if any) still exists.
    fn credential_live(&self, caller: &Caller) -> bool {
        let key_live = caller
            .key_id
            .as_deref()
            .and_then(|id| self.keys.get(id))
            .is_some_and(|row| row.revoked_at.is_none());
        let session_live = caller.session.as_deref().is_none_or(|session| {
            let Some(digest) = decode_hex(session).and_then(|d| <[u8; 32]>::try_from(d).ok())
            else {
                return false;
            };
            self.keys
                .sessions
                .lock()
                .expect("session map is never poisoned")
                .get(&digest)
                .is_some_and(|s| s.expires_at > now_ms())
        });
        key_live && session_live
    }

    /// The caller a session token stands for (with the session named in it).
    pub fn session(&self, token: &str) -> Result<Caller, AuthFailure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key_id = {
            let sessions = self
                .keys
                .sessions
                .lock()
                .expect("session map is never poisoned");
            match sessions.get(&digest) {
                Some(s) if s.expires_at > now_ms() => s.key_id.clone(),
                _ => return Err(AuthFailure::UnknownSession),
            }
        };
        let row = self.keys.get(&key_id).ok_or(AuthFailure::UnknownKey)?;
        if row.revoked_at.is_some() {
            return Err(AuthFailure::Revoked);
        }
        Ok(Caller {
            session: Some(encode_hex(&digest)),
            ..caller_of(&row)
        })
    }

    /// Ends a web session (unknown tokens are ignored), and every stream opened with it.
    pub fn logout(&self, token: &str) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.keys
            .sessions
            .lock()
            .expect("session map is never poisoned")
            .remove(&digest);
        self.keys
            .ended
            .lock()
            .expect("signals are never poisoned")
            .end(&session_credential(&digest));
    }

    /// A new key for `user`; the secret is in the answer only.
    pub fn create_key(
        &self,
        caller: &Caller,
        user: &str,
        admin: bool,
    ) -> Result<CreatedKey, Error> {
        caller.require_admin()?;
        if !sbx_config::limits::valid_user(user) {
            return Err(Error::Invalid(format!(
                "user: {user:?} is not a user name (1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)"
            )));
        }
        let (key, row) = new_key(user, admin);
        self.store.insert_key(&row)?;
        self.audit(
            caller,
            "key.created",
            serde_json::json!({ "target_key_id": row.id, "for_user": row.user, "admin": admin }),
        );
        let info = key_info(&row);
        self.keys.put(row);
        Ok(CreatedKey { key, info })
    }

    /// Keys, revoked ones too: all for admins, a user's own otherwise.
    pub fn keys(&self, caller: &Caller) -> Result<Vec<KeyInfo>, Error> {
        let rows = self.store.keys()?;
        Ok(rows
            .iter()
            .filter(|row| caller.admin || row.user == caller.user)
            .map(key_info)
            .collect())
    }

    /// Revokes a key at once: admins any, users their own. The last admin key stays.
    pub fn revoke_key(&self, caller: &Caller, id: &str) -> Result<KeyInfo, Error> {
        let not_found = || Error::KeyNotFound(id.to_owned());
        let row = self.keys.get(id).ok_or_else(not_found)?;
        if !caller.admin && row.user != caller.user {
            return Err(not_found());
        }
        if row.revoked_at.is_some() {
            return Ok(key_info(&row));
        }
        if row.admin {
            let admins = self
                .keys
                .by_id
                .read()
                .expect("key map is never poisoned")
                .values()
                .filter(|k| k.admin && k.revoked_at.is_none())
                .count();
            if admins <= 1 {
                return Err(Error::Conflict(
                    "this is the last admin key; create another admin key first".into(),
                ));
            }
        }
        let now = now_ms();
        self.store.revoke_key(id, now)?;
        let revoked = KeyRow {
            revoked_at: Some(now),
            ..row
        };
        self.audit(
            caller,
            "key.revoked",
            serde_json::json!({ "target_key_id": revoked.id, "for_user": revoked.user }),
        );
        let info = key_info(&revoked);
        self.keys.put(revoked);
        // Its sessions end with it, and every stream the key or they have open closes now.
        let ended_sessions: Vec<[u8; 32]> = {
            let mut sessions = self
                .keys
                .sessions
                .lock()
                .expect("session map is never poisoned");
            let hashes: Vec<[u8; 32]> = sessions
                .iter()
                .filter(|(_, s)| s.key_id == id)
                .map(|(hash, _)| *hash)
                .collect();
            for hash in &hashes {
                sessions.remove(hash);
            }
            hashes
        };
        let mut ended = self.keys.ended.lock().expect("signals are never poisoned");
        ended.end(&key_credential(id));
        for hash in &ended_sessions {
            ended.end(&session_credential(hash));
        }
        Ok(info)
    }
}

fn caller_of(row: &KeyRow) -> Caller {
    Caller {
        user: row.user.clone(),
        admin: row.admin,
        key_id: Some(row.id.clone()),
        ip: None,
        request_id: None,
        session: None,
    }
}

fn key_info(row: &KeyRow) -> KeyInfo {
    KeyInfo {
        id: row.id.clone(),
        user: row.user.clone(),
        admin: row.admin,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    }
}

/// A fresh key (its text) and its row (with only the secret's hash).
fn new_key(user: &str, admin: bool) -> (String, KeyRow) {
    let id = random_base32(12);
    let secret = random_base32(32);
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    let row = KeyRow {
        id,
        user: user.to_owned(),
        admin,
        hash: encode_hex(&Sha256::digest(secret.as_bytes())),
        created_at: now_ms(),
        revoked_at: None,
    };
    (key, row)
}

/// `len` characters of lowercase base32 from the OS's random source (5 bits each).
fn random_base32(len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(b & 31)] as char)
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `secret` to `path`, readable by its owner only, replacing what was there atomically.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = dir.join(format!(
        ".{}.{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(format!("{secret}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex(&encode_hex(&bytes)).unwrap(), bytes);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let (key, row) = new_key("alice", false);
        let rest = key.strip_prefix("sbx_").unwrap();
        let (id, secret) = rest.split_once('_').unwrap();
        assert_eq!(id, row.id);
        assert_eq!((id.len(), secret.len()), (12, 32));
        assert_eq!(row.hash, encode_hex(&Sha256::digest(secret.as_bytes())));
        assert!(!row.hash.contains(secret));
        assert_ne!(new_key("alice", false).0, key);
    }
}
