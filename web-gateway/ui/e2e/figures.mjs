// Figures of the console, measured and printed, never asserted:
//   1. the initial JavaScript a first visit downloads (the entry script and the chunks
//      index.html preloads), gzipped, next to the lazily loaded editor and chart chunks;
//   2. the time from navigation to the first rendered instance page in Chromium on loopback,
//      cold (a new browser context each time) and warm (a reload), against a real engine.
//
//   SERVER_BIN=target/debug/temporal-state-server node --preserve-symlinks e2e/figures.mjs
// Without SERVER_BIN only the sizes are printed.
import { readFile, readdir } from "node:fs/promises";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";
import { DIST, startConsole, startEngine } from "./harness.mjs";

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const gz = async (file) => gzipSync(await readFile(join(DIST, file)), { level: 9 }).length;

async function sizes() {
  const html = await readFile(join(DIST, "index.html"), "utf8");
  const initial = [...html.matchAll(/<(?:script[^>]*src|link[^>]*rel="modulepreload"[^>]*href)="\/?([^"]+\.js)"/g)].map((m) => m[1]);
  const css = [...html.matchAll(/<link[^>]*rel="stylesheet"[^>]*href="\/?([^"]+\.css)"/g)].map((m) => m[1]);
  const all = (await readdir(join(DIST, "assets"))).filter((f) => f.endsWith(".js")).map((f) => `assets/${f}`);
  let initialGz = 0;
  for (const f of initial) initialGz += await gz(f);
  let cssGz = 0;
  for (const f of css) cssGz += await gz(f);
  let allGz = 0;
  for (const f of all) allGz += await gz(f);
  const lazy = async (prefix) => {
    const f = all.find((x) => x.startsWith(`assets/${prefix}-`));
    return f ? `${kb(await gz(f))} (${f})` : "not found";
  };
  console.log(`initial JS, gzipped: ${kb(initialGz)} in ${initial.length} file(s) [${initial.join(", ")}] (goal <= 300 KB)`);
  console.log(`initial CSS, gzipped: ${kb(cssGz)}`);
  console.log(`lazy editor chunk (CodeMirror), gzipped: ${await lazy("JsonEditor")}`);
  console.log(`lazy chart chunk (uPlot), gzipped: ${await lazy("Chart")}`);
  console.log(`all JS, gzipped: ${kb(allGz)} in ${all.length} files`);
}

async function firstRender() {
  if (!process.env.SERVER_BIN) {
    console.log("time to first rendered instance page: skipped (SERVER_BIN unset)");
    return;
  }
  const engine = await startEngine();
  const cons = await startConsole({ engineUrl: engine.url, consoleUrl: engine.consoleUrl });
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true });
  try {
    const client = createTemporalStateClient(createGrpcWebTransport({ baseUrl: engine.url }));
    await client.entityTypes.createEntityType({
      name: "figures_player",
      schema: { type: "object", properties: { name: { type: "string" }, score: { type: "integer" }, tags: { type: "array" } } },
    });
    const { instance } = await client.instances.createInstance({ entityType: "figures_player", externalId: "p1", initialState: { name: "Ada", score: 0, tags: [] } });
    for (let i = 1; i <= 50; i++) {
      await client.events.applyEvent({ instanceId: instance.id, eventType: "ScoreIncreased", payload: { score: i, tags: [`t${i % 5}`] } });
    }
    const url = `${cons.url}/types/figures_player/instances/p1?version=25`;
    const rendered = '[data-testid="travel-state"] [data-path="/score"]';
    const measure = async (page, go) => {
      await go();
      await page.waitForSelector(rendered, { timeout: 30_000 });
      return page.evaluate(() => performance.now());
    };
    const cold = [];
    for (let i = 0; i < 12; i++) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await ctx.newPage();
      cold.push(await measure(page, () => page.goto(url)));
      await ctx.close();
    }
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    await measure(page, () => page.goto(url));
    const warm = [];
    for (let i = 0; i < 12; i++) warm.push(await measure(page, () => page.reload()));
    await ctx.close();
    const stats = (xs) => {
      const s = cold === xs ? xs.slice(2) : xs; // the first cold loads also warm up the engine and Chromium
      const sorted = [...s].sort((a, b) => a - b);
      const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
      return `median ${q(0.5).toFixed(0)} ms, p90 ${q(0.9).toFixed(0)} ms, min ${sorted[0].toFixed(0)} ms (n=${sorted.length})`;
    };
    console.log(`time to first rendered instance page (state at a version, Chromium ${browser.version()}, loopback):`);
    console.log(`  cold (new context, empty cache): ${stats(cold)}`);
    console.log(`  warm (reload, cached assets):    ${stats(warm)}`);
  } finally {
    await browser.close();
    await cons.stop();
    await engine.stop();
  }
}

await sizes();
await firstRender();
