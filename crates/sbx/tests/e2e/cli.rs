//! The CLI, as a user runs it: output formats, exit codes, error messages.

use sbx_protocol::{ExecResult, Sandbox, SandboxState};

use crate::daemon::{cli_at, text, TestDaemon};

#[tokio::test]
async fn create_ls_inspect_rm() {
    let d = TestDaemon::start().await;
    let out = d.cli(&[
        "create", "--name", "cli-box", "-l", "team=red", "-e", "A=1", "--memory", "128",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout);
    let id = id.strip_suffix('\n').expect("one line");
    assert!(
        id.starts_with("sb-") && !id.contains(char::is_whitespace),
        "{id:?}"
    );

    let ls = d.cli(&["ls"]);
    let listing = text(&ls.stdout);
    assert!(listing.starts_with("ID "), "{listing}");
    assert!(listing.contains(id) && listing.contains("cli-box") && listing.contains("running"));
    let json: Vec<Sandbox> =
        serde_json::from_slice(&d.cli(&["ls", "--json", "-l", "team=red"]).stdout).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(text(&d.cli(&["ls", "-q"]).stdout), format!("{id}\n"));

    let inspect = text(&d.cli(&["inspect", "cli-box"]).stdout);
    assert!(
        inspect.contains("State:     running") && inspect.contains("128 MiB"),
        "{inspect}"
    );
    let json: Sandbox = serde_json::from_slice(&d.cli(&["inspect", id, "--json"]).stdout).unwrap();
    assert_eq!(json.metadata["team"], "red");

    let rm = d.cli(&["rm", id]);
    assert!(rm.status.success());
    assert_eq!(text(&rm.stdout), format!("{id}\n"));
    assert!(d.cli(&["rm", id]).status.success(), "rm is idempotent");
    let unknown = d.cli(&["rm", "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no sandbox"),
        "{}",
        text(&unknown.stderr)
    );
    let bad = d.cli(&["create", "--memory", "1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("memory_mb"),
        "{}",
        text(&bad.stderr)
    );
    d.finish().await;
}

#[tokio::test]
async fn exec_streams_and_exits_with_the_command_code() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let out = d.cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (text(&out.stdout).as_str(), text(&out.stderr).as_str()),
        ("out\n", "err\n")
    );

    let out = d.cli_with_stdin(
        &["exec", "-i", &id, "--", "tr", "a-z", "A-Z"],
        Some(b"piped\n"),
    );
    assert_eq!(text(&out.stdout), "PIPED\n");
    let out = d.cli(&[
        "exec",
        "-e",
        "X=y",
        "-w",
        "/tmp",
        "-u",
        "root",
        &id,
        "--",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u)",
    ]);
    assert_eq!(text(&out.stdout), "y /tmp 0\n");

    let out = d.cli(&["exec", &id, "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("command not found"));
    let out = d.cli(&["exec", "--timeout", "0.3", &id, "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("timed out"));
    let out = d.cli(&["exec", "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no sandbox"));

    let out = d.cli(&["exec", "--json", &id, "--", "sh", "-c", "echo json; exit 2"]);
    assert_eq!(out.status.code(), Some(2));
    let result: ExecResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((result.stdout.as_str(), result.exit_code), ("json\n", 2));
    d.finish().await;
}

#[tokio::test]
async fn run_creates_executes_and_destroys() {
    let d = TestDaemon::start().await;
    let out = d.cli(&[
        "run",
        "--memory",
        "128",
        "--",
        "sh",
        "-c",
        "hostname; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let hostname = text(&out.stdout).trim().to_owned();
    let sandbox = d.client.get(&hostname).await.unwrap();
    assert_eq!(sandbox.state, SandboxState::Destroyed);
    assert_eq!(sandbox.resources.memory_mb, 128);
    d.finish().await;
}

#[tokio::test]
async fn an_absent_daemon_is_a_clear_error() {
    let url = "http://127.0.0.1:9";
    let out = cli_at(url, &["ls"], None);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out.stderr);
    assert!(
        message.contains("cannot reach the sbx daemon at http://127.0.0.1:9"),
        "{message}"
    );
    assert!(message.contains("sbx serve"), "{message}");
    assert_eq!(
        cli_at(url, &["exec", "x", "--", "true"], None)
            .status
            .code(),
        Some(125)
    );
}
