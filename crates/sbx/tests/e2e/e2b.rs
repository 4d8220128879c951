//! The unmodified E2B SDKs against a real daemon: each pinned version of E2B's Python SDK
//! (from PyPI, in a venv of its own under `target/e2b-sdks/`, made on first use) runs
//! `tests/e2b/sdk.py` — lifecycle, commands, PTY, files, watch, tokens and signed URLs,
//! errors, ownership — as alice, with bob's key for the ownership checks.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::{Options, TestDaemon};

/// One version before 2.51 (the last to check a key's form), the first after, the newest.
const PYTHON_SDKS: [&str; 3] = ["2.45.1", "2.51.0", "2.63.0"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv of `e2b==version`, made (from PyPI) when it is not there.
fn python_sdk(version: &str) -> PathBuf {
    venv(&format!("python-{version}"), &[&format!("e2b=={version}")])
}

/// `e2b-code-interpreter` (with the newest `e2b` it runs on).
const INTERPRETER_SDK: [&str; 2] = ["e2b-code-interpreter==2.11.5", "e2b==2.63.0"];

/// A venv of its own for `packages`, pinned, made (from PyPI) when it is not there.
fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let dir = root().join("target/e2b-sdks");
    let venv = dir.join(name);
    let python = venv.join("bin/python");
    // Tests of one venv share it: one makes it while the others wait.
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(format!("{name}.lock"))).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the venv's lock");
    let made = venv.join("sbx-made");
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&made).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("the E2B SDK tests need python3 with venv (scripts/setup --test)");
        assert!(status.success(), "python3 -m venv {}", venv.display());
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .expect("pip runs");
        assert!(pip.success(), "pip install {wanted} failed");
        std::fs::write(&made, &wanted).unwrap();
    }
    python
}

/// E2B's form of an sbx key.
fn e2b_key(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("e2b_{hex}")
}

/// Runs `script` (under tests/e2b/) with `python` against a daemon with E2B's settings, as
/// alice (bob's key given too); it must print `done`.
async fn run_script(python: PathBuf, script: &str, done: &str) {
    run_program(python, root().join("tests/e2b").join(script), done).await
}

/// The unmodified JS SDK (npm `e2b`, pinned by tests/e2b/js/package-lock.json) on Node:
/// commands, files, lifecycle, ownership.
#[tokio::test]
async fn e2b_js_sdk_works_unmodified() {
    let js = root().join("tests/e2b/js");
    crate::daemon::npm_installed(&js, "e2b");
    run_program(PathBuf::from("node"), js.join("sdk.mjs"), "all ok js").await;
}

async fn run_program(program: PathBuf, script: PathBuf, done: &str) {
    let d = TestDaemon::start_with(Options {
        config: Some("[e2b]\ndomain = \"sbx.test\"\n"),
        args: &["--warm-pool", "0"],
        ..Default::default()
    })
    .await;
    let (alice, _) = d.user("alice").await;
    let (bob, _) = d.user("bob").await;
    let output = tokio::task::spawn_blocking({
        let url = d.url.clone();
        let script = script.clone();
        move || {
            Command::new(program)
                .arg(script)
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("E2B_API_URL", &url)
                .env("E2B_SANDBOX_URL", &url)
                .env("E2B_API_KEY", e2b_key(&alice))
                .env("SBX_TEST_BOB_KEY", e2b_key(&bob))
                .env("SBX_TEST_DOMAIN", "sbx.test")
                .output()
                .expect("the SDK test runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(done),
        "{}:\n{stdout}\n{stderr}\n--- daemon log ---\n{}",
        script.display(),
        d.log()
    );
    d.finish().await;
}

async fn python_sdk_works(version: &str) {
    run_script(python_sdk(version), "sdk.py", &format!("all ok {version}")).await;
}

/// `run_code` of the unmodified `e2b-code-interpreter`: results, output, errors, env, two
/// contexts, restart and removal, a timeout that interrupts.
#[tokio::test]
async fn e2b_code_interpreter_runs_code_in_contexts() {
    let python = venv("interpreter-2.11.5", &INTERPRETER_SDK);
    run_script(python, "interpreter.py", "all ok interpreter").await;
}

#[tokio::test]
async fn e2b_python_sdk_2_45_works_unmodified() {
    python_sdk_works(PYTHON_SDKS[0]).await;
}

#[tokio::test]
async fn e2b_python_sdk_2_51_works_unmodified() {
    python_sdk_works(PYTHON_SDKS[1]).await;
}

#[tokio::test]
async fn e2b_python_sdk_newest_works_unmodified() {
    python_sdk_works(PYTHON_SDKS[2]).await;
}

/// The serialized `FileDescriptorProto`s the newest SDK ships for envd's two files.
const WHEEL_DESCRIPTORS: &str = r#"
import ast, importlib, inspect
for module in ("e2b.envd.process.process_pb", "e2b.envd.filesystem.filesystem_pb"):
    source = inspect.getsource(importlib.import_module(module))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "file_desc":
            print(node.args[0].value.hex())
"#;

/// A descriptor with what does not travel on the wire left out (options of other languages'
/// code generators, source positions), messages in name order, each JSON name checked to be
/// the default one and then dropped (protoc writes them, protox leaves them implied).
fn wire_contract(mut file: prost_types::FileDescriptorProto) -> prost_types::FileDescriptorProto {
    fn camel(name: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in name.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }
    fn message(m: &mut prost_types::DescriptorProto) {
        let owner = m.name().to_owned();
        for field in &mut m.field {
            if let Some(json) = field.json_name.take() {
                assert_eq!(json, camel(field.name()), "{owner}.{}", field.name());
            }
        }
        m.nested_type.iter_mut().for_each(message);
        m.nested_type.sort_by(|a, b| a.name.cmp(&b.name));
        m.enum_type.sort_by(|a, b| a.name.cmp(&b.name));
        m.options = None;
    }
    file.options = None;
    file.source_code_info = None;
    file.message_type.iter_mut().for_each(message);
    file.message_type.sort_by(|a, b| a.name.cmp(&b.name));
    file.enum_type.sort_by(|a, b| a.name.cmp(&b.name));
    file
}

/// sbx's `.proto` files of envd (crates/e2b-proto/proto) carry exactly the packages, services,
/// methods, messages, fields (names, numbers, types, labels, oneofs) and enums of the
/// descriptors the newest E2B SDK ships: a drift in the SDK fails here.
#[test]
fn envds_protos_match_the_descriptors_the_newest_sdk_ships() {
    use prost::Message as _;
    let python = python_sdk(PYTHON_SDKS[2]);
    let output = Command::new(python)
        .args(["-c", WHEEL_DESCRIPTORS])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wheel: Vec<prost_types::FileDescriptorProto> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap()
        })
        .collect();
    assert_eq!(wheel.len(), 2, "the SDK's envd descriptors were not found");
    let ours = prost_types::FileDescriptorSet::decode(sbx_e2b_proto::DESCRIPTORS).unwrap();
    for theirs in wheel {
        let name = theirs.name().to_owned();
        let mine = ours
            .file
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("sbx has no {name}"))
            .clone();
        assert_eq!(
            wire_contract(mine),
            wire_contract(theirs),
            "{name} differs from the SDK's"
        );
    }
}

/// A Connect call addressed to a sandbox's envd with `credentials` (headers): its status and
/// body. `streaming` sends one enveloped message, as server-streaming calls do.
async fn envd(
    d: &TestDaemon,
    method: &str,
    sandbox: &str,
    credentials: &[(&str, &str)],
    body: serde_json::Value,
    streaming: bool,
) -> (u16, Vec<u8>) {
    let json = serde_json::to_vec(&body).unwrap();
    let (content_type, payload) = if streaming {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(json.len() as u32).to_be_bytes());
        framed.extend_from_slice(&json);
        ("application/connect+json", framed)
    } else {
        ("application/json", json)
    };
    let mut request = reqwest::Client::new()
        .post(format!("{}/{method}", d.url))
        .header("content-type", content_type)
        .header("e2b-sandbox-id", sandbox)
        .header("e2b-sandbox-port", "49983")
        .timeout(std::time::Duration::from_secs(20))
        .body(payload);
    for (name, value) in credentials {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// What envd keeps is the sandbox's, not its name's; a sandbox's token opens that sandbox only
/// and the traffic token opens no envd call; a signed URL is for its path, user and method.
#[tokio::test]
async fn envd_state_and_tokens_belong_to_one_sandbox() {
    use sbx_protocol::CreateSandboxRequest;
    let d = TestDaemon::start_with(Options {
        args: &["--warm-pool", "0"],
        ..Default::default()
    })
    .await;
    let (alice, alice_client) = d.user("alice").await;
    let (bob, bob_client) = d.user("bob").await;
    let named = || CreateSandboxRequest {
        name: Some("foo".into()),
        ..Default::default()
    };
    let alices = alice_client.create(&named()).await.unwrap();
    let bobs = bob_client.create(&named()).await.unwrap();
    // Alice starts a process in her `foo`, through envd, by name with her key; it runs on.
    let alice_key = [("x-api-key", alice.as_str())];
    let start = serde_json::json!({
        "process": {"cmd": "/bin/sh", "args": ["-c", "echo started; exec sleep 60"]},
        "stdin": false
    });
    let request = tokio::spawn({
        let (url, key) = (d.url.clone(), alice.clone());
        async move {
            let mut framed = vec![0u8];
            let json = serde_json::to_vec(&start).unwrap();
            framed.extend_from_slice(&(json.len() as u32).to_be_bytes());
            framed.extend_from_slice(&json);
            let response = reqwest::Client::new()
                .post(format!("{url}/process.Process/Start"))
                .header("content-type", "application/connect+json")
                .header("e2b-sandbox-id", "foo")
                .header("x-api-key", key)
                .timeout(std::time::Duration::from_secs(2))
                .body(framed)
                .send()
                .await;
            // The client leaves after two seconds; the process stays.
            if let Ok(response) = response {
                let _ = response.bytes().await;
            }
        }
    });
    let _ = request.await;
    let (status, body) = envd(
        &d,
        "process.Process/List",
        "foo",
        &alice_key,
        serde_json::json!({}),
        false,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let processes = listed["processes"].as_array().cloned().unwrap_or_default();
    assert_eq!(processes.len(), 1, "{listed}");
    let pid = processes[0]["pid"].as_u64().unwrap();
    // Bob's `foo` is another sandbox: nothing of alice's there, and her pid is not his.
    let bob_key = [("x-api-key", bob.as_str())];
    let (status, body) = envd(
        &d,
        "process.Process/List",
        "foo",
        &bob_key,
        serde_json::json!({}),
        false,
    )
    .await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        listed["processes"].as_array().is_none_or(|p| p.is_empty()),
        "{listed}"
    );
    let kill = serde_json::json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"});
    let (status, _) = envd(
        &d,
        "process.Process/SendSignal",
        "foo",
        &bob_key,
        kill.clone(),
        false,
    )
    .await;
    assert_eq!(status, 404);
    // Bob's key on alice's id: not found, as E2B's proxy says it of a sandbox that is not
    // there (502 "… was not found", `unavailable`), the same as for an id nobody has.
    for id in [alices.id.as_str(), "sb-nobodys"] {
        let (status, body) = envd(
            &d,
            "process.Process/List",
            id,
            &bob_key,
            serde_json::json!({}),
            false,
        )
        .await;
        assert_eq!(status, 502);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "unavailable", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("was not found"),
            "{body}"
        );
    }
    // Tokens: created through E2B's API, each sandbox gets its own.
    let create = |key: String| {
        let url = d.url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{url}/v2/sandboxes"))
                .header("x-api-key", e2b_key(&key))
                .json(&serde_json::json!({"templateID": "base"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 201);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let one = create(alice.clone()).await;
    let other = create(bob.clone()).await;
    let one_id = one["sandboxID"].as_str().unwrap().to_owned();
    let one_token = one["envdAccessToken"].as_str().unwrap().to_owned();
    let traffic = one["trafficAccessToken"].as_str().unwrap().to_owned();
    let other_id = other["sandboxID"].as_str().unwrap().to_owned();
    let token = [("x-access-token", one_token.as_str())];
    let (status, _) = envd(
        &d,
        "process.Process/List",
        &one_id,
        &token,
        serde_json::json!({}),
        false,
    )
    .await;
    assert_eq!(status, 200);
    // The binary codec too (what Go clients speak): an empty ListRequest, an empty answer.
    let binary = reqwest::Client::new()
        .post(format!("{}/process.Process/List", d.url))
        .header("content-type", "application/proto")
        .header("e2b-sandbox-id", &one_id)
        .header("x-access-token", &one_token)
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status().as_u16(), 200);
    assert_eq!(
        binary.headers()["content-type"].to_str().unwrap(),
        "application/proto"
    );
    let (status, _) = envd(
        &d,
        "process.Process/List",
        &other_id,
        &token,
        serde_json::json!({}),
        false,
    )
    .await;
    assert_eq!(status, 401, "a token opened another sandbox");
    let traffic = [("e2b-traffic-access-token", traffic.as_str())];
    let (status, _) = envd(
        &d,
        "process.Process/List",
        &one_id,
        &traffic,
        serde_json::json!({}),
        false,
    )
    .await;
    assert_eq!(status, 401, "the traffic token opened envd");
    // Signed URLs: for their path, user and method only; a repeated parameter is refused.
    let signed = |path: &str, operation: &str, user: &str| {
        use sha2::Digest as _;
        let raw = format!("{path}:{operation}:{user}:{one_token}");
        let digest = sha2::Sha256::digest(raw.as_bytes());
        use base64::Engine as _;
        let signature = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
        format!("v1_{signature}")
            .replace('+', "%2B")
            .replace('/', "%2F")
    };
    let files = |query: String, method: reqwest::Method| {
        let (url, id) = (d.url.clone(), one_id.clone());
        async move {
            reqwest::Client::new()
                .request(method, format!("{url}/files?{query}"))
                .header("e2b-sandbox-id", id)
                .header("content-type", "application/octet-stream")
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let read = signed("/home/user/.profile", "read", "");
    let ok = format!("path=%2Fhome%2Fuser%2F.profile&signature={read}");
    assert!(matches!(
        files(ok.clone(), reqwest::Method::GET).await,
        200 | 404
    ));
    assert_eq!(
        files(ok.clone(), reqwest::Method::POST).await,
        401,
        "a read signature wrote"
    );
    let twice = format!("{ok}&path=%2Fhome%2Fuser%2Fother&username=root");
    assert_eq!(
        files(twice.clone(), reqwest::Method::GET).await,
        401,
        "a second path was taken"
    );
    let twice = format!("path=%2Fhome%2Fuser%2Fother&{ok}");
    assert_eq!(
        files(twice, reqwest::Method::GET).await,
        401,
        "a first path was taken"
    );
    let _ = bobs;
    d.finish().await;
}
