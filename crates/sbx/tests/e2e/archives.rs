//! Directories in and out as tar streams, several files in one multipart request, and
//! `sbx cp` with directories — and hostile archives: `..`, absolute paths, symlinks planted
//! first (by the archive or by the sandbox), hard links out, devices, FIFOs, set-id bits.

use futures::StreamExt;
use sbx_protocol::FileKind;

use crate::daemon::{text, TestDaemon};

fn code(error: sbx_api_client::ClientError) -> String {
    error.code().unwrap_or_else(|| panic!("{error}")).to_owned()
}

pub(crate) async fn archive_of(d: &TestDaemon, id: &str, path: &str) -> Vec<u8> {
    let mut stream = d.client.archive(id, path).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

/// (path, kind, mode, size or link target) of every entry.
fn entries(tar_bytes: &[u8]) -> Vec<(String, char, u32, String)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let header = e.header();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Regular => 'f',
                _ => '?',
            };
            let detail = match kind {
                'l' | 'h' => e.link_name().unwrap().unwrap().display().to_string(),
                _ => header.size().unwrap().to_string(),
            };
            (
                e.path().unwrap().display().to_string(),
                kind,
                header.mode().unwrap(),
                detail,
            )
        })
        .collect()
}

/// A one-entry tar whose header says exactly what the test wants (names the `tar` crate
/// would refuse to write included).
fn raw_tar(name: &[u8], kind: tar::EntryType, mode: u32, link: &[u8], data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// One entry: name, kind, mode, link target, bytes.
type RawEntry<'a> = (&'a [u8], tar::EntryType, u32, &'a [u8], &'a [u8]);

/// Several entries, each as [`raw_tar`] makes them.
fn raw_tars(parts: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, mode, link, data) in parts {
        let one = raw_tar(name, *kind, *mode, link, data);
        out.extend_from_slice(&one[..one.len() - 1024]);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test]
async fn directories_go_in_and_out_as_tar_streams_with_modes_and_links() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    let made = d
        .sh(
            id,
            "set -e; mkdir -p src/sub/empty; printf 'run me' > src/tool; chmod 750 src/tool; \
             printf secret > src/sub/private; chmod 600 src/sub/private; \
             ln -s sub/private src/rel-link; ln -s /etc/hostname src/abs-link; \
             ln src/tool src/tool-again; mkfifo src/fifo; \
             head -c 3000000 /dev/urandom > src/sub/big",
        )
        .await;
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    let tar_bytes = archive_of(&d, id, "src").await;
    let listed = entries(&tar_bytes);
    let find = |path: &str| {
        listed
            .iter()
            .find(|e| e.0 == path)
            .unwrap_or_else(|| panic!("{path} not in {listed:?}"))
            .clone()
    };
    assert_eq!(find("src/").1, 'd');
    assert_eq!(
        find("src/tool"),
        ("src/tool".into(), 'f', 0o750, "6".into())
    );
    assert_eq!(find("src/sub/private").2, 0o600);
    assert_eq!(find("src/sub/big").3, "3000000");
    assert_eq!(find("src/sub/empty/").1, 'd');
    assert_eq!(find("src/rel-link").1, 'l');
    assert_eq!(find("src/rel-link").3, "sub/private");
    assert_eq!(find("src/abs-link").3, "/etc/hostname");
    // A hard link is archived as one (to whichever name came first).
    let again = find("src/tool-again");
    assert!(again.1 == 'h' || find("src/tool").1 == 'h', "{listed:?}");
    // A FIFO is left out.
    assert!(listed.iter().all(|e| e.0 != "src/fifo"), "{listed:?}");

    // Back in, elsewhere: the same tree.
    let result = d
        .client
        .extract(id, "/tmp/copy", None, tar_bytes.clone())
        .await
        .unwrap();
    assert_eq!(result.directory.path, "/tmp/copy");
    assert_eq!(result.entries, listed.len() as u64);
    let describe = |dir: &str| {
        format!(
            "cd {dir} && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort && \
             sha256sum sub/big tool sub/private && stat -c '%h %U' tool"
        )
    };
    let original = d.sh(id, &describe("src")).await;
    let copied = d.sh(id, &describe("/tmp/copy/src")).await;
    assert_eq!(original.exit_code, 0, "{}", original.stderr);
    let without_fifo: String = original
        .stdout
        .lines()
        .filter(|l| !l.starts_with("./fifo"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(copied.stdout, without_fifo);

    // A single file archives as one entry.
    let one = entries(&archive_of(&d, id, "src/tool").await);
    assert_eq!(one, vec![("tool".into(), 'f', 0o750, "6".into())]);
    // Errors.
    let missing = d.client.archive(id, "nope").await.err().unwrap();
    assert_eq!(code(missing), "file_not_found");
    let fifo = d.client.archive(id, "src/fifo").await.err().unwrap();
    assert_eq!(code(fifo), "conflict");
    let denied = d
        .client
        .extract(id, "/etc/x", None, tar_bytes.clone())
        .await;
    assert_eq!(code(denied.unwrap_err()), "permission_denied");
    let onto_file = d.client.extract(id, "src/tool", None, tar_bytes).await;
    assert_eq!(code(onto_file.unwrap_err()), "conflict");
    let not_tar = d
        .client
        .extract(id, "/tmp/junk", None, vec![7u8; 2048])
        .await;
    assert_eq!(code(not_tar.unwrap_err()), "invalid_request");
    d.finish().await;
}

#[tokio::test]
async fn hostile_archives_never_land_outside_their_directory() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    // The sandbox plants a symlink to its root inside the destination first.
    assert_eq!(
        d.sh(
            id,
            "mkdir -p dst && ln -s / dst/up && ln -s /etc dst/etc-link"
        )
        .await
        .exit_code,
        0
    );
    use tar::EntryType::{Block, Char, Fifo, Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            raw_tar(b"../escaped", Regular, 0o644, b"", b"x"),
            "invalid_request",
        ),
        (
            "deep dot-dot",
            raw_tar(b"a/../../escaped", Regular, 0o644, b"", b"x"),
            "invalid_request",
        ),
        (
            "absolute",
            raw_tar(b"/tmp/escaped", Regular, 0o644, b"", b"x"),
            "invalid_request",
        ),
        (
            "char device",
            raw_tar(b"null", Char, 0o666, b"", b""),
            "invalid_request",
        ),
        (
            "block device",
            raw_tar(b"disk", Block, 0o666, b"", b""),
            "invalid_request",
        ),
        (
            "fifo",
            raw_tar(b"pipe", Fifo, 0o666, b"", b""),
            "invalid_request",
        ),
        (
            "hard link out",
            raw_tar(b"h", Link, 0o644, b"../../../etc/passwd", b""),
            "invalid_request",
        ),
        (
            "absolute hard link",
            raw_tar(b"h", Link, 0o644, b"/etc/passwd", b""),
            "invalid_request",
        ),
        (
            "through a planted symlink",
            raw_tar(b"up/tmp/escaped", Regular, 0o644, b"", b"x"),
            "conflict",
        ),
        (
            "through its own symlink",
            raw_tars(&[
                (b"link", Symlink, 0o777, b"/tmp", b""),
                (b"link/escaped", Regular, 0o644, b"", b"x"),
            ]),
            "conflict",
        ),
        (
            "hard link through a symlink",
            raw_tar(b"h", Link, 0o644, b"etc-link/hostname", b""),
            "invalid_request",
        ),
    ];
    for (what, archive, expected) in cases {
        let refused = d.client.extract(id, "dst", None, archive).await;
        assert_eq!(code(refused.unwrap_err()), expected, "{what}");
    }
    let check = d
        .sh(
            id,
            "ls /home/user/escaped /home/escaped /tmp/escaped /escaped dst/null dst/disk dst/pipe 2>&1 | grep -vc 'No such file'; \
             ls -A dst | tr '\\n' ' '",
        )
        .await;
    assert_eq!(check.stdout, "0\netc-link link up ", "{}", check.stderr);
    // The symlink an archive may make is kept, as data: it is never gone through.
    assert_eq!(d.sh(id, "readlink dst/link").await.stdout, "/tmp\n");

    // Set-id bits are dropped, not refused; files belong to the caller, not the archive.
    let mut setuid = tar::Header::new_gnu();
    setuid.set_path("tool").unwrap();
    setuid.set_mode(0o4755);
    setuid.set_uid(0);
    setuid.set_gid(0);
    setuid.set_size(2);
    setuid.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&setuid, &b"#!"[..]).unwrap();
    let setuid_tar = builder.into_inner().unwrap();
    d.client
        .extract(id, "dst", None, setuid_tar.clone())
        .await
        .unwrap();
    let mode = d.sh(id, "stat -c '%a %U' dst/tool").await;
    assert_eq!(mode.stdout, "755 user\n");
    // Even when root extracts it.
    d.client
        .extract(id, "/opt/x", Some("root"), setuid_tar)
        .await
        .unwrap();
    let mode = d.sh(id, "stat -c '%a %U' /opt/x/tool").await;
    assert_eq!(mode.stdout, "755 root\n");
    // An existing file is replaced, never written through (a hard link to it keeps its
    // bytes).
    assert_eq!(
        d.sh(id, "echo keep > dst/target && ln dst/target dst/alias")
            .await
            .exit_code,
        0
    );
    let replace = raw_tar(b"alias", Regular, 0o644, b"", b"new");
    d.client.extract(id, "dst", None, replace).await.unwrap();
    let both = d.sh(id, "cat dst/target dst/alias").await;
    assert_eq!(both.stdout, "keep\nnew");
    // A hard link to nothing of the archive is refused before anything is removed.
    let dangling = raw_tar(b"target", Link, 0o644, b"missing", b"");
    let refused = d.client.extract(id, "dst", None, dangling).await;
    assert_eq!(code(refused.unwrap_err()), "invalid_request");
    assert_eq!(d.sh(id, "cat dst/target").await.stdout, "keep\n");
    // A read-only directory gets its entries first, its mode last; a directory already there
    // keeps its own mode (root extracting `tmp/` 0777 into / leaves /tmp 1777).
    let read_only = raw_tars(&[
        (b"ro/", tar::EntryType::Directory, 0o555, b"", b""),
        (b"ro/inside", Regular, 0o444, b"", b"x"),
        (b"tmp/", tar::EntryType::Directory, 0o777, b"", b""),
    ]);
    d.client
        .extract(id, "/", Some("root"), read_only.clone())
        .await
        .unwrap();
    d.client.extract(id, "dst", None, read_only).await.unwrap();
    let modes = d
        .sh(
            id,
            "stat -c '%a' dst/ro dst/ro/inside /tmp /ro; cat dst/ro/inside",
        )
        .await;
    assert_eq!(modes.stdout, "555\n444\n1777\n555\nx");
    // Names longer than a path can be, and /proc: refused with a clear error.
    let mut long = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o644);
    long.append_data(&mut header, "a/".repeat(3000), &b""[..])
        .unwrap();
    let refused = d
        .client
        .extract(id, "dst", None, long.into_inner().unwrap())
        .await;
    assert_eq!(code(refused.unwrap_err()), "invalid_request");
    let proc = d.client.archive(id, "/proc/self").await.err().unwrap();
    assert_eq!(code(proc), "conflict");
    d.finish().await;
}

#[tokio::test]
async fn several_files_in_one_multipart_request_and_cp_with_directories() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    let written = d
        .client
        .upload_many(
            id,
            Some("work"),
            vec![
                ("a.txt".into(), b"first".to_vec()),
                ("nested/b.bin".into(), (0..=255u8).collect()),
                ("/tmp/abs".into(), Vec::new()),
            ],
        )
        .await
        .unwrap();
    let paths: Vec<(&str, u64)> = written.iter().map(|f| (f.path.as_str(), f.size)).collect();
    assert_eq!(
        paths,
        [
            ("/home/user/work/a.txt", 5),
            ("/home/user/work/nested/b.bin", 256),
            ("/tmp/abs", 0)
        ]
    );
    let check = d.sh(id, "cat work/a.txt; wc -c < work/nested/b.bin").await;
    assert_eq!(check.stdout, "first256\n");
    // Not multipart, or a part that is no file: 400.
    let url = format!("{}/v1/sandboxes/{id}/files", d.url);
    let http = reqwest::Client::new();
    let plain = http
        .post(&url)
        .bearer_auth(&d.admin_key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let form = reqwest::multipart::Form::new().text("field", "no filename");
    let nameless = http
        .post(&url)
        .bearer_auth(&d.admin_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(nameless.status(), 400);
    // A part cut short, and headers that never end: 400, never a 500 or a buffer that grows.
    for body in [
        "--b\r\ncontent-disposition: form-data; name=\"f\"; filename=\"cut\"\r\n\r\nabc".to_owned(),
        format!("--b\r\nx-long: {}", "y".repeat(200_000)),
        "z".repeat(200_000),
    ] {
        let response = http
            .post(&url)
            .bearer_auth(&d.admin_key)
            .header("content-type", "multipart/form-data; boundary=b")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }

    // `sbx cp` with directories, both ways, in docker's idiom.
    let local = d.data_dir().join("project");
    std::fs::create_dir_all(local.join("src")).unwrap();
    std::fs::write(local.join("src/main.py"), "print('hi')\n").unwrap();
    std::fs::write(local.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("src/main.py", local.join("entry")).unwrap();
    // A FIFO is passed over (a sandbox refuses one in an archive).
    nix::unistd::mkfifo(
        &local.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(local.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // To a path that does not exist: it becomes it.
    let out = d.cli(&["cp", local.to_str().unwrap(), &format!("{id}:/tmp/p")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // To a directory that exists: it goes inside.
    let out = d.cli(&["cp", local.to_str().unwrap(), &format!("{id}:/tmp/p")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tree = d
        .sh(
            id,
            "cd /tmp/p && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort",
        )
        .await;
    assert_eq!(
        tree.stdout,
        ". d 755 \n./entry l 777 src/main.py\n./project d 755 \n./project/entry l 777 src/main.py\n\
         ./project/run.sh f 755 \n./project/src d 755 \n./project/src/main.py f 644 \n\
         ./run.sh f 755 \n./src d 755 \n./src/main.py f 644 \n"
    );
    // Out again: into a new local directory, and into an existing one.
    let back = d.data_dir().join("back");
    let out = d.cli(&[
        "cp",
        &format!("{id}:/tmp/p/project"),
        back.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(back.join("src/main.py")).unwrap(),
        "print('hi')\n"
    );
    assert_eq!(
        std::fs::read_link(back.join("entry")).unwrap(),
        std::path::Path::new("src/main.py")
    );
    let mode = std::fs::metadata(back.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let existing = d.data_dir().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let out = d.cli(&[
        "cp",
        &format!("{id}:/tmp/p/src"),
        existing.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(existing.join("src/main.py").exists());
    // To standard output: the tar stream; from standard input with --archive.
    let out = d.cli(&["cp", &format!("{id}:/tmp/p/src"), "-"]);
    assert!(out.status.success());
    let listed = entries(&out.stdout);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let out = d.cli_with_stdin(
        &["cp", "--archive", "-", &format!("{id}:/tmp/piped")],
        Some(&out.stdout),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = d.client.stat(id, "/tmp/piped/src/main.py").await.unwrap();
    assert_eq!((info.kind, info.size), (FileKind::File, 12));
    d.finish().await;
}

/// The SSE events of a watch, read until `until` is seen (or 20 s pass): (type, path) pairs.
/// A recursive watch of sandbox `id`'s directory `path`, as the admin; answered 200.
pub(crate) async fn recursive_watch(d: &TestDaemon, id: &str, path: &str) -> reqwest::Response {
    let url = format!(
        "{}/v1/sandboxes/{id}/files/watch?path={path}&recursive=true",
        d.url
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&d.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

pub(crate) async fn watch_events(
    response: &mut reqwest::Response,
    until: &str,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen
        .iter()
        .any(|(_, p): &(String, String)| p.ends_with(until))
    {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            _ => break,
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data:")) {
                let event: sbx_protocol::FileEvent = serde_json::from_str(data.trim()).unwrap();
                seen.push((event.kind, event.path));
            }
        }
    }
    seen
}

#[tokio::test]
async fn a_watch_tells_changes_as_they_happen_and_ends_with_the_sandbox() {
    let d = TestDaemon::start().await;
    let s = d.create().await;
    let id = &s.id;
    assert_eq!(d.sh(id, "mkdir -p w/old").await.exit_code, 0);
    let mut response = recursive_watch(&d, id, "w").await;
    // A new directory is watched as soon as it is told; what is made in it before then is
    // told as created (the rest of the test waits for it, so that every kind is seen).
    d.sh(id, "mkdir w/sub && echo early > w/sub/early").await;
    let mut seen = watch_events(&mut response, "/sub").await;
    d.sh(
        id,
        "echo one > w/sub/f && chmod 600 w/sub/f && mv w/sub/f w/g && \
         echo two > w/old/h && rm w/g && touch w/done",
    )
    .await;
    seen.extend(watch_events(&mut response, "/done").await);
    let early = seen
        .iter()
        .any(|(k, p)| k == "create" && p == "/home/user/w/sub/early");
    // Made before the watch on w/sub, or after: either way it is told.
    assert!(
        early || seen.iter().any(|(_, p)| p == "/home/user/w/sub/early"),
        "{seen:?}"
    );
    let has = |kind: &str, path: &str| {
        seen.iter()
            .any(|(k, p)| k == kind && p == &format!("/home/user/w/{path}"))
    };
    for (kind, path) in [
        ("create", "sub"),
        ("create", "sub/f"),
        ("write", "sub/f"),
        ("chmod", "sub/f"),
        ("rename", "sub/f"),
        ("create", "g"),
        ("create", "old/h"),
        ("remove", "g"),
        ("create", "done"),
    ] {
        assert!(has(kind, path), "{kind} {path} not in {seen:?}");
    }
    // Errors, as for the other file routes.
    for (path, status) in [("nope", 404), ("w/old/h", 409), ("/proc", 409)] {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/v1/sandboxes/{id}/files/watch?path={path}",
                d.url
            ))
            .bearer_auth(&d.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    // The sandbox goes: the stream ends.
    d.client.delete(id).await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(_)) = response.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch outlived its sandbox");
    d.finish().await;
}
