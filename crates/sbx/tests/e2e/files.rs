//! Files through the binary: round trips of every shape, ranges, the directory verbs, every
//! error, the CLI — and paths planted by a hostile sandbox (symlinks to the host, FIFOs,
//! devices, `..`), which must never reach outside it nor hang the daemon.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use sbx_protocol::{CreateSandboxRequest, FileKind, ResourcesRequest};

use crate::daemon::{text, Options, TestDaemon};

async fn download(d: &TestDaemon, id: &str, path: &str, range: Option<&str>) -> Vec<u8> {
    let mut stream = d.client.download(id, path, range).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

fn code(error: sbx_api_client::ClientError) -> String {
    error.code().unwrap_or_else(|| panic!("{error}")).to_owned()
}

/// Deterministic bytes that are not text.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn files_go_in_and_out_whole_and_in_ranges() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let large = noise(24 << 20);
    for (path, bytes) in [
        ("empty", Vec::new()),
        ("hello.txt", b"hello\n".to_vec()),
        ("bin/all-bytes", all_bytes.clone()),
        ("/tmp/large", large.clone()),
    ] {
        let info = d
            .client
            .upload(id, path, None, None, bytes.clone())
            .await
            .unwrap();
        assert_eq!(info.size, bytes.len() as u64, "{path}");
        assert_eq!(info.kind, FileKind::File);
        assert_eq!((info.mode, info.owner.as_str()), (0o644, "user"), "{path}");
        assert!(download(&d, id, path, None).await == bytes, "{path}");
    }
    // Relative paths are the user's home; parents were made.
    let home = d
        .sh(id, "cat /home/user/hello.txt; stat -c %U /home/user/bin")
        .await;
    assert_eq!(home.stdout, "hello\nuser\n");
    // Ranges.
    assert_eq!(
        download(&d, id, "bin/all-bytes", Some("bytes=10-19")).await,
        &all_bytes[10..20]
    );
    assert_eq!(
        download(&d, id, "bin/all-bytes", Some("bytes=-6")).await,
        &all_bytes[250..]
    );
    assert_eq!(
        download(&d, id, "/tmp/large", Some("bytes=20000000-")).await,
        &large[20_000_000..]
    );
    let (status, _) = d
        .client
        .raw(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=hello.txt"),
            None,
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    // Mode and owner as asked.
    let script = d
        .client
        .upload(
            id,
            "/usr/local/bin/tool",
            Some("755"),
            Some("root"),
            b"#!/bin/sh\necho tool\n".to_vec(),
        )
        .await;
    // /usr is the host's, read-only in the sandbox: refused, not written anywhere else.
    assert!(matches!(
        code(script.unwrap_err()).as_str(),
        "permission_denied"
    ));
    let tool = d
        .client
        .upload(
            id,
            "/root/tool",
            Some("750"),
            Some("root"),
            b"#!/bin/sh\necho tool\n".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!((tool.mode, tool.owner.as_str()), (0o750, "root"));
    assert_eq!(
        d.sh_as(id, Some("root"), "/root/tool").await.stdout,
        "tool\n"
    );
    // The user's own permissions apply to the user's files.
    let denied = d
        .client
        .upload(id, "/root/mine", None, None, b"x".to_vec())
        .await;
    assert_eq!(code(denied.unwrap_err()), "permission_denied");

    // Directory verbs.
    let dir = d.client.make_dir(id, "a/b/c", None).await.unwrap();
    assert_eq!(dir.kind, FileKind::Directory);
    d.client
        .upload(id, "a/b/c/f", None, None, b"f".to_vec())
        .await
        .unwrap();
    let moved = d.client.move_file(id, "a/b/c/f", "a/g").await.unwrap();
    assert_eq!(moved.path, "/home/user/a/g");
    let listed = d.client.list_files(id, "a", 3).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        ["/home/user/a/b", "/home/user/a/b/c", "/home/user/a/g"]
    );
    let busy = d.client.remove_file(id, "a", false).await.unwrap_err();
    assert_eq!(code(busy), "conflict");
    d.client.remove_file(id, "a", true).await.unwrap();
    assert_eq!(
        code(d.client.stat(id, "a").await.unwrap_err()),
        "file_not_found"
    );

    // Errors.
    assert_eq!(
        code(d.client.stat(id, "nope").await.unwrap_err()),
        "file_not_found"
    );
    let missing = d.client.download(id, "nope", None).await.err().unwrap();
    assert_eq!(code(missing), "file_not_found");
    let directory = d.client.download(id, "bin", None).await.err().unwrap();
    assert_eq!(code(directory), "conflict");
    let onto_file = d
        .client
        .upload(id, "hello.txt/x", None, None, b"x".to_vec())
        .await;
    assert_eq!(code(onto_file.unwrap_err()), "conflict");
    let onto_dir = d.client.upload(id, "bin", None, None, b"x".to_vec()).await;
    assert_eq!(code(onto_dir.unwrap_err()), "conflict");
    let (status, body) = d
        .client
        .raw(
            Method::GET,
            &format!("/v1/sandboxes/{id}/files?path=hello.txt"),
            None,
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!((status, body.as_ref()), (200, b"hello\n".as_ref()));
    for mode in ["4755", "2755", "1777", "9"] {
        let special = d
            .client
            .upload(id, "s", Some(mode), None, b"x".to_vec())
            .await;
        assert_eq!(code(special.unwrap_err()), "invalid_request", "{mode}");
    }
    let mut range = reqwest::Client::new()
        .get(format!("{}/v1/sandboxes/{id}/files?path=hello.txt", d.url))
        .bearer_auth(&d.admin_key)
        .header("range", "bytes=100-");
    range = range.timeout(Duration::from_secs(10));
    assert_eq!(range.send().await.unwrap().status(), 416);

    // The CLI, both ways, and through stdin and stdout.
    let local = d.data_dir().join("local-copy");
    std::fs::write(&local, &all_bytes).unwrap();
    let out = d.cli(&["cp", local.to_str().unwrap(), &format!("{id}:copied")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = d.data_dir().join("back");
    let out = d.cli(&["cp", &format!("{id}:copied"), back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), all_bytes);
    let out = d.cli_with_stdin(
        &["cp", "-", &format!("{id}:piped")],
        Some(b"through a pipe"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["cp", &format!("{id}:piped"), "-"]);
    assert_eq!(out.stdout, b"through a pipe");
    let out = d.cli(&["files", "ls", id, "."]);
    assert!(
        text(&out.stdout).contains("/home/user/piped"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["files", "rm", id, "piped"]);
    assert!(out.status.success());
    let out = d.cli(&["files", "stat", id, "piped"]);
    assert_eq!(out.status.code(), Some(1));

    // While paused: refused.
    d.client.pause(id).await.unwrap();
    assert_eq!(
        code(d.client.stat(id, "copied").await.unwrap_err()),
        "invalid_state"
    );
    d.client.resume(id).await.unwrap();
    d.finish().await;
}

#[tokio::test]
async fn paths_planted_by_the_sandbox_never_reach_the_host() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    // A file only the host has, and one the host's root owns and the sandbox must not change.
    let secret = d.data_dir().join("host-secret");
    std::fs::write(&secret, "HOST ONLY").unwrap();
    let secret = secret.to_str().unwrap().to_owned();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let plant = format!(
        "ln -s / /home/user/root-link; ln -s {secret} /home/user/secret-link; \
         ln -s /proc/1/root /home/user/init-root; ln -s /etc/passwd /home/user/passwd-link; \
         mkfifo /home/user/fifo; ln /home/user/.profile /home/user/hard 2>/dev/null; true"
    );
    assert_eq!(d.sh(id, &plant).await.exit_code, 0);
    for path in [
        secret.clone(),
        "secret-link".into(),
        format!("root-link{secret}"),
        format!("init-root{secret}"),
        format!("../../../../../..{secret}"),
        format!("/proc/1/root{secret}"),
        format!("/proc/self/root{secret}"),
    ] {
        // Never the host's file: absent in the sandbox, or (once a write below made one in
        // the sandbox's own /tmp) the sandbox's.
        match d.client.download(id, &path, None).await {
            Err(e) => {
                let code = code(e);
                assert!(
                    code == "file_not_found" || code == "permission_denied",
                    "read {path}: {code}"
                );
            }
            Ok(_) => assert_ne!(
                download(&d, id, &path, None).await,
                b"HOST ONLY",
                "read {path}"
            ),
        }
        let _ = d
            .client
            .upload(id, &path, None, None, b"pwned".to_vec())
            .await;
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "HOST ONLY",
            "write {path}"
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST ONLY");
    // A write replaces the name it is given: a symlink planted there is replaced, never
    // written through (so neither the sandbox's /etc/passwd nor the host's changes).
    d.client
        .upload(id, "passwd-link", None, None, b"mine".to_vec())
        .await
        .unwrap();
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    let check = d
        .sh(
            id,
            "test -L passwd-link || cat passwd-link; grep -c root /etc/passwd",
        )
        .await;
    assert_eq!(check.stdout, "mine1\n");
    // What only the file child could see — its own executable, the daemon's binary on the
    // host — is not there for the API either, nor is its host path told.
    for path in [
        "/proc/self/exe",
        "/proc/thread-self/exe",
        "/proc/self/map_files",
    ] {
        let read = d.client.download(id, path, None).await.err().map(code);
        assert!(
            matches!(
                read.as_deref(),
                Some("file_not_found") | Some("conflict") | Some("permission_denied")
            ),
            "read {path}: {read:?}"
        );
    }
    let exe = d.client.stat(id, "/proc/self/exe").await.unwrap();
    assert_eq!(exe.symlink_target, None);
    let proc_self = d.client.list_files(id, "/proc/self", 1).await.unwrap();
    assert!(
        proc_self.iter().all(|f| f.symlink_target.is_none()),
        "{proc_self:?}"
    );
    // A FIFO and a device: refused at once, never waited on.
    let started = std::time::Instant::now();
    for path in ["fifo", "/dev/zero", "/dev/null", "/dev/tty"] {
        let read = d.client.download(id, path, None).await.err().map(code);
        assert!(
            matches!(read.as_deref(), Some("conflict") | Some("file_not_found")),
            "read {path}: {read:?}"
        );
    }
    // The sandbox user cannot put files in /dev.
    let write = d
        .client
        .upload(id, "/dev/null", None, None, b"x".to_vec())
        .await;
    assert_eq!(code(write.unwrap_err()), "permission_denied");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Listing shows symlinks as symlinks, and never follows them out.
    let listed = d.client.list_files(id, ".", 3).await.unwrap();
    let root_link = listed
        .iter()
        .find(|f| f.path == "/home/user/root-link")
        .unwrap();
    assert_eq!(root_link.kind, FileKind::Symlink);
    assert_eq!(root_link.symlink_target.as_deref(), Some("/"));
    assert!(listed.iter().all(|f| !f.path.contains("host-secret")));
    // Removing a symlink removes the link, never what it points to.
    d.client.remove_file(id, "root-link", true).await.unwrap();
    assert_eq!(d.sh(id, "ls / | wc -l").await.exit_code, 0);
    assert!(std::path::Path::new(&secret).exists());
    d.finish().await;
}

#[tokio::test]
async fn uploads_are_bounded_by_the_limit_and_by_the_sandboxs_disk() {
    let d = TestDaemon::start_with(Options {
        config: Some("[files]\nmax_upload_bytes = 1048576\n"),
        ..Default::default()
    })
    .await;
    let s = d.create().await;
    // Declared too large: refused before a byte is read.
    let big = d
        .client
        .upload(&s.id, "big", None, None, vec![0u8; 2 << 20])
        .await;
    assert_eq!(code(big.unwrap_err()), "payload_too_large");
    // Streamed without a length: cut off once past the limit, and the file as it was.
    d.client
        .upload(&s.id, "kept", None, None, b"original".to_vec())
        .await
        .unwrap();
    let chunks =
        futures::stream::iter((0..32).map(|_| Ok::<_, std::io::Error>(vec![1u8; 64 << 10])));
    let streamed = d
        .client
        .upload(
            &s.id,
            "kept",
            None,
            None,
            reqwest::Body::wrap_stream(chunks),
        )
        .await;
    assert_eq!(code(streamed.unwrap_err()), "payload_too_large");
    let left = d.sh(&s.id, "cat kept; ls -A | grep -c sbx-upload").await;
    assert_eq!(left.stdout, "original0\n");
    // The same limit for an archive and for a multipart body as a whole.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(2 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "huge", &vec![0u8; 2 << 20][..])
        .unwrap();
    let archive = builder.into_inner().unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        archive.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let extracted = d
        .client
        .extract(
            &s.id,
            "x",
            None,
            reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(code(extracted.unwrap_err()), "payload_too_large");
    // An empty body is no archive, with a length of 0 or chunked.
    for body in [
        reqwest::Body::from(Vec::new()),
        reqwest::Body::wrap_stream(futures::stream::empty::<Result<Vec<u8>, std::io::Error>>()),
    ] {
        match d
            .client
            .extract(&s.id, "never", None, body)
            .await
            .unwrap_err()
        {
            sbx_api_client::ClientError::Api {
                status, message, ..
            } => assert!(status == 400 && message.contains("empty"), "{message}"),
            other => panic!("{other}"),
        }
    }
    // Refused before anything was made.
    assert_eq!(d.sh(&s.id, "test -e never; echo $?").await.stdout, "1\n");
    let many = d
        .client
        .upload_many(
            &s.id,
            None,
            vec![
                ("a".into(), vec![0u8; 600 << 10]),
                ("b".into(), vec![0u8; 600 << 10]),
            ],
        )
        .await;
    assert_eq!(code(many.unwrap_err()), "payload_too_large");
    d.finish().await;

    // A full sandbox disk is the sandbox's 507, and the sandbox and host carry on.
    let d = TestDaemon::start().await;
    let small = d
        .create_with(CreateSandboxRequest {
            resources: Some(ResourcesRequest {
                disk_mb: Some(64),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let full = d
        .client
        .upload(&small.id, "fill", None, None, vec![7u8; 96 << 20])
        .await;
    assert_eq!(code(full.unwrap_err()), "insufficient_storage");
    // Nothing of it is left: not the file, not a part of it.
    let left = d
        .sh(
            &small.id,
            "ls -A /home/user | grep -c -e fill -e sbx-upload",
        )
        .await;
    assert_eq!(left.stdout, "0\n");
    d.client
        .upload(&small.id, "fits", None, None, vec![7u8; 1 << 20])
        .await
        .unwrap();
    d.finish().await;
}
