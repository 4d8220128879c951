// Drives the sbx web page in a real browser (Debian's Chromium through playwright-core):
// create a sandbox, type into its terminal, run a "Try it" command, resize, reset.
// Usage: SBX_KEY=KEY node terminal.mjs DAEMON_URL ARTIFACTS_DIR
// (exit 0 on success; screenshots saved). The page is logged in with the key, as a user would.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error("usage: node terminal.mjs DAEMON_URL ARTIFACTS_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root, and with no network but loopback: no sandbox, no background connections.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = 0;
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
// Until logged in, the browser reports the page's 401s (expected) as console errors.
let loggedIn = false;
page.on("console", (message) => {
  if (message.type() !== "error") return;
  if (!loggedIn && message.text().includes("status of 401")) return;
  problems.push(`console error: ${message.text()}`);
});

const shot = (name) => page.screenshot({ path: `${artifacts}/${String(++step).padStart(2, "0")}-${name}.png` });
const state = () => page.evaluate(() => window.sbx.state());
const lines = () => page.evaluate(() => window.sbx.text().split("\n").map((l) => l.trim()));
async function waitForLine(pattern, what) {
  // A whole line of the terminal must match `pattern` (a RegExp; the page forbids eval).
  try {
    await page.waitForFunction(
      ([source, flags]) => {
        const re = new RegExp(source, flags);
        return window.sbx.text().split("\n").some((l) => re.test(l.trim()));
      },
      [pattern.source, pattern.flags],
      { timeout: 20000 },
    );
  } catch (error) {
    await shot(`missing-${what.replace(/\W+/g, "-")}`);
    throw new Error(`terminal never showed ${what}; it shows:\n${(await lines()).filter(Boolean).join("\n")}`);
  }
}
async function typeLine(text) {
  await page.click("#terminal");
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}
async function terminalSize(marker) {
  await typeLine(`echo ${marker}:$(stty size)`);
  await waitForLine(new RegExp(`^${marker}:\\d+ \\d+$`), `${marker} size`);
  const line = (await lines()).find((l) => new RegExp(`^${marker}:\\d+ \\d+$`).test(l));
  const [rows, cols] = line.split(":")[1].split(" ").map(Number);
  return { rows, cols };
}

try {
  // A "Try it" command whose output differs from its text, and its expected output.
  await page.goto(`${url}/?try=${encodeURIComponent("echo tried-$((40+2))")}&expect=tried-42`);
  // Without a session the page asks for a key; logging in sets an HttpOnly cookie.
  await page.waitForSelector("#login", { state: "visible" });
  await shot("login");
  await page.fill("#login-key", "sbx_wrong_key");
  await page.click("#login-button");
  await page.waitForSelector("#login-error", { state: "visible" });
  await page.fill("#login-key", process.env.SBX_KEY);
  await page.click("#login-button");
  await page.waitForSelector("#profile option", { state: "attached" });
  loggedIn = true;
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "sbx_session");
  if (!session || !session.httpOnly || session.sameSite !== "Strict") {
    throw new Error(`no HttpOnly SameSite=Strict session cookie: ${JSON.stringify(cookies)}`);
  }
  if (await page.evaluate(() => document.cookie.includes("sbx_session"))) {
    throw new Error("the page's scripts can read the session cookie");
  }
  if (page.url().includes(process.env.SBX_KEY)) throw new Error("the key is in the URL");
  const who = await page.textContent("#identity");
  if (!who.startsWith("admin")) throw new Error(`logged in as ${who}`);
  if ((await state()) !== "idle") throw new Error(`the page starts in state ${await state()}`);
  await shot("idle");

  await page.click("#create-button");
  await page.waitForFunction(() => window.sbx.state() === "connected", null, { timeout: 20000 });
  const sandbox = await page.evaluate(() => window.sbx.sandbox());
  await page.waitForSelector(`tr[data-id="${sandbox.id}"]`);
  const countdown = await page.textContent("#countdown");
  if (!/expires in \d/.test(countdown)) throw new Error(`no countdown: ${countdown}`);
  await shot("connected");

  await typeLine("echo hello-from-browser");
  await waitForLine(/^hello-from-browser$/, "hello-from-browser");
  await shot("typed");

  const expected = await page.textContent("pre.expected");
  if (expected.trim() !== "tried-42") throw new Error(`expected output shown: ${expected}`);
  // Edits are kept until Escape restores the original.
  await page.fill("input.command", "echo edited");
  await page.press("input.command", "Escape");
  const restored = await page.inputValue("input.command");
  if (restored !== "echo tried-$((40+2))") throw new Error(`Escape left ${restored}`);
  await page.click("button.run");
  await waitForLine(/^tried-42$/, "the Try it output");
  await shot("tried");

  const before = await terminalSize("before");
  await page.setViewportSize({ width: 900, height: 500 });
  await page.waitForTimeout(300);
  const after = await terminalSize("after");
  if (after.rows >= before.rows || after.cols >= before.cols) {
    throw new Error(`stty size did not shrink with the window: ${JSON.stringify({ before, after })}`);
  }
  await shot("resized");

  await typeLine("touch /tmp/before-reset && echo marked");
  await waitForLine(/^marked$/, "marked");
  await page.click("#reset");
  await page.waitForFunction(
    (started) => window.sbx.state() === "connected" && window.sbx.sandbox().started_at !== started,
    sandbox.started_at,
    { timeout: 20000 },
  );
  const fresh = await page.evaluate(() => window.sbx.sandbox());
  if (fresh.id !== sandbox.id) throw new Error("Reset changed the sandbox id");
  await typeLine("test -e /tmp/before-reset && echo still-there || echo fresh-sandbox");
  await waitForLine(/^fresh-sandbox$/, "a fresh sandbox after Reset");
  await shot("reset");

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(`ok: ${step} screenshots in ${artifacts}`);
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
