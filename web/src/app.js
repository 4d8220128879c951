// The sbx web page: sandboxes, a terminal, "Try it" commands. Plain JavaScript, no framework:
// one page, a few panels, one WebSocket.
"use strict";

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

const page = {
  current: null,      // the sandbox the terminal shows
  socket: null,       // its terminal WebSocket
  state: "idle",      // idle | starting | connected | expired | error
  sandboxes: [],
  user: null,         // who the page acts as
  active: null,       // the user's active sandbox (GET /v1/users/{user}/active)
};

// --- API ------------------------------------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && path !== "/v1/login") showLogin();
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

// --- Login: a key is traded for an HttpOnly session cookie (POST /v1/login) ------------------

function showLogin() {
  const dialog = $("login");
  if (!dialog.open) dialog.showModal();
  $("login-key").focus();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("login-key");
  try {
    await api("POST", "/v1/login", { key: input.value.trim() });
    input.value = "";
    location.reload();
  } catch (error) {
    input.value = "";
    $("login-error").hidden = false;
    $("login-error").textContent = error.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("POST", "/v1/logout").catch(() => {});
  location.reload();
});

// --- Terminal -------------------------------------------------------------------------------

const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 5000 });
const fit = new FitAddon.FitAddon();
term.loadAddon(fit);
term.open($("terminal"));
fit.fit();

term.onData((data) => send(encoder.encode(data)));
term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
term.onResize(({ rows, cols }) => control({ type: "resize", rows, cols }));
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => fit.fit(), 50);
});

function send(bytes) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN && page.state === "connected") {
    page.socket.send(bytes);
  }
}

function control(message) {
  if (page.socket && page.socket.readyState === WebSocket.OPEN) {
    page.socket.send(JSON.stringify(message));
  }
}

function setState(state, detail) {
  page.state = state;
  const badge = $("session-state");
  badge.dataset.state = state;
  badge.textContent = state;
  const error = $("session-error");
  error.hidden = !detail;
  error.textContent = detail || "";
  $("reset").disabled = !page.current || state === "starting";
}

function disconnect() {
  if (page.socket) {
    page.socket.onclose = null;
    page.socket.close();
    page.socket = null;
  }
}

function connect(sandbox) {
  disconnect();
  page.current = sandbox;
  $("preview-button").disabled = false;
  $("session-id").textContent = sandbox.name ? `${sandbox.name} (${sandbox.id})` : sandbox.id;
  setState("starting");
  term.reset();
  fit.fit();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/v1/sandboxes/${sandbox.id}/pty?rows=${term.rows}&cols=${term.cols}`;
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  page.socket = socket;
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "started") {
      setState("connected");
      term.focus();
    } else if (message.type === "exit") {
      term.write(`\r\n[exited with code ${message.exit_code}]\r\n`);
      setState("idle");
    } else if (message.type === "error") {
      setState("error", message.error.message);
    }
  };
  socket.onclose = (event) => {
    if (page.socket !== socket) return;
    page.socket = null;
    if (page.state === "connected" || page.state === "starting") {
      const expired = page.current && Date.parse(page.current.expires_at) <= Date.now();
      if (expired) setState("expired");
      else setState("error", event.reason || `terminal closed (${event.code})`);
    }
  };
  refresh();
}

// --- Countdown ------------------------------------------------------------------------------

function remaining(sandbox) {
  const ms = Date.parse(sandbox.expires_at) - Date.now();
  if (!["running", "creating"].includes(sandbox.state) || ms <= 0) return null;
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${pad(m)}:${pad(sec)}`;
}

function tick() {
  if (page.current) {
    const left = remaining(page.current);
    $("countdown").textContent = left ? `expires in ${left}` : "";
    if (!left && page.state === "connected" && Date.parse(page.current.expires_at) <= Date.now()) {
      disconnect();
      setState("expired");
    }
  }
  for (const cell of document.querySelectorAll("[data-expires]")) {
    cell.textContent = remaining(JSON.parse(cell.dataset.expires)) || "–";
  }
}
setInterval(tick, 1000);

$("reset").addEventListener("click", async () => {
  if (!page.current) return;
  setState("starting");
  disconnect();
  try {
    connect(await api("POST", `/v1/sandboxes/${page.current.id}/recreate`));
  } catch (error) {
    setState("error", error.message);
  }
});

// --- Sandboxes ------------------------------------------------------------------------------

async function refresh() {
  try {
    page.sandboxes = (await api("GET", "/v1/sandboxes")).sandboxes;
    $("list-error").hidden = true;
  } catch (error) {
    $("list-error").hidden = false;
    $("list-error").textContent = error.message;
    return;
  }
  if (page.current) {
    const fresh = page.sandboxes.find((s) => s.id === page.current.id);
    if (fresh) page.current = fresh;
  }
  const rows = $("sandbox-rows");
  rows.replaceChildren(...page.sandboxes.map(row));
  tick();
}

function row(sandbox) {
  const tr = document.createElement("tr");
  tr.dataset.id = sandbox.id;
  if (page.current && page.current.id === sandbox.id) tr.className = "current";
  const name = document.createElement("td");
  const open = document.createElement("a");
  open.href = "#";
  open.className = "mono open";
  open.textContent = sandbox.name || sandbox.id.slice(0, 12) + "…";
  open.title = sandbox.id;
  open.addEventListener("click", (event) => {
    event.preventDefault();
    if (sandbox.state === "running") connect(sandbox);
  });
  name.append(open);
  const state = document.createElement("td");
  state.textContent = sandbox.state;
  const left = document.createElement("td");
  left.className = "mono";
  left.dataset.expires = JSON.stringify({ expires_at: sandbox.expires_at, state: sandbox.state });
  const actions = document.createElement("td");
  const remove = document.createElement("button");
  remove.className = "danger delete";
  remove.textContent = "Delete";
  remove.addEventListener("click", async () => {
    remove.disabled = true;
    try {
      await api("DELETE", `/v1/sandboxes/${sandbox.id}`);
      if (page.current && page.current.id === sandbox.id) {
        disconnect();
        page.current = null;
        $("session-id").textContent = "no sandbox";
        $("countdown").textContent = "";
        setState("idle");
      }
    } catch (error) {
      $("list-error").hidden = false;
      $("list-error").textContent = error.message;
    }
    refresh();
  });
  actions.append(remove);
  tr.append(name, state, left, actions);
  return tr;
}

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("create-button");
  button.disabled = true;
  setState("starting");
  try {
    connect(await api("POST", "/v1/sandboxes", { profile: $("profile").value }));
  } catch (error) {
    setState("error", error.message);
  } finally {
    button.disabled = false;
  }
});

async function loadProfiles() {
  try {
    const { profiles } = await api("GET", "/v1/profiles");
    $("profile").replaceChildren(...profiles.map((p) => {
      const option = document.createElement("option");
      option.value = p.name;
      option.textContent = `${p.name} (${p.resources.memory_mb} MiB, ${p.ttl_default})`;
      option.selected = p.name === "default";
      return option;
    }));
  } catch (error) {
    $("list-error").hidden = false;
    $("list-error").textContent = error.message;
  }
}

// --- The active project: one sandbox per user, switched between projects ----------------------

function showActive(active) {
  page.active = active;
  $("save-button").disabled = !(active && active.alive);
  $("end-button").disabled = !active;
  if (!active) {
    $("active").textContent = "no active sandbox";
    return;
  }
  const fragment = active.fragment_id ? ` @ ${active.fragment_id}` : "";
  const state = active.alive ? active.sandbox.state : `${active.sandbox.state}: switch to start a new one`;
  $("active").textContent =
    `${active.project_name || active.project_id}${fragment} · ${active.sandbox.id} (${state}) · ${active.restored_files} file(s) restored`;
  if (active.port) $("preview-port").value = active.port;
}

function switchError(error) {
  $("switch-error").hidden = !error;
  $("switch-error").textContent = error ? error.message : "";
}

// The projects the user may switch to; `selected` (an id) is chosen in the list.
async function loadProjects(selected) {
  try {
    const { projects } = await api("GET", "/v1/projects");
    $("project").replaceChildren(...projects.map((p) => {
      const option = document.createElement("option");
      option.value = p.id;
      option.textContent = p.owner === page.user ? p.name : `${p.owner}/${p.name}`;
      return option;
    }));
    $("switch-button").disabled = projects.length === 0;
    if (selected) $("project").value = selected;
  } catch (error) {
    switchError(error);
  }
}

// The user's active sandbox, if any: shown, and its terminal opened while it runs.
async function loadActive() {
  try {
    // The list (the caller's own entry), not GET …/active: no 404 when there is none yet.
    const { users } = await api("GET", "/v1/users");
    const active = users.find((u) => u.user === page.user) || null;
    showActive(active);
    if (active && active.alive && active.sandbox.state === "running") {
      $("project").value = active.project_id;
      connect(active.sandbox);
    }
  } catch (error) {
    switchError(error);
  }
}

$("switch-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("switch-button");
  button.disabled = true;
  $("switch-error").hidden = true;
  setState("starting");
  const body = { project: $("project").value };
  const fragment = $("fragment").value.trim();
  if (fragment) body.fragment = fragment;
  try {
    const active = await api("PUT", `/v1/users/${encodeURIComponent(page.user)}/active`, body);
    showActive(active);
    closePreview();
    connect(active.sandbox);
  } catch (error) {
    setState("error", error.message);
    $("switch-error").hidden = false;
    $("switch-error").textContent = error.message;
  } finally {
    button.disabled = false;
  }
});

// The active sandbox's project files, saved as a new fragment of its project.
$("save-button").addEventListener("click", async () => {
  if (!page.active) return;
  $("save-button").disabled = true;
  try {
    const fragment = await api("POST", `/v1/projects/${page.active.project_id}/fragments`,
      { sandbox: page.active.sandbox.id, exclude: ["node_modules", ".git"], message: "saved from the page" });
    switchError(null);
    $("active").textContent += ` · saved as ${fragment.id}`;
    await loadProjects(page.active.project_id);
  } catch (error) {
    switchError(error);
  } finally {
    $("save-button").disabled = !(page.active && page.active.alive);
  }
});

// Ends the user's active sandbox (destroyed, and forgotten).
$("end-button").addEventListener("click", async () => {
  try {
    await api("DELETE", `/v1/users/${encodeURIComponent(page.user)}/active`);
    switchError(null);
    if (page.active && page.current && page.current.id === page.active.sandbox.id) {
      disconnect();
      page.current = null;
      $("session-id").textContent = "no sandbox";
      $("countdown").textContent = "";
      setState("idle");
    }
    closePreview();
    showActive(null);
  } catch (error) {
    switchError(error);
  }
  refresh();
});

// An admin ends every user's active sandbox.
$("cleanup-all").addEventListener("click", async () => {
  try {
    const { users } = await api("GET", "/v1/users");
    for (const entry of users) {
      await api("DELETE", `/v1/users/${encodeURIComponent(entry.user)}/active`);
    }
    switchError(null);
    $("active").textContent = `${users.length} user(s) cleaned up`;
    if (page.current && users.some((u) => u.sandbox.id === page.current.id)) {
      disconnect();
      page.current = null;
      $("session-id").textContent = "no sandbox";
      setState("idle");
    }
    closePreview();
    page.active = null;
    $("save-button").disabled = true;
    $("end-button").disabled = true;
  } catch (error) {
    switchError(error);
  }
  refresh();
});

$("new-project").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { name: $("new-project-name").value.trim() };
  const port = Number($("new-project-port").value);
  if (port) body.port = port;
  try {
    const project = await api("POST", "/v1/projects", body);
    $("new-project-name").value = "";
    switchError(null);
    await loadProjects(project.id);
  } catch (error) {
    switchError(error);
  }
});

// --- Preview: a port of the terminal's sandbox, through the daemon, beside the terminal -------

function closePreview() {
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("preview-link").hidden = true;
  fit.fit();
}

$("preview-button").addEventListener("click", async () => {
  const port = Number($("preview-port").value);
  if (!page.current || !(port >= 1 && port <= 65535)) return;
  const sandbox = page.current.id;
  // Only a port something listens on is framed (else the frame would show an error page).
  try {
    const { ports } = await api("GET", `/v1/sandboxes/${sandbox}/ports`);
    if (!ports.includes(port)) {
      $("preview-note").textContent = `nothing listens on port ${port} yet`;
      return;
    }
  } catch (error) {
    $("preview-note").textContent = error.message;
    return;
  }
  $("preview-note").textContent = "";
  const path = `/v1/sandboxes/${sandbox}/ports/${port}/`;
  $("preview").hidden = false;
  fit.fit(); // the terminal shares its column with the preview now
  $("preview").src = path;
  $("preview-link").href = path;
  $("preview-link").hidden = false;
});

// --- Try it ---------------------------------------------------------------------------------

async function loadLesson() {
  const params = new URLSearchParams(location.search);
  const tries = params.getAll("try");
  if (tries.length > 0) {
    const expects = params.getAll("expect");
    return { title: "Try it", steps: tries.map((command, i) => ({ command, expected: expects[i] })) };
  }
  const url = params.get("lesson") || "/lessons.json";
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot load the lesson ${url}: HTTP ${response.status}`);
  return response.json();
}

function renderLesson(lesson) {
  $("lesson-title").textContent = lesson.title || "Try it";
  $("steps").replaceChildren(...lesson.steps.map((step) => {
    const li = document.createElement("li");
    const line = document.createElement("div");
    line.className = "step";
    const input = document.createElement("input");
    input.className = "command";
    input.value = step.command;
    input.setAttribute("aria-label", "command");
    const run = document.createElement("button");
    run.type = "button";
    run.className = "run";
    run.textContent = "Run";
    const go = () => {
      if (page.state !== "connected") {
        setState(page.state, "open a sandbox first (New sandbox)");
        return;
      }
      send(encoder.encode(input.value + "\r"));
      term.focus();
    };
    run.addEventListener("click", go);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); go(); }
      if (event.key === "Escape") { event.preventDefault(); input.value = step.command; }
    });
    line.append(input, run);
    li.append(line);
    if (step.expected) {
      const expected = document.createElement("pre");
      expected.className = "expected";
      expected.textContent = step.expected;
      li.append(expected);
    }
    return li;
  }));
}

// --- Start ----------------------------------------------------------------------------------

(async () => {
  try {
    const health = await api("GET", "/healthz");
    $("daemon").textContent = `daemon ${health.version}`;
  } catch (error) {
    $("daemon").textContent = "daemon unreachable";
  }
  try {
    const me = await api("GET", "/v1/whoami");
    page.user = me.user;
    $("identity").textContent = `${me.user}${me.admin ? " (admin)" : ""}`;
    $("cleanup-all").hidden = !me.admin;
    $("logout").hidden = me.key_id === null;
  } catch (error) {
    return; // the login dialog is open; logging in reloads the page
  }
  await loadProfiles();
  await loadProjects();
  await loadActive();
  try {
    renderLesson(await loadLesson());
  } catch (error) {
    $("steps").textContent = error.message;
  }
  refresh();
  setInterval(refresh, 3000);
})();

// For tests and the curious: the terminal and the page's state.
window.sbx = {
  term,
  state: () => page.state,
  sandbox: () => page.current,
  active: () => page.active,
  text: () => {
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
    return lines.join("\n");
  },
};
