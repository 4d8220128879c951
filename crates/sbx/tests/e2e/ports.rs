//! A sandbox's ports through the daemon (preview URLs), on the native backend: a server in the
//! sandbox answers HTTP and WebSocket through `/v1/sandboxes/{id}/ports/{port}/…`, without the
//! caller's credentials and without setting cookies on the daemon's origin; another user's
//! key finds nothing; a port nobody listens on is a clear 502; and the sandbox still has no
//! network of its own.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::daemon::TestDaemon;

/// An HTTP server answering with what it was asked (path, headers, body size), and a
/// WebSocket echo on `/ws`, with the standard library only.
const SERVER: &str = r#"
import base64, hashlib, json, struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def recv(sock, n):
    data = b''
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def answer(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Set-Cookie', 'sbx_session=planted; Path=/')
        self.send_header('Clear-Site-Data', '"cookies"')
        self.send_header('Strict-Transport-Security', 'max-age=31536000; includeSubDomains')
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.headers.get('Upgrade', '').lower() == 'websocket':
            key = self.headers['Sec-WebSocket-Key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
            self.send_response(101)
            self.send_header('Upgrade', 'websocket')
            self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
            self.end_headers()
            self.wfile.flush()
            sock = self.connection
            while True:
                first, second = recv(sock, 2)
                opcode, length = first & 15, second & 127
                if length == 126:
                    length = struct.unpack('>H', recv(sock, 2))[0]
                elif length == 127:
                    length = struct.unpack('>Q', recv(sock, 8))[0]
                mask = recv(sock, 4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(recv(sock, length)))
                if opcode == 8:
                    sock.sendall(b'\x88\x00')
                    return
                reply = b'echo:' + payload
                sock.sendall(bytes([0x81, len(reply)]) + reply)
        self.answer({'path': self.path, 'headers': {k.lower(): v for k, v in self.headers.items()}})
    def do_POST(self):
        size = int(self.headers.get('Content-Length', '0'))
        self.rfile.read(size)
        self.answer({'path': self.path, 'received': size})
    def log_message(self, *args):
        pass

ThreadingHTTPServer(('127.0.0.1', 8000), Handler).serve_forever()
"#;

#[tokio::test]
async fn a_sandboxs_port_answers_http_and_websocket_through_the_daemon_only() {
    let d = TestDaemon::start_with(crate::daemon::Options {
        config: Some("[e2b]\ndomain = \"sbx.test\"\n"),
        ..Default::default()
    })
    .await;
    let id = d.create().await.id;
    let started = d
        .sh(
            &id,
            &format!(
                "cat > /tmp/server.py <<'EOF'\n{SERVER}\nEOF\n\
                 setsid nohup python3 /tmp/server.py >/tmp/server.log 2>&1 < /dev/null &"
            ),
        )
        .await;
    assert_eq!(started.exit_code, 0, "{}", started.stderr);
    let http = reqwest::Client::new();
    let get = |path: String, key: String| {
        let http = http.clone();
        let url = format!("{}{path}", d.url);
        async move { http.get(url).bearer_auth(key).send().await.unwrap() }
    };

    // Listed once it listens.
    let listed = format!("/v1/sandboxes/{id}/ports");
    let mut ports = serde_json::Value::Null;
    for _ in 0..100 {
        ports = get(listed.clone(), d.admin_key.clone())
            .await
            .json()
            .await
            .unwrap();
        if ports["ports"] == serde_json::json!([8000]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ports["ports"], serde_json::json!([8000]), "{ports}");
    let shown = d.cli(&["ports", &id]);
    assert!(
        shown.status.success(),
        "{}",
        crate::daemon::text(&shown.stderr)
    );
    assert_eq!(
        crate::daemon::text(&shown.stdout),
        format!("8000   {}/v1/sandboxes/{id}/ports/8000/\n", d.url)
    );

    // HTTP: the path after the port and the query go on; the credentials do not.
    let response = get(
        format!("/v1/sandboxes/{id}/ports/8000/hello/world?x=1"),
        d.admin_key.clone(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("set-cookie").is_none());
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.starts_with("sandbox "), "{policy}");
    assert!(!policy.contains("allow-same-origin"), "{policy}");
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/hello/world?x=1");
    assert_eq!(seen["headers"]["host"], "localhost:8000");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    // No cookie crosses (the daemon's session, or another site's on the same host), nor a
    // header acting on the daemon's whole origin comes back; the path goes on as sent.
    let response = http
        .get(format!(
            "{}/v1/sandboxes/{id}/ports/8000/a%3Fb/%C3%A9%20x?q=%23",
            d.url
        ))
        .bearer_auth(&d.admin_key)
        .header("cookie", "sbx_session=stolen; jupyter=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for name in ["set-cookie", "clear-site-data", "strict-transport-security"] {
        assert!(response.headers().get(name).is_none(), "{name}");
    }
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/a%3Fb/%C3%A9%20x?q=%23");
    assert!(seen["headers"].get("cookie").is_none(), "{seen}");
    // `api.{domain}` is E2B's control plane (the SDKs' URL when given only `E2B_DOMAIN`).
    let api = http
        .get(format!("{}/sandboxes/{id}", d.url))
        .header("host", "api.sbx.test")
        .bearer_auth(&d.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    // Any other host under the preview domain that names no port of a sandbox is not the API's.
    for host in [
        "65536-x.sbx.test",
        "www.sbx.test",
        format!("80-{id}.x.sbx.test").as_str(),
    ] {
        let stray = http
            .get(format!("{}/v1/sandboxes", d.url))
            .header("host", host)
            .bearer_auth(&d.admin_key)
            .send()
            .await
            .unwrap();
        assert!(
            stray.status().is_client_error(),
            "{host}: {}",
            stray.status()
        );
        let body = stray.text().await.unwrap();
        assert!(!body.contains(&id), "{host}: {body}");
    }
    let root = get(
        format!("/v1/sandboxes/{id}/ports/8000"),
        d.admin_key.clone(),
    )
    .await;
    let seen: serde_json::Value = root.json().await.unwrap();
    assert_eq!(seen["path"], "/");
    // Addressed by host (`{port}-{id}.{domain}`, E2B's `get_host`): the whole path goes on.
    let hosted = http
        .get(format!("{}/by/host?y=2", d.url))
        .header("host", format!("8000-{id}.sbx.test"))
        .bearer_auth(&d.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(hosted.status(), 200);
    let seen: serde_json::Value = hosted.json().await.unwrap();
    assert_eq!(seen["path"], "/by/host?y=2");
    let anonymous = http
        .get(format!("{}/by/host", d.url))
        .header("host", format!("8000-{id}.sbx.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // A request body streams through.
    let posted: serde_json::Value = http
        .post(format!("{}/v1/sandboxes/{id}/ports/8000/upload", d.url))
        .bearer_auth(&d.admin_key)
        .body(vec![b'x'; 300_000])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["received"], 300_000);

    // WebSocket.
    let mut request = format!(
        "{}/v1/sandboxes/{id}/ports/8000/ws",
        d.url.replace("http://", "ws://")
    )
    .into_client_request()
    .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", d.admin_key).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for word in ["hi", "there"] {
        socket.send(Message::text(word)).await.unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("echo:{word}"));
    }
    socket.close(None).await.unwrap();

    // Another user finds nothing; a port nobody listens on, or no port, is a clear error.
    let (bob, _) = d.user("bob").await;
    for path in [
        format!("/v1/sandboxes/{id}/ports/8000/"),
        format!("/v1/sandboxes/{id}/ports"),
    ] {
        let refused = get(path, bob.clone()).await;
        assert_eq!(refused.status(), 404);
    }
    for (path, status, code) in [
        (
            format!("/v1/sandboxes/{id}/ports/9/"),
            502,
            "upstream_error",
        ),
        (
            format!("/v1/sandboxes/{id}/ports/0/"),
            400,
            "invalid_request",
        ),
        (
            format!("/v1/sandboxes/{id}/ports/http/"),
            400,
            "invalid_request",
        ),
    ] {
        let answer = get(path.clone(), d.admin_key.clone()).await;
        assert_eq!(answer.status(), status, "{path}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }

    // The sandbox still has no network: loopback only.
    let net = d
        .sh(
            &id,
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\" \
             2>/dev/null && echo reached; \
             python3 -c \"import socket; print(' '.join(n for _, n in socket.if_nameindex()))\"",
        )
        .await;
    assert_eq!(net.stdout, "lo\n", "{}", net.stderr);
    d.finish().await;
}

/// Under crun the same path reaches a container's port (through its network namespace on the
/// host); gVisor's network stack is out of the daemon's reach: 501, said plainly.
#[tokio::test]
async fn a_crun_sandboxs_port_answers_and_gvisor_says_it_cannot() {
    let d = TestDaemon::start_with(crate::daemon::Options {
        config: Some(
            "[profiles.crun]\nbackend = \"crun\"\nwarm_pool = 1\n\
             [profiles.gvisor]\nbackend = \"oci\"\nwarm_pool = 0\n",
        ),
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let created = d.cli(&["create", "--profile", "crun"]);
    assert!(created.status.success());
    let id = crate::daemon::text(&created.stdout).trim().to_owned();
    let started = d
        .sh(
            &id,
            "cd /tmp && echo served > page.txt && setsid nohup python3 -m http.server 8001 \
             --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null &",
        )
        .await;
    assert_eq!(started.exit_code, 0, "{}", started.stderr);
    let mut page = String::new();
    for _ in 0..100 {
        let answer = http
            .get(format!("{}/v1/sandboxes/{id}/ports/8001/page.txt", d.url))
            .bearer_auth(&d.admin_key)
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            page = answer.text().await.unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(page, "served\n");
    assert_eq!(d.client.ports(&id).await.unwrap().ports, vec![8001]);

    let gvisor = d.cli(&["create", "--profile", "gvisor"]);
    assert!(gvisor.status.success());
    let gvisor = crate::daemon::text(&gvisor.stdout).trim().to_owned();
    let answer = http
        .get(format!("{}/v1/sandboxes/{gvisor}/ports", d.url))
        .bearer_auth(&d.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 501);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported", "{body}");
    d.finish().await;
}

#[tokio::test]
async fn share_links_and_public_ports_reach_a_port_without_a_key() {
    let d = TestDaemon::start_with(crate::daemon::Options {
        config: Some("[e2b]\ndomain = \"sbx.test\"\n"),
        ..Default::default()
    })
    .await;
    let (alice_key, alice) = d.user("alice").await;
    let (bob_key, _) = d.user("bob").await;
    let sandbox = alice
        .create(&sbx_protocol::CreateSandboxRequest {
            public_ports: vec![8001],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sandbox.public_ports, [8001]);
    let id = sandbox.id;
    let started = d
        .sh(
            &id,
            "cd /tmp && echo served > page.txt && \
             for p in 8000 8001; do setsid nohup python3 -m http.server $p --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null & done",
        )
        .await;
    assert_eq!(started.exit_code, 0, "{}", started.stderr);
    let http = reqwest::Client::new();
    let anonymous = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", d.url);
        async move {
            let answer = http.get(url).send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.text().await.unwrap())
        }
    };
    for _ in 0..100 {
        if d.client.ports(&id).await.unwrap().ports == [8000, 8001] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The public port answers anyone, by path and by host; the other needs a key.
    let public = anonymous(format!("/v1/sandboxes/{id}/ports/8001/page.txt")).await;
    assert_eq!(public, (200, "served\n".to_owned()));
    let by_host = http
        .get(format!("{}/page.txt", d.url))
        .header("host", format!("8001-{id}.sbx.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), 200);
    let private = anonymous(format!("/v1/sandboxes/{id}/ports/8000/page.txt")).await;
    assert_eq!(private.0, 401, "{}", private.1);
    let by_host = http
        .get(format!("{}/page.txt", d.url))
        .header("host", format!("8000-{id}.sbx.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), 401);
    assert_eq!(anonymous(format!("/v1/sandboxes/{id}/ports")).await.0, 401);
    assert_eq!(anonymous(format!("/v1/sandboxes/{id}")).await.0, 401);
    // Bob's key reaches nothing private of alice's; her public port answers him as it does
    // anyone, by path and by host alike.
    let bobs = http
        .get(format!("{}/v1/sandboxes/{id}/ports/8000/page.txt", d.url))
        .bearer_auth(&bob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 404);
    let bobs = http
        .get(format!("{}/v1/sandboxes/{id}/ports/8001/page.txt", d.url))
        .bearer_auth(&bob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 200);
    let bobs = http
        .get(format!("{}/page.txt", d.url))
        .header("host", format!("8001-{id}.sbx.test"))
        .bearer_auth(&bob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 200);

    // A share link reaches the private port without a key, until it expires.
    let share = |key: String, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}/v1/sandboxes/{id}/shares", d.url);
        async move {
            let answer = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, link) = share(
        alice_key.clone(),
        serde_json::json!({"port": 8000, "ttl": 3}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let path = link["path"].as_str().unwrap().to_owned();
    assert!(
        path.starts_with("/v1/shares/") && path.ends_with('/'),
        "{path}"
    );
    assert_eq!(
        anonymous(format!("{path}page.txt")).await,
        (200, "served\n".to_owned())
    );
    let listing = anonymous(path.clone()).await;
    assert_eq!(listing.0, 200);
    // Only the port it names, only as signed.
    let token = link["token"].as_str().unwrap();
    let forged = token.replace(".8000.", ".8001.");
    let refused = anonymous(format!("/v1/shares/{forged}/page.txt")).await;
    assert_eq!(refused.0, 401);
    assert!(refused.1.contains("share_invalid"), "{}", refused.1);
    let mut tampered = token.to_owned();
    tampered.pop();
    tampered.push(if token.ends_with('0') { '1' } else { '0' });
    assert_eq!(anonymous(format!("/v1/shares/{tampered}/")).await.0, 401);
    // Only the owner makes them; bounds are checked.
    assert_eq!(
        share(bob_key.clone(), serde_json::json!({"port": 8000}))
            .await
            .0,
        404
    );
    assert_eq!(
        share(alice_key.clone(), serde_json::json!({"port": 0}))
            .await
            .0,
        400
    );
    assert_eq!(
        share(
            alice_key.clone(),
            serde_json::json!({"port": 8000, "ttl": "8d"})
        )
        .await
        .0,
        400
    );
    // The CLI's link: the whole URL.
    let printed = crate::daemon::cli_as(
        &d.url,
        Some(&alice_key),
        &["ports", &id, "--share", "8000", "--ttl", "10m"],
        None,
    );
    assert!(
        printed.status.success(),
        "{}",
        crate::daemon::text(&printed.stderr)
    );
    let url = crate::daemon::text(&printed.stdout).trim().to_owned();
    let lasting = url
        .strip_prefix(&d.url)
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let expired = anonymous(format!("{path}page.txt")).await;
    assert_eq!(expired.0, 401);
    assert!(expired.1.contains("share_expired"), "{}", expired.1);
    assert_eq!(anonymous(format!("{lasting}page.txt")).await.0, 200);

    // Revoked (bob cannot): every link made so far stops working, one made after works.
    let bobs = crate::daemon::cli_as(&d.url, Some(&bob_key), &["ports", &id, "--revoke"], None);
    assert!(!bobs.status.success());
    assert_eq!(anonymous(format!("{lasting}page.txt")).await.0, 200);
    let revoked =
        crate::daemon::cli_as(&d.url, Some(&alice_key), &["ports", &id, "--revoke"], None);
    assert!(
        revoked.status.success(),
        "{}",
        crate::daemon::text(&revoked.stderr)
    );
    let dead = anonymous(format!("{lasting}page.txt")).await;
    assert_eq!(dead.0, 401);
    assert!(dead.1.contains("share_invalid"), "{}", dead.1);
    let (status, fresh) = share(alice_key.clone(), serde_json::json!({"port": 8000})).await;
    assert_eq!(status, 201, "{fresh}");
    let lasting = fresh["path"].as_str().unwrap().to_owned();
    assert_eq!(anonymous(format!("{lasting}page.txt")).await.0, 200);

    // The sandbox gone, its links and public ports reach nothing.
    alice.delete(&id).await.unwrap();
    let gone = anonymous(format!("{lasting}page.txt")).await;
    assert_eq!(gone.0, 401, "{}", gone.1);
    assert_eq!(
        anonymous(format!("/v1/sandboxes/{id}/ports/8001/page.txt"))
            .await
            .0,
        401
    );
    d.finish().await;
}
