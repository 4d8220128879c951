"""Latencies of the unmodified E2B Python SDK against sbx, for sbx-bench: N times
`Sandbox.create()` → `commands.run("true")` → `kill()`, then N `commands.run("true")` on one
running sandbox. Prints one JSON object of milliseconds. E2B_API_URL, E2B_SANDBOX_URL and
E2B_API_KEY name the daemon and the key."""

import json
import sys
import time

from e2b import Sandbox

n = int(sys.argv[1])
for _ in range(3):
    warm = Sandbox.create()
    warm.commands.run("true")
    warm.kill()
create_run_kill = []
for _ in range(n):
    started = time.perf_counter()
    sandbox = Sandbox.create()
    sandbox.commands.run("true")
    sandbox.kill()
    create_run_kill.append((time.perf_counter() - started) * 1000)
sandbox = Sandbox.create()
run = []
for _ in range(n):
    started = time.perf_counter()
    sandbox.commands.run("true")
    run.append((time.perf_counter() - started) * 1000)
sandbox.kill()
print(json.dumps({"create_run_kill": create_run_kill, "run": run}))
