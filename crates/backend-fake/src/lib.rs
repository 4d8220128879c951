//! A backend with nothing behind it: sandboxes are records in memory and commands are a handful
//! of built-in programs (see [`program`]). Deterministic, instant, needs no privilege — and
//! every call can be made to hang, slow down, fail or crash on purpose ([`Fault`]), which no
//! real engine does on demand.
//!
//! Owns: the fake [`Engine`] (what "the host" holds) and the [`FakeBackend`] over it.
//! Must never: be the backend of a production profile; it isolates nothing because it runs
//! nothing.
//!
//! Several backend instances can share one engine: a second instance over the same engine is
//! the daemon restarted, which finds the first one's sandboxes (orphans or adoptable).
//! Everything the engine holds is a "host trace" for leak checks ([`Engine::traces`]).

mod program;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sbx_backend::{
    Backend, BackendError, Bounds, Capabilities, ExecSession, ExecSpec, Handle, Health, Observed,
    PauseResume, SandboxId, SandboxSpec, SharedResource, StdinMode, Storage, TerminalSpec,
    Terminals,
};
use tokio::sync::watch;

const KIND: &str = "fake";

/// A backend call, for faults and call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Start,
    Health,
    HasTemplate,
    Create,
    Inspect,
    Adopt,
    ListOwned,
    Destroy,
    Exec,
    OpenTerminal,
    WaitExit,
    Pause,
    Resume,
}

/// What a call does instead of (or before) its work.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Never answers (lifecycle's deadline must cut it off). A create that hangs has made its
    /// trace already, as a real engine cut off half-way would have.
    Hang,
    /// Answers after this long.
    Delay(Duration),
    /// Answers with this error.
    Fail(Failure),
    /// Exec only: the sandbox dies as the command starts.
    Crash,
}

/// Which error a [`Fault::Fail`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    Unavailable,
    Capacity(SharedResource),
    Timeout,
    Other,
}

impl Failure {
    fn error(self, op: Op) -> BackendError {
        match self {
            Failure::NotFound => BackendError::gone(),
            Failure::Unavailable => BackendError::unavailable(format!("injected into {op:?}")),
            Failure::Capacity(resource) => BackendError::Capacity {
                resource,
                detail: format!("injected into {op:?}"),
            },
            Failure::Timeout => BackendError::Timeout {
                operation: "fake call",
                after: Duration::from_secs(1),
            },
            Failure::Other => BackendError::other(format!("injected fault in {op:?}")),
        }
    }
}

struct Rule {
    op: Op,
    fault: Fault,
    /// How many more calls it applies to (`None`: every one).
    remaining: Option<u32>,
}

/// Everything the fake "host" holds: sandboxes, templates, injected faults, call counts.
pub struct Engine {
    state: Mutex<State>,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<HashMap<Op, u64>>,
    next_pid: AtomicU64,
    bounds: Mutex<Bounds>,
    storage: Mutex<Option<Storage>>,
}

#[derive(Default)]
struct State {
    templates: BTreeSet<String>,
    sandboxes: HashMap<SandboxId, Sandbox>,
    /// Ids being made right now (not orphans).
    building: BTreeSet<SandboxId>,
    generation: u64,
}

#[derive(Clone)]
struct Sandbox {
    /// Which making of this id it is (a create again replaces the instance).
    generation: u64,
    /// `true` while its main process lives.
    alive: Arc<watch::Sender<bool>>,
    /// Commands running in it now.
    running: Arc<AtomicU64>,
    /// `true` while it is paused.
    frozen: Arc<watch::Sender<bool>>,
}

impl Default for Engine {
    fn default() -> Self {
        let state = State {
            templates: BTreeSet::from(["host".to_owned()]),
            ..State::default()
        };
        Engine {
            state: Mutex::new(state),
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            next_pid: AtomicU64::new(2),
            bounds: Mutex::new(Bounds {
                memory_bytes: 8 << 30,
                cpu_millis: 4000,
                host_tasks: None,
                disk_bytes: None,
                max_command_bytes: 128 * 1024,
                tasks_per_sandbox: 0,
            }),
            storage: Mutex::new(None),
        }
    }
}

impl Engine {
    pub fn new() -> Arc<Engine> {
        Arc::new(Engine::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake engine is never poisoned")
    }

    /// Makes `fault` happen on the next `times` calls of `op` (`None`: on every call).
    pub fn inject(&self, op: Op, fault: Fault, times: Option<u32>) {
        self.rules.lock().expect("rules").push(Rule {
            op,
            fault,
            remaining: times,
        });
    }

    /// Removes every injected fault.
    pub fn heal(&self) {
        self.rules.lock().expect("rules").clear();
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls
            .lock()
            .expect("calls")
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// What one sandbox may get at most (and whether its sandboxes share the host's tasks).
    pub fn set_bounds(&self, bounds: Bounds) {
        *self.bounds.lock().expect("bounds") = bounds;
    }

    /// The storage reported to admission (`None`: not the host's concern).
    pub fn set_storage(&self, storage: Option<Storage>) {
        *self.storage.lock().expect("storage") = storage;
    }

    pub fn add_template(&self, name: &str) {
        self.state().templates.insert(name.to_owned());
    }

    /// The sandbox's main process dies (killed from the host, out of memory, …).
    pub fn kill(&self, id: &SandboxId) {
        if let Some(sandbox) = self.state().sandboxes.get(id) {
            sandbox.alive.send_replace(false);
        }
    }

    /// Every sandbox the engine holds a trace of, alive or not.
    pub fn traces(&self) -> Vec<SandboxId> {
        let mut ids: Vec<SandboxId> = self.state().sandboxes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Counts the call and returns the fault it gets, if any.
    fn fault_for(&self, op: Op) -> Option<Fault> {
        *self.calls.lock().expect("calls").entry(op).or_default() += 1;
        let mut rules = self.rules.lock().expect("rules");
        let index = rules.iter().position(|rule| rule.op == op)?;
        let fault = rules[index].fault.clone();
        if let Some(remaining) = &mut rules[index].remaining {
            *remaining -= 1;
            if *remaining == 0 {
                rules.remove(index);
            }
        }
        Some(fault)
    }

    /// Applies `fault` (when it is not [`Fault::Crash`], which the call handles itself).
    async fn suffer(&self, op: Op, fault: &Option<Fault>) -> Result<(), BackendError> {
        match fault {
            None | Some(Fault::Crash) => Ok(()),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(*delay).await;
                Ok(())
            }
            Some(Fault::Fail(failure)) => Err(failure.error(op)),
        }
    }

    /// The fault for `op`, applied now.
    async fn call(&self, op: Op) -> Result<Option<Fault>, BackendError> {
        let fault = self.fault_for(op);
        self.suffer(op, &fault).await?;
        Ok(fault)
    }

    fn sandbox(&self, handle: &FakeHandle) -> Option<Sandbox> {
        self.state()
            .sandboxes
            .get(&handle.id)
            .filter(|s| s.generation == handle.generation)
            .cloned()
    }
}

/// What the fake backend stores in a [`Handle`].
struct FakeHandle {
    id: SandboxId,
    generation: u64,
}

impl FakeHandle {
    fn parse(handle: &Handle, kind: &str) -> Result<FakeHandle, BackendError> {
        if handle.backend != kind {
            return Err(BackendError::other(format!(
                "handle of backend {:?} given to the fake backend",
                handle.backend
            )));
        }
        let id = handle.data["id"]
            .as_str()
            .and_then(|id| SandboxId::parse(id).ok())
            .ok_or_else(|| BackendError::other("malformed fake handle"))?;
        let generation = handle.data["generation"]
            .as_u64()
            .ok_or_else(|| BackendError::other("malformed fake handle"))?;
        Ok(FakeHandle { id, generation })
    }
}

/// The fake backend: one daemon's view of an [`Engine`].
pub struct FakeBackend {
    engine: Arc<Engine>,
    kind: &'static str,
    terminals: bool,
}

impl Default for FakeBackend {
    fn default() -> Self {
        FakeBackend::new()
    }
}

impl FakeBackend {
    /// A backend over an engine of its own.
    pub fn new() -> FakeBackend {
        FakeBackend::on(Engine::new())
    }

    /// A backend over `engine` (a second one is the daemon restarted).
    pub fn on(engine: Arc<Engine>) -> FakeBackend {
        FakeBackend {
            engine,
            kind: KIND,
            terminals: true,
        }
    }

    /// Under another kind name: two fakes in one daemon, as two different engines would be.
    pub fn with_kind(mut self, kind: &'static str) -> FakeBackend {
        self.kind = kind;
        self
    }

    /// Without terminals: every capability this backend reports is then one it lacks.
    pub fn without_terminals(mut self) -> FakeBackend {
        self.terminals = false;
        self
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    async fn start_program(
        &self,
        handle: &Handle,
        op: Op,
        argv: Vec<String>,
        stdin: bool,
        terminal: bool,
    ) -> Result<ExecSession, BackendError> {
        let fault = self.engine.call(op).await?;
        let fake = FakeHandle::parse(handle, self.kind)?;
        let sandbox = self.engine.sandbox(&fake).ok_or_else(BackendError::gone)?;
        if !*sandbox.alive.borrow() {
            return Err(BackendError::gone());
        }
        let program = program::Program::parse(&argv, terminal)?;
        if matches!(fault, Some(Fault::Crash)) {
            sandbox.alive.send_replace(false);
        }
        let pid = self.engine.next_pid.fetch_add(1, Ordering::Relaxed) as u32;
        Ok(program::spawn(
            program,
            pid,
            stdin,
            sandbox.alive.subscribe(),
            sandbox.frozen.subscribe(),
            sandbox.running.clone(),
        ))
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn isolation(&self) -> &'static str {
        "none"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stdin: true,
            terminals: self.terminals,
            pause: true,
            adopt: true,
            ..Capabilities::default()
        }
    }

    fn bounds(&self) -> Bounds {
        *self.engine.bounds.lock().expect("bounds")
    }

    async fn start(&self) -> Result<(), BackendError> {
        self.engine.call(Op::Start).await.map(|_| ())
    }

    async fn health(&self) -> Health {
        match self.engine.call(Op::Health).await {
            Ok(_) => Health {
                healthy: true,
                detail: "in-memory fake (runs nothing, isolates nothing)".into(),
            },
            Err(e) => Health {
                healthy: false,
                detail: e.to_string(),
            },
        }
    }

    async fn has_template(&self, name: &str) -> Result<bool, BackendError> {
        self.engine.call(Op::HasTemplate).await?;
        Ok(self.engine.state().templates.contains(name))
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        let engine = &self.engine;
        let fault = engine.fault_for(Op::Create);
        if !engine.state().templates.contains(&spec.template) {
            return Err(BackendError::TemplateNotFound(spec.template.clone()));
        }
        let generation = {
            let mut state = engine.state();
            // Remains of an earlier attempt with this id go first.
            if let Some(old) = state.sandboxes.remove(&spec.id) {
                old.alive.send_replace(false);
            }
            state.generation += 1;
            let generation = state.generation;
            state.building.insert(spec.id.clone());
            state.sandboxes.insert(
                spec.id.clone(),
                Sandbox {
                    generation,
                    alive: Arc::new(watch::Sender::new(true)),
                    running: Arc::new(AtomicU64::new(0)),
                    frozen: Arc::new(watch::Sender::new(false)),
                },
            );
            generation
        };
        let id = spec.id.clone();
        // Whatever happens below (a failure, a hang cut off by a deadline), it is built no more.
        let _built = Built {
            engine,
            id: id.clone(),
        };
        if let Err(e) = engine.suffer(Op::Create, &fault).await {
            // A failed create leaves nothing behind.
            engine.state().sandboxes.remove(&id);
            return Err(e);
        }
        Ok(Handle {
            backend: self.kind.into(),
            data: serde_json::json!({ "id": id.as_str(), "generation": generation }),
        })
    }

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError> {
        self.engine.call(Op::Inspect).await?;
        let fake = FakeHandle::parse(handle, self.kind)?;
        let observed = match self.engine.sandbox(&fake) {
            Some(sandbox) => {
                let alive = *sandbox.alive.borrow();
                Observed {
                    alive,
                    main_pid: None,
                    memory_bytes: Some(0),
                    cpu_usec: Some(0),
                    pids: Some(u64::from(alive) + sandbox.running.load(Ordering::SeqCst)),
                    frozen: Some(*sandbox.frozen.borrow()),
                }
            }
            None => Observed::default(),
        };
        Ok(observed)
    }

    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError> {
        self.engine.call(Op::Adopt).await?;
        let fake = FakeHandle::parse(handle, self.kind)?;
        match self.engine.sandbox(&fake) {
            Some(sandbox) if *sandbox.alive.borrow() => Ok(()),
            _ => Err(BackendError::gone()),
        }
    }

    fn storage(&self) -> Option<Storage> {
        *self.engine.storage.lock().expect("storage")
    }

    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        self.engine.call(Op::ListOwned).await?;
        let state = self.engine.state();
        let mut ids: Vec<SandboxId> = state
            .sandboxes
            .keys()
            .filter(|id| !state.building.contains(*id))
            .cloned()
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError> {
        self.engine.call(Op::Destroy).await?;
        if let Some(handle) = handle {
            FakeHandle::parse(handle, self.kind)?;
        }
        if let Some(sandbox) = self.engine.state().sandboxes.remove(id) {
            sandbox.alive.send_replace(false);
        }
        Ok(())
    }

    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        let stdin = spec.stdin == StdinMode::Pipe;
        self.start_program(handle, Op::Exec, spec.argv, stdin, false)
            .await
    }

    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError> {
        self.engine.call(Op::WaitExit).await?;
        let fake = FakeHandle::parse(handle, self.kind)?;
        let Some(sandbox) = self.engine.sandbox(&fake) else {
            return Ok(());
        };
        let mut alive = sandbox.alive.subscribe();
        drop(sandbox);
        // Ends when it dies, or when its record goes (the sender is dropped).
        let _ = alive.wait_for(|alive| !*alive).await;
        Ok(())
    }

    fn pause(&self) -> Option<&dyn PauseResume> {
        Some(self)
    }

    fn terminals(&self) -> Option<&dyn Terminals> {
        if self.terminals {
            Some(self)
        } else {
            None
        }
    }
}

#[async_trait]
impl PauseResume for FakeBackend {
    async fn pause(&self, handle: &Handle) -> Result<(), BackendError> {
        self.set_frozen(Op::Pause, handle, true).await
    }

    async fn resume(&self, handle: &Handle) -> Result<(), BackendError> {
        self.set_frozen(Op::Resume, handle, false).await
    }
}

impl FakeBackend {
    async fn set_frozen(&self, op: Op, handle: &Handle, frozen: bool) -> Result<(), BackendError> {
        self.engine.call(op).await?;
        let fake = FakeHandle::parse(handle, self.kind)?;
        let sandbox = self.engine.sandbox(&fake).ok_or_else(BackendError::gone)?;
        if !*sandbox.alive.borrow() {
            return Err(BackendError::gone());
        }
        sandbox.frozen.send_replace(frozen);
        Ok(())
    }
}

#[async_trait]
impl Terminals for FakeBackend {
    async fn open_terminal(
        &self,
        handle: &Handle,
        spec: TerminalSpec,
    ) -> Result<ExecSession, BackendError> {
        self.start_program(handle, Op::OpenTerminal, spec.argv, true, true)
            .await
    }
}

/// Takes an id off the "being built" list when dropped.
struct Built<'a> {
    engine: &'a Engine,
    id: SandboxId,
}

impl Drop for Built<'_> {
    fn drop(&mut self) {
        self.engine.state().building.remove(&self.id);
    }
}
