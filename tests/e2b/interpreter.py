"""Drives sbx's code interpreter with the unmodified `e2b-code-interpreter` SDK. Run by
crates/sbx/tests/e2e/e2b.rs with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set."""

import time

from e2b_code_interpreter import Sandbox


def main():
    s = Sandbox.create(timeout=300)
    try:
        # The default context: a result, output, state kept between runs.
        e = s.run_code("print('hello'); x = 40; x + 2")
        assert e.text == "42", e
        assert e.logs.stdout == ["hello\n"], e.logs
        assert e.execution_count == 1, e.execution_count
        e = s.run_code("x * 2")
        assert e.text == "80" and e.execution_count == 2, e
        # Errors.
        e = s.run_code("1 / 0")
        assert e.error and e.error.name == "ZeroDivisionError", e.error
        assert "division by zero" in e.error.value and "Traceback" in e.error.traceback
        # Streaming callbacks, stderr, and output of child processes.
        out, err = [], []
        s.run_code(
            "import sys, os\nprint('a')\nprint('b', file=sys.stderr)\nos.system('echo from-shell')",
            on_stdout=lambda m: out.append(m.line),
            on_stderr=lambda m: err.append(m.line),
        )
        assert "".join(out) == "a\nfrom-shell\n", out
        assert "".join(err) == "b\n", err
        # Environment for one run only.
        e = s.run_code("import os; os.environ.get('ONLY', 'unset')", envs={"ONLY": "here"})
        assert e.text == "here", e
        assert s.run_code("import os; os.environ.get('ONLY', 'unset')").text == "unset"
        # Indented code (as written inside a function of the caller) runs.
        e = s.run_code("""
            a = 2
            a ** 10
        """)
        assert e.text == "1024", e
        # Rich results: HTML from an object that offers it.
        e = s.run_code(
            "class Page:\n    def _repr_html_(self): return '<b>bold</b>'\nPage()"
        )
        assert e.results[0].html == "<b>bold</b>", e.results
        # A second context: its own variables, its own directory; restart and removal.
        c = s.create_code_context(cwd="/tmp")
        assert c.cwd == "/tmp", c
        e = s.run_code("import os; y = 1; os.getcwd()", context=c)
        assert e.text == "/tmp", e
        e = s.run_code("'x' in dir()", context=c)
        assert e.text == "False", e
        assert s.run_code("y", context=c).text == "1"
        contexts = s.list_code_contexts()
        assert c.id in [x.id for x in contexts], contexts
        s.restart_code_context(c)
        e = s.run_code("y", context=c)
        assert e.error and e.error.name == "NameError", e.error
        s.remove_code_context(c)
        assert c.id not in [x.id for x in s.list_code_contexts()]
        # A run that times out is interrupted; the context carries on.
        try:
            s.run_code("import time; time.sleep(30)", timeout=2)
            raise AssertionError("no timeout")
        except Exception as error:
            assert "timed out" in str(error).lower() or "timeout" in type(error).__name__.lower(), error
        started = time.time()
        e = s.run_code("x + 1")
        assert e.text == "41", e
        assert time.time() - started < 10
    finally:
        s.kill()
    print("all ok interpreter")


if __name__ == "__main__":
    main()
