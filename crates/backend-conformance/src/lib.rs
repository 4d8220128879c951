//! The backend contract as tests, written once. A backend runs all of them with one line:
//!
//! ```ignore
//! sbx_backend_conformance::suite!(MySubject::new());
//! ```
//!
//! where `MySubject` implements [`Subject`]: it makes backend instances over one engine (a
//! host and data directory, a remote account…). A second instance over the same engine is the
//! daemon restarted — what orphan discovery and adoption are about.
//!
//! Every test removes what it made, and gives every backend call a deadline, so a backend that
//! hangs fails the test instead of hanging the suite.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sbx_backend::{
    Backend, BackendError, ByteStream, ExecEvent, ExecInput, ExecSession, ExecSpec, ExitStatus,
    FileErrorKind, FileKind, Handle, Limits, SandboxId, SandboxSpec, Signal, SignalTarget,
    StdinMode, TerminalSpec, TtySize, User,
};

/// The engine a backend is tested on.
#[async_trait]
pub trait Subject: Send + Sync {
    /// A backend over the engine. Each call is a new instance — the daemon started again —
    /// over the same engine, which finds what earlier instances left.
    async fn instance(&self) -> Arc<dyn Backend>;

    /// A template the engine has.
    fn template(&self) -> String {
        "host".into()
    }

    /// What each test sandbox gets.
    fn limits(&self) -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            cpu_millis: 1000,
            pids: 64,
            disk_bytes: 256 << 20,
        }
    }

    /// After each test: whatever the engine needs to be left as found (an instance's own
    /// parents, a temporary directory). The test has destroyed its sandboxes already.
    async fn finish(&self) {}
}

/// Runs every contract test against `$subject` (an expression making a fresh [`Subject`] for
/// each test), one `#[tokio::test]` each.
#[macro_export]
macro_rules! suite {
    ($subject:expr) => {
        $crate::suite!(@each $subject;
            create_inspect_destroy,
            create_is_idempotent,
            destroy_is_idempotent,
            templates,
            exec_collects_output_and_status,
            exec_feeds_stdin,
            exec_streams_output_as_it_comes,
            exec_kill_ends_the_command,
            exec_kill_is_not_held_up_by_unread_stdin,
            exec_kill_is_not_held_up_by_unread_output,
            exec_signal_reaches_the_command,
            exec_of_a_missing_program_fails_cleanly,
            exec_in_a_destroyed_sandbox_is_not_found,
            terminals_if_supported,
            pause_and_resume_if_supported,
            hibernate_and_restore_if_supported,
            files_if_supported,
            snapshots_if_supported,
            capabilities_match_their_traits,
            wait_exit_ends_when_the_sandbox_goes,
            orphans_are_found_after_a_crash,
            adopt_after_a_restart,
            adopt_of_a_gone_sandbox_is_not_found
        );
    };
    (@each $subject:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let subject = $subject;
                $crate::tests::$name(&subject).await;
                $crate::Subject::finish(&subject).await;
            }
        )*
    };
}

/// How long any one backend call may take in the suite.
const CALL: Duration = Duration::from_secs(30);

/// Awaits a backend call under the suite's deadline.
async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CALL:?}"))
}

fn spec(subject: &dyn Subject, id: &SandboxId) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        template: subject.template(),
        limits: subject.limits(),
        snapshot: None,
        fork_of: None,
    }
}

async fn create(subject: &dyn Subject, backend: &dyn Backend) -> (SandboxId, Handle) {
    let id = SandboxId::generate();
    let handle = within("create", backend.create(&spec(subject, &id)))
        .await
        .unwrap_or_else(|e| panic!("create failed: {}", e.chain()));
    assert_eq!(handle.backend, backend.kind(), "a handle names its backend");
    (id, handle)
}

async fn destroy(backend: &dyn Backend, id: &SandboxId, handle: Option<&Handle>) {
    within("destroy", backend.destroy(id, handle))
        .await
        .unwrap_or_else(|e| panic!("destroy of {id} failed: {}", e.chain()));
}

fn command(argv: &[&str], stdin: bool) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        user: User::DEFAULT,
        stdin: if stdin {
            StdinMode::Pipe
        } else {
            StdinMode::Null
        },
    }
}

async fn exec(backend: &dyn Backend, handle: &Handle, spec: ExecSpec) -> ExecSession {
    within("exec", backend.exec(handle, spec))
        .await
        .unwrap_or_else(|e| panic!("exec failed: {}", e.chain()))
}

/// What a finished command produced.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<ExitStatus>,
}

/// Collects a session's events until it ends.
async fn collect(session: &mut ExecSession) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some(event) = within("the command's end", session.events.recv()).await {
        match event {
            ExecEvent::Stdout(bytes) => outcome.stdout.extend_from_slice(&bytes),
            ExecEvent::Stderr(bytes) => outcome.stderr.extend_from_slice(&bytes),
            ExecEvent::Exited(status) => {
                outcome.status = Some(status);
                break;
            }
        }
    }
    outcome
}

/// Reads stdout until it contains `needle`.
async fn read_until(session: &mut ExecSession, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match within("output", session.events.recv()).await {
            Some(ExecEvent::Stdout(bytes)) | Some(ExecEvent::Stderr(bytes)) => {
                seen.extend_from_slice(&bytes)
            }
            other => panic!(
                "the command ended ({other:?}) before writing {:?}; it wrote {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    seen
}

async fn send(session: &ExecSession, input: ExecInput) {
    session
        .input
        .send(input)
        .await
        .expect("the session takes input");
}

/// The tests. Each takes the subject and cleans up after itself.
pub mod tests {
    use super::*;

    /// A sandbox is made, seen alive, destroyed, and seen gone.
    pub async fn create_inspect_destroy(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let observed = within("inspect", backend.inspect(&handle)).await.unwrap();
        assert!(observed.alive, "a new sandbox is alive: {observed:?}");
        let owned = within("list", backend.list_owned()).await.unwrap();
        assert!(owned.contains(&id), "{id} is listed as owned: {owned:?}");
        destroy(&*backend, &id, Some(&handle)).await;
        let owned = within("list", backend.list_owned()).await.unwrap();
        assert!(
            !owned.contains(&id),
            "{id} is gone after destroy: {owned:?}"
        );
        if let Ok(observed) = within("inspect", backend.inspect(&handle)).await {
            assert!(!observed.alive, "a destroyed sandbox is not alive");
        }
    }

    /// A create again with the same id (a retry after an interrupted one) replaces what the
    /// first left: one sandbox, usable, and one destroy removes it all.
    pub async fn create_is_idempotent(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, first) = create(subject, &*backend).await;
        let second = within("create again", backend.create(&spec(subject, &id)))
            .await
            .unwrap_or_else(|e| panic!("a second create with the same id failed: {}", e.chain()));
        let mut session = exec(&*backend, &second, command(&["echo", "again"], false)).await;
        assert_eq!(collect(&mut session).await.stdout, b"again\n");
        if let Ok(observed) = within("inspect", backend.inspect(&first)).await {
            assert!(!observed.alive, "the first attempt's sandbox is gone");
        }
        destroy(&*backend, &id, Some(&second)).await;
        let owned = within("list", backend.list_owned()).await.unwrap();
        assert!(!owned.contains(&id), "nothing of {id} is left: {owned:?}");
    }

    /// Destroy twice, without a handle, and of an id never made: all `Ok`.
    pub async fn destroy_is_idempotent(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        destroy(&*backend, &id, Some(&handle)).await;
        destroy(&*backend, &id, Some(&handle)).await;
        destroy(&*backend, &id, None).await;
        destroy(&*backend, &SandboxId::generate(), None).await;
        // Without the handle (lost in a crash), from the id alone.
        let (id, _) = create(subject, &*backend).await;
        destroy(&*backend, &id, None).await;
        let owned = within("list", backend.list_owned()).await.unwrap();
        assert!(!owned.contains(&id), "destroy by id alone removed {id}");
    }

    pub async fn templates(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let known = within("has_template", backend.has_template(&subject.template())).await;
        assert!(known.unwrap(), "the subject's template is known");
        let unknown = within("has_template", backend.has_template("no-such-template")).await;
        assert!(!unknown.unwrap(), "an unknown template is not");
        let id = SandboxId::generate();
        let mut wrong = spec(subject, &id);
        wrong.template = "no-such-template".into();
        match within("create", backend.create(&wrong)).await {
            Err(BackendError::TemplateNotFound(name)) => assert_eq!(name, "no-such-template"),
            other => panic!("create from an unknown template: {other:?}"),
        }
        let owned = within("list", backend.list_owned()).await.unwrap();
        assert!(!owned.contains(&id), "a failed create leaves nothing");
    }

    /// Output of both streams and the exit status, in one collected run each.
    pub async fn exec_collects_output_and_status(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut echo = exec(
            &*backend,
            &handle,
            command(&["echo", "hello", "world"], false),
        )
        .await;
        let outcome = collect(&mut echo).await;
        assert_eq!(outcome.stdout, b"hello world\n");
        assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
        let mut code = exec(&*backend, &handle, command(&["sh", "-c", "exit 7"], false)).await;
        assert_eq!(collect(&mut code).await.status, Some(ExitStatus::Code(7)));
        let script = "echo out; echo err >&2; exit 3";
        let mut both = exec(&*backend, &handle, command(&["sh", "-c", script], false)).await;
        let outcome = collect(&mut both).await;
        assert_eq!(outcome.stdout, b"out\n");
        assert_eq!(outcome.stderr, b"err\n");
        assert_eq!(outcome.status, Some(ExitStatus::Code(3)));
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// What is written to stdin comes back through `cat`; closing it ends `cat`.
    pub async fn exec_feeds_stdin(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut cat = exec(&*backend, &handle, command(&["cat"], true)).await;
        let data = Bytes::from((0..=255u8).cycle().take(200_000).collect::<Vec<u8>>());
        send(&cat, ExecInput::Stdin(data.clone())).await;
        send(&cat, ExecInput::CloseStdin).await;
        let outcome = collect(&mut cat).await;
        assert_eq!(outcome.stdout.len(), data.len());
        assert!(outcome.stdout == data, "stdin came back unchanged");
        assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
        // Without a stdin pipe, stdin is empty.
        let mut empty = exec(&*backend, &handle, command(&["cat"], false)).await;
        let outcome = collect(&mut empty).await;
        assert!(outcome.stdout.is_empty());
        assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// Output arrives while the command still runs, not only when it ends.
    pub async fn exec_streams_output_as_it_comes(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut cat = exec(&*backend, &handle, command(&["cat"], true)).await;
        for line in ["one\n", "two\n", "three\n"] {
            send(&cat, ExecInput::Stdin(Bytes::from(line))).await;
            read_until(&mut cat, line.as_bytes()).await;
        }
        send(&cat, ExecInput::CloseStdin).await;
        assert_eq!(collect(&mut cat).await.status, Some(ExitStatus::Code(0)));
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// `Kill` ends a command that would run for a minute, with everything it started.
    pub async fn exec_kill_ends_the_command(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut sleeper = exec(&*backend, &handle, command(&["sleep", "60"], false)).await;
        send(&sleeper, ExecInput::Kill).await;
        let outcome = collect(&mut sleeper).await;
        assert_eq!(
            outcome.status,
            Some(ExitStatus::Signal(Signal::Kill.number()))
        );
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// The session's kill switch ends a command that does not read its stdin while more
    /// stdin than any queue holds waits for it: the kill is not queued behind it.
    pub async fn exec_kill_is_not_held_up_by_unread_stdin(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut sleeper = exec(&*backend, &handle, command(&["sleep", "60"], true)).await;
        let input = sleeper.input.clone();
        let flood = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            // 256 MiB: far more than any backend queues for a command.
            for _ in 0..4096 {
                if input.send(ExecInput::Stdin(chunk.clone())).await.is_err() {
                    return;
                }
            }
        });
        // Real backends stop taking it after a few MiB; a fake one may drop it as it comes.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sleeper.kill.kill();
        let outcome = collect(&mut sleeper).await;
        assert_eq!(
            outcome.status,
            Some(ExitStatus::Signal(Signal::Kill.number()))
        );
        flood.abort();
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// A kill reaches a command whose output nobody reads (a timeout while the client is
    /// slow): the backend does not wait for room for its output first. (A backend that cannot
    /// run `yes`, the fake one, has nothing to show.)
    pub async fn exec_kill_is_not_held_up_by_unread_output(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let flood = command(&["sh", "-c", "exec yes flood-of-output"], false);
        let mut flood = match within("exec", backend.exec(&handle, flood)).await {
            Ok(session) => session,
            Err(BackendError::ExecFailed(_)) => {
                destroy(&*backend, &id, Some(&handle)).await;
                return;
            }
            Err(other) => panic!("exec of yes: {}", other.chain()),
        };
        let running = || async {
            let check = command(
                &[
                    "sh",
                    "-c",
                    "pgrep -x yes >/dev/null && echo running || echo gone",
                ],
                false,
            );
            let mut check = exec(&*backend, &handle, check).await;
            String::from_utf8_lossy(&collect(&mut check).await.stdout).into_owned()
        };
        // Its output queues fill while nobody reads.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(running().await, "running\n");
        flood.kill.kill();
        let started = std::time::Instant::now();
        while running().await != "gone\n" {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the kill waited for the command's output to be read"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let outcome = collect(&mut flood).await;
        assert_eq!(
            outcome.status,
            Some(ExitStatus::Signal(Signal::Kill.number()))
        );
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// A signal by name reaches the command.
    pub async fn exec_signal_reaches_the_command(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let mut sleeper = exec(&*backend, &handle, command(&["sleep", "60"], false)).await;
        let terminate = ExecInput::Signal {
            signal: Signal::Terminate,
            target: SignalTarget::Process,
        };
        send(&sleeper, terminate).await;
        let outcome = collect(&mut sleeper).await;
        assert_eq!(
            outcome.status,
            Some(ExitStatus::Signal(Signal::Terminate.number()))
        );
        destroy(&*backend, &id, Some(&handle)).await;
    }

    pub async fn exec_of_a_missing_program_fails_cleanly(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let missing = command(&["/no/such/program"], false);
        match within("exec", backend.exec(&handle, missing)).await {
            Err(BackendError::ExecFailed(message)) => assert!(!message.is_empty()),
            Ok(mut session) => {
                // Some engines start a shell that then reports the failure as an exit code.
                let outcome = collect(&mut session).await;
                assert!(
                    matches!(outcome.status, Some(ExitStatus::Code(126 | 127))),
                    "{outcome:?}"
                );
            }
            Err(other) => panic!("exec of a missing program: {}", other.chain()),
        }
        // The sandbox is fine afterwards.
        let mut echo = exec(&*backend, &handle, command(&["echo", "ok"], false)).await;
        assert_eq!(collect(&mut echo).await.stdout, b"ok\n");
        destroy(&*backend, &id, Some(&handle)).await;
    }

    pub async fn exec_in_a_destroyed_sandbox_is_not_found(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        destroy(&*backend, &id, Some(&handle)).await;
        match within("exec", backend.exec(&handle, command(&["true"], false))).await {
            Err(BackendError::NotFound(_)) => {}
            other => panic!("exec in a destroyed sandbox: {other:?}"),
        }
    }

    /// A terminal echoes what is typed and runs the command on it; `Kill` ends it.
    pub async fn terminals_if_supported(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let Some(terminals) = backend.terminals() else {
            assert!(!backend.capabilities().terminals);
            return;
        };
        let (id, handle) = create(subject, &*backend).await;
        let spec = TerminalSpec {
            argv: vec!["cat".into()],
            env: Vec::new(),
            cwd: None,
            user: User::DEFAULT,
            size: TtySize { rows: 24, cols: 80 },
        };
        let mut terminal = within("open_terminal", terminals.open_terminal(&handle, spec))
            .await
            .unwrap_or_else(|e| panic!("open_terminal failed: {}", e.chain()));
        send(
            &terminal,
            ExecInput::Resize(TtySize {
                rows: 40,
                cols: 100,
            }),
        )
        .await;
        send(&terminal, ExecInput::Stdin(Bytes::from_static(b"typed\n"))).await;
        read_until(&mut terminal, b"typed").await;
        send(&terminal, ExecInput::Kill).await;
        let mut ended = false;
        while let Some(event) = within("the terminal's end", terminal.events.recv()).await {
            if let ExecEvent::Exited(status) = event {
                assert_eq!(status, ExitStatus::Signal(Signal::Kill.number()));
                ended = true;
                break;
            }
        }
        assert!(ended, "a killed terminal reports its end");
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// A paused sandbox does nothing until resumed, then carries on where it was; a paused
    /// sandbox can be destroyed.
    pub async fn pause_and_resume_if_supported(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let Some(pauser) = backend.pause() else {
            assert!(!backend.capabilities().pause);
            return;
        };
        let (id, handle) = create(subject, &*backend).await;
        let mut speaker = exec(
            &*backend,
            &handle,
            command(&["sh", "-c", "sleep 0.5; echo after"], false),
        )
        .await;
        within("pause", pauser.pause(&handle))
            .await
            .unwrap_or_else(|e| panic!("pause failed: {}", e.chain()));
        let observed = within("inspect", backend.inspect(&handle)).await.unwrap();
        assert!(observed.alive, "a paused sandbox is alive");
        assert_ne!(observed.frozen, Some(false), "inspect sees it paused");
        // Well past its sleep, nothing has come.
        let early = tokio::time::timeout(Duration::from_millis(1500), speaker.events.recv()).await;
        assert!(early.is_err(), "a paused command went on: {early:?}");
        // Pausing again is harmless.
        within("pause", pauser.pause(&handle)).await.unwrap();
        within("resume", pauser.resume(&handle))
            .await
            .unwrap_or_else(|e| panic!("resume failed: {}", e.chain()));
        let outcome = collect(&mut speaker).await;
        assert_eq!(outcome.stdout, b"after\n");
        assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
        let observed = within("inspect", backend.inspect(&handle)).await.unwrap();
        assert_ne!(observed.frozen, Some(true), "inspect sees it running");
        // A paused sandbox is destroyed like any other, promptly.
        let _sleeper = exec(&*backend, &handle, command(&["sleep", "60"], false)).await;
        within("pause", pauser.pause(&handle)).await.unwrap();
        let started = std::time::Instant::now();
        destroy(&*backend, &id, Some(&handle)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "destroying a paused sandbox took {:?}",
            started.elapsed()
        );
        let gone = within("pause", pauser.pause(&handle)).await;
        assert!(gone.is_err(), "a destroyed sandbox cannot be paused");
    }

    /// A hibernated sandbox's processes carry on from where they were once restored; what
    /// held the host's end of a pipe was ended first; both calls are idempotent.
    pub async fn hibernate_and_restore_if_supported(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let Some(hibernation) = backend.hibernation() else {
            assert!(!backend.capabilities().hibernate);
            return;
        };
        let (id, handle) = create(subject, &*backend).await;
        let counter = "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done";
        let detached = format!("({counter}) </dev/null >/dev/null 2>&1 &");
        let started =
            collect(&mut exec(&*backend, &handle, command(&["sh", "-c", &detached], false)).await)
                .await;
        assert_eq!(started.status, Some(ExitStatus::Code(0)));
        let read = || async {
            let out = collect(
                &mut exec(&*backend, &handle, command(&["cat", "/tmp/counter"], false)).await,
            )
            .await;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        };
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut attached = exec(&*backend, &handle, command(&["sleep", "60"], false)).await;
        // A command that forks all the time, each child on the host's pipes too.
        let mut forking = exec(
            &*backend,
            &handle,
            command(&["sh", "-c", "while :; do sleep 0.02; done"], false),
        )
        .await;
        let before = read().await;
        assert!(before >= 2, "the counter counts: {before}");
        let bytes = within("hibernate", hibernation.hibernate(&handle))
            .await
            .unwrap_or_else(|e| panic!("hibernate failed: {}", e.chain()));
        assert!(bytes > 0, "a checkpoint takes room");
        assert!(within("is_hibernated", hibernation.is_hibernated(&handle))
            .await
            .unwrap());
        // The command on the host's pipes ended with it.
        for session in [&mut attached, &mut forking] {
            let ended = collect(session).await;
            assert_ne!(ended.status, Some(ExitStatus::Code(0)));
        }
        // Again: nothing to do.
        within("hibernate", hibernation.hibernate(&handle))
            .await
            .unwrap();
        let refused = within("exec", backend.exec(&handle, command(&["true"], false))).await;
        assert!(refused.is_err(), "a hibernated sandbox runs no command");
        tokio::time::sleep(Duration::from_millis(500)).await;
        within("restore", hibernation.restore(&handle))
            .await
            .unwrap_or_else(|e| panic!("restore failed: {}", e.chain()));
        assert!(!within("is_hibernated", hibernation.is_hibernated(&handle))
            .await
            .unwrap());
        within("restore", hibernation.restore(&handle))
            .await
            .unwrap();
        let after = read().await;
        assert!(
            after >= before,
            "the counter went on from {before}, not from 0: {after}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = read().await;
        assert!(
            later > after,
            "the counter counts again: {after} then {later}"
        );
        destroy(&*backend, &id, Some(&handle)).await;
        let gone = within("restore", hibernation.restore(&handle)).await;
        assert!(gone.is_err(), "a destroyed sandbox cannot be restored");
    }

    /// Files in and out, the directory verbs, and the errors each backend reports the same.
    pub async fn files_if_supported(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let Some(files) = backend.files() else {
            assert!(!backend.capabilities().files);
            return;
        };
        let (id, handle) = create(subject, &*backend).await;
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
            .chunks(65_536)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let data: ByteStream = Box::pin(futures::stream::iter(chunks));
        let written = within(
            "write",
            files.write(&handle, "dir/f", 0o640, User::DEFAULT, data),
        )
        .await
        .unwrap_or_else(|e| panic!("write failed: {}", e.chain()));
        assert_eq!(
            (written.size, written.mode, written.kind),
            (300_000, 0o640, FileKind::File)
        );
        assert_eq!(written.owner.uid, User::DEFAULT.uid);
        let (info, mut read) = within(
            "read",
            files.read(&handle, "dir/f", 1000, Some(5000), User::DEFAULT),
        )
        .await
        .unwrap();
        assert_eq!((info.size, info.kind), (300_000, FileKind::File));
        let mut back = Vec::new();
        while let Some(chunk) = within("read", read.next()).await {
            back.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(back, &bytes[1000..6000]);
        let stat = within("stat", files.stat(&handle, "dir", false, User::DEFAULT))
            .await
            .unwrap();
        assert_eq!(stat.kind, FileKind::Directory);
        within(
            "mkdir",
            files.make_dir(&handle, "dir/sub/deeper", User::DEFAULT),
        )
        .await
        .unwrap();
        within(
            "rename",
            files.rename(&handle, "dir/f", "dir/sub/g", User::DEFAULT),
        )
        .await
        .unwrap();
        let listed = within("list", files.list(&handle, "dir", 3, User::DEFAULT))
            .await
            .unwrap()
            .entries;
        let kinds: Vec<FileKind> = listed.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FileKind::Directory, FileKind::Directory, FileKind::File],
            "{listed:?}"
        );
        let kind_of = |e: BackendError| match e {
            BackendError::File { kind, .. } => kind,
            other => panic!("not a file error: {}", other.chain()),
        };
        let missing = within("stat", files.stat(&handle, "nope", false, User::DEFAULT)).await;
        assert_eq!(kind_of(missing.unwrap_err()), FileErrorKind::NotFound);
        let not_empty = within("remove", files.remove(&handle, "dir", false, User::DEFAULT)).await;
        assert_eq!(kind_of(not_empty.unwrap_err()), FileErrorKind::Conflict);
        let directory = within("read", files.read(&handle, "dir", 0, None, User::DEFAULT)).await;
        assert_eq!(kind_of(directory.err().unwrap()), FileErrorKind::Conflict);
        // A directory out as a tar stream and back in elsewhere: the same tree.
        let mut archive = within("archive", files.archive(&handle, "dir", User::DEFAULT))
            .await
            .unwrap_or_else(|e| panic!("archive failed: {}", e.chain()));
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = within("archive", archive.next()).await {
            tar_bytes.extend_from_slice(&chunk.unwrap());
        }
        let names: Vec<String> = tar::Archive::new(&tar_bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["dir/", "dir/sub/", "dir/sub/deeper/", "dir/sub/g"]);
        let data: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(tar_bytes))]));
        let extracted = within(
            "extract",
            files.extract(&handle, "copy", User::DEFAULT, data),
        )
        .await
        .unwrap_or_else(|e| panic!("extract failed: {}", e.chain()));
        assert_eq!(extracted.entries, 4);
        let copied = within(
            "stat",
            files.stat(&handle, "copy/dir/sub/g", false, User::DEFAULT),
        )
        .await
        .unwrap();
        assert_eq!((copied.size, copied.mode), (300_000, 0o640));
        // An entry that climbs out is refused.
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..5].copy_from_slice(b"../up");
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        let mut hostile = header.as_bytes().to_vec();
        hostile.extend_from_slice(&[0u8; 1024]);
        let data: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(hostile))]));
        let climbing = within(
            "extract",
            files.extract(&handle, "copy", User::DEFAULT, data),
        )
        .await;
        assert_eq!(kind_of(climbing.unwrap_err()), FileErrorKind::Invalid);
        within("remove", files.remove(&handle, "dir", true, User::DEFAULT))
            .await
            .unwrap();
        let gone = within("stat", files.stat(&handle, "dir", false, User::DEFAULT)).await;
        assert_eq!(kind_of(gone.unwrap_err()), FileErrorKind::NotFound);
        destroy(&*backend, &id, Some(&handle)).await;
    }

    /// A snapshot holds the sandbox's files at that instant; a sandbox made from it has them;
    /// an exported snapshot imports as an equal one; deleted, it is gone.
    pub async fn snapshots_if_supported(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let Some(snapshots) = backend.snapshots() else {
            assert!(!backend.capabilities().snapshots);
            return;
        };
        let (id, handle) = create(subject, &*backend).await;
        let write = "mkdir -p kept && echo first > kept/f && echo gone > g";
        let mut made = exec(&*backend, &handle, command(&["sh", "-c", write], false)).await;
        assert_eq!(collect(&mut made).await.status, Some(ExitStatus::Code(0)));
        let unique = SandboxId::generate();
        let body = unique.as_str().split_once('-').map_or("x", |(_, b)| b);
        let name = format!("snap-{body}");
        within("snapshot", snapshots.snapshot(&handle, &name, None))
            .await
            .unwrap_or_else(|e| panic!("snapshot failed: {}", e.chain()));
        assert!(within("has", snapshots.has_snapshot(&name)).await.unwrap());
        // Changes after the snapshot are not in it.
        let change = "echo second > kept/f && rm g";
        let mut changed = exec(&*backend, &handle, command(&["sh", "-c", change], false)).await;
        assert_eq!(
            collect(&mut changed).await.status,
            Some(ExitStatus::Code(0))
        );
        destroy(&*backend, &id, Some(&handle)).await;
        // A sandbox from it has its files (its sandbox is gone by now).
        let check = |handle: Handle| {
            let backend = backend.clone();
            async move {
                let mut cat = exec(
                    &*backend,
                    &handle,
                    command(&["sh", "-c", "cat kept/f g"], false),
                )
                .await;
                let outcome = collect(&mut cat).await;
                assert_eq!(outcome.stdout, b"first\ngone\n", "{outcome:?}");
            }
        };
        let from = SandboxId::generate();
        let mut from_spec = spec(subject, &from);
        from_spec.snapshot = Some(name.clone());
        let from_handle = within("create from a snapshot", backend.create(&from_spec))
            .await
            .unwrap_or_else(|e| panic!("create from a snapshot failed: {}", e.chain()));
        check(from_handle.clone()).await;
        destroy(&*backend, &from, Some(&from_handle)).await;
        // Exported and imported: an equal snapshot.
        let mut exported = within("export", snapshots.export_snapshot(&name, b"{}".to_vec()))
            .await
            .unwrap();
        let mut file = Vec::new();
        while let Some(chunk) = within("export", exported.next()).await {
            file.extend_from_slice(&chunk.unwrap());
        }
        let copy = format!("{name}x");
        let data: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(file))]));
        let (_, manifest) = within("import", snapshots.import_snapshot(&copy, data, 1 << 30))
            .await
            .unwrap_or_else(|e| panic!("import failed: {}", e.chain()));
        assert_eq!(manifest, b"{}");
        let again = SandboxId::generate();
        let mut again_spec = spec(subject, &again);
        again_spec.snapshot = Some(copy.clone());
        let again_handle = within("create from an import", backend.create(&again_spec))
            .await
            .unwrap();
        check(again_handle.clone()).await;
        destroy(&*backend, &again, Some(&again_handle)).await;
        for name in [&name, &copy] {
            within("delete", snapshots.delete_snapshot(name))
                .await
                .unwrap();
            assert!(!within("has", snapshots.has_snapshot(name)).await.unwrap());
            // Twice is fine.
            within("delete", snapshots.delete_snapshot(name))
                .await
                .unwrap();
        }
    }

    /// A capability is reported exactly when its trait object is there.
    pub async fn capabilities_match_their_traits(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let capabilities = backend.capabilities();
        assert_eq!(capabilities.terminals, backend.terminals().is_some());
        assert_eq!(capabilities.files, backend.files().is_some());
        assert_eq!(capabilities.pause, backend.pause().is_some());
        assert_eq!(capabilities.snapshots, backend.snapshots().is_some());
        assert_eq!(capabilities.ports, backend.ports().is_some());
        assert_eq!(capabilities.hibernate, backend.hibernation().is_some());
        let names = capabilities.names();
        assert!(names.contains(&"exec"));
        assert_eq!(names.contains(&"terminal"), capabilities.terminals);
        let bounds = backend.bounds();
        assert!(bounds.memory_bytes > 0 && bounds.cpu_millis > 0);
        assert!(bounds.max_command_bytes >= 4096);
        let health = within("health", backend.health()).await;
        assert!(
            health.healthy,
            "a fresh backend is healthy: {}",
            health.detail
        );
    }

    /// `wait_exit` resolves once the sandbox is destroyed.
    pub async fn wait_exit_ends_when_the_sandbox_goes(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        let waiter = {
            let backend = backend.clone();
            let handle = handle.clone();
            tokio::spawn(async move { backend.wait_exit(&handle).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiter.is_finished(),
            "wait_exit waits while the sandbox lives"
        );
        destroy(&*backend, &id, Some(&handle)).await;
        within("wait_exit", waiter)
            .await
            .expect("the waiter ran")
            .unwrap_or_else(|e| panic!("wait_exit failed: {}", e.chain()));
    }

    /// A sandbox whose daemon crashed before recording it is found by the next instance and
    /// removed from its id alone.
    pub async fn orphans_are_found_after_a_crash(subject: &dyn Subject) {
        let first = subject.instance().await;
        let (id, _lost) = create(subject, &*first).await;
        drop(first);
        let second = subject.instance().await;
        let owned = within("list", second.list_owned()).await.unwrap();
        assert!(owned.contains(&id), "the orphan {id} is listed: {owned:?}");
        destroy(&*second, &id, None).await;
        let owned = within("list", second.list_owned()).await.unwrap();
        assert!(!owned.contains(&id), "the orphan {id} is gone: {owned:?}");
    }

    /// A sandbox made before a restart is taken over by the next instance and usable.
    pub async fn adopt_after_a_restart(subject: &dyn Subject) {
        let first = subject.instance().await;
        let (id, handle) = create(subject, &*first).await;
        drop(first);
        let second = subject.instance().await;
        within("adopt", second.adopt(&handle))
            .await
            .unwrap_or_else(|e| panic!("adopt failed: {}", e.chain()));
        let mut echo = exec(&*second, &handle, command(&["echo", "adopted"], false)).await;
        assert_eq!(collect(&mut echo).await.stdout, b"adopted\n");
        destroy(&*second, &id, Some(&handle)).await;
    }

    pub async fn adopt_of_a_gone_sandbox_is_not_found(subject: &dyn Subject) {
        let backend = subject.instance().await;
        let (id, handle) = create(subject, &*backend).await;
        destroy(&*backend, &id, Some(&handle)).await;
        let next = subject.instance().await;
        match within("adopt", next.adopt(&handle)).await {
            Err(BackendError::NotFound(_)) => {}
            other => panic!("adopt of a destroyed sandbox: {other:?}"),
        }
    }
}
