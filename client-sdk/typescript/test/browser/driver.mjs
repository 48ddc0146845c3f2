// Drives Debian's Chromium (CHROMIUM, default /usr/bin/chromium; playwright-core, no browser
// download) to PAGE_URL, waits for window.__result (set by page.mjs) and exits 0 only when the
// page reports success. Console messages and page errors are printed, so a failure says why.
// Run by client-sdk/rust/tests/typescript_sdk.rs, which serves the page and starts the servers.
import { chromium } from "playwright-core";

const url = process.env.PAGE_URL;
if (!url) {
  console.error("PAGE_URL is not set: run `cargo test -p temporal-state-client --test typescript_sdk`");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = 60_000;

const browser = await chromium.launch({ executablePath, headless: true, timeout });
let result;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log(`[console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[pageerror] ${e.stack ?? e}`));
  await page.goto(url, { timeout });
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout });
  result = await page.evaluate(() => window.__result);
  result.browser = browser.version();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
