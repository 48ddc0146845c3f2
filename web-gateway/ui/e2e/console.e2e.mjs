// End-to-end test of the console in Debian's Chromium (playwright-core, never a browser
// download) against a real engine: once on the embedded store, once on PostgreSQL (a fresh
// database, dropped afterwards; skipped only when TEST_DATABASE_URL is unset).
//
//   SERVER_BIN=target/debug/temporal-state-server node --preserve-symlinks --test e2e/console.e2e.mjs
//
// The flow: create a type and see a schema violation; create an instance and apply events (and
// meet a version conflict); preview an event (dry run) on a type with declared event types, and
// a guard refusing it; move the slider and see the old state; compare two versions and see
// the highlighted change; open the field chart; watch an event written by another client arrive
// without a reload; check the analytics buckets against what was written; then the lifecycle:
// save a compatible schema version, see the current state a stricter one would break (dry run)
// and the engine refuse it, archive an instance (writes refused in the UI, the badge in the table,
// the events in its history), restore it, and delete a type. Screenshots land in
// e2e/screenshots/. Any CSP violation fails the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";
import { timestampFromDate, timestampDate } from "@bufbuild/protobuf/wkt";
import { startEngine, startConsole, freshDatabase, UI_DIR } from "./harness.mjs";

const SHOTS = join(UI_DIR, "e2e", "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const T = 20_000;

async function withStack({ databaseUrl } = {}, fn) {
  const engine = await startEngine({ databaseUrl });
  let consoleSrv;
  let browser;
  try {
    consoleSrv = await startConsole({ engineUrl: engine.url, consoleUrl: engine.consoleUrl });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 60_000 });
    const other = createTemporalStateClient(createGrpcWebTransport({ baseUrl: engine.url }));
    await fn({ consoleUrl: consoleSrv.url, engineUrl: engine.url, browser, other });
  } catch (e) {
    // What the pages showed when it failed, to look at.
    let n = 0;
    for (const ctx of browser?.contexts() ?? []) {
      for (const p of ctx.pages()) await p.screenshot({ path: join(SHOTS, `failure-${n++}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    await browser?.close();
    await consoleSrv?.stop();
    await engine.stop();
  }
}

async function newPage(browser, { width = 1280, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  const problems = [];
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (400|404|409)|ERR_ABORTED/.test(m.text())) problems.push(`console.error: ${m.text()}`);
  });
  return { page, context, problems };
}

async function assertClean(page, problems) {
  const csp = await page.evaluate(() => window.__csp);
  assert.deepEqual(csp, [], `CSP violations: ${csp.join("; ")}`);
  assert.deepEqual(problems, [], problems.join("\n"));
}

/** Replaces the content of a CodeMirror editor (or its textarea fallback) identified by id. */
async function setEditor(page, id, text) {
  const cm = page.locator(`[data-testid="${id}"] .cm-content`);
  await cm.waitFor();
  await cm.click();
  await page.keyboard.press("ControlOrMeta+a");
  await page.keyboard.press("Delete");
  await cm.fill(text);
}

async function flow({ consoleUrl, browser, other }, label) {
  const type = `e2e_${label}_${Date.now().toString(36)}`;
  const ext = "player-001";
  const { page, context, problems } = await newPage(browser);

  // 1. Create a type: a meta-schema error as you type, then the engine's own violation per path.
  await page.goto(`${consoleUrl}/types?create=1`);
  await page.getByLabel("Name", { exact: true }).fill(type);
  await setEditor(page, "type-schema", '{"type": "objekt"}');
  await page.locator('[data-testid="schema-check"] .violations').getByText("/type").first().waitFor();
  await page.getByRole("button", { name: "Create type" }).click();
  const refused = page.locator('[role="alert"][data-code="INVALID_ARGUMENT"]');
  await refused.waitFor();
  assert.ok((await refused.locator(".violations li").count()) >= 1, "the engine's violations are listed per path");
  const schema = {
    type: "object",
    properties: {
      name: { type: "string" },
      score: { type: "integer", minimum: 0 },
      level: { type: "string", enum: ["bronze", "silver", "gold"] },
    },
    required: ["name", "score"],
  };
  await setEditor(page, "type-schema", JSON.stringify(schema, null, 2));
  await page.getByText("Valid JSON Schema (2020-12).").waitFor();
  await page.getByRole("button", { name: "Create type" }).click();
  await page.waitForURL(`**/types/${type}`);
  await page.getByRole("heading", { name: type, level: 1 }).waitFor();

  // 2. Create an instance: the form checks the state against the schema before sending.
  await page.goto(`${consoleUrl}/types/${type}/instances?create=1`);
  await page.getByLabel("External id", { exact: true }).first().fill(ext);
  await setEditor(page, "instance-state", '{"name": "Ada", "score": -1}');
  await page.locator('[data-testid="state-check"]').getByText("/score").waitFor();
  assert.ok(await page.getByRole("button", { name: "Create instance" }).isDisabled());
  await setEditor(page, "instance-state", '{"name": "Ada", "score": 1, "level": "bronze"}');
  await page.getByText("The state satisfies the schema.").waitFor();
  await page.getByRole("button", { name: "Create instance" }).click();
  await page.waitForURL(`**/types/${type}/instances/${ext}`);
  await page.locator('[data-testid="live-status"]', { hasText: "live" }).waitFor();

  // 3. Apply events through the form (expected_version prefilled each time).
  const applyEvent = async (eventType, payload, expectVersion) => {
    await page.getByLabel("Event type").fill(eventType);
    await setEditor(page, "ev-payload", JSON.stringify(payload));
    await page.getByRole("button", { name: "Apply event" }).click();
    await page.getByText(`Applied as version ${expectVersion}.`).waitFor();
    await page.locator('[data-testid="current-version"]', { hasText: String(expectVersion) }).waitFor();
  };
  await applyEvent("ScoreIncreased", { score: 5 }, 2);
  await applyEvent("LevelUp", { level: "silver", score: 12 }, 3);
  await applyEvent("ScoreIncreased", { score: 20 }, 4);
  // A stale expected_version: "changed by someone else", and the reload brings the version back.
  await page.getByLabel("Expected version").fill("2");
  await page.getByLabel("Event type").fill("ScoreIncreased");
  await setEditor(page, "ev-payload", '{"score": 21}');
  await page.getByRole("button", { name: "Apply event" }).click();
  await page.getByText("Changed by someone else.").waitFor();
  await page.getByRole("button", { name: "Reload the current state" }).click();
  await page.waitForFunction(() => document.getElementById("ev-expected")?.value === "4");
  // A schema violation from the engine on apply, listed per path.
  await page.getByLabel("Event type").fill("Broken");
  await setEditor(page, "ev-payload", '{"score": "lots"}');
  await page.getByRole("button", { name: "Apply event" }).click();
  await page.locator('[role="alert"][data-code="INVALID_ARGUMENT"] .violation-path', { hasText: "/score" }).waitFor();

  // 3b. Preview (dry run) on a type with declared event types: the would-be state marked against
  //     the current one, the change its transform records, every guard; nothing stored. A false
  //     guard and a payload breaking its schema show the engine's refusal, readable.
  await previewFlow({ consoleUrl, browser, other }, `${type}_account`, label);

  // 4. Time travel: the slider back to version 2 shows the state then, marked against now.
  const slider = page.getByLabel(/^Version/);
  await slider.fill("2");
  await page.waitForURL(/version=2/);
  const travel = page.locator('[data-testid="travel-state"]');
  await travel.locator('[data-path="/score"]', { hasText: "5" }).waitFor();
  await travel.locator('[data-path="/level"]', { hasText: "bronze" }).waitFor();
  // The mark comes with the comparison against now, which may land after the state itself.
  await travel.locator('[data-path="/score"].mark-changed').waitFor();
  await page.locator('[data-testid="change-list"] tr[data-path="/score"]').waitFor();
  await page.screenshot({ path: join(SHOTS, `instance-slider-${label}.png`), fullPage: true });
  // The shareable URL gives the same view in a fresh page.
  const shared = await context.newPage();
  await shared.goto(`${consoleUrl}/types/${type}/instances/${ext}?version=2`);
  await shared.locator('[data-testid="travel-state"] [data-path="/score"]', { hasText: "5" }).waitFor();
  await shared.close();
  // The date-time picker: a moment before version 2 existed gives version 1.
  const history = await other.queries.getHistory({ instanceId: await instanceId(other, type, ext) });
  const v1 = timestampDate(history.events[0].recordedAt);
  const pad = (n) => String(n).padStart(2, "0");
  const local = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (timestampDate(history.events[1].recordedAt).getTime() - v1.getTime() >= 1000) {
    await page.getByLabel("Or as the engine knew it at").fill(local(v1));
    await page.locator('[data-testid="travel-caption"]', { hasText: "State after version 1" }).waitFor();
  }

  // 5. Compare versions 1 and 3: /score and /level changed, highlighted on both sides, plus the patch.
  await page.goto(`${consoleUrl}/types/${type}/instances/${ext}?view=compare&from=1&to=3`);
  const to = page.locator('[data-testid="compare-to"]');
  await to.locator('[data-path="/score"].mark-changed', { hasText: "12" }).waitFor();
  await to.locator('[data-path="/level"].mark-changed', { hasText: "silver" }).waitFor();
  await page.locator('[data-testid="compare-from"] [data-path="/score"].mark-changed', { hasText: "1" }).waitFor();
  const patch = JSON.parse(await page.locator('[data-testid="patch"]').textContent());
  assert.deepEqual(
    patch.map((p) => `${p.op} ${p.path}`).sort(),
    ["replace /level", "replace /score"],
  );
  await page.screenshot({ path: join(SHOTS, `compare-${label}.png`), fullPage: true });

  // 6. The field timeline of /score: a line chart and one point per change.
  await page.getByRole("tab", { name: "Field timeline" }).click();
  await page.getByLabel("Field", { exact: true }).selectOption("/score");
  await page.locator(".chart canvas").waitFor();
  await page.getByText("The 4 changes as a table").click();
  assert.equal(await page.locator('[data-testid="timeline-table"] tbody tr').count(), 4);
  await page.getByLabel("Field", { exact: true }).selectOption("/level");
  await page.getByText("The 2 changes as a table").waitFor();
  await page.locator(".chart canvas").waitFor();
  await page.screenshot({ path: join(SHOTS, `field-timeline-${label}.png`), fullPage: true });

  // 7. Another client writes; the page shows it without a reload.
  await page.getByRole("tab", { name: "History" }).click();
  await page.locator('[data-testid="live-status"]', { hasText: "live" }).waitFor();
  const id = await instanceId(other, type, ext);
  await other.events.applyEvent({ instanceId: id, eventType: "BonusFromElsewhere", payload: { score: 30 } });
  await page.locator('[data-testid="arrived"]', { hasText: "BonusFromElsewhere" }).waitFor();
  await page.locator('[data-testid="current-version"]', { hasText: "5" }).waitFor();
  await page.locator('[data-testid="current-state"] [data-path="/score"]', { hasText: "30" }).waitFor();
  await page.locator('[data-testid="history-table"]', { hasText: "BonusFromElsewhere" }).waitFor();
  await assertClean(page, problems);

  // The overview's live feed, too.
  const { page: overview, problems: overviewProblems } = await newPage(browser);
  await overview.goto(`${consoleUrl}/`);
  await overview.locator(`tr[data-type="${type}"] [data-col="events"]`, { hasText: "5" }).waitFor();
  await overview.locator('[data-testid="live-status"]', { hasText: "live" }).waitFor();
  await other.events.applyEvent({ instanceId: id, eventType: "SeenOnOverview", payload: { score: 31 } });
  await overview.locator('[data-testid="live-feed"]', { hasText: "SeenOnOverview" }).waitFor();
  await overview.locator('[data-testid="live-feed"] a', { hasText: `${type}/${ext}` }).waitFor();
  await assertClean(overview, overviewProblems);

  // 8. Analytics: events with chosen occurred_at times; the chart's buckets match what was written.
  const minute = 60_000;
  const base = Math.floor(Date.now() / minute) * minute - 30 * minute;
  const second = await other.instances.createInstance({ entityType: type, externalId: "player-002", initialState: { name: "Bo", score: 0 } });
  const at = (ms) => timestampFromDate(new Date(base + ms));
  for (const [off, score] of [[10_000, 1], [20_000, 2], [40_000, 3], [65_000, 4], [5 * minute + 1000, 5]]) {
    await other.events.applyEvent({ instanceId: second.instance.id, eventType: "Backfilled", payload: { score }, occurredAt: at(off) });
  }
  const start = new Date(base - 10 * minute);
  const end = new Date(Math.ceil((Date.now() + minute) / minute) * minute);
  const expected = new Map();
  for (const inst of [id, second.instance.id]) {
    const h = await other.queries.getHistory({ instanceId: inst, pageSize: 1000 });
    for (const e of h.events) {
      const t = timestampDate(e.occurredAt).getTime();
      if (t < start.getTime() || t >= end.getTime()) continue;
      const b = new Date(Math.floor(t / minute) * minute).toISOString();
      expected.set(b, (expected.get(b) ?? 0) + 1);
    }
  }
  const { page: an, problems: anProblems } = await newPage(browser);
  await an.goto(`${consoleUrl}/types/${type}/analytics?interval=1m&start=${start.toISOString()}&end=${end.toISOString()}&field=/score`);
  await an.locator(".chart canvas").first().waitFor();
  await an.getByText(/Buckets as a table/).click();
  const rows = await an.locator('[data-testid="series-table"] tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [tr.getAttribute("data-start"), Number(tr.querySelector(".num").textContent)]),
  );
  assert.deepEqual(new Map(rows), expected, "analytics buckets = events written, per minute");
  assert.equal(expected.get(new Date(base).toISOString()), 3);
  await an.locator('[data-testid="most-active"] a', { hasText: ext }).waitFor();
  await an.locator('[data-testid="event-counts"]', { hasText: "Backfilled" }).waitFor();
  await an.locator('[data-testid="field-stats"]', { hasText: "Instances with it" }).waitFor();
  await an.screenshot({ path: join(SHOTS, `analytics-${label}.png`), fullPage: true });
  await assertClean(an, anProblems);

  // 9. Schema versions: a compatible change is saved as version 2; a stricter one is checked (dry
  //    run) and the current state that breaks it is listed, linked; a plain save is refused.
  const { page: tp, problems: tpProblems } = await newPage(browser);
  await tp.goto(`${consoleUrl}/types/${type}`);
  await tp.getByRole("button", { name: "Edit schema" }).click();
  const v2 = { ...schema, properties: { ...schema.properties, nickname: { type: "string" } } };
  await setEditor(tp, "edit-schema-text", JSON.stringify(v2, null, 2));
  await tp.locator('[data-testid="edit-schema-check"]').getByText("Valid JSON Schema (2020-12).").waitFor();
  await tp.getByRole("button", { name: "Save", exact: true }).click();
  await tp.locator('[data-testid="schema-saved"]', { hasText: "Saved as schema version 2." }).waitFor();
  await tp.locator('[data-testid="schema-version"]', { hasText: "2" }).waitFor();
  await tp.locator('[data-testid="schema-versions"] tbody tr').nth(1).waitFor();
  assert.equal(await tp.locator('[data-testid="schema-versions"] tbody tr').count(), 2);
  const strict = { ...v2, properties: { ...v2.properties, score: { type: "integer", minimum: 0, maximum: 20 } } };
  await tp.getByRole("button", { name: "Edit schema" }).click();
  await setEditor(tp, "edit-schema-text", JSON.stringify(strict, null, 2));
  await tp.getByRole("button", { name: "Check", exact: true }).click();
  const bad = tp.locator(`[data-testid="dry-run-violations"] tr[data-external-id="${ext}"]`);
  await bad.locator(".violation-path", { hasText: "/score" }).waitFor();
  assert.equal(await tp.locator('[data-testid="dry-run-violations"] tbody tr').count(), 1, "only player-001 (score 31) breaks maximum 20");
  assert.equal(await bad.getByRole("link", { name: ext }).getAttribute("href"), `/types/${type}/instances/${ext}`);
  await tp.locator('[data-testid="dry-run"]', { hasText: "1 of 2 current states breaks the new schema." }).waitFor();
  await tp.getByRole("button", { name: "Save anyway (allow invalid existing)" }).waitFor();
  await tp.screenshot({ path: join(SHOTS, `type-versions-dry-run-${label}.png`), fullPage: true });
  // The dry run changed nothing; a plain save is refused with the engine's own words.
  await tp.getByRole("button", { name: "Save", exact: true }).click();
  await tp.locator('[role="alert"][data-code="FAILED_PRECONDITION"]', { hasText: "allow_invalid_existing" }).waitFor();
  await tp.locator(`[data-testid="dry-run-violations"] tr[data-external-id="${ext}"]`).waitFor();
  await tp.screenshot({ path: join(SHOTS, `type-save-refused-${label}.png`), fullPage: true });
  // "Save anyway" asks first; Escape backs out and nothing is sent.
  await tp.getByRole("button", { name: "Save anyway (allow invalid existing)" }).click();
  await tp.getByRole("dialog", { name: "Save a schema that current states break?" }).waitFor();
  await tp.keyboard.press("Escape");
  await tp.getByRole("dialog").waitFor({ state: "detached" });
  const after = await other.entityTypes.getEntityType({ entityType: type });
  assert.equal(after.entityType.schemaVersion, 2n, "neither the dry run nor the refused save made a version");
  assert.deepEqual(after.schemaVersions.map((v) => v.version), [1n, 2n]);
  // Version 1 can still be viewed.
  await tp.getByRole("link", { name: "View schema version 1" }).click();
  await tp.locator('[data-testid="shown-schema-version"]', { hasText: "version 1 of 2" }).waitFor();
  assert.equal(await tp.locator('[data-testid="schema-tree"] [data-path="/properties/nickname"]').count(), 0);
  await assertClean(tp, tpProblems);

  // 10. Archive player-002 from its page: a banner, the apply-event form disabled (saying why),
  //     the engine refusing writes, the event in its history; the list hides it unless asked.
  const ext2 = "player-002";
  const { page: ip, problems: ipProblems } = await newPage(browser);
  await ip.goto(`${consoleUrl}/types/${type}/instances/${ext2}`);
  await ip.locator('[data-testid="live-status"]', { hasText: "live" }).waitFor();
  await ip.getByRole("button", { name: "Archive", exact: true }).click();
  const archiveDialog = ip.getByRole("dialog", { name: `Archive ${ext2}?` });
  await archiveDialog.getByLabel(/Reason/).fill("season over");
  await archiveDialog.getByRole("button", { name: "Archive", exact: true }).click();
  await ip.locator('[data-testid="archived-banner"]').waitFor();
  await ip.locator('[data-testid="apply-disabled"]', { hasText: "Restore it to apply events" }).waitFor();
  assert.ok(await ip.getByRole("button", { name: "Apply event" }).isDisabled());
  assert.ok(await ip.locator("#ev-type").isDisabled());
  await assert.rejects(
    other.events.applyEvent({ instanceId: second.instance.id, eventType: "Sneaky", payload: { score: 6 } }),
    (e) => e.code === 9 && /archived/.test(e.rawMessage),
    "the engine refuses writes to an archived instance",
  );
  await ip.getByRole("tab", { name: "History" }).click();
  const archivedRow = ip.locator('[data-testid="history-table"] tr[data-event-type="InstanceArchived"]');
  await archivedRow.locator(".badge-archived").waitFor();
  assert.match(await archivedRow.textContent(), /season over/);
  assert.equal(await archivedRow.locator('[data-col="schema-version"]').textContent(), "v2");
  assert.equal(await ip.locator('[data-testid="history-table"] tbody tr').last().locator('[data-col="schema-version"]').textContent(), "v1");
  await ip.screenshot({ path: join(SHOTS, `instance-archived-${label}.png`), fullPage: true });

  const { page: lp, problems: lpProblems } = await newPage(browser);
  await lp.goto(`${consoleUrl}/types/${type}/instances`);
  await lp.getByRole("link", { name: ext, exact: true }).waitFor();
  assert.equal(await lp.getByRole("link", { name: ext2, exact: true }).count(), 0, "archived instances are left out by default");
  // The box follows the URL: it shows checked once the navigation it starts has happened, which
  // `check()` (asserting at once after its click) does not wait for.
  await lp.getByLabel("Show archived").click();
  await lp.waitForURL(/archived=1/);
  await lp.waitForFunction(() => document.getElementById("show-archived")?.checked === true);
  await lp.locator(`tr[data-external-id="${ext2}"] .badge-archived`).waitFor();
  assert.equal(await lp.locator(`tr[data-external-id="${ext}"] .badge-archived`).count(), 0);
  await lp.screenshot({ path: join(SHOTS, `instances-archived-${label}.png`), fullPage: true });
  // The shareable URL keeps the filter.
  await lp.goto(`${consoleUrl}/types/${type}/instances?archived=1`);
  await lp.locator(`tr[data-external-id="${ext2}"] .badge-archived`).waitFor();
  await assertClean(lp, lpProblems);

  // Restore it: writable again from the form, and the new event carries schema version 2.
  await ip.getByRole("button", { name: "Restore", exact: true }).click();
  await ip.getByRole("dialog", { name: `Restore ${ext2}?` }).getByRole("button", { name: "Restore", exact: true }).click();
  await ip.locator('[data-testid="archived-banner"]').waitFor({ state: "detached" });
  await ip.locator('[data-testid="history-table"] tr[data-event-type="InstanceRestored"] .badge-restored').waitFor();
  await ip.locator("#ev-type").fill("ScoreIncreased");
  await setEditor(ip, "ev-payload", '{"score": 7}');
  await ip.getByRole("button", { name: "Apply event" }).click();
  await ip.getByText(/Applied as version \d+\./).waitFor();
  await ip.locator('[data-testid="history-table"] tr[data-event-type="ScoreIncreased"] [data-col="schema-version"]', { hasText: "v2" }).first().waitFor();
  await assertClean(ip, ipProblems);

  // 10b. Erase an instance: the button works once the external id is typed out; the user lands on
  //      the list with a notice, the instance is gone from it, and the engine answers it erased.
  const ext3 = "player-erase-me";
  const third = await other.instances.createInstance({ entityType: type, externalId: ext3, initialState: { name: "Secret Name", score: 3 } });
  const { page: ep, problems: epProblems } = await newPage(browser);
  await ep.goto(`${consoleUrl}/types/${type}/instances/${ext3}`);
  await ep.getByRole("button", { name: "Erase", exact: true }).click();
  const eraseDialog = ep.getByRole("dialog", { name: `Erase ${ext3}?` });
  const eraseConfirm = eraseDialog.getByRole("button", { name: "Erase for good" });
  assert.equal(await eraseConfirm.isDisabled(), true, "erasing waits for the external id typed out");
  await eraseDialog.getByLabel(/Type/).fill(ext3);
  await eraseDialog.getByLabel(/Reason/).fill("e2e erasure");
  await ep.screenshot({ path: join(SHOTS, `instance-erase-dialog-${label}.png`), fullPage: true });
  await eraseConfirm.click();
  await ep.waitForURL(new RegExp(`/types/${type}/instances$`));
  await ep.locator('[data-testid="notice"]', { hasText: `Erased instance ${third.instance.id}` }).waitFor();
  await ep.getByRole("link", { name: ext, exact: true }).waitFor();
  assert.equal(await ep.getByRole("link", { name: ext3, exact: true }).count(), 0, "an erased instance is not listed");
  const erased = await other.instances.getInstance({ instanceId: third.instance.id });
  assert.equal(erased.instance.erased, true);
  assert.equal(erased.instance.externalId, "");
  assert.ok(!JSON.stringify(erased.instance.state ?? {}).includes("Secret Name"), "the erased state is gone");
  await assertClean(ep, epProblems);

  // 11. Delete a type: refused while it has instances (the engine's message), done for an empty
  //     one, back on the list.
  const empty = `${type}_empty`;
  await other.entityTypes.createEntityType({ name: empty, schema: { type: "object" } });
  const { page: dp0, problems: dpProblems } = await newPage(browser);
  await dp0.goto(`${consoleUrl}/types/${type}`);
  await dp0.getByRole("button", { name: "Delete type" }).click();
  await dp0.getByRole("dialog", { name: `Delete the entity type ${type}?` }).getByRole("button", { name: "Delete type" }).click();
  await dp0.locator('[role="alert"][data-code="FAILED_PRECONDITION"]').waitFor();
  await dp0.goto(`${consoleUrl}/types/${empty}`);
  await dp0.getByRole("button", { name: "Delete type" }).click();
  await dp0.getByRole("dialog", { name: `Delete the entity type ${empty}?` }).getByRole("button", { name: "Delete type" }).click();
  await dp0.waitForURL(/\/types$/);
  await dp0.locator('[data-testid="notice"]', { hasText: `Deleted the entity type ${empty}.` }).waitFor();
  await assert.rejects(other.entityTypes.getEntityType({ entityType: empty }), (e) => e.code === 5);
  await assertClean(dp0, dpProblems);

  // Phone width: the instance page still lays out in one column without sideways scrolling.
  const { page: phone } = await newPage(browser, { width: 390, height: 844 });
  await phone.goto(`${consoleUrl}/types/${type}/instances/${ext}?version=3`);
  await phone.locator('[data-testid="travel-state"] [data-path="/score"]', { hasText: "12" }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the phone layout scrolls sideways by ${overflow}px`);
  await phone.screenshot({ path: join(SHOTS, `instance-phone-${label}.png`), fullPage: true });

  await phone.goto(`${consoleUrl}/types/${type}?edit=1`);
  await phone.locator('[data-testid="schema-versions"]').waitFor();
  await phone.locator('[data-testid="edit-schema-text"] .cm-content').waitFor();
  const typeOverflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(typeOverflow <= 1, `the phone layout of the type page scrolls sideways by ${typeOverflow}px`);
  await phone.screenshot({ path: join(SHOTS, `type-phone-${label}.png`), fullPage: true });

  // Dark mode follows the system.
  const dark = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "dark" });
  const dp = await dark.newPage();
  await dp.goto(`${consoleUrl}/types/${type}/instances/${ext}?view=compare&from=1&to=3`);
  await dp.locator('[data-testid="compare-to"] [data-path="/score"].mark-changed').waitFor();
  const bg = await dp.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  assert.equal(bg, "rgb(17, 20, 24)");
  await dp.screenshot({ path: join(SHOTS, `compare-dark-${label}.png`), fullPage: true });
  await other.instances.archiveInstance({ instanceId: second.instance.id });
  await dp.goto(`${consoleUrl}/types/${type}/instances/${ext2}?view=history`);
  await dp.locator('[data-testid="archived-banner"]').waitFor();
  await dp.locator('[data-testid="history-table"] tr[data-event-type="InstanceArchived"]').first().waitFor();
  await dp.screenshot({ path: join(SHOTS, `instance-archived-dark-${label}.png`), fullPage: true });
  await dp.goto(`${consoleUrl}/types/${type}?edit=1`);
  await setEditor(dp, "edit-schema-text", JSON.stringify(strict, null, 2));
  await dp.getByRole("button", { name: "Check", exact: true }).click();
  await dp.locator(`[data-testid="dry-run-violations"] tr[data-external-id="${ext}"]`).waitFor();
  await dp.screenshot({ path: join(SHOTS, `type-versions-dry-run-dark-${label}.png`), fullPage: true });
  await phone.goto(`${consoleUrl}/types/${type}/instances/${ext2}`);
  await phone.locator('[data-testid="archived-banner"]').waitFor();
  await phone.locator('[data-testid="apply-disabled"]').waitFor();
  const archivedOverflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(archivedOverflow <= 1, `the phone layout of an archived instance scrolls sideways by ${archivedOverflow}px`);
  await phone.screenshot({ path: join(SHOTS, `instance-archived-phone-${label}.png`), fullPage: true });
  await dark.close();
  await context.close();
}

async function previewFlow({ consoleUrl, browser, other }, acct, label) {
  const amount = { type: "object", properties: { amount: { type: "integer", minimum: 1 } }, required: ["amount"], additionalProperties: false };
  await other.entityTypes.createEntityType({
    name: acct,
    schema: { type: "object", properties: { balance: { type: "integer" } }, required: ["balance"] },
    declarations: {
      strict: true,
      eventTypes: [
        { eventType: "Deposited", payloadSchema: amount, transform: '{"balance": state.balance + payload.amount}' },
        {
          eventType: "Withdrawn",
          payloadSchema: amount,
          transform: '{"balance": state.balance - payload.amount}',
          guards: [
            { expression: "state.balance >= payload.amount", message: "insufficient funds" },
            { expression: "payload.amount <= 100", message: "at most 100 per withdrawal" },
          ],
        },
      ],
    },
  });
  const created = await other.instances.createInstance({ entityType: acct, externalId: "acc-1", initialState: { balance: 50 } });
  const unchanged = async () => {
    const now = await other.instances.getCurrentState({ entityType: acct, externalId: "acc-1" });
    assert.equal(now.instance.version, 1n, "a preview stores nothing");
    assert.deepEqual(now.instance.state, { balance: 50 });
    const h = await other.queries.getHistory({ instanceId: created.instance.id });
    assert.equal(h.events.length, 1);
  };
  const { page, problems } = await newPage(browser);
  await page.goto(`${consoleUrl}/types/${acct}/instances/acc-1`);
  await page.locator('[data-testid="live-status"]', { hasText: "live" }).waitFor();
  await page.getByLabel("Event type").fill("Withdrawn");
  await setEditor(page, "ev-payload", '{"amount": 20}');
  await page.getByRole("button", { name: "Preview", exact: true }).click();
  const preview = page.locator('[data-testid="preview"]');
  await preview.locator('[data-testid="preview-state"] [data-path="/balance"].mark-changed', { hasText: "30" }).waitFor();
  const row = preview.locator('[data-testid="preview-changes"] tr[data-path="/balance"]');
  assert.deepEqual(await row.locator("td code").allTextContents(), ["50", "30"]);
  assert.deepEqual(JSON.parse(await preview.locator('[data-testid="preview-payload"]').textContent()), { amount: 20 });
  assert.deepEqual(JSON.parse(await preview.locator('[data-testid="preview-change"]').textContent()), { balance: 30 });
  assert.equal(await preview.locator('[data-testid="preview-guards"] li.guard-passed').count(), 2);
  await preview.getByText("would be recorded as version 2").waitFor();
  assert.equal(await page.locator('[data-testid="current-version"]').textContent(), "1");
  await page.locator('[data-testid="current-state"] [data-path="/balance"]', { hasText: "50" }).waitFor();
  await unchanged();
  await page.screenshot({ path: join(SHOTS, `preview-${label}.png`), fullPage: true });

  // A withdrawal over the balance and the cap: FAILED_PRECONDITION naming both guards.
  await setEditor(page, "ev-payload", '{"amount": 500}');
  await preview.waitFor({ state: "detached" });
  await page.getByRole("button", { name: "Preview", exact: true }).click();
  const guardRefusal = page.locator('[data-testid="preview-refused"] [role="alert"][data-code="FAILED_PRECONDITION"]');
  await guardRefusal.waitFor();
  const refusal = await guardRefusal.textContent();
  assert.match(refusal, /insufficient funds/);
  assert.match(refusal, /at most 100 per withdrawal/);
  assert.match(refusal, /Nothing was stored/);
  await page.screenshot({ path: join(SHOTS, `preview-guard-failed-${label}.png`), fullPage: true });
  // A payload breaking its schema: INVALID_ARGUMENT, the path listed.
  await setEditor(page, "ev-payload", '{"amount": 0}');
  await page.getByRole("button", { name: "Preview", exact: true }).click();
  await page.locator('[data-testid="preview-refused"] [data-code="INVALID_ARGUMENT"] .violation-path', { hasText: "payload" }).first().waitFor();
  await unchanged();
  assert.equal(await page.locator('[data-testid="current-version"]').textContent(), "1");

  // Apply is unchanged: the same event, applied, is what the preview said.
  await setEditor(page, "ev-payload", '{"amount": 20}');
  await page.getByRole("button", { name: "Apply event" }).click();
  await page.getByText("Applied as version 2.").waitFor();
  await page.locator('[data-testid="current-state"] [data-path="/balance"]', { hasText: "30" }).waitFor();
  assert.equal(await page.locator('[data-testid="preview"]').count(), 0, "no stale preview after applying");
  await assertClean(page, problems);
  await page.context().close();
}

async function instanceId(client, type, ext) {
  const r = await client.instances.getCurrentState({ entityType: type, externalId: ext });
  return r.instance.id;
}

await mkdir(SHOTS, { recursive: true });

test("the console on the embedded store", { timeout: 240_000 }, async () => {
  await withStack({}, (s) => flow(s, "embedded"));
});

test("the console on PostgreSQL", { timeout: 240_000, skip: process.env.TEST_DATABASE_URL ? false : "TEST_DATABASE_URL is unset" }, async () => {
  const db = await freshDatabase(process.env.TEST_DATABASE_URL);
  try {
    await withStack({ databaseUrl: db.url }, (s) => flow(s, "postgres"));
  } finally {
    await db.drop();
  }
});
