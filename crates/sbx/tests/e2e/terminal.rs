//! Terminals: the WebSocket protocol (resize, signal, exit status, several at once, large and
//! slow output), its protections, and `sbx shell` driven through a real pseudo-terminal.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use sbx_api_client::{Message, Terminal};
use sbx_protocol::{TerminalControl, TerminalEvent, TerminalRequest};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::daemon::{text, Options, TestDaemon, SBX};

pub(crate) fn shell() -> TerminalRequest {
    TerminalRequest {
        cmd: vec!["sh".into()],
        rows: Some(24),
        cols: Some(80),
        ..Default::default()
    }
}

pub(crate) async fn send_text(terminal: &mut Terminal, input: &str) {
    terminal
        .send(Message::Binary(input.as_bytes().to_vec().into()))
        .await
        .unwrap();
}

pub(crate) async fn control(terminal: &mut Terminal, message: TerminalControl) {
    let text = serde_json::to_string(&message).unwrap();
    terminal.send(Message::Text(text.into())).await.unwrap();
}

/// What the terminal says until `output` contains `needle` (or the terminal ends).
pub(crate) async fn read_until(terminal: &mut Terminal, output: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !output.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, terminal.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                output.push_str(&String::from_utf8_lossy(&bytes))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("waiting for {needle:?}: {other:?}; output so far: {output:?}"),
        }
    }
}

/// Reads to the end: the exit event and the close frame's code.
pub(crate) async fn read_to_end(terminal: &mut Terminal) -> (Option<TerminalEvent>, Option<u16>) {
    let mut exit = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), terminal.next())
            .await
            .expect("the terminal ends")
        {
            Some(Ok(Message::Text(text))) => {
                if let Ok(event) = serde_json::from_str::<TerminalEvent>(&text) {
                    if !matches!(event, TerminalEvent::Started { .. }) {
                        exit = Some(event);
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => return (exit, frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (exit, None),
        }
    }
}

pub(crate) async fn started(terminal: &mut Terminal) -> u32 {
    match terminal.next().await.unwrap().unwrap() {
        Message::Text(text) => match serde_json::from_str(&text).unwrap() {
            TerminalEvent::Started { pid } => pid,
            other => panic!("expected started, got {other:?}"),
        },
        other => panic!("expected started, got {other:?}"),
    }
}

#[tokio::test]
async fn resize_signal_and_exit_status() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut terminal = d.client.terminal(&id, &shell()).await.unwrap();
    assert!(started(&mut terminal).await > 1);
    let mut output = String::new();
    send_text(&mut terminal, "stty size; tty\n").await;
    read_until(&mut terminal, &mut output, "24 80").await;
    read_until(&mut terminal, &mut output, "/dev/pts/").await;
    control(
        &mut terminal,
        TerminalControl::Resize {
            rows: 30,
            cols: 100,
        },
    )
    .await;
    send_text(&mut terminal, "stty size\n").await;
    read_until(&mut terminal, &mut output, "30 100").await;
    // A signal reaches the foreground job, not the shell.
    send_text(&mut terminal, "sleep 100\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    control(
        &mut terminal,
        TerminalControl::Signal {
            signal: "INT".into(),
        },
    )
    .await;
    send_text(&mut terminal, "echo after-$((1+1))\n").await;
    read_until(&mut terminal, &mut output, "after-2").await;
    send_text(&mut terminal, "exit 7\n").await;
    let (exit, close) = read_to_end(&mut terminal).await;
    match exit {
        Some(TerminalEvent::Exit(info)) => assert_eq!(info.exit_code, 7),
        other => panic!("expected exit, got {other:?}"),
    }
    assert_eq!(close, Some(1000));
    d.finish().await;
}

#[tokio::test]
async fn several_terminals_and_closing_one_ends_its_processes_only() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut a = d.client.terminal(&id, &shell()).await.unwrap();
    let mut b = d.client.terminal(&id, &shell()).await.unwrap();
    started(&mut a).await;
    started(&mut b).await;
    let (mut out_a, mut out_b) = (String::new(), String::new());
    send_text(&mut a, "echo from-$((10+1))\n").await;
    send_text(&mut b, "echo from-$((20+2))\n").await;
    read_until(&mut a, &mut out_a, "from-11").await;
    read_until(&mut b, &mut out_b, "from-22").await;
    assert!(!out_a.contains("from-22") && !out_b.contains("from-11"));
    send_text(&mut a, "sleep 777\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.sh(&id, "pgrep -c -x sleep").await.stdout, "1\n");
    drop(a);
    let start = Instant::now();
    while d.sh(&id, "pgrep -c -x sleep || true").await.stdout != "0\n" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "closing a terminal left its processes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other terminal and the sandbox carry on.
    send_text(&mut b, "echo still-$((3*3))\n").await;
    read_until(&mut b, &mut out_b, "still-9").await;
    d.finish().await;
}

#[tokio::test]
async fn fifty_megabytes_arrive_intact_and_in_order() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let request = TerminalRequest {
        // Raw mode: no \n → \r\n translation, so the bytes are exactly what `yes` wrote.
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "stty raw -echo; yes | head -c 50000000".into(),
        ],
        ..Default::default()
    };
    let mut terminal = d.client.terminal(&id, &request).await.unwrap();
    started(&mut terminal).await;
    let mut total = 0usize;
    let mut bad = None;
    loop {
        match terminal.next().await.unwrap().unwrap() {
            Message::Binary(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    let want = if (total + i).is_multiple_of(2) {
                        b'y'
                    } else {
                        b'\n'
                    };
                    if *byte != want && bad.is_none() {
                        bad = Some(total + i);
                    }
                }
                total += bytes.len();
            }
            Message::Text(text) => {
                if let Ok(TerminalEvent::Exit(info)) = serde_json::from_str(&text) {
                    assert_eq!(info.exit_code, 0);
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bad, None, "output out of order or damaged");
    assert_eq!(total, 50_000_000);
    d.finish().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_slow_reader_does_not_grow_the_daemon() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let request = TerminalRequest {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "stty raw -echo; cat /dev/zero".into(),
        ],
        ..Default::default()
    };
    let before = rss_kib(d.pid());
    let mut terminal = d.client.terminal(&id, &request).await.unwrap();
    started(&mut terminal).await;
    // Read nothing for a while: the producer must be held back, not buffered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(d.pid());
    assert!(
        during < before + 48 * 1024,
        "daemon grew from {before} KiB to {during} KiB"
    );
    // It still flows once read.
    let mut got = 0;
    while got < 10 << 20 {
        if let Message::Binary(bytes) = terminal.next().await.unwrap().unwrap() {
            got += bytes.len();
        }
    }
    drop(terminal);
    d.finish().await;
}

const GUARDED: &str = r#"
[daemon]
allowed_origins = ["https://tutorial.example"]

[terminals]
max_message_bytes = 1024
max_per_ip = 3
filter_escape_sequences = true
"#;

async fn open(d: &TestDaemon, id: &str, origin: Option<&str>) -> Result<Terminal, (u16, String)> {
    let url = format!("ws://127.0.0.1:{}/v1/sandboxes/{id}/pty?cmd=sh", d.port);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", d.admin_key).parse().unwrap(),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body =
                String::from_utf8_lossy(&response.into_body().unwrap_or_default()).into_owned();
            Err((status, format!("{body} retry-after={retry:?}")))
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn protections_origin_size_per_ip_and_escape_filter() {
    let d = TestDaemon::start_with(Options {
        config: Some(GUARDED),
        ..Default::default()
    })
    .await;
    let id = d.create().await.id;
    // Origins: a foreign page is refused; the allowed one, the daemon's own, and non-browsers pass.
    let (status, body) = open(&d, &id, Some("https://evil.example"))
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403);
    assert!(body.contains("origin_not_allowed"), "{body}");
    drop(
        open(&d, &id, Some("https://tutorial.example"))
            .await
            .unwrap(),
    );
    drop(
        open(&d, &id, Some(&format!("http://127.0.0.1:{}", d.port)))
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Three per address; the fourth is 429 before the upgrade, with Retry-After.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open(&d, &id, None).await.unwrap());
    }
    let (status, body) = open(&d, &id, None).await.err().unwrap();
    assert_eq!(status, 429);
    assert!(
        body.contains("too_many_terminals") && body.contains("retry-after=Some"),
        "{body}"
    );

    // An oversize message closes with 1009.
    let mut big = held.pop().unwrap();
    started(&mut big).await;
    big.send(Message::Binary(vec![b'a'; 2000].into()))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut big).await.1, Some(1009));
    // A terminal escape sequence aimed at the host closes with 1008.
    let mut sneaky = held.pop().unwrap();
    started(&mut sneaky).await;
    send_text(&mut sneaky, "printf ok \x1b]0;owned\x07\n").await;
    assert_eq!(read_to_end(&mut sneaky).await.1, Some(1008));
    // Far past the limit (and the protocol layer's own): still a close with 1009, not a reset.
    let mut huge = held.pop().unwrap();
    started(&mut huge).await;
    huge.send(Message::Binary(vec![b'a'; 16 << 20].into()))
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut huge).await.1, Some(1009));
    drop(huge);
    // Slots come back as terminals close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = open(&d, &id, None).await.unwrap();
    started(&mut again).await;
    drop(again);
    drop(held);

    // Not a WebSocket, unknown sandbox, destroyed sandbox, bad query: HTTP errors.
    let plain = d
        .client
        .raw(
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{id}/pty"),
            None,
            "",
        )
        .await
        .unwrap();
    assert_eq!(plain.0, 400);
    let (status, _) = open(&d, "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 404);
    let gone = d.create().await.id;
    d.client.delete(&gone).await.unwrap();
    let (status, body) = open(&d, &gone, None).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    d.finish().await;
}

/// `sbx shell` on the slave side of a real pseudo-terminal; the test types on the master.
struct Pty {
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn wait_for(&self, needle: &str) {
        let start = Instant::now();
        loop {
            let seen = String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned();
            if seen.contains(needle) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "never saw {needle:?}; saw {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we pass, which outlives the call.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(done, 0);
    }
}

#[tokio::test]
async fn sbx_shell_in_a_real_terminal() {
    use std::os::unix::process::CommandExt;
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let slave_fd = pty.slave.as_raw_fd();
    let before = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    let mut command = std::process::Command::new(SBX);
    command
        .args(["shell", &id, "--", "sh"])
        .env("SBX_URL", &d.url)
        .env("SBX_API_KEY", &d.admin_key)
        .stdin(std::fs::File::from(pty.slave.try_clone().unwrap()))
        .stdout(std::fs::File::from(pty.slave.try_clone().unwrap()))
        .stderr(std::fs::File::from(pty.slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec: setsid and an ioctl that makes
    // the (inherited) slave the controlling terminal, as a terminal emulator does.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            libc::ioctl(slave_fd, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    // The command holds copies of the slave: drop them, or the reader never sees the end.
    drop(command);
    let master = std::fs::File::from(pty.master);
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let mut master = master.try_clone().unwrap();
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = master.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                output.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        })
    };
    let mut terminal = Pty { master, output };
    terminal.type_keys("stty size\n");
    terminal.wait_for("30 100");
    terminal.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    terminal.type_keys("stty size\n");
    terminal.wait_for("40 120");
    terminal.type_keys("sleep 100\n");
    std::thread::sleep(Duration::from_millis(300));
    terminal.type_keys("\x03"); // Ctrl-C, as a key: it reaches the sandbox, not sbx
    terminal.type_keys("echo after-$((2+3))\n");
    terminal.wait_for("after-5");
    terminal.type_keys("exit 3\n");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "sbx shell did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(3),
        "{}",
        text(&terminal.output.lock().unwrap())
    );
    // The terminal is as sbx found it.
    let after = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    drop(pty.slave);
    drop(terminal);
    let _ = reader.join();
    d.finish().await;
}
