//! Projects, fragments and each user's one active sandbox (seed 004), on the native backend:
//! the whole flow through the API and the CLI — a project with files, a switch that restores
//! them and whose dev server answers through its preview URL, a switch to another project,
//! a save, a switch back to a given fragment, shares, cleanups of one user and of all —, the
//! ownership rules (another user's projects and active sandbox are 404), concurrent switches
//! of one user leaving exactly one sandbox, and the bounds and refusals of bad input.

use std::collections::BTreeMap;

use sbx_protocol::{CreateFragmentRequest, CreateProjectRequest, FileContent, SwitchRequest};

use crate::daemon::{cli_as, text, Options, TestDaemon};

/// A dev server of the project's own: serves its directory on port 3000.
const SERVER: &str = "import http.server, functools, os\n\
os.chdir(os.path.dirname(os.path.abspath(__file__)))\n\
http.server.ThreadingHTTPServer(('127.0.0.1', 3000), http.server.SimpleHTTPRequestHandler).serve_forever()\n";

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, FileContent> {
    entries
        .iter()
        .map(|(path, content)| ((*path).to_owned(), FileContent::Text((*content).to_owned())))
        .collect()
}

fn switch_to(project: &str, fragment: Option<&str>) -> SwitchRequest {
    SwitchRequest {
        project: project.into(),
        fragment: fragment.map(Into::into),
        ..SwitchRequest::default()
    }
}

async fn get_text(d: &TestDaemon, key: &str, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", d.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Starts the project's dev server and waits until its preview answers.
async fn serve(d: &TestDaemon, key: &str, sandbox: &str, preview: &str) -> String {
    let started = d
        .sh(
            sandbox,
            "cd /home/user && setsid nohup python3 server.py >/tmp/server.log 2>&1 < /dev/null &",
        )
        .await;
    assert_eq!(started.exit_code, 0, "{}", started.stderr);
    for _ in 0..100 {
        let (status, body) = get_text(d, key, &format!("{preview}index.html")).await;
        if status == 200 {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the preview of {sandbox} never answered");
}

fn ok(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[tokio::test]
async fn the_seed_004_flow_through_the_api_and_the_cli() {
    let d = TestDaemon::start().await;
    let (alice_key, alice) = d.user("alice").await;
    let (bob_key, bob) = d.user("bob").await;
    let as_alice = |args: &[&str]| cli_as(&d.url, Some(&alice_key), args, None);
    let as_bob = |args: &[&str]| cli_as(&d.url, Some(&bob_key), args, None);

    // A project with files, through the API.
    let site = alice
        .create_project(&CreateProjectRequest {
            name: "site".into(),
            port: Some(3000),
            files: Some(files(&[
                ("index.html", "<h1>site v1</h1>"),
                ("server.py", SERVER),
                ("assets/app.js", "console.log('site')"),
            ])),
            ..CreateProjectRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(site.fragments, 1);
    let site_v1 = site.latest_fragment.clone().unwrap();

    // Switch alice to it: the files are there and the dev server answers through the preview.
    let first = alice
        .switch("alice", &switch_to("site", None))
        .await
        .unwrap();
    assert_eq!(first.restored_files, 3);
    assert_eq!(first.fragment_id.as_deref(), Some(site_v1.as_str()));
    assert!(first.alive);
    let preview = first.preview_path.clone().unwrap();
    assert_eq!(
        preview,
        format!("/v1/sandboxes/{}/ports/3000/", first.sandbox.id)
    );
    assert_eq!(
        serve(&d, &alice_key, &first.sandbox.id, &preview).await,
        "<h1>site v1</h1>"
    );
    let listed = d
        .sh(&first.sandbox.id, "cat /home/user/assets/app.js")
        .await;
    assert_eq!(listed.stdout, "console.log('site')");
    // The sandbox is alice's, and shown as her active one.
    assert_eq!(first.sandbox.owner.as_deref(), Some("alice"));
    let shown = alice.active("alice").await.unwrap();
    assert_eq!(shown.sandbox.id, first.sandbox.id);
    assert_eq!(shown.project_name.as_deref(), Some("site"));

    // Another user sees nothing of it: not the project, not the active sandbox, not its
    // preview; and may not switch, read or clean up alice.
    let refused = bob.project(&site.id).await.unwrap_err();
    assert_eq!(refused.code(), Some("project_not_found"));
    assert_eq!(
        bob.project("alice/site").await.unwrap_err().code(),
        Some("project_not_found")
    );
    assert_eq!(
        bob.fragments(&site.id).await.unwrap_err().code(),
        Some("project_not_found")
    );
    for refused in [
        bob.active("alice").await.map(|_| ()),
        bob.switch("alice", &switch_to(&site.id, None))
            .await
            .map(|_| ()),
        bob.deactivate("alice").await.map(|_| ()),
    ] {
        assert_eq!(refused.unwrap_err().code(), Some("user_not_found"));
    }
    assert_eq!(
        get_text(&d, &bob_key, &format!("{preview}index.html"))
            .await
            .0,
        404
    );
    let cleanup = as_bob(&["users", "cleanup", "alice"]);
    assert!(!cleanup.status.success());
    assert!(bob.users().await.unwrap().is_empty());
    assert!(bob.projects().await.unwrap().is_empty());

    // Another project, from a local directory, through the CLI; switching destroys the old
    // sandbox and restores the new project's files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>blog</h1>").unwrap();
    std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
    std::fs::create_dir(dir.path().join("posts")).unwrap();
    std::fs::write(dir.path().join("posts/one.md"), "# one").unwrap();
    let made = ok(&as_alice(&[
        "project",
        "create",
        "blog",
        "--port",
        "3000",
        "--from",
        dir.path().to_str().unwrap(),
    ]));
    assert!(made.trim().starts_with("proj-"), "{made}");
    let switched = ok(&as_alice(&["switch", "blog"]));
    let blog_sandbox = switched.trim().to_owned();
    let old = d.client.get(&first.sandbox.id).await.unwrap();
    assert_eq!(format!("{:?}", old.state), "Destroyed");
    assert_eq!(old.state_reason.as_deref(), Some("switched"));
    let there = d
        .sh(
            &blog_sandbox,
            "cat /home/user/posts/one.md; echo; ls /home/user",
        )
        .await;
    assert_eq!(there.stdout, "# one\nindex.html\nposts\nserver.py\n");
    let active = alice.active("alice").await.unwrap();
    let preview = active.preview_path.unwrap();
    assert_eq!(
        serve(&d, &alice_key, &blog_sandbox, &preview).await,
        "<h1>blog</h1>"
    );

    // Work in the sandbox saved as a new fragment (leaving a directory out), and listed.
    d.sh(
        &blog_sandbox,
        "echo '# two' > /home/user/posts/two.md; mkdir -p /home/user/node_modules/x; echo big > /home/user/node_modules/x/y",
    )
    .await;
    let saved = ok(&as_alice(&[
        "project",
        "save",
        &blog_sandbox,
        "--exclude",
        "node_modules",
        "-m",
        "second post",
    ]));
    let blog_v2 = saved.trim().to_owned();
    let listing = ok(&as_alice(&["fragment", "ls", "blog"]));
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(listing.contains(&format!("{blog_v2} *")), "{listing}");
    let detail = alice.fragment("blog", &blog_v2).await.unwrap();
    let paths: Vec<_> = detail.entries.iter().map(|e| e.path.as_str()).collect();
    assert!(
        paths.contains(&"posts/two.md") && !paths.iter().any(|p| p.contains("node_modules")),
        "{paths:?}"
    );
    assert_eq!(detail.fragment.message.as_deref(), Some("second post"));
    // The fragment's files come back as a tar stream.
    let exported = as_alice(&["fragment", "export", "blog", &blog_v2, "-"]);
    let exported = ok_bytes(&exported);
    let mut archive = tar::Archive::new(&exported[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"posts/two.md".to_owned()), "{names:?}");

    // Back to site's first fragment, by id, saving blog's work on the way out.
    d.sh(&blog_sandbox, "echo '# three' > /home/user/posts/three.md")
        .await;
    let back = ok(&as_alice(&[
        "switch",
        &format!("site@{site_v1}"),
        "--save",
        "--exclude",
        "node_modules",
    ]));
    let site_sandbox = back.trim().to_owned();
    let blog = alice.project("blog").await.unwrap();
    assert_eq!(blog.fragments, 3, "the save on switch made a fragment");
    let latest = alice.fragment("blog", "latest").await.unwrap();
    assert!(latest.entries.iter().any(|e| e.path == "posts/three.md"));
    assert_eq!(
        d.sh(&site_sandbox, "cat /home/user/index.html")
            .await
            .stdout,
        "<h1>site v1</h1>"
    );
    assert_eq!(
        d.sh(&site_sandbox, "test -e /home/user/posts; echo $?")
            .await
            .stdout,
        "1\n"
    );

    // Shared read-only: bob may see and switch to it, not change it.
    ok(&as_alice(&[
        "project", "share", "site", "bob", "--access", "read",
    ]));
    let seen = bob.project("alice/site").await.unwrap();
    assert_eq!(seen.access, "read");
    assert!(seen.shares.is_empty(), "shares are shown to the owner only");
    let bobs = bob.switch("bob", &switch_to(&site.id, None)).await.unwrap();
    assert_eq!(bobs.sandbox.owner.as_deref(), Some("bob"));
    let write = bob
        .create_fragment(
            &site.id,
            &CreateFragmentRequest {
                files: Some(files(&[("x", "y")])),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(write, sbx_api_client::ClientError::Api { status: 403, .. }),
        "{write}"
    );
    assert_eq!(write.code(), Some("read_only"));

    // A fragment from a snapshot of alice's: its files under the project's root, read through
    // a sandbox made from it, which is gone once they are read.
    let snapshot = alice.create_snapshot(&site_sandbox, None).await.unwrap();
    let added = ok(&as_alice(&[
        "fragment",
        "add",
        "site",
        "--snapshot",
        &snapshot.id,
    ]));
    let from_snapshot = alice.fragment("site", added.trim()).await.unwrap();
    assert_eq!(
        from_snapshot.fragment.source,
        format!("snapshot:{}", snapshot.id)
    );
    let paths: Vec<_> = from_snapshot
        .entries
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert!(
        paths.contains(&"index.html") && paths.contains(&"server.py"),
        "{paths:?}"
    );
    let alices_live: Vec<_> = alice
        .list(&[], &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|s| format!("{:?}", s.state) != "Destroyed")
        .map(|s| s.id)
        .collect();
    assert_eq!(
        alices_live,
        std::slice::from_ref(&site_sandbox),
        "the reading sandbox is gone"
    );
    assert_eq!(
        bob.create_fragment(
            "alice/site",
            &CreateFragmentRequest {
                snapshot: Some(snapshot.id.clone()),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err()
        .code(),
        Some("read_only")
    );
    alice.delete_snapshot(&snapshot.id).await.unwrap();

    // The CLI's view of users: an admin sees everyone's.
    let users = ok(&d.cli(&["users"]));
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    let own = ok(&as_alice(&["users"]));
    assert!(own.contains("alice") && !own.contains("bob"), "{own}");

    // Clean up one user, then all.
    let ended = ok(&d.cli(&["users", "cleanup", "alice"]));
    assert!(
        ended.contains(&site_sandbox) && ended.contains("killed"),
        "{ended}"
    );
    assert_eq!(
        alice.active("alice").await.unwrap_err().code(),
        Some("user_not_found")
    );
    ok(&d.cli(&["users", "cleanup", "--all"]));
    assert!(d.client.users().await.unwrap().is_empty());
    assert_eq!(
        format!("{:?}", d.client.get(&bobs.sandbox.id).await.unwrap().state),
        "Destroyed"
    );
    // Projects go with their fragments.
    ok(&as_alice(&["project", "rm", "site", "blog"]));
    assert!(alice.projects().await.unwrap().is_empty());
    d.finish().await;
}

fn ok_bytes(output: &std::process::Output) -> Vec<u8> {
    assert!(output.status.success(), "{}", text(&output.stderr));
    output.stdout.clone()
}

#[tokio::test]
async fn concurrent_switches_of_one_user_leave_exactly_one_sandbox() {
    let d = TestDaemon::start().await;
    let project = d
        .client
        .create_project(&CreateProjectRequest {
            name: "app".into(),
            files: Some(files(&[("a.txt", "a")])),
            ..CreateProjectRequest::default()
        })
        .await
        .unwrap();
    // An application's admin key acting for its own user.
    let switches = (0..20).map(|_| {
        let client = d.client.clone();
        let project = project.id.clone();
        async move { client.switch("carol", &switch_to(&project, None)).await }
    });
    let answers = futures::future::join_all(switches).await;
    let made: Vec<String> = answers
        .into_iter()
        .map(|a| a.expect("every switch succeeds").sandbox.id)
        .collect();
    let active = d.client.active("carol").await.unwrap();
    assert!(active.alive);
    assert!(made.contains(&active.sandbox.id));
    let live: Vec<String> = d
        .client
        .list(&[], &[])
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some("carol"))
        .filter(|s| format!("{:?}", s.state) != "Destroyed")
        .map(|s| s.id)
        .collect();
    assert_eq!(
        live,
        std::slice::from_ref(&active.sandbox.id),
        "exactly one sandbox survives"
    );
    for id in &made {
        if *id != active.sandbox.id {
            d.assert_no_traces(id);
        }
    }
    // More at once than may wait: those past the bound are refused (429) before they act;
    // the others run, and still one sandbox survives.
    let switches = (0..60).map(|_| {
        let client = d.client.clone();
        let project = project.id.clone();
        async move { client.switch("carol", &switch_to(&project, None)).await }
    });
    let answers = futures::future::join_all(switches).await;
    let refused = answers
        .iter()
        .filter(|a| {
            matches!(a, Err(sbx_api_client::ClientError::Api { status: 429, code, .. }) if code == "rate_limited")
        })
        .count();
    let made: Vec<String> = answers
        .into_iter()
        .filter_map(Result::ok)
        .map(|a| a.sandbox.id)
        .collect();
    assert!(refused > 0, "none of 60 switches was refused");
    assert_eq!(refused + made.len(), 60, "every switch ran or was refused");
    let active = d.client.active("carol").await.unwrap();
    assert!(active.alive && made.contains(&active.sandbox.id));
    for id in &made {
        if *id != active.sandbox.id {
            d.assert_no_traces(id);
        }
    }
    // A sandbox that died is reported as such, and replaced by the next switch.
    d.client.delete(&active.sandbox.id).await.unwrap();
    let dead = d.client.active("carol").await.unwrap();
    assert!(!dead.alive);
    let next = d
        .client
        .switch("carol", &switch_to("app", None))
        .await
        .unwrap();
    assert!(next.alive && next.sandbox.id != active.sandbox.id);
    assert_eq!(
        d.sh(&next.sandbox.id, "cat /home/user/a.txt").await.stdout,
        "a"
    );
    d.finish().await;
}

#[tokio::test]
async fn fragments_are_bounded_and_bad_input_is_refused() {
    let d = TestDaemon::start_with(Options {
        config: Some(
            "[projects]\nmax_per_user = 2\nmax_fragments_per_project = 3\nmax_fragment_files = 5\nmax_fragment_bytes = 3000000\nmax_bytes_per_user = 5000000\n",
        ),
        ..Options::default()
    })
    .await;
    let (_, alice) = d.user("alice").await;
    let status = |e: sbx_api_client::ClientError| match e {
        sbx_api_client::ClientError::Api { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    let new = |name: &str| CreateProjectRequest {
        name: name.into(),
        ..CreateProjectRequest::default()
    };
    // Names, roots, ports, profiles.
    for (request, field) in [
        (new("../x"), "name"),
        (new(""), "name"),
        (
            CreateProjectRequest {
                root: Some("relative".into()),
                ..new("a")
            },
            "root",
        ),
        (
            CreateProjectRequest {
                root: Some("/a/../..".into()),
                ..new("a")
            },
            "root",
        ),
        (
            CreateProjectRequest {
                port: Some(0),
                ..new("a")
            },
            "port",
        ),
    ] {
        let (code, _) = status(alice.create_project(&request).await.unwrap_err());
        assert_eq!(code, 400, "{field}");
    }
    let (code, name) = status(
        alice
            .create_project(&CreateProjectRequest {
                profile: Some("nope".into()),
                ..new("a")
            })
            .await
            .unwrap_err(),
    );
    assert_eq!((code, name.as_str()), (400, "profile_not_found"));
    alice.create_project(&new("one")).await.unwrap();
    assert_eq!(
        status(alice.create_project(&new("one")).await.unwrap_err()).0,
        409
    );
    // A path out of the project, in a map or in a tar, and a file with two contents.
    let bad = alice
        .create_fragment(
            "one",
            &CreateFragmentRequest {
                files: Some(files(&[("../../etc/passwd", "x")])),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status(bad).0, 400);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    // The tar crate refuses to write `..`: the raw name goes into the header by hand.
    header.as_old_mut().name[..9].copy_from_slice(b"a/../../b");
    header.set_cksum();
    tar.append(&header, &b"x"[..]).unwrap();
    let bad = alice
        .upload_fragment("one", tar.into_inner().unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(status(bad).0, 400);
    let (code, _) = status(
        alice
            .upload_fragment("one", b"not a tar at all, not even close".repeat(40), None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
    // An empty body, with a length of 0 or chunked, is no archive (not an empty fragment).
    for body in [
        reqwest::Body::from(Vec::new()),
        reqwest::Body::wrap_stream(futures::stream::empty::<Result<Vec<u8>, std::io::Error>>()),
    ] {
        match alice.upload_fragment("one", body, None).await.unwrap_err() {
            sbx_api_client::ClientError::Api {
                status, message, ..
            } => assert!(status == 400 && message.contains("empty"), "{message}"),
            other => panic!("{other}"),
        }
    }
    let both = alice
        .create_fragment(
            "one",
            &CreateFragmentRequest {
                files: Some(files(&[("a", "b")])),
                sandbox: Some("sb-x".into()),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status(both).0, 400);
    // A path given twice (once normalized) is refused: a fragment stores what it holds.
    let twice = alice
        .create_fragment(
            "one",
            &CreateFragmentRequest {
                files: Some(files(&[("a", "1"), ("./a", "2")])),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status(twice).0, 400);
    // Too many files, too many bytes: 413, and nothing is kept.
    let many: Vec<(String, String)> = (0..6).map(|n| (format!("f{n}"), "x".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let over = alice
        .create_fragment(
            "one",
            &CreateFragmentRequest {
                files: Some(files(&many)),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status(over).0, 413);
    let big = "x".repeat(3_100_000);
    let over = alice
        .create_fragment(
            "one",
            &CreateFragmentRequest {
                files: Some(files(&[("big", &big)])),
                ..CreateFragmentRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status(over).0, 413);
    assert!(alice.fragments("one").await.unwrap().is_empty());
    // The owner's bytes together: 2.5 MB, then 2.5 MB more is past 5 MB.
    let half = "y".repeat(2_500_000);
    let fits = CreateFragmentRequest {
        files: Some(files(&[("half", &half)])),
        ..CreateFragmentRequest::default()
    };
    alice.create_fragment("one", &fits).await.unwrap();
    let half2 = "z".repeat(2_600_000);
    let (code, name) = status(
        alice
            .create_fragment(
                "one",
                &CreateFragmentRequest {
                    files: Some(files(&[("half", &half2)])),
                    ..CreateFragmentRequest::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, name.as_str()), (429, "quota_exceeded"));
    // Fragments per project, projects per user.
    let small = CreateFragmentRequest {
        files: Some(files(&[("s", "s")])),
        ..CreateFragmentRequest::default()
    };
    alice.create_fragment("one", &small).await.unwrap();
    alice.create_fragment("one", &small).await.unwrap();
    assert_eq!(
        status(alice.create_fragment("one", &small).await.unwrap_err()).0,
        429
    );
    alice.create_project(&new("two")).await.unwrap();
    assert_eq!(
        status(alice.create_project(&new("three")).await.unwrap_err()).0,
        429
    );
    // Unknown fragments and projects; a switch to a project without fragments starts empty.
    assert_eq!(
        status(alice.fragment("one", "frag-nothere").await.unwrap_err()).1,
        "fragment_not_found"
    );
    assert_eq!(
        status(
            alice
                .switch("alice", &switch_to("one", Some("frag-zzz")))
                .await
                .unwrap_err()
        )
        .1,
        "fragment_not_found"
    );
    assert_eq!(
        status(
            alice
                .switch("alice", &switch_to("nope", None))
                .await
                .unwrap_err()
        )
        .1,
        "project_not_found"
    );
    let empty = alice
        .switch("alice", &switch_to("two", None))
        .await
        .unwrap();
    assert_eq!((empty.restored_files, empty.fragment_id), (0, None));
    // A user name an admin gives must be one.
    let (code, _) = status(
        d.client
            .switch("Not A User", &switch_to("two", None))
            .await
            .unwrap_err(),
    );
    assert!(code == 400 || code == 404, "{code}");
    alice.deactivate("alice").await.unwrap();
    d.finish().await;
}
