"""Drives a real sbx daemon with the unmodified E2B Python SDK (whichever version the running
interpreter has). Run by crates/sbx/tests/e2e/e2b.rs, one venv per pinned SDK version (see
scripts/e2b-sdks), with:

  E2B_API_URL, E2B_SANDBOX_URL   the daemon
  E2B_API_KEY                    alice's key, in E2B's form
  SBX_TEST_BOB_KEY               bob's key, in E2B's form

Each check prints its name; the first failure raises (exit code 1).
"""

import os
import sys
import threading
import time

import e2b
from e2b import Sandbox

VERSION = getattr(e2b, "__version__", None)
if VERSION is None:
    from importlib.metadata import version

    VERSION = version("e2b")
BOB = os.environ["SBX_TEST_BOB_KEY"]
ALICE = os.environ["E2B_API_KEY"]


def check(name):
    def wrap(f):
        def run(*args):
            started = time.time()
            f(*args)
            print(f"ok {VERSION} {name} ({time.time() - started:.2f}s)", flush=True)

        run.__name__ = name
        return run

    return wrap


def raises(kind, f, *args, **kwargs):
    try:
        f(*args, **kwargs)
    except kind as e:
        return e
    raise AssertionError(f"{f} did not raise {kind}")


@check("lifecycle")
def lifecycle():
    s = Sandbox.create(
        metadata={"who": "alice", "n": "1", "app:env": "prod"}, envs={"GREETING": "hi"}, timeout=120
    )
    info = s.get_info()
    assert info.sandbox_id == s.sandbox_id
    assert info.metadata == {"who": "alice", "n": "1", "app:env": "prod"}, info.metadata
    assert info.state.value == "running", info.state
    assert s.is_running()
    # The sandbox's environment.
    assert s.commands.run("echo $GREETING").stdout == "hi\n"
    # Listed, with metadata filters.
    from e2b import SandboxQuery

    listed = [x.sandbox_id for x in Sandbox.list(query=SandboxQuery(metadata={"who": "alice"})).next_items()]
    assert s.sandbox_id in listed, listed
    listed = [x.sandbox_id for x in Sandbox.list(query=SandboxQuery(metadata={"app:env": "prod"})).next_items()]
    assert s.sandbox_id in listed, listed
    listed = [x.sandbox_id for x in Sandbox.list(query=SandboxQuery(metadata={"who": "nobody"})).next_items()]
    assert s.sandbox_id not in listed, listed
    # Pagination: three more sandboxes, pages of two, newest first.
    more = [Sandbox.create(metadata={"page": "yes"}) for _ in range(3)]
    paginator = Sandbox.list(query=SandboxQuery(metadata={"page": "yes"}), limit=2)
    seen = []
    while paginator.has_next:
        seen += [x.sandbox_id for x in paginator.next_items()]
    assert seen == [m.sandbox_id for m in reversed(more)], seen
    # The cleanup loop: each page killed before the next is asked for skips none.
    paginator = Sandbox.list(query=SandboxQuery(metadata={"page": "yes"}), limit=2)
    killed = 0
    while paginator.has_next:
        for x in paginator.next_items():
            assert Sandbox.kill(x.sandbox_id) in (True, None)
            killed += 1
    assert killed == 3, killed
    assert Sandbox.list(query=SandboxQuery(metadata={"page": "yes"})).next_items() == []
    # Timeout: shortened and extended.
    s.set_timeout(30)
    end = s.get_info().end_at.timestamp()
    assert abs(end - (time.time() + 30)) < 5, end - time.time()
    s.set_timeout(200)
    assert s.get_info().end_at.timestamp() - time.time() > 150
    # Connect: another client reaches the same sandbox; it never shortens the timeout.
    other = Sandbox.connect(s.sandbox_id, timeout=10)
    assert other.commands.run("echo again").stdout == "again\n"
    assert s.get_info().end_at.timestamp() - time.time() > 150
    # Pause and resume: processes are frozen and carry on.
    counter = s.commands.run(
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
        background=True,
        timeout=0,
    )
    time.sleep(0.5)
    pause = getattr(s, "pause", None) or s.beta_pause
    pause()
    assert Sandbox.get_info(s.sandbox_id).state.value == "paused"
    # A second pause is a conflict (the SDK says False or raises, by version).
    try:
        again = pause()
        assert again in (False, None), again
    except Exception:
        pass
    resumed = Sandbox.connect(s.sandbox_id)
    assert resumed.get_info().state.value == "running"
    before = int(resumed.commands.run("cat /tmp/count").stdout)
    time.sleep(0.4)
    after = int(resumed.commands.run("cat /tmp/count").stdout)
    assert after > before > 0, (before, after)
    resumed.commands.kill(counter.pid)
    # A paused sandbox waits for its resume past its timeout.
    short = Sandbox.create(timeout=2)
    (getattr(short, "pause", None) or short.beta_pause)()
    time.sleep(3)
    again = Sandbox.connect(short.sandbox_id, timeout=30)
    assert again.commands.run("echo back").stdout == "back\n"
    again.kill()
    # Metrics.
    if hasattr(s, "get_metrics"):
        metrics = s.get_metrics()
        assert metrics and metrics[0].mem_total > 0, metrics
    assert s.kill() in (True, None)
    assert not s.is_running()
    # Gone: unknown to info, kill says False.
    raises(Exception, Sandbox.get_info, s.sandbox_id)
    assert Sandbox.kill(s.sandbox_id) is False


@check("commands")
def commands(s):
    r = s.commands.run("echo out; echo err >&2; exit 0")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0), r
    # Exit codes.
    from e2b import CommandExitException

    e = raises(CommandExitException, s.commands.run, "echo bad >&2; exit 7")
    assert e.exit_code == 7 and e.stderr == "bad\n", (e.exit_code, e.stderr)
    # Environment, working directory, user.
    r = s.commands.run("echo $A-$B; pwd; whoami", envs={"A": "1", "B": "two"}, cwd="/tmp")
    assert r.stdout == "1-two\n/tmp\nuser\n", r.stdout
    assert s.commands.run("whoami", user="root").stdout == "root\n"
    assert s.commands.run("pwd").stdout == "/home/user\n"
    # Streaming callbacks.
    lines = []
    s.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=lambda d: lines.append(d))
    assert "".join(lines) == "1\n2\n3\n", lines
    # Background, wait, list, connect, kill.
    h = s.commands.run("sleep 0.5; echo done", background=True)
    assert h.pid in [p.pid for p in s.commands.list()]
    assert h.wait().stdout == "done\n"
    h = s.commands.run("echo start; sleep 1; echo later", background=True)
    time.sleep(0.3)
    again = s.commands.connect(h.pid)
    assert "later" in again.wait().stdout
    # An exit is kept for a late connect.
    h = s.commands.run("exit 0", background=True)
    h.wait()
    late = s.commands.connect(h.pid).wait()
    assert late.exit_code == 0, late
    h = s.commands.run("sleep 60", background=True, timeout=0)
    assert s.commands.kill(h.pid) is True
    deadline = time.time() + 5
    while h.pid in [p.pid for p in s.commands.list()] and time.time() < deadline:
        time.sleep(0.05)
    assert h.pid not in [p.pid for p in s.commands.list()]
    assert s.commands.kill(999999) is False
    # A timeout kills the command.
    from e2b import TimeoutException

    raises(TimeoutException, s.commands.run, "sleep 10", timeout=1)
    # Stdin.
    h = s.commands.run("cat", background=True, stdin=True)
    s.commands.send_stdin(h.pid, "fed through stdin\n")
    if hasattr(s.commands, "close_stdin"):
        s.commands.close_stdin(h.pid)
        assert h.wait().stdout == "fed through stdin\n"
    else:
        time.sleep(0.3)
        s.commands.kill(h.pid)


@check("pty")
def pty(s):
    from e2b import PtySize

    out = bytearray()
    h = s.pty.create(PtySize(rows=24, cols=80), timeout=30)

    def read():
        try:
            h.wait(on_pty=lambda d: out.extend(d))
        except Exception:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    s.pty.send_stdin(h.pid, b"stty size; echo ma''rk\n")
    deadline = time.time() + 10
    while b"mark" not in out and time.time() < deadline:
        time.sleep(0.05)
    assert b"24 80" in out and b"mark" in out, bytes(out)
    s.pty.resize(h.pid, PtySize(rows=40, cols=120))
    s.pty.send_stdin(h.pid, b"stty size\n")
    deadline = time.time() + 10
    while b"40 120" not in out and time.time() < deadline:
        time.sleep(0.05)
    assert b"40 120" in out, bytes(out)
    assert s.pty.kill(h.pid)
    reader.join(10)
    assert not reader.is_alive()


@check("files")
def files(s):
    s.files.write("/home/user/hello.txt", "hello, sandbox")
    assert s.files.read("/home/user/hello.txt") == "hello, sandbox"
    blob = bytes(range(256)) * 100
    s.files.write("data/blob.bin", blob)
    assert bytes(s.files.read("/home/user/data/blob.bin", format="bytes")) == blob
    # Several files in one request.
    from e2b.sandbox.filesystem.filesystem import WriteEntry

    entries = [WriteEntry(path=f"/home/user/many/{i}.txt", data=f"file {i}") for i in range(5)]
    writer = getattr(s.files, "write_files", None)
    written = writer(entries) if writer else s.files.write(entries)
    assert len(written) == 5, written
    assert s.files.read("/home/user/many/3.txt") == "file 3"
    assert s.files.exists("/home/user/many/0.txt")
    assert not s.files.exists("/home/user/nothing")
    # One raw (octet-stream) upload, gzip-encoded, where the SDK has the options.
    import inspect

    if "gzip" in inspect.signature(s.files.write).parameters:
        s.files.write("/home/user/zipped.bin", blob, gzip=True, use_octet_stream=True)
        assert bytes(s.files.read("/home/user/zipped.bin", format="bytes")) == blob
    # Listing with depth.
    names = sorted(e.name for e in s.files.list("/home/user/many"))
    assert names == [f"{i}.txt" for i in range(5)], names
    deep = [e.path for e in s.files.list("/home/user", depth=2)]
    assert "/home/user/many/4.txt" in deep and "/home/user/data/blob.bin" in deep, deep
    info = s.files.get_info("/home/user/hello.txt")
    assert info.size == len("hello, sandbox") and info.type.value == "file", info
    assert s.files.make_dir("/home/user/newdir/sub") is True
    assert s.files.make_dir("/home/user/newdir/sub") is False
    moved = s.files.rename("/home/user/hello.txt", "/home/user/newdir/moved.txt")
    assert moved.path == "/home/user/newdir/moved.txt"
    assert s.files.read("/home/user/newdir/moved.txt") == "hello, sandbox"
    s.files.remove("/home/user/newdir")
    assert not s.files.exists("/home/user/newdir")
    from e2b import NotFoundException

    raises(NotFoundException, s.files.read, "/home/user/missing.txt")
    # Paths are the sandbox's: a symlink to the host's files reads the sandbox's own.
    s.commands.run("ln -s /etc/shadow /home/user/shadow-link")
    raises(Exception, s.files.read, "/home/user/shadow-link")
    # Watch (the sync SDK polls a watcher).
    s.files.make_dir("/home/user/watched")
    w = s.files.watch_dir("/home/user/watched")
    s.files.write("/home/user/watched/new.txt", "x")
    events = []
    deadline = time.time() + 10
    while not any(e.name == "new.txt" for e in events) and time.time() < deadline:
        events += w.get_new_events()
        time.sleep(0.1)
    assert any(e.name == "new.txt" and e.type.value in ("create", "write") for e in events), events
    w.stop()
    # The async SDK streams a watch (WatchDir).
    import asyncio

    async def stream_watch():
        from e2b import AsyncSandbox

        a = await AsyncSandbox.connect(s.sandbox_id)
        seen = []
        handle = await a.files.watch_dir("/home/user/watched", on_event=lambda e: seen.append(e.name))
        await a.files.write("/home/user/watched/streamed.txt", "y")
        for _ in range(100):
            if "streamed.txt" in seen:
                break
            await asyncio.sleep(0.1)
        await handle.stop()
        assert "streamed.txt" in seen, seen

    asyncio.run(stream_watch())


@check("secure and signed URLs")
def secure(s):
    import urllib.request
    import urllib.error

    # No token: no access to envd.
    base = os.environ["E2B_SANDBOX_URL"]
    request = urllib.request.Request(
        base + "/files?path=/home/user/secret.txt",
        headers={"E2b-Sandbox-Id": s.sandbox_id, "E2b-Sandbox-Port": "49983"},
    )
    s.files.write("/home/user/secret.txt", "s3cret")
    try:
        urllib.request.urlopen(request)
        raise AssertionError("read without a token")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    # A signed URL reads without a token, routed by the sandbox's host name (a domain set in
    # sbx's configuration) or the routing header; a wrong or expired signature does not.
    domain = os.environ.get("SBX_TEST_DOMAIN")
    url = s.download_url("/home/user/secret.txt", use_signature_expiration=60)
    path_and_query = url[len(base):]
    routes = [{"E2b-Sandbox-Id": s.sandbox_id}]
    if domain:
        routes.append({"Host": f"49983-{s.sandbox_id}.{domain}"})
    for route in routes:
        with urllib.request.urlopen(urllib.request.Request(base + path_and_query, headers=route)) as r:
            assert r.read() == b"s3cret"
        tampered = path_and_query.replace("secret.txt", "other.txt")
        try:
            urllib.request.urlopen(urllib.request.Request(base + tampered, headers=route))
            raise AssertionError("a tampered signature was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 401, e.code


@check("preview")
def preview(s):
    """Seed 004's preview: the project's files written, a dev server started from them, and
    the URL `get_host` names answering through the daemon (to the owner's key only)."""
    import urllib.request
    import urllib.error

    domain = os.environ.get("SBX_TEST_DOMAIN")
    if not domain:
        return
    s.files.write("/home/user/app/index.html", "hello from the app")
    s.commands.run(
        "cd /home/user/app && python3 -m http.server 3000 --bind 127.0.0.1",
        background=True,
        timeout=0,
    )
    host = s.get_host(3000)
    assert host == f"3000-{s.sandbox_id}.{domain}", host
    base = os.environ["E2B_SANDBOX_URL"]
    page = None
    for _ in range(100):
        request = urllib.request.Request(
            base + "/index.html", headers={"Host": host, "X-API-Key": ALICE}
        )
        try:
            with urllib.request.urlopen(request) as r:
                page = r.read()
                break
        except urllib.error.HTTPError as e:
            assert e.code == 502, e.code
            time.sleep(0.1)
    assert page == b"hello from the app", page
    for headers in ({"Host": host, "X-API-Key": BOB}, {"Host": host}):
        try:
            urllib.request.urlopen(urllib.request.Request(base + "/index.html", headers=headers))
            raise AssertionError(f"the preview answered {headers}")
        except urllib.error.HTTPError as e:
            assert e.code in (401, 404), e.code


@check("errors")
def errors():
    from e2b import NotFoundException

    raises(Exception, Sandbox.connect, "sb-doesnotexist")
    s = Sandbox.create()
    h = s.commands.run("sleep 30", background=True, timeout=0)
    killer = threading.Timer(0.5, lambda: Sandbox.kill(s.sandbox_id))
    killer.start()
    raises(Exception, h.wait)
    killer.join()
    # A killed sandbox is not running to envd's clients (E2B's proxy's 502): the SDKs raise
    # their timeout (SandboxNotRunningException in newer versions), not a generic error.
    raises(e2b.TimeoutException, s.commands.run, "true")
    raises(e2b.TimeoutException, s.files.read, "/etc/hostname")
    # What sbx does not do is refused clearly, not done otherwise.
    import inspect

    if "lifecycle" in inspect.signature(Sandbox.create).parameters:
        error = raises(Exception, Sandbox.create, lifecycle={"on_timeout": "pause"})
        assert "not supported" in str(error), error


@check("ownership")
def ownership():
    s = Sandbox.create()
    bob = {"api_key": BOB}
    raises(Exception, Sandbox.get_info, s.sandbox_id, **bob)
    assert Sandbox.kill(s.sandbox_id, **bob) is False
    listed = [x.sandbox_id for x in Sandbox.list(**bob).next_items()]
    assert s.sandbox_id not in listed
    raises(Exception, Sandbox.connect, s.sandbox_id, **bob)
    assert s.is_running()
    s.kill()


def main():
    lifecycle()
    s = Sandbox.create(timeout=300)
    try:
        commands(s)
        pty(s)
        files(s)
        secure(s)
        preview(s)
    finally:
        s.kill()
    errors()
    ownership()
    print(f"all ok {VERSION}")


if __name__ == "__main__":
    main()
