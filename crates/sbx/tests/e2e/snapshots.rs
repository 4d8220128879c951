//! Filesystem snapshots through the binary: taken consistently from a running (and a paused)
//! sandbox, new sandboxes and recreates from them with the same files (checksums), across a
//! daemon restart and the deletion of their sandbox, exported and imported on a second data
//! directory; owned (another user's is 404), bounded (per user; hostile and oversized files),
//! audited, and their stored files removed once nothing needs them.

use futures::StreamExt;
use sbx_protocol::CreateSandboxRequest;

use crate::daemon::{text, Options, TestDaemon};

fn code(error: sbx_api_client::ClientError) -> String {
    error.code().unwrap_or_else(|| panic!("{error}")).to_owned()
}

/// Every path under the user's home and /opt with kind, mode, owner, link target, and the
/// checksum of each file: equal trees give equal text.
const DESCRIBE: &str = "cd / && find home/user opt -printf '%p %y %m %u %l\\n' | LC_ALL=C sort && \
                        find home/user opt -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

async fn describe(d: &TestDaemon, id: &str) -> String {
    let out = d.sh_as(id, Some("root"), DESCRIBE).await;
    assert_eq!(out.exit_code, 0, "{}", out.stderr);
    out.stdout
}

async fn from_snapshot(d: &TestDaemon, snapshot: &str) -> sbx_protocol::Sandbox {
    d.create_with(CreateSandboxRequest {
        from_snapshot: Some(snapshot.into()),
        ..Default::default()
    })
    .await
}

async fn create_from(
    client: &sbx_api_client::Client,
    snapshot: &str,
) -> Result<sbx_protocol::Sandbox, sbx_api_client::ClientError> {
    client
        .create(&CreateSandboxRequest {
            from_snapshot: Some(snapshot.into()),
            ..Default::default()
        })
        .await
}

async fn export(d: &TestDaemon, snapshot: &str) -> Vec<u8> {
    let mut stream = d.client.export_snapshot(snapshot).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    bytes
}

#[tokio::test]
async fn snapshots_restore_the_same_files_across_restarts_deletions_and_hosts() {
    let mut d = TestDaemon::start().await;
    let s = d.create().await;
    let made = d
        .sh_as(
            &s.id,
            Some("root"),
            "set -e; cd /home/user; head -c 3000000 /dev/urandom > big; echo hi > small; \
             mkdir -p a/b; echo deep > a/b/c; ln -s a/b/c link; chmod 600 small; \
             rm -f .profile .bashrc; mkdir /opt/tool; echo root-owned > /opt/tool/conf; \
             chown -R user:user /home/user",
        )
        .await;
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    let before = describe(&d, &s.id).await;
    // Taken while a process keeps writing: consistent, and the sandbox carries on running.
    let writer = d
        .sh(
            &s.id,
            "(while :; do date >> /tmp/log; sleep 0.01; done) >/dev/null 2>&1 & echo started",
        )
        .await;
    assert_eq!(writer.stdout, "started\n");
    let snapshot = d.client.create_snapshot(&s.id, Some("v1")).await.unwrap();
    assert!(snapshot.id.starts_with("snap-"), "{snapshot:?}");
    assert_eq!(snapshot.name.as_deref(), Some("v1"));
    assert_eq!(snapshot.sandbox_id.as_deref(), Some(s.id.as_str()));
    assert_eq!(snapshot.template, "host");
    assert!(snapshot.size_bytes >= 3_000_000, "{snapshot:?}");
    assert_eq!(
        d.client.get(&s.id).await.unwrap().state,
        sbx_protocol::SandboxState::Running
    );
    let layer = d.data_dir().join("snapshots").join(&snapshot.id);
    assert!(layer.join("layer").is_dir());

    // The sandbox goes, the daemon restarts: the snapshot stays.
    d.client.delete(&s.id).await.unwrap();
    d.stop().await;
    d.restart().await;
    let listed = d.client.snapshots().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, snapshot.id);
    let restored = from_snapshot(&d, &snapshot.id).await;
    assert_eq!(describe(&d, &restored.id).await, before);
    // A sandbox from a snapshot is its own: its changes are not the snapshot's.
    assert_eq!(
        d.sh(&restored.id, "echo changed > small; rm big; cat small")
            .await
            .stdout,
        "changed\n"
    );
    let again = from_snapshot(&d, &snapshot.id).await;
    assert_eq!(describe(&d, &again.id).await, before);

    // A snapshot of a sandbox made from one holds both: its parent's files and its changes.
    let child = d.client.create_snapshot(&restored.id, None).await.unwrap();
    assert_eq!(child.parent.as_deref(), Some(snapshot.id.as_str()));
    let grandchild = from_snapshot(&d, &child.id).await;
    let state = d
        .sh(
            &grandchild.id,
            "cat small; test -e big || echo no-big; cat a/b/c",
        )
        .await;
    assert_eq!(state.stdout, "changed\nno-big\ndeep\n");

    // Recreate from a snapshot: the old files go, the snapshot's come.
    let plain = d.create().await;
    d.sh(&plain.id, "echo junk > junk").await;
    let recreated = d
        .client
        .recreate_from(&plain.id, Some(&snapshot.id))
        .await
        .unwrap();
    assert_eq!(recreated.state, sbx_protocol::SandboxState::Running);
    assert_eq!(describe(&d, &plain.id).await, before);

    // A paused sandbox can be snapshotted, and stays paused.
    d.client.pause(&again.id).await.unwrap();
    let paused = d.client.create_snapshot(&again.id, None).await.unwrap();
    assert_eq!(
        d.client.get(&again.id).await.unwrap().state,
        sbx_protocol::SandboxState::Paused
    );
    d.client.resume(&again.id).await.unwrap();
    assert_eq!(
        describe(&d, &from_snapshot(&d, &paused.id).await.id).await,
        before
    );

    // Export, then import on a second data directory: the same files there.
    let file = export(&d, &snapshot.id).await;
    assert!(file.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "a zstd frame");
    let other = TestDaemon::start().await;
    let imported = other
        .client
        .import_snapshot(file.clone(), Some("moved"), None)
        .await
        .unwrap();
    assert_eq!(imported.name.as_deref(), Some("moved"));
    assert_eq!(imported.sandbox_id, None);
    let there = from_snapshot(&other, &imported.id).await;
    assert_eq!(describe(&other, &there.id).await, before);
    // The CLI, both ways.
    let path = d.data_dir().join("exported.tar.zst");
    let out = d.cli(&["snapshot", "export", &snapshot.id, path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = other.cli(&["snapshot", "import", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cli_id = text(&out.stdout).trim().to_owned();
    let out = other.cli(&["create", "--from-snapshot", &cli_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    other.finish().await;

    // Deleting: hidden at once; its files stay while a sandbox made from it lives.
    d.client.delete_snapshot(&snapshot.id).await.unwrap();
    assert_eq!(
        code(d.client.snapshot(&snapshot.id).await.unwrap_err()),
        "snapshot_not_found"
    );
    assert!(layer.is_dir(), "sandboxes made from it still run");
    let gone = create_from(&d.client, &snapshot.id).await.unwrap_err();
    assert_eq!(code(gone), "snapshot_not_found");
    for id in [&restored.id, &again.id, &plain.id] {
        d.client.delete(id).await.unwrap();
    }
    assert!(!layer.exists(), "no sandbox needs it any more");
    // The audit trail has them.
    let audit = d
        .client
        .audit(&[("event", "snapshot.created".to_owned())])
        .await
        .unwrap();
    assert!(audit.len() >= 3, "{audit:?}");
    d.finish().await;
}

#[tokio::test]
async fn snapshots_are_owned_bounded_and_imports_are_hostile() {
    let d = TestDaemon::start_with(Options {
        config: Some("[snapshots]\nmax_per_user = 2\n[files]\nmax_upload_bytes = 4194304\n"),
        ..Default::default()
    })
    .await;
    let (_, alice) = d.user("alice").await;
    let (_, bob) = d.user("bob").await;
    let hers = alice
        .create(&CreateSandboxRequest::default())
        .await
        .unwrap();
    let snapshot = alice.create_snapshot(&hers.id, None).await.unwrap();
    assert_eq!(snapshot.owner.as_deref(), Some("alice"));
    // Bob sees nothing of it: 404 everywhere, like a snapshot that does not exist.
    assert!(bob.snapshots().await.unwrap().is_empty());
    for probe in [
        snapshot.id.as_str(),
        "snap-aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "../etc",
    ] {
        assert_eq!(
            code(bob.snapshot(probe).await.unwrap_err()),
            "snapshot_not_found"
        );
        assert_eq!(
            code(bob.delete_snapshot(probe).await.unwrap_err()),
            "snapshot_not_found"
        );
        assert_eq!(
            code(bob.export_snapshot(probe).await.err().unwrap()),
            "snapshot_not_found"
        );
        assert_eq!(
            code(create_from(&bob, probe).await.unwrap_err()),
            "snapshot_not_found"
        );
    }
    assert_eq!(
        code(bob.create_snapshot(&hers.id, None).await.unwrap_err()),
        "sandbox_not_found"
    );
    // At most two each.
    alice.create_snapshot(&hers.id, None).await.unwrap();
    let third = alice.create_snapshot(&hers.id, None).await.unwrap_err();
    assert_eq!(code(third), "quota_exceeded");
    // Hostile files: refused, nothing stored.
    let zstd = |tar: Vec<u8>| zstd::encode_all(&tar[..], 3).unwrap();
    let entry = |name: &[u8], kind: tar::EntryType, data: &[u8]| {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    };
    let manifest = br#"{"format":"sbx-snapshot/1","id":"x","template":"host"}"#;
    let with = |entries: Vec<Vec<u8>>| {
        let mut tar = entry(b"sbx-snapshot.json", tar::EntryType::Regular, manifest);
        for e in entries {
            tar.extend(e);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        zstd(tar)
    };
    let (_, carol) = d.user("carol").await;
    for (what, file) in [
        ("not zstd", b"plain text".to_vec()),
        ("not a tar", zstd(vec![1u8; 4096])),
        (
            "no manifest",
            zstd(entry(b"layer/x", tar::EntryType::Regular, b"x")),
        ),
        (
            "dot-dot",
            with(vec![entry(b"layer/../../x", tar::EntryType::Regular, b"x")]),
        ),
        (
            "absolute",
            with(vec![entry(b"/etc/x", tar::EntryType::Regular, b"x")]),
        ),
        (
            "device",
            with(vec![entry(b"layer/null", tar::EntryType::Char, b"")]),
        ),
        (
            "through a symlink",
            with(vec![
                {
                    let mut header = tar::Header::new_old();
                    header.as_old_mut().name[..10].copy_from_slice(b"layer/link");
                    header.as_old_mut().linkname[..4].copy_from_slice(b"/etc");
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    header.set_cksum();
                    header.as_bytes().to_vec()
                },
                entry(b"layer/link/passwd", tar::EntryType::Regular, b"x"),
            ]),
        ),
        (
            "hard link out",
            with(vec![{
                let mut header = tar::Header::new_old();
                header.as_old_mut().name[..7].copy_from_slice(b"layer/h");
                header.as_old_mut().linkname[..11].copy_from_slice(b"/etc/passwd");
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                header.set_cksum();
                header.as_bytes().to_vec()
            }]),
        ),
    ] {
        let refused = carol.import_snapshot(file, None, None).await.unwrap_err();
        assert_eq!(code(refused), "invalid_request", "{what}");
    }
    assert!(carol.snapshots().await.unwrap().is_empty());
    // Over the upload limit: 413.
    let huge = vec![0u8; 5 << 20];
    let refused = carol.import_snapshot(huge, None, None).await.unwrap_err();
    assert_eq!(code(refused), "payload_too_large");
    // Nothing half-made is left in the store's directory.
    let left: Vec<_> = std::fs::read_dir(d.data_dir().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".new-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    d.finish().await;
}
