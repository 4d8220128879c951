// Seed 004 in a real browser: the page shows the user's projects and active sandbox, switches
// between projects (a new sandbox with the project's files each time), shows a preview of a
// dev server started from those files beside the terminal, makes a project, saves the
// sandbox's files into it, and ends the user's sandbox.
// Usage: SBX_KEY=KEY SITE_FRAGMENT=FRAG node projects.mjs DAEMON_URL ARTIFACTS_DIR
// The daemon has projects "site" (two fragments: SITE_FRAGMENT is the first) and "blog", each
// with an index.html and a server.py serving it on port 3000.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [url, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = 0;
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
let loggedIn = false;
page.on("console", (message) => {
  if (message.type() !== "error") return;
  if (!loggedIn && message.text().includes("status of 401")) return;
  problems.push(`console error: ${message.text()}`);
});
const shot = (name) => page.screenshot({ path: `${artifacts}/${String(++step).padStart(2, "0")}-${name}.png` });

async function waitForLine(pattern, what) {
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
    throw new Error(`terminal never showed ${what}`);
  }
}
async function typeLine(text) {
  await page.click("#terminal");
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}
// Switches to the project named `name` (and `fragment`), waits for the new sandbox's terminal.
async function switchTo(name, fragment) {
  const before = await page.evaluate(() => window.sbx.active() && window.sbx.active().sandbox.id);
  await page.selectOption("#project", { label: name });
  await page.fill("#fragment", fragment || "");
  await page.click("#switch-button");
  await page.waitForFunction(
    (old) => {
      const active = window.sbx.active();
      return active && active.sandbox.id !== old && window.sbx.state() === "connected";
    },
    before,
    { timeout: 30000 },
  );
  return page.evaluate(() => window.sbx.active());
}
// Starts the project's dev server in the terminal and shows its preview until its heading is
// `expected` (an error page shows while the server starts); the heading last seen.
async function preview(marker, expected) {
  await typeLine(`cd /home/user && (setsid python3 server.py >/dev/null 2>&1 &) && echo ${marker}`);
  await waitForLine(new RegExp(`^${marker}$`), marker);
  let heading = null;
  for (let attempt = 0; attempt < 50; attempt++) {
    await page.click("#preview-button");
    const frame = page.frameLocator("#preview");
    try {
      heading = (await frame.locator("h1").textContent({ timeout: 500 })).trim();
      if (heading === expected) return heading;
    } catch (error) {
      // not serving yet
    }
    await page.waitForTimeout(200);
  }
  return heading;
}

try {
  await page.goto(url);
  await page.waitForSelector("#login", { state: "visible" });
  await page.fill("#login-key", process.env.SBX_KEY);
  await page.click("#login-button");
  await page.waitForSelector("#project option", { state: "attached" });
  loggedIn = true;
  const options = await page.$$eval("#project option", (o) => o.map((x) => x.textContent));
  if (!(options.includes("site") && options.includes("blog"))) throw new Error(`projects: ${options}`);
  if ((await page.textContent("#active")) !== "no active sandbox") throw new Error("an active sandbox already");
  await shot("projects");

  const first = await switchTo("site");
  if (first.restored_files !== 2 || first.project_name !== "site") throw new Error(JSON.stringify(first));
  const shown = await page.textContent("#active");
  if (!shown.includes("site") || !shown.includes(first.sandbox.id)) throw new Error(`active shows ${shown}`);
  const heading = await preview("site-started", "site v2");
  if (heading !== "site v2") throw new Error(`site's preview shows ${heading}`);
  await shot("site-preview");

  const second = await switchTo("blog");
  if ((await page.isHidden("#preview")) !== true) throw new Error("the old preview stayed");
  const blog = await preview("blog-started", "blog");
  if (blog !== "blog") throw new Error(`blog's preview shows ${blog}`);
  await shot("blog-preview");

  const third = await switchTo("site", process.env.SITE_FRAGMENT);
  if (third.fragment_id !== process.env.SITE_FRAGMENT) throw new Error(`fragment ${third.fragment_id}`);
  const old = await preview("site-v1-started", "site v1");
  if (old !== "site v1") throw new Error(`site's first fragment shows ${old}`);
  await shot("site-v1-preview");

  // A new project made on the page, its files written in the terminal and saved as its first
  // fragment, then the user's sandbox ended.
  await page.fill("#new-project-name", "fresh");
  await page.fill("#new-project-port", "3000");
  await page.click("#new-project-button");
  await page.waitForFunction(() => {
    const select = document.getElementById("project");
    return select.selectedOptions.length === 1 && select.selectedOptions[0].textContent === "fresh";
  });
  const fourth = await switchTo("fresh");
  if (fourth.restored_files !== 0 || fourth.fragment_id) throw new Error(JSON.stringify(fourth));
  await typeLine("cd /home/user && echo '<h1>fresh</h1>' > index.html && echo written");
  await waitForLine(/^written$/, "written");
  await page.click("#save-button");
  await page.waitForFunction(() => document.getElementById("active").textContent.includes("saved as frag-"));
  await shot("fresh-saved");
  await page.click("#end-button");
  await page.waitForFunction(() => document.getElementById("active").textContent === "no active sandbox");
  if ((await page.evaluate(() => window.sbx.state())) !== "idle") throw new Error("the terminal stayed");
  await shot("ended");

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(JSON.stringify({
    sandboxes: [first.sandbox.id, second.sandbox.id, third.sandbox.id, fourth.sandbox.id],
  }));
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
