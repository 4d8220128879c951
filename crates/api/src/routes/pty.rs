//! `GET /v1/sandboxes/{id}/pty`: a pseudo-terminal in a sandbox, over a WebSocket.
//!
//! Framing: terminal bytes travel in binary frames, both ways. Control messages are small JSON
//! text frames: from the client `{"type":"resize","rows":R,"cols":C}` and
//! `{"type":"signal","signal":"INT"}`; from the server `{"type":"started","pid":P}`, then at the
//! end `{"type":"exit",…}` (or `{"type":"error",…}`), after which the server closes (1000).
//!
//! Protections (each configurable in `[terminals]`/`[daemon]`, each violation logged): an
//! `Origin` allow-list (empty: same origin only; clients that send no `Origin` are not
//! browsers and pass), at most N terminals per client IP (429 before the upgrade), a maximum
//! inbound message size (close 1009), and optionally rejecting terminal escape sequences aimed
//! at the host's terminal emulator (close 1008).
//!
//! Closing the socket ends the terminal's session — its shell and every job of it (not the
//! sandbox). A `signal` control message goes to the terminal's foreground job, as Ctrl-C would. Output flows with
//! back-pressure: a slow client slows the command, the daemon's buffers stay bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use sbx_lifecycle::{ExecInput, ExecOutput, ExecStream, Signal, SignalTarget, TtySize};
use sbx_protocol::{
    ErrorBody, ErrorDetail, ExitInfo, TerminalControl, TerminalEvent, TerminalRequest,
};

use crate::context::{Auth, ClientIp};
use crate::{wire, ApiError, AppState};

/// WebSocket close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_ERROR: u16 = 1011;
/// How long a closing terminal's processes get to exit before the bridge stops waiting.
const KILL_WAIT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/sandboxes/{id}/pty", get(pty))
}

/// How many terminals each client IP has open.
#[derive(Debug, Default)]
pub struct TerminalSlots {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open terminal of one IP; gives the slot back when dropped.
pub struct Slot {
    slots: Arc<TerminalSlots>,
    ip: IpAddr,
}

impl TerminalSlots {
    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.open.lock().expect("slot map is never poisoned");
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("slot map is never poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/pty", tag = "exec",
    params(
        ("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"),
        ("cmd" = Option<Vec<String>>, Query, description = "Program and arguments, one `cmd=` each (default: a login shell)"),
        ("user" = Option<String>, Query, description = "`user` (default), `root`, or a uid"),
        ("cwd" = Option<String>, Query, description = "Working directory"),
        ("rows" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Initial rows (default 24)"),
        ("cols" = Option<u16>, Query, minimum = 1, maximum = 1000, description = "Initial columns (default 80)"),
    ),
    responses(
        (status = 101, description = "WebSocket: binary frames carry terminal bytes both ways; JSON text frames carry `TerminalControl` (client) and `TerminalEvent` (server) messages"),
        (status = 400, description = "Not a WebSocket upgrade, invalid query, or the command could not start", body = ErrorBody),
        (status = 403, description = "The page's origin is not allowed", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 429, description = "This client has too many terminals open", body = ErrorBody),
    ))]
// An axum handler takes what it needs as extractors, one argument each.
#[allow(clippy::too_many_arguments)]
pub async fn pty(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Auth(caller): Auth,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    drain: Option<axum::Extension<crate::server::DrainOnClose>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !crate::origin_allowed(origin, host, &state.settings.allowed_origins) {
            tracing::warn!(ip = ?ip, origin, "terminal refused: origin not allowed");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {origin:?} may not open terminals"),
            ));
        }
    }
    let upgrade = upgrade.map_err(|_| {
        ApiError::invalid("this route is a WebSocket: send a WebSocket upgrade request")
    })?;
    let request = parse_query(query.as_deref().unwrap_or(""))?;
    let terminals = &state.settings.terminals;
    let Some(slot) = state.terminal_slots.acquire(
        ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        terminals.max_per_ip,
    ) else {
        tracing::warn!(ip = ?ip, limit = terminals.max_per_ip, "terminal refused: too many open from this address");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_terminals",
            format!(
                "at most {} terminals may be open at once from one address",
                terminals.max_per_ip
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return Ok(response);
    };
    let drain = drain.map(|axum::Extension(drain)| drain);
    // Started before the upgrade, so that a bad id or command is an HTTP error.
    let request = wire::terminal_request(&request);
    let stream = state.service.terminal(&caller, &id, &request).await?;
    let guard = Terminal(Some(stream));
    let limits = Limits {
        drain,
        max_message: terminals.max_message_bytes,
        filter: terminals.filter_escape_sequences,
        service: state.service.clone(),
        caller,
    };
    Ok(upgrade
        // The protocol layer refuses far larger messages outright; ours are checked below.
        .max_message_size(terminals.max_message_bytes * 2 + 1024)
        .max_frame_size(terminals.max_message_bytes * 2 + 1024)
        .on_upgrade(move |socket| async move {
            bridge(socket, guard, limits).await;
            drop(slot);
        })
        .into_response())
}

/// Ends the terminal's process group when the terminal goes, however it goes (a failed upgrade
/// included).
struct Terminal(Option<ExecStream>);

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(stream) = &self.0 {
            // Out of band: keys still queued for a terminal that does not read hold it up not.
            stream.kill.kill();
        }
    }
}

struct Limits {
    /// The connection's drain, when the server gives one.
    drain: Option<crate::server::DrainOnClose>,
    max_message: usize,
    filter: bool,
    /// For the audit trail of rejected input.
    service: sbx_lifecycle::Service,
    caller: sbx_lifecycle::Caller,
}

impl Limits {
    fn audit_rejected(&self, why: &str) {
        self.service.access().audit(
            &self.caller,
            "input.rejected",
            serde_json::json!({ "code": "terminal_input", "message": why }),
        );
    }
}

/// Why the bridge ended.
enum End {
    /// The command exited (its status was sent).
    Exited,
    /// The client went away or broke the rules; the process group must go.
    Client,
}

async fn bridge(socket: WebSocket, mut terminal: Terminal, limits: Limits) {
    let (mut sender, mut receiver) = socket.split();
    let stream = terminal
        .0
        .as_mut()
        .expect("the stream is set until the bridge ends");
    let started = TerminalEvent::Started { pid: stream.pid };
    if sender.send(text(&started)).await.is_err() {
        return;
    }
    // Set when we closed because of what the client sent: its data may still be arriving.
    let mut refused = false;
    let end = loop {
        tokio::select! {
            output = stream.output.recv() => match output {
                Some(ExecOutput::Stdout(bytes)) | Some(ExecOutput::Stderr(bytes)) => {
                    if sender.send(Message::Binary(bytes)).await.is_err() {
                        break End::Client;
                    }
                }
                Some(ExecOutput::Exit { status, timed_out, duration }) => {
                    let exit = TerminalEvent::Exit(ExitInfo {
                        exit_code: status.shell_code(),
                        signal: match status {
                            sbx_lifecycle::ExitStatus::Signal(s) => Some(s),
                            sbx_lifecycle::ExitStatus::Code(_) => None,
                        },
                        timed_out,
                        duration_ms: duration.as_secs_f64() * 1000.0,
                    });
                    let _ = sender.send(text(&exit)).await;
                    let _ = sender.send(close(CLOSE_NORMAL, "exited")).await;
                    break End::Exited;
                }
                Some(ExecOutput::Failed(error)) => {
                    // A revoked key or an ended session takes the terminal's processes too.
                    let revoked = matches!(error, sbx_lifecycle::Error::CredentialEnded);
                    let api: ApiError = error.into();
                    let event = TerminalEvent::Error {
                        error: ErrorDetail { code: api.code.into(), message: api.message, request_id: None },
                    };
                    let _ = sender.send(text(&event)).await;
                    if revoked {
                        let _ = sender.send(close(CLOSE_POLICY, "credential ended")).await;
                        break End::Client;
                    }
                    let _ = sender.send(close(CLOSE_ERROR, "sandbox stopped")).await;
                    break End::Exited;
                }
                None => break End::Exited,
            },
            message = receiver.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        // The protocol layer's own limit is far above ours; past it, say so.
                        // Anything else (a reset connection) is a client that went away.
                        let text = error.to_string();
                        if text.contains("Space limit exceeded") || text.contains("too long") {
                            tracing::warn!(ip = ?limits.caller.ip, %error, "terminal closed: message too big");
                            limits.audit_rejected("message too big");
                            let _ = sender.send(close(CLOSE_TOO_BIG, "message too big")).await;
                            refused = true;
                        } else {
                            tracing::debug!(ip = ?limits.caller.ip, %error, "terminal connection lost");
                        }
                        break End::Client;
                    }
                    None => break End::Client,
                };
                match inbound(message, &limits, stream).await {
                    Ok(true) => {}
                    Ok(false) => break End::Client,
                    Err((code, reason)) => {
                        limits.audit_rejected(reason);
                        let _ = sender.send(close(code, reason)).await;
                        refused = true;
                        break End::Client;
                    }
                }
            }
        }
    };
    if let End::Client = end {
        // Close the terminal's processes, and give them a moment to go before detaching.
        stream.kill.kill();
        let _ = tokio::time::timeout(KILL_WAIT, async {
            while let Some(output) = stream.output.recv().await {
                if matches!(output, ExecOutput::Exit { .. } | ExecOutput::Failed(_)) {
                    break;
                }
            }
        })
        .await;
    }
    // The terminal ended on its own or was killed: nothing left for the guard to do.
    terminal.0 = None;
    if refused {
        // The rest of what the client was sending (the remainder of a 2 MiB message, say) is
        // still arriving: the connection is read to its end before it closes, or the client
        // would get a reset instead of our close code (see `server::DrainOnClose`).
        if let Some(drain) = &limits.drain {
            drain.request();
        }
    }
    let _ = sender.close().await;
}

/// Handles one inbound message: `Ok(false)` when the client closed, `Err` to close with a code.
async fn inbound(
    message: Message,
    limits: &Limits,
    stream: &ExecStream,
) -> Result<bool, (u16, &'static str)> {
    let size = match &message {
        Message::Binary(bytes) => bytes.len(),
        Message::Text(text) => text.len(),
        _ => 0,
    };
    if size > limits.max_message {
        tracing::warn!(ip = ?limits.caller.ip, size, limit = limits.max_message, "terminal closed: message too big");
        return Err((CLOSE_TOO_BIG, "message too big"));
    }
    match message {
        Message::Binary(bytes) => {
            if limits.filter {
                if let Some(what) = escape_sequence(&bytes) {
                    tracing::warn!(ip = ?limits.caller.ip, sequence = what, "terminal closed: rejected input");
                    return Err((CLOSE_POLICY, "escape sequence rejected"));
                }
            }
            let _ = stream.input.send(ExecInput::Stdin(bytes)).await;
        }
        Message::Text(text) => match serde_json::from_str::<TerminalControl>(&text) {
            Ok(TerminalControl::Resize { rows, cols }) => {
                if (1..=1000).contains(&rows) && (1..=1000).contains(&cols) {
                    let _ = stream
                        .input
                        .send(ExecInput::Resize(TtySize { rows, cols }))
                        .await;
                }
            }
            Ok(TerminalControl::Signal { signal }) => match Signal::parse(&signal) {
                Some(signal) => {
                    // As Ctrl-C would: to the terminal's foreground job.
                    let target = SignalTarget::Foreground;
                    let _ = stream
                        .input
                        .send(ExecInput::Signal { signal, target })
                        .await;
                }
                None => tracing::debug!(ip = ?limits.caller.ip, signal, "unknown signal ignored"),
            },
            Err(error) => {
                tracing::warn!(ip = ?limits.caller.ip, %error, "terminal closed: bad control message");
                return Err((CLOSE_POLICY, "bad control message"));
            }
        },
        Message::Close(_) => return Ok(false),
        Message::Ping(_) | Message::Pong(_) => {}
    }
    Ok(true)
}

/// Escape sequences that address the terminal emulator itself rather than the program:
/// OSC, DCS, APC and PM introducers, in their 7-bit (`ESC ]`, `ESC P`, `ESC _`, `ESC ^`) and
/// 8-bit C1 forms (raw, or UTF-8 encoded as `U+0090`, `U+009D`, `U+009E`, `U+009F`).
fn escape_sequence(bytes: &[u8]) -> Option<&'static str> {
    for (i, &byte) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        match (byte, next) {
            (0x1b, Some(b']')) => return Some("OSC"),
            (0x1b, Some(b'P')) => return Some("DCS"),
            (0x1b, Some(b'_')) => return Some("APC"),
            (0x1b, Some(b'^')) => return Some("PM"),
            (0xc2, Some(0x9d)) => return Some("OSC"),
            (0xc2, Some(0x90)) => return Some("DCS"),
            (0xc2, Some(0x9f)) => return Some("APC"),
            (0xc2, Some(0x9e)) => return Some("PM"),
            _ => {}
        }
        let after_lead = i > 0 && bytes[i - 1] == 0xc2;
        if !after_lead {
            match byte {
                0x9d => return Some("OSC"),
                0x90 => return Some("DCS"),
                0x9f => return Some("APC"),
                0x9e => return Some("PM"),
                _ => {}
            }
        }
    }
    None
}

fn parse_query(query: &str) -> Result<TerminalRequest, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
    let mut request = TerminalRequest::default();
    let number = |key: &str, value: &str| -> Result<u16, ApiError> {
        value.parse::<u16>().map_err(|_| {
            ApiError::invalid(format!(
                "{key} must be a number from 1 to 1000, got {value:?}"
            ))
        })
    };
    for (key, value) in pairs {
        match key.as_str() {
            "cmd" => request.cmd.push(value),
            "user" => request.user = Some(value),
            "cwd" => request.cwd = Some(value),
            "rows" => request.rows = Some(number("rows", &value)?),
            "cols" => request.cols = Some(number("cols", &value)?),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {other:?}; use cmd, user, cwd, rows, cols"
                )))
            }
        }
    }
    Ok(request)
}

fn text(event: &TerminalEvent) -> Message {
    Message::Text(
        serde_json::to_string(event)
            .expect("events serialise")
            .into(),
    )
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_aimed_at_the_terminal_are_found() {
        assert_eq!(escape_sequence(b"\x1b]0;title\x07"), Some("OSC"));
        assert_eq!(escape_sequence(b"ls\x1bP1$r"), Some("DCS"));
        assert_eq!(escape_sequence(b"\x1b_x"), Some("APC"));
        assert_eq!(escape_sequence(b"\x1b^x"), Some("PM"));
        assert_eq!(escape_sequence("a\u{9d}b".as_bytes()), Some("OSC"));
        assert_eq!(escape_sequence(&[b'a', 0x9b, 0x9d]), Some("OSC"));
        // Arrow keys, Ctrl-C, plain text and UTF-8 pass.
        assert_eq!(escape_sequence(b"\x1b[A\x1b[B\x03echo hi\r"), None);
        assert_eq!(escape_sequence("héllo ✓".as_bytes()), None);
    }

    #[test]
    fn queries() {
        let request =
            parse_query("cmd=sh&cmd=-c&cmd=echo%20hi&rows=30&cols=100&user=root").unwrap();
        assert_eq!(request.cmd, vec!["sh", "-c", "echo hi"]);
        assert_eq!((request.rows, request.cols), (Some(30), Some(100)));
        assert!(parse_query("rows=big").is_err());
        assert!(parse_query("colour=red").is_err());
    }
}
