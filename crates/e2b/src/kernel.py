# sbx's Python kernel for E2B's code interpreter: one per context, inside the sandbox, as the
# sandbox's user. It reads one JSON request per line on stdin ({"code", "env"}) and answers
# each with JSON lines on its original stdout, the last being {"type": "end_of_execution"}:
# number_of_executions, stdout/stderr (everything written to file descriptors 1 and 2, by
# Python or by child processes), display data and the main result (text/plain always; HTML,
# PNG, SVG, Markdown, LaTeX, JSON, JavaScript when the value offers them; matplotlib figures as
# PNG), and an error (name, value, traceback). Variables persist between requests. SIGINT
# interrupts the running request only.
import ast
import base64
import builtins
import datetime
import json
import os
import sys
import textwrap
import threading
import traceback

_protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
_lock = threading.Lock()


def _emit(message):
    line = json.dumps(message, ensure_ascii=False)
    with _lock:
        _protocol.write(line + "\n")
        _protocol.flush()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class _Pump(threading.Thread):
    """Forwards what is written to a file descriptor as stdout or stderr events, in chunks;
    a marker written after each request says when everything before it was forwarded."""

    def __init__(self, fd, kind):
        super().__init__(daemon=True)
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        self.read = read
        self.kind = kind
        self.synced = threading.Condition()
        self.seen = 0

    def run(self):
        pending = b""
        while True:
            chunk = os.read(self.read, 65536)
            if not chunk:
                return
            pending += chunk
            while True:
                at = pending.find(b"\x00sbx-sync-")
                if at < 0:
                    break
                end = pending.find(b"\x00", at + 1)
                if end < 0:
                    break
                self._send(pending[:at])
                number = int(pending[at + 10 : end])
                pending = pending[end + 1 :]
                with self.synced:
                    self.seen = number
                    self.synced.notify_all()
            # Keep a possible partial marker (or a partial UTF-8 character) for the next read.
            keep = pending.rfind(b"\x00")
            if keep < 0:
                keep = len(pending)
                while keep > 0 and len(pending) - keep < 4 and pending[keep - 1] & 0xC0 == 0x80:
                    keep -= 1
                if keep > 0 and pending[keep - 1] >= 0xC0:
                    keep -= 1
            self._send(pending[:keep])
            pending = pending[keep:]

    def _send(self, data):
        if data:
            _emit({"type": self.kind, "text": data.decode("utf-8", "replace"), "timestamp": _now()})

    def sync(self, number, fd):
        os.write(fd, b"\x00sbx-sync-%d\x00" % number)
        with self.synced:
            self.synced.wait_for(lambda: self.seen >= number, timeout=5)


_pumps = [(_Pump(1, "stdout"), 1), (_Pump(2, "stderr"), 2)]
for _pump, _ in _pumps:
    _pump.start()
sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)

_MIME = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}
_REPR = [
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
    ("_repr_javascript_", "javascript"),
]


def _formats(value):
    result = {}
    mimebundle = getattr(value, "_repr_mimebundle_", None)
    if callable(mimebundle):
        try:
            bundle = mimebundle()
            if isinstance(bundle, tuple):
                bundle = bundle[0]
            for mime, data in (bundle or {}).items():
                if mime in _MIME:
                    result[_MIME[mime]] = data
        except Exception:
            pass
    for method, field in _REPR:
        if field in result:
            continue
        function = getattr(value, method, None)
        if callable(function) and not isinstance(value, type):
            try:
                data = function()
            except Exception:
                continue
            if data is None:
                continue
            if isinstance(data, tuple):
                data = data[0]
            if isinstance(data, bytes):
                data = base64.b64encode(data).decode()
            result[field] = data
    if "text" not in result:
        text = repr(value)
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        result["text"] = text
    return result


def _result(value, main):
    message = {"type": "result", **_formats(value), "extra": {}, "is_main_result": main}
    _emit(message)


def display(*values, **_):
    for value in values:
        _result(value, False)


builtins.display = display


def _figures():
    """Open matplotlib figures, shown as PNG and closed (what plt.show() displays)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    import io

    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        _emit(
            {
                "type": "result",
                "text": repr(figure),
                "png": base64.b64encode(buffer.getvalue()).decode(),
                "extra": {},
                "is_main_result": False,
            }
        )
    pyplot.close("all")


_namespace = {"__name__": "__main__", "__builtins__": builtins}
_running = threading.Event()


def _interrupt(signum, frame):
    # An interrupt is for the request being run; between requests it is ignored.
    if _running.is_set():
        raise KeyboardInterrupt


import signal

signal.signal(signal.SIGINT, _interrupt)
_count = 0


def _run(code):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), _namespace)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), _namespace)
        if value is not None and not code.rstrip().endswith(";"):
            _namespace["_"] = value
            return value
    return None


def _error(error):
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    # The kernel's own frames (it runs as `python3 -c`) are not the user's.
    lines = [l for l in lines if 'File "<string>"' not in l]
    _emit(
        {
            "type": "error",
            "name": type(error).__name__,
            "value": str(error),
            "traceback": "".join(lines),
        }
    )


def _serve():
    global _count
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        _count += 1
        _emit({"type": "number_of_executions", "execution_count": _count})
        _running.set()
        saved = {}
        for key, value in (request.get("env") or {}).items():
            saved[key] = os.environ.get(key)
            os.environ[key] = value
        try:
            value = _run(textwrap.dedent(request.get("code", "")))
            _figures()
            if value is not None:
                _result(value, True)
        except BaseException as error:  # KeyboardInterrupt and SystemExit too: it carries on
            _error(error)
        finally:
            _running.clear()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            for pump, fd in _pumps:
                pump.sync(_count, fd)
            _emit({"type": "end_of_execution"})


if __name__ == "__main__":
    cwd = os.environ.pop("SBX_KERNEL_CWD", None)
    if cwd:
        os.chdir(cwd)
    del sys.argv[1:]
    _serve()
