//! The collected exec's output, held until the response is written, and that response written
//! as a stream.
//!
//! A command may write up to `exec.max_output_bytes` per stream (16 MiB by default) before
//! the collected form cuts it; ten such commands held in memory, plus their JSON, once made the
//! daemon's RSS 2 GB. So each stream is a [`Spool`]: its first [`MEMORY_BYTES`] in memory, the
//! rest in an unnamed temporary file in the data directory (`O_TMPFILE`: it vanishes with its
//! descriptor, whatever happens to the daemon). What all spools together may put on disk is
//! bounded by a [`SpoolBudget`] (past it, output is cut and flagged `*_truncated`, as past the
//! per-stream cap). The response body is then written from the spools chunk by chunk, so the
//! daemon's memory per collected exec is a few chunks whatever the output.
//!
//! Must never: hold a whole stream in memory, or block on anything but the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sbx_protocol::{DataShape, Encoding, ExitInfo};

/// Output kept in memory per stream before the spool moves to a file.
pub const MEMORY_BYTES: usize = 64 * 1024;
/// Bytes read from a spool per piece of the response (a multiple of 3: base64 pieces then
/// join without padding).
const PIECE: usize = 48 * 1024;

/// What all spool files together may hold, daemon-wide, and one user's (a quarter of it).
#[derive(Debug)]
pub struct SpoolBudget {
    limit: u64,
    user_limit: u64,
    held: Mutex<(u64, HashMap<String, u64>)>,
}

impl SpoolBudget {
    pub fn new(limit: u64) -> SpoolBudget {
        SpoolBudget {
            limit,
            user_limit: limit / 4,
            held: Mutex::default(),
        }
    }

    /// Takes up to `want` bytes of the budget for `user`; returns how many it got.
    fn take(&self, user: &str, want: u64) -> u64 {
        let mut held = self.held.lock().expect("spool budget is never poisoned");
        let (total, per_user) = &mut *held;
        let mine = per_user.get(user).copied().unwrap_or(0);
        let got = want
            .min(self.limit.saturating_sub(*total))
            .min(self.user_limit.saturating_sub(mine));
        if got > 0 {
            *total += got;
            *per_user.entry(user.to_owned()).or_default() += got;
        }
        got
    }

    fn give_back(&self, user: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut held = self.held.lock().expect("spool budget is never poisoned");
        let (total, per_user) = &mut *held;
        *total -= bytes;
        if let Some(mine) = per_user.get_mut(user) {
            *mine -= bytes;
            if *mine == 0 {
                per_user.remove(user);
            }
        }
    }

    /// Bytes held by spool files now.
    pub fn used(&self) -> u64 {
        self.held.lock().expect("spool budget is never poisoned").0
    }
}

/// Where spools go and how much they may hold.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the temporary files (the data directory).
    pub dir: PathBuf,
    /// Output kept per stream.
    pub max_bytes: u64,
    pub budget: Arc<SpoolBudget>,
}

/// One stream's collected output.
pub struct Spool {
    settings: SpoolSettings,
    /// Whose command it is (the budget counts per user).
    user: String,
    memory: Vec<u8>,
    file: Option<File>,
    len: u64,
    /// Bytes of `len` in the file.
    file_len: u64,
    /// Budget bytes this spool holds (given back when it is dropped).
    charged: u64,
    /// Output was dropped: nothing more is kept, so what is kept has no hole.
    truncated: bool,
    shape: DataShape,
}

impl Spool {
    pub fn new(settings: &SpoolSettings, user: &str) -> Spool {
        Spool {
            settings: settings.clone(),
            user: user.to_owned(),
            memory: Vec::new(),
            file: None,
            len: 0,
            file_len: 0,
            charged: 0,
            truncated: false,
            shape: DataShape::default(),
        }
    }

    /// Keeps what fits of `chunk`; past the first byte that does not fit, nothing more is kept
    /// and the spool is marked truncated (what it keeps is always the output's beginning).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.truncated {
            return;
        }
        let room = self.settings.max_bytes.saturating_sub(self.len);
        let mut keep = &chunk[..chunk.len().min(room as usize)];
        if keep.len() < chunk.len() {
            self.truncated = true;
        }
        let in_memory = keep
            .len()
            .min(MEMORY_BYTES.saturating_sub(self.memory.len()));
        self.memory.extend_from_slice(&keep[..in_memory]);
        self.shape.feed(&keep[..in_memory]);
        self.len += in_memory as u64;
        keep = &keep[in_memory..];
        if keep.is_empty() {
            return;
        }
        let granted = self.settings.budget.take(&self.user, keep.len() as u64) as usize;
        self.charged += granted as u64;
        if granted < keep.len() {
            self.truncated = true;
            keep = &keep[..granted];
        }
        if keep.is_empty() {
            return;
        }
        if let Err(error) = self.write(keep) {
            tracing::warn!(%error, "cannot spool a command's output; it is cut here");
            // What a failed write left behind is not part of the output.
            if let Some(file) = &self.file {
                let _ = file.set_len(self.file_len);
            }
            self.truncated = true;
            return;
        }
        self.shape.feed(keep);
        self.len += keep.len() as u64;
        self.file_len += keep.len() as u64;
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile_in(&self.settings.dir)?);
        }
        let file = self.file.as_mut().expect("the file was just made");
        // A write to a file just made lands in the page cache.
        file.write_all(bytes)
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn encoding(&self) -> Encoding {
        self.shape.encoding()
    }

    /// The kept bytes, as pieces of [`PIECE`] bytes (the last shorter).
    fn pieces(mut self) -> Pieces {
        if let Some(file) = self.file.as_mut() {
            if let Err(error) = file.seek(SeekFrom::Start(0)) {
                tracing::warn!(%error, "cannot read a spooled output back");
                self.file = None;
            }
        }
        Pieces {
            memory: std::mem::take(&mut self.memory),
            at: 0,
            spool: self,
            failed: false,
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.settings.budget.give_back(&self.user, self.charged);
    }
}

/// Reads a spool back: memory first, then the file.
struct Pieces {
    memory: Vec<u8>,
    at: usize,
    spool: Spool,
    /// The file could not be read back: the output ends where it failed.
    failed: bool,
}

impl Pieces {
    fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.failed {
            return None;
        }
        let mut piece = Vec::with_capacity(PIECE);
        let from_memory = (self.memory.len() - self.at).min(PIECE);
        piece.extend_from_slice(&self.memory[self.at..self.at + from_memory]);
        self.at += from_memory;
        if let Some(file) = self.spool.file.as_mut() {
            while piece.len() < PIECE {
                let start = piece.len();
                piece.resize(PIECE, 0);
                match file.read(&mut piece[start..]) {
                    Ok(0) => {
                        piece.truncate(start);
                        break;
                    }
                    Ok(n) => piece.truncate(start + n),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => piece.truncate(start),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read a spooled output back");
                        piece.truncate(start);
                        self.failed = true;
                        break;
                    }
                }
            }
        }
        (!piece.is_empty()).then_some(piece)
    }
}

/// One stream's part of the response: its pieces encoded as the inside of a JSON string.
struct Encoder {
    pieces: Pieces,
    encoding: Encoding,
    /// The start of a UTF-8 sequence split by the end of the last piece.
    carry: Vec<u8>,
}

impl Encoder {
    fn new(spool: Spool) -> Encoder {
        let encoding = spool.encoding();
        Encoder {
            pieces: spool.pieces(),
            encoding,
            carry: Vec::new(),
        }
    }

    /// The next part of the string's inside, or `None` at its end.
    fn next(&mut self) -> Option<String> {
        let piece = self.pieces.next_piece();
        match self.encoding {
            Encoding::Base64 => piece.map(|piece| {
                let mut out = String::with_capacity(piece.len() / 3 * 4 + 4);
                sbx_protocol::encode_base64_into(&piece, &mut out);
                out
            }),
            Encoding::Utf8 => {
                let mut bytes = std::mem::take(&mut self.carry);
                let last = piece.is_none();
                match piece {
                    Some(piece) => bytes.extend_from_slice(&piece),
                    None if bytes.is_empty() => return None,
                    None => {}
                }
                // The spool's shape said UTF-8, so only a sequence split by the piece's end can
                // be incomplete; it waits for the next piece. (Anything else — which would mean
                // a fault — is written lossily rather than held back.)
                let valid = match std::str::from_utf8(&bytes) {
                    Err(error) if error.error_len().is_none() && !last => error.valid_up_to(),
                    _ => bytes.len(),
                };
                self.carry = bytes.split_off(valid);
                let text = String::from_utf8_lossy(&bytes);
                let quoted = serde_json::to_string(&*text).expect("a string serialises");
                Some(quoted[1..quoted.len() - 1].to_owned())
            }
        }
    }
}

/// The collected exec's response body (an `ExecResult`), written from the spools as the
/// client takes it. `hold` (the command's place among those running) is released when the
/// body is done or dropped.
pub fn exec_result_body<H: Send + 'static>(
    exit: ExitInfo,
    stdout: Spool,
    stderr: Spool,
    hold: H,
) -> axum::body::Body {
    let head = format!(
        "{{\"exit_code\":{},\"signal\":{},\"timed_out\":{},\"duration_ms\":{},\"stdout\":\"",
        exit.exit_code,
        json(&exit.signal),
        exit.timed_out,
        json(&exit.duration_ms),
    );
    let middle = format!(
        "\",\"stdout_encoding\":{},\"stdout_truncated\":{},\"stderr\":\"",
        json(&stdout.encoding()),
        stdout.truncated()
    );
    let tail = format!(
        "\",\"stderr_encoding\":{},\"stderr_truncated\":{}}}",
        json(&stderr.encoding()),
        stderr.truncated()
    );
    struct State<H> {
        head: Option<String>,
        stdout: Encoder,
        middle: Option<String>,
        stderr: Encoder,
        tail: Option<String>,
        _hold: H,
    }
    let state = State {
        head: Some(head),
        stdout: Encoder::new(stdout),
        middle: Some(middle),
        stderr: Encoder::new(stderr),
        tail: Some(tail),
        _hold: hold,
    };
    // Small answers (both streams still in memory) go out whole, with a length, in one write.
    if state.stdout.pieces.spool.file.is_none() && state.stderr.pieces.spool.file.is_none() {
        let mut whole = String::new();
        let mut state = state;
        whole.push_str(&state.head.take().unwrap_or_default());
        while let Some(part) = state.stdout.next() {
            whole.push_str(&part);
        }
        whole.push_str(&state.middle.take().unwrap_or_default());
        while let Some(part) = state.stderr.next() {
            whole.push_str(&part);
        }
        whole.push_str(&state.tail.take().unwrap_or_default());
        return axum::body::Body::from(whole);
    }
    let parts = futures::stream::unfold(state, |mut state| async move {
        let next = if let Some(head) = state.head.take() {
            head
        } else if let Some(part) = state.stdout.next() {
            part
        } else if let Some(middle) = state.middle.take() {
            middle
        } else if let Some(part) = state.stderr.next() {
            part
        } else {
            state.tail.take()?
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(next)), state))
    });
    axum::body::Body::from_stream(parts)
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("a plain value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_bytes: u64, budget: u64) -> SpoolSettings {
        SpoolSettings {
            dir: std::env::temp_dir(),
            max_bytes,
            budget: Arc::new(SpoolBudget::new(budget)),
        }
    }

    async fn body_of(stdout: Spool, stderr: Spool) -> sbx_protocol::ExecResult {
        let exit = ExitInfo {
            exit_code: 3,
            signal: None,
            timed_out: false,
            duration_ms: 1.5,
        };
        let body = exec_result_body(exit, stdout, stderr, ());
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn what_is_spooled_comes_back_whole_in_either_encoding() {
        let settings = settings(1 << 20, 8 << 20);
        // Text over several pieces, with a multi-byte character split at every boundary.
        let text: String = "é✓𝄞 ligne\n".repeat(60_000).chars().take(500_000).collect();
        let text = text.as_str();
        let mut stdout = Spool::new(&settings, "alice");
        for chunk in text.as_bytes().chunks(4093) {
            stdout.push(chunk);
        }
        let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut stderr = Spool::new(&settings, "alice");
        for chunk in binary.chunks(65536) {
            stderr.push(chunk);
        }
        assert!(settings.budget.used() > 0);
        let result = body_of(stdout, stderr).await;
        assert_eq!(settings.budget.used(), 0, "the files are given back");
        assert_eq!(result.exit_code, 3);
        assert_eq!(result.stdout_encoding, Encoding::Utf8);
        assert_eq!(result.stdout, text);
        assert!(!result.stdout_truncated);
        assert_eq!(result.stderr_encoding, Encoding::Base64);
        assert_eq!(
            sbx_protocol::decode_data(&result.stderr, Encoding::Base64).unwrap(),
            binary
        );
    }

    #[tokio::test]
    async fn the_caps_per_stream_and_daemon_wide_cut_and_flag() {
        // Past the user's share of the budget (a quarter): 64 KiB in memory, then what the
        // budget allowed on disk.
        let settings = settings(200_000, 200_000);
        let mut stdout = Spool::new(&settings, "alice");
        stdout.push(&[0u8; 150_000]);
        stdout.push(&[0u8; 150_000]);
        let result = body_of(stdout, Spool::new(&settings, "alice")).await;
        let kept = sbx_protocol::decode_data(&result.stdout, result.stdout_encoding).unwrap();
        assert_eq!(kept.len(), MEMORY_BYTES + 50_000);
        // Another user still has a share.
        let mut other = Spool::new(&settings, "bob");
        other.push(&[1u8; 100_000]);
        assert!(!other.truncated());
        assert!(result.stdout_truncated);
        assert_eq!(result.stderr, "");
        assert!(!result.stderr_truncated);
        // Past the per-stream cap.
        let settings = self::settings(100_000, 1 << 20);
        let mut stdout = Spool::new(&settings, "alice");
        stdout.push(&[b'x'; 150_000]);
        let result = body_of(stdout, Spool::new(&settings, "alice")).await;
        assert_eq!(result.stdout.len(), 100_000);
        assert!(result.stdout_truncated);
    }
}
