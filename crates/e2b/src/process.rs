//! envd's `process.Process`: commands started in a sandbox through lifecycle's exec (or
//! terminal, for a PTY), kept running between calls the way E2B's SDKs expect.
//!
//! A started process belongs to the sandbox, not to the stream that started it: a client that
//! disconnects leaves it running (`Connect` attaches again, `List` shows it), and its exit is
//! kept for [`RETAIN_FOR`] so a late `Connect` still learns its code. `Connect-Timeout-Ms` on
//! `Start` is the process's own deadline: it is killed when it passes (lifecycle's exec
//! timeout, the whole process group), and the stream ends with `deadline_exceeded`.
//!
//! Output goes to whoever is attached, in order, each subscriber's queue bounded: a slow
//! reader slows the process down (its pipes fill), and output while nobody is attached is
//! dropped, as envd does. Bounds: a process holds a place among the commands its user and
//! sandbox may run at once (lifecycle's permit) for its whole life; [`MAX_SUBSCRIBERS`]
//! streams per process; [`MAX_RETAINED`] exits per sandbox.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use connectrpc::{
    ConnectError, ErrorCode, InboundStream, RequestContext, Response, ServiceRequest,
    ServiceResult, ServiceStream,
};
use futures::StreamExt;
use sbx_e2b_proto::process as pb;
use sbx_e2b_proto::process::__buffa::oneof;
use sbx_lifecycle::model::{ExecRequest, Span, TerminalRequest};
use sbx_lifecycle::{Caller, ExecInput, ExecOutput, ExitStatus, Signal, SignalTarget, TtySize};
use tokio::sync::mpsc;

use crate::errors::connect_error;
use crate::{E2b, Target};

/// How long an exit is kept for a late `Connect`.
pub const RETAIN_FOR: Duration = Duration::from_secs(30);
/// Exits kept per sandbox at most (the oldest go first).
pub const MAX_RETAINED: usize = 256;
/// Streams attached to one process at most.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Events queued per attached stream.
const QUEUE: usize = 16;
/// Longest an attached stream may take nothing before it is dropped.
const STALLED: Duration = Duration::from_secs(10);
/// Longest tag of a process.
pub const MAX_TAG_BYTES: usize = 256;
/// Keepalive interval when the client names none (`Keepalive-Ping-Interval`, seconds).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);
/// Longest a command may be given to run by `Connect-Timeout-Ms` (lifecycle's cap).
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The processes of every sandbox, started through envd.
#[derive(Default)]
pub(crate) struct Registry {
    sandboxes: Mutex<HashMap<String, Table>>,
}

#[derive(Default)]
struct Table {
    live: HashMap<u32, Arc<Proc>>,
    exited: VecDeque<Exited>,
}

struct Proc {
    pid: u32,
    tag: Option<String>,
    config: pb::ProcessConfig,
    pty: bool,
    input: mpsc::Sender<ExecInput>,
    /// Its kill, which no queued input holds up.
    kill: sbx_lifecycle::KillSwitch,
    /// Its stdin is a pipe that was not closed yet.
    stdin_open: AtomicBool,
    subscribers: Mutex<Vec<mpsc::Sender<Event>>>,
}

#[derive(Clone)]
enum Event {
    Data(oneof::process_event::data_event::Output),
    End(End),
}

#[derive(Clone)]
struct End {
    event: pb::process_event::EndEvent,
    timed_out: bool,
}

struct Exited {
    pid: u32,
    tag: Option<String>,
    end: End,
    at: Instant,
}

/// Which process a call names.
enum Selector {
    Pid(u32),
    Tag(String),
}

impl Registry {
    fn with_table<T>(&self, sandbox: &str, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut sandboxes = self
            .sandboxes
            .lock()
            .expect("process registry is never poisoned");
        let table = sandboxes.entry(sandbox.to_owned()).or_default();
        let now = Instant::now();
        while table
            .exited
            .front()
            .is_some_and(|e| now.duration_since(e.at) > RETAIN_FOR)
        {
            table.exited.pop_front();
        }
        let out = f(table);
        if table.live.is_empty() && table.exited.is_empty() {
            sandboxes.remove(sandbox);
        }
        out
    }

    fn find(&self, sandbox: &str, selector: &Selector) -> Option<Arc<Proc>> {
        self.with_table(sandbox, |table| {
            table
                .live
                .values()
                .find(|p| match selector {
                    Selector::Pid(pid) => p.pid == *pid,
                    Selector::Tag(tag) => p.tag.as_deref() == Some(tag),
                })
                .cloned()
        })
    }

    fn find_exited(&self, sandbox: &str, selector: &Selector) -> Option<(u32, End)> {
        self.with_table(sandbox, |table| {
            table
                .exited
                .iter()
                .rev()
                .find(|e| match selector {
                    Selector::Pid(pid) => e.pid == *pid,
                    Selector::Tag(tag) => e.tag.as_deref() == Some(tag),
                })
                .map(|e| (e.pid, e.end.clone()))
        })
    }

    fn insert(&self, sandbox: &str, proc: Arc<Proc>) {
        self.with_table(sandbox, |table| {
            // A pid (or tag) now names this process only.
            table
                .exited
                .retain(|e| e.pid != proc.pid && (proc.tag.is_none() || e.tag != proc.tag));
            table.live.insert(proc.pid, proc);
        });
    }

    fn finish(&self, sandbox: &str, proc: &Proc, end: Option<End>) {
        // A sandbox forgotten meanwhile (destroyed) is not brought back.
        if !self
            .sandboxes
            .lock()
            .expect("process registry is never poisoned")
            .contains_key(sandbox)
        {
            return;
        }
        self.with_table(sandbox, |table| {
            if table
                .live
                .get(&proc.pid)
                .is_some_and(|p| std::ptr::eq(p.as_ref(), proc))
            {
                table.live.remove(&proc.pid);
            }
            if let Some(end) = end {
                if table.exited.len() >= MAX_RETAINED {
                    table.exited.pop_front();
                }
                table.exited.push_back(Exited {
                    pid: proc.pid,
                    tag: proc.tag.clone(),
                    end,
                    at: Instant::now(),
                });
            }
        });
    }

    fn list(&self, sandbox: &str) -> Vec<Arc<Proc>> {
        self.with_table(sandbox, |table| table.live.values().cloned().collect())
    }

    /// The sandboxes with processes (or exits) kept.
    pub(crate) fn sandboxes(&self) -> Vec<String> {
        self.sandboxes
            .lock()
            .expect("process registry is never poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets a sandbox's processes (it was destroyed: their streams end on their own).
    pub(crate) fn forget(&self, sandbox: &str) {
        self.sandboxes
            .lock()
            .expect("process registry is never poisoned")
            .remove(sandbox);
    }
}

impl Proc {
    /// A new stream attached to the process's output.
    fn subscribe(&self) -> Result<mpsc::Receiver<Event>, ConnectError> {
        let mut subscribers = self.subscribers.lock().expect("never poisoned");
        subscribers.retain(|s| !s.is_closed());
        if subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(ConnectError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "process {} already has {MAX_SUBSCRIBERS} streams attached",
                    self.pid
                ),
            ));
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        subscribers.push(sender);
        Ok(receiver)
    }

    /// Sends `event` to every attached stream, waiting for room in each (back-pressure).
    async fn deliver(&self, event: Event) {
        let subscribers: Vec<mpsc::Sender<Event>> =
            self.subscribers.lock().expect("never poisoned").clone();
        let mut gone = false;
        for subscriber in &subscribers {
            // A stream that takes nothing for this long is dropped: it may not hold the
            // process (and its other streams, its deadline, its exit) back for longer.
            let sent = tokio::time::timeout(STALLED, subscriber.send(event.clone())).await;
            if !matches!(sent, Ok(Ok(()))) {
                gone = true;
                self.subscribers
                    .lock()
                    .expect("never poisoned")
                    .retain(|s| !s.same_channel(subscriber));
            }
        }
        if gone {
            self.subscribers
                .lock()
                .expect("never poisoned")
                .retain(|s| !s.is_closed());
        }
    }

    async fn send(&self, input: ExecInput) -> Result<(), ConnectError> {
        if input == ExecInput::Kill {
            self.kill.kill();
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(10), self.input.send(input)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ConnectError::new(
                ErrorCode::NotFound,
                format!("process with pid {} not found", self.pid),
            )),
            Err(_) => Err(ConnectError::new(
                ErrorCode::Unavailable,
                format!("process {} does not take input", self.pid),
            )),
        }
    }
}

/// The end event of an exit, in the words Go's `os.ProcessState` uses (which envd reports).
fn end_of(status: ExitStatus, timed_out: bool) -> End {
    let event = match status {
        ExitStatus::Code(code) => {
            let text = format!("exit status {code}");
            pb::process_event::EndEvent {
                exit_code: code,
                exited: true,
                error: (code != 0).then(|| text.clone()),
                status: text,
                ..Default::default()
            }
        }
        ExitStatus::Signal(signal) => {
            let text = format!("signal: {}", signal_words(signal));
            pb::process_event::EndEvent {
                exit_code: -1,
                exited: false,
                error: Some(text.clone()),
                status: text,
                ..Default::default()
            }
        }
    };
    End { event, timed_out }
}

fn signal_words(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        5 => "trace/breakpoint trap".into(),
        6 => "aborted".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        9 => "killed".into(),
        10 => "user defined signal 1".into(),
        11 => "segmentation fault".into(),
        12 => "user defined signal 2".into(),
        13 => "broken pipe".into(),
        14 => "alarm clock".into(),
        15 => "terminated".into(),
        other => format!("signal {other}"),
    }
}

/// The sandbox and caller of an envd call (set by the API layer).
pub(crate) fn context(ctx: &RequestContext) -> Result<(Target, Caller), ConnectError> {
    let target = ctx.extensions().get::<Target>().cloned();
    let caller = ctx.extensions().get::<Caller>().cloned();
    match (target, caller) {
        (Some(target), Some(caller)) => Ok((target, caller)),
        _ => Err(ConnectError::new(
            ErrorCode::Unauthenticated,
            "the sandbox's access token is required (X-Access-Token)",
        )),
    }
}

/// The sandbox and caller of an envd call, once the caller is known to reach the sandbox (for
/// calls that touch only what envd keeps: lifecycle checks the others itself).
pub(crate) fn reached(e2b: &E2b, ctx: &RequestContext) -> Result<(Target, Caller), ConnectError> {
    let (target, caller) = context(ctx)?;
    e2b.service()
        .get(&caller, &target.sandbox)
        .map_err(connect_error)?;
    Ok((target, caller))
}

/// The user a call acts as: `Authorization: Basic base64("<name>:")`, else the sandbox's user.
pub(crate) fn user_of(ctx: &RequestContext) -> Result<Option<String>, ConnectError> {
    use base64::Engine as _;
    let Some(value) = ctx.header("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .unwrap_or_default();
    let name = decoded.split(':').next().unwrap_or_default();
    user_named(name)
}

/// A user E2B names, as sbx knows users: `user`, `root`, or a uid. None named is E2B's
/// default, `user` (whatever an image template's `User`: the home and files E2B clients
/// expect are `user`'s).
pub(crate) fn user_named(name: &str) -> Result<Option<String>, ConnectError> {
    match name {
        "" => Ok(Some("user".to_owned())),
        "user" | "root" => Ok(Some(name.to_owned())),
        uid if uid.len() <= 5 && uid.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(uid.to_owned()))
        }
        other => Err(ConnectError::new(
            ErrorCode::Unauthenticated,
            format!(
                "invalid username: '{}' (sbx sandboxes have \"user\" and \"root\")",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// The home directory of a user of an sbx sandbox.
pub(crate) fn home_of(user: Option<&str>) -> &'static str {
    match user {
        Some("root") | Some("0") => "/root",
        _ => "/home/user",
    }
}

/// An absolute path inside the sandbox: relative ones (and `~`) from the user's home.
pub(crate) fn absolute(path: &str, user: Option<&str>) -> String {
    let home = home_of(user);
    if path.is_empty() || path == "~" {
        return home.to_owned();
    }
    if let Some(rest) = path.strip_prefix("~/") {
        return format!("{home}/{rest}");
    }
    if path.starts_with('/') {
        return path.to_owned();
    }
    format!("{home}/{path}")
}

pub(crate) fn keepalive_of(ctx: &RequestContext) -> Duration {
    ctx.header("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_KEEPALIVE, |s| Duration::from_secs(s.min(3600)))
}

fn selector_of(selector: Option<&pb::ProcessSelector>) -> Result<Selector, ConnectError> {
    match selector.and_then(|s| s.selector.clone()) {
        Some(oneof::process_selector::Selector::Pid(pid)) => Ok(Selector::Pid(pid)),
        Some(oneof::process_selector::Selector::Tag(tag)) => Ok(Selector::Tag(tag)),
        None => Err(ConnectError::new(
            ErrorCode::InvalidArgument,
            "the request names no process (pid or tag)",
        )),
    }
}

fn not_found(selector: &Selector) -> ConnectError {
    let message = match selector {
        Selector::Pid(pid) => format!("process with pid {pid} not found"),
        Selector::Tag(tag) => format!("process with tag {tag} not found"),
    };
    ConnectError::new(ErrorCode::NotFound, message)
}

fn event_of(event: impl Into<oneof::process_event::Event>) -> pb::ProcessEvent {
    pb::ProcessEvent {
        event: Some(event.into()),
        ..Default::default()
    }
}

/// What a `Start` or `Connect` stream sends: the start event, then output and keepalives, then
/// the end (or the error that ended the process's stream).
fn events<R: Send + 'static>(
    pid: u32,
    mut receiver: Option<mpsc::Receiver<Event>>,
    ended: Option<End>,
    keepalive: Duration,
    deadline: Option<Instant>,
    wrap: fn(pb::ProcessEvent) -> R,
) -> impl futures::Stream<Item = Result<R, ConnectError>> + Send + 'static {
    let start = futures::stream::once(async move {
        Ok(wrap(event_of(pb::process_event::StartEvent {
            pid,
            ..Default::default()
        })))
    });
    let rest = futures::stream::unfold(
        (receiver.take(), ended, false),
        move |(mut receiver, mut ended, done)| async move {
            if done {
                return None;
            }
            let end_of_stream = |end: End| -> Result<R, ConnectError> {
                if end.timed_out {
                    Err(ConnectError::new(
                        ErrorCode::DeadlineExceeded,
                        "the command's timeout passed: it was killed",
                    ))
                } else {
                    Ok(wrap(event_of(end.event)))
                }
            };
            if let Some(end) = ended.take() {
                return Some((end_of_stream(end), (None, None, true)));
            }
            let rx = receiver.as_mut()?;
            let deadline = deadline.map(tokio::time::Instant::from_std);
            let next = tokio::select! {
                event = rx.recv() => Some(event),
                () = tokio::time::sleep(keepalive) => None,
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    return Some((
                        Err(ConnectError::new(ErrorCode::DeadlineExceeded, "the stream's timeout passed")),
                        (None, None, true),
                    ));
                }
            };
            let item = match next {
                None => Ok(wrap(event_of(pb::process_event::KeepAlive::default()))),
                Some(Some(Event::Data(output))) => {
                    Ok(wrap(event_of(pb::process_event::DataEvent {
                        output: Some(output),
                        ..Default::default()
                    })))
                }
                Some(Some(Event::End(end))) => {
                    return Some((end_of_stream(end), (None, None, true)))
                }
                Some(None) => {
                    return Some((
                        Err(ConnectError::new(
                            ErrorCode::Unavailable,
                            "the sandbox stopped while the process ran: it was not found",
                        )),
                        (None, None, true),
                    ))
                }
            };
            Some((item, (receiver, None, false)))
        },
    );
    start.chain(rest)
}

/// `process.Process`, for the sandbox each call is addressed to.
pub struct ProcessService(pub(crate) E2b);

impl ProcessService {
    fn registry(&self) -> &Registry {
        &self.0.inner.processes
    }

    /// The live process a call names, checking the caller may reach the sandbox.
    fn named(
        &self,
        ctx: &RequestContext,
        selector: Option<&pb::ProcessSelector>,
    ) -> Result<(Target, Arc<Proc>), ConnectError> {
        let (target, _) = reached(&self.0, ctx)?;
        let selector = selector_of(selector)?;
        let proc = self
            .registry()
            .find(&target.sandbox, &selector)
            .ok_or_else(|| not_found(&selector))?;
        Ok((target, proc))
    }

    async fn start_process(
        &self,
        ctx: RequestContext,
        request: pb::StartRequest,
    ) -> Result<(u32, mpsc::Receiver<Event>), ConnectError> {
        let (target, caller) = context(&ctx)?;
        let user = user_of(&ctx)?;
        let config = request.process.as_option().cloned().unwrap_or_default();
        if config.cmd.is_empty() {
            return Err(ConnectError::new(
                ErrorCode::InvalidArgument,
                "process.cmd is empty",
            ));
        }
        if request
            .tag
            .as_ref()
            .is_some_and(|t| t.len() > MAX_TAG_BYTES)
        {
            return Err(ConnectError::new(
                ErrorCode::InvalidArgument,
                format!("a process's tag is at most {MAX_TAG_BYTES} bytes"),
            ));
        }
        let mut cmd = vec![config.cmd.clone()];
        cmd.extend(config.args.iter().cloned());
        let env = config
            .envs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cwd = config
            .cwd
            .as_deref()
            .map(|cwd| absolute(cwd, user.as_deref()));
        let timeout = ctx
            .time_remaining()
            .map(|t| t.clamp(Duration::from_millis(1), MAX_TIMEOUT));
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let pty = request.pty.as_option().map(|pty| {
            let size = pty.size.as_option().cloned().unwrap_or_default();
            (
                size.rows.clamp(1, 1000) as u16,
                size.cols.clamp(1, 1000) as u16,
            )
        });
        let service = self.0.service();
        let stream = match pty {
            Some((rows, cols)) => service
                .terminal(
                    &caller,
                    &target.sandbox,
                    &TerminalRequest {
                        cmd,
                        env,
                        user: user.clone(),
                        cwd,
                        rows: Some(rows),
                        cols: Some(cols),
                    },
                )
                .await
                .map_err(connect_error)?,
            None => service
                .exec(
                    &caller,
                    &target.sandbox,
                    ExecRequest {
                        cmd,
                        stdin: None,
                        stdin_open: request.stdin != Some(false),
                        env,
                        cwd,
                        user: user.clone(),
                        timeout: timeout.map(Span::new),
                    },
                )
                .await
                .map_err(connect_error)?,
        };
        let proc = Arc::new(Proc {
            pid: stream.pid,
            tag: request.tag.clone(),
            config,
            pty: pty.is_some(),
            input: stream.input.clone(),
            kill: stream.kill.clone(),
            stdin_open: AtomicBool::new(pty.is_none() && request.stdin != Some(false)),
            subscribers: Mutex::new(Vec::new()),
        });
        let receiver = proc.subscribe()?;
        self.registry().insert(&target.sandbox, proc.clone());
        let e2b = self.0.clone();
        // A terminal has no exec timeout of lifecycle's: its deadline is kept here.
        let pty_deadline = deadline.filter(|_| pty.is_some());
        tokio::spawn(pump(
            e2b,
            target.sandbox,
            proc.clone(),
            stream,
            pty_deadline,
        ));
        Ok((proc.pid, receiver))
    }
}

/// Carries one process's output to its subscribers until it ends, then records its exit.
/// Holds the process's place among those running (lifecycle's permit) until then.
async fn pump(
    e2b: E2b,
    sandbox: String,
    proc: Arc<Proc>,
    mut stream: sbx_lifecycle::ExecStream,
    pty_deadline: Option<tokio::time::Instant>,
) {
    let mut killed = false;
    let end = loop {
        let output = tokio::select! {
            output = stream.output.recv() => output,
            () = async {
                match pty_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if !killed => {
                killed = true;
                proc.kill.kill();
                continue;
            }
        };
        let data = |bytes: Bytes| {
            if proc.pty {
                oneof::process_event::data_event::Output::Pty(bytes.to_vec())
            } else {
                oneof::process_event::data_event::Output::Stdout(bytes.to_vec())
            }
        };
        match output {
            Some(ExecOutput::Stdout(bytes)) => proc.deliver(Event::Data(data(bytes))).await,
            Some(ExecOutput::Stderr(bytes)) => {
                proc.deliver(Event::Data(
                    oneof::process_event::data_event::Output::Stderr(bytes.to_vec()),
                ))
                .await
            }
            Some(ExecOutput::Exit {
                status, timed_out, ..
            }) => break Some(end_of(status, timed_out || killed)),
            Some(ExecOutput::Failed(_)) | None => break None,
        }
    };
    e2b.inner.processes.finish(&sandbox, &proc, end.clone());
    if let Some(end) = end {
        proc.deliver(Event::End(end)).await;
    }
    proc.subscribers.lock().expect("never poisoned").clear();
    drop(stream);
}

impl pb::Process for ProcessService {
    async fn list(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, pb::ListRequest>,
    ) -> ServiceResult<pb::ListResponse> {
        let (target, _) = reached(&self.0, &ctx)?;
        let mut processes: Vec<pb::ProcessInfo> = self
            .registry()
            .list(&target.sandbox)
            .iter()
            .map(|p| pb::ProcessInfo {
                config: p.config.clone().into(),
                pid: p.pid,
                tag: p.tag.clone(),
                ..Default::default()
            })
            .collect();
        processes.sort_by_key(|p| p.pid);
        Response::ok(pb::ListResponse {
            processes,
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ConnectRequest>,
    ) -> ServiceResult<ServiceStream<pb::ConnectResponse>> {
        let request = request.to_owned_message();
        let (target, _) = reached(&self.0, &ctx)?;
        let selector = selector_of(request.process.as_option())?;
        let keepalive = keepalive_of(&ctx);
        let wrap = |event: pb::ProcessEvent| pb::ConnectResponse {
            event: event.into(),
            ..Default::default()
        };
        if let Some(proc) = self.registry().find(&target.sandbox, &selector) {
            let receiver = proc.subscribe()?;
            return Response::stream_ok(events(
                proc.pid,
                Some(receiver),
                None,
                keepalive,
                ctx.deadline(),
                wrap,
            ));
        }
        match self.registry().find_exited(&target.sandbox, &selector) {
            Some((pid, end)) => {
                Response::stream_ok(events(pid, None, Some(end), keepalive, None, wrap))
            }
            None => Err(not_found(&selector)),
        }
    }

    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::StartRequest>,
    ) -> ServiceResult<ServiceStream<pb::StartResponse>> {
        let request = request.to_owned_message();
        let keepalive = keepalive_of(&ctx);
        let (pid, receiver) = self.start_process(ctx, request).await?;
        let wrap = |event: pb::ProcessEvent| pb::StartResponse {
            event: event.into(),
            ..Default::default()
        };
        Response::stream_ok(events(pid, Some(receiver), None, keepalive, None, wrap))
    }

    async fn update(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::UpdateRequest>,
    ) -> ServiceResult<pb::UpdateResponse> {
        let request = request.to_owned_message();
        let (_, proc) = self.named(&ctx, request.process.as_option())?;
        if let Some(pty) = request.pty.as_option() {
            if !proc.pty {
                return Err(ConnectError::new(
                    ErrorCode::Internal,
                    "error resizing tty: tty not assigned to process",
                ));
            }
            let size = pty.size.as_option().cloned().unwrap_or_default();
            proc.send(ExecInput::Resize(TtySize {
                rows: size.rows.clamp(1, 1000) as u16,
                cols: size.cols.clamp(1, 1000) as u16,
            }))
            .await?;
        }
        Response::ok(pb::UpdateResponse::default())
    }

    async fn stream_input(
        &self,
        ctx: RequestContext,
        mut requests: InboundStream<pb::StreamInputRequest>,
    ) -> ServiceResult<pb::StreamInputResponse> {
        use oneof::stream_input_request::Event as In;
        let mut proc: Option<Arc<Proc>> = None;
        while let Some(message) = requests.next().await {
            let message = message?.to_owned_message();
            match message.event {
                Some(In::Start(start)) => {
                    proc = Some(self.named(&ctx, start.process.as_option())?.1);
                }
                Some(In::Data(data)) => {
                    let Some(proc) = &proc else {
                        return Err(ConnectError::new(
                            ErrorCode::FailedPrecondition,
                            "input came before the start message naming its process",
                        ));
                    };
                    write_input(proc, data.input.as_option()).await?;
                }
                Some(In::Keepalive(_)) | None => {}
            }
        }
        Response::ok(pb::StreamInputResponse::default())
    }

    async fn send_input(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SendInputRequest>,
    ) -> ServiceResult<pb::SendInputResponse> {
        let request = request.to_owned_message();
        let (_, proc) = self.named(&ctx, request.process.as_option())?;
        write_input(&proc, request.input.as_option()).await?;
        Response::ok(pb::SendInputResponse::default())
    }

    async fn send_signal(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::SendSignalRequest>,
    ) -> ServiceResult<pb::SendSignalResponse> {
        let request = request.to_owned_message();
        let (_, proc) = self.named(&ctx, request.process.as_option())?;
        let input = match request.signal.as_known() {
            // The whole process group, as a timeout would: what it started goes too.
            Some(pb::Signal::SIGNAL_SIGKILL) => ExecInput::Kill,
            Some(pb::Signal::SIGNAL_SIGTERM) => ExecInput::Signal {
                signal: Signal::Terminate,
                target: SignalTarget::Process,
            },
            _ => {
                return Err(ConnectError::new(
                    ErrorCode::Unimplemented,
                    "invalid signal: SIGNAL_SIGTERM and SIGNAL_SIGKILL are the signals sent",
                ))
            }
        };
        proc.send(input).await?;
        Response::ok(pb::SendSignalResponse::default())
    }

    async fn close_stdin(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CloseStdinRequest>,
    ) -> ServiceResult<pb::CloseStdinResponse> {
        let request = request.to_owned_message();
        let (_, proc) = self.named(&ctx, request.process.as_option())?;
        if proc.pty {
            return Err(ConnectError::new(
                ErrorCode::Unknown,
                "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead",
            ));
        }
        if proc.stdin_open.load(Ordering::SeqCst) {
            proc.send(ExecInput::CloseStdin).await?;
            proc.stdin_open.store(false, Ordering::SeqCst);
        }
        Response::ok(pb::CloseStdinResponse::default())
    }
}

async fn write_input(proc: &Proc, input: Option<&pb::ProcessInput>) -> Result<(), ConnectError> {
    match input.and_then(|i| i.input.clone()) {
        Some(oneof::process_input::Input::Stdin(bytes)) => {
            if proc.pty {
                return Err(ConnectError::new(
                    ErrorCode::Internal,
                    "error writing to stdin: tty assigned to process — input should be written to the pty, not the stdin",
                ));
            }
            if !proc.stdin_open.load(Ordering::SeqCst) {
                return Err(ConnectError::new(
                    ErrorCode::Internal,
                    "error writing to stdin: stdin not enabled or closed",
                ));
            }
            proc.send(ExecInput::Stdin(Bytes::from(bytes))).await
        }
        Some(oneof::process_input::Input::Pty(bytes)) => {
            if !proc.pty {
                return Err(ConnectError::new(
                    ErrorCode::Internal,
                    "error writing to tty: tty not assigned to process — input should be written to the stdin, not the pty",
                ));
            }
            proc.send(ExecInput::Stdin(Bytes::from(bytes))).await
        }
        None => Err(ConnectError::new(
            ErrorCode::Unimplemented,
            "the input is neither stdin nor pty",
        )),
    }
}
