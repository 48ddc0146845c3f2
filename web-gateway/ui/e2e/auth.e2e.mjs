// End-to-end test of the console's sign-in in Debian's Chromium against a real engine with
// authentication on: API keys (AUTH_API_KEYS_FILE) and JWTs from a tiny OpenID Connect provider
// this test runs on loopback (discovery, an authorize endpoint that signs "ada" in at once, a token
// endpoint that checks the PKCE verifier, a JWKS). The engine checks the access tokens against
// that JWKS; its console learns the issuer from CONSOLE_OIDC_ISSUER.
//
//   SERVER_BIN=target/debug/temporal-state-server node --preserve-symlinks --test e2e/auth.e2e.mjs
//
// Shown: a wrong key is refused with the engine's reason; a read-only key sees no write controls;
// a write key applies an event (recorded_by = the key's name); sign-out empties sessionStorage;
// OpenID Connect sign-in round-trips and its access token writes as its subject. Screenshots land
// in e2e/screenshots/auth-*.png. Any CSP violation fails the run.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { createServer } from "node:http";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";
import { startEngine, startConsole, UI_DIR } from "./harness.mjs";

const SHOTS = join(UI_DIR, "e2e", "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const T = 20_000;

const KEYS = { admin: "e2e-admin-key-0123456789", reader: "e2e-reader-key-0123456789", writer: "e2e-writer-key-0123456789" };
const SCOPES = { admin: ["admin"], reader: ["read"], writer: ["write"] };
const AUDIENCE = "temporal-state";
const CLIENT_ID = "console";

const sha256 = (s) => createHash("sha256").update(s).digest();
const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** The OpenID Connect provider: one RSA key, one user ("ada@example.com", scope `write`). */
async function startProvider() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "e2e-1", alg: "RS256", use: "sig" };
  const codes = new Map();
  const seen = { authorize: 0, tokens: 0, refused: [] };
  let issuer = "";
  const jwt = (claims) => {
    const head = b64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid: jwk.kid }));
    const body = b64url(JSON.stringify(claims));
    return `${head}.${body}.${b64url(sign("sha256", Buffer.from(`${head}.${body}`), privateKey))}`;
  };
  const send = (res, status, body, headers = {}) => {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
    res.end(JSON.stringify(body));
  };
  const cors = { "access-control-allow-origin": "*", "access-control-allow-headers": "content-type, accept" };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname === "/.well-known/openid-configuration") {
      return send(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ["code"],
        code_challenge_methods_supported: ["S256"],
        id_token_signing_alg_values_supported: ["RS256"],
      }, cors);
    }
    if (url.pathname === "/jwks") return send(res, 200, { keys: [jwk] });
    if (url.pathname === "/authorize") {
      seen.authorize++;
      const p = url.searchParams;
      const redirect = new URL(p.get("redirect_uri"));
      assert.equal(redirect.pathname, "/auth/callback");
      assert.equal(redirect.hostname, "127.0.0.1");
      if (p.get("client_id") !== CLIENT_ID || p.get("response_type") !== "code" || p.get("code_challenge_method") !== "S256") {
        redirect.searchParams.set("error", "invalid_request");
      } else {
        const code = b64url(randomBytes(16));
        codes.set(code, { challenge: p.get("code_challenge"), nonce: p.get("nonce"), redirectUri: p.get("redirect_uri"), scope: p.get("scope") });
        redirect.searchParams.set("code", code);
      }
      redirect.searchParams.set("state", p.get("state"));
      res.writeHead(302, { location: redirect.toString() });
      return res.end();
    }
    if (url.pathname === "/token" && req.method === "OPTIONS") {
      res.writeHead(204, cors);
      return res.end();
    }
    if (url.pathname === "/token" && req.method === "POST") {
      let raw = "";
      for await (const chunk of req) raw += chunk;
      const form = new URLSearchParams(raw);
      const grant = codes.get(form.get("code"));
      codes.delete(form.get("code")); // one use
      const refuse = (why) => {
        seen.refused.push(why);
        send(res, 400, { error: "invalid_grant", error_description: why }, cors);
      };
      if (!grant) return refuse("unknown or used code");
      if (form.get("redirect_uri") !== grant.redirectUri) return refuse("redirect_uri differs");
      if (form.get("client_id") !== CLIENT_ID) return refuse("client_id differs");
      if (b64url(sha256(form.get("code_verifier") ?? "")) !== grant.challenge) return refuse("PKCE verification failed");
      seen.tokens++;
      const now = Math.floor(Date.now() / 1000);
      const sub = "ada@example.com";
      return send(res, 200, {
        token_type: "Bearer",
        expires_in: 300,
        access_token: jwt({ iss: issuer, sub, aud: AUDIENCE, scope: grant.scope, iat: now, exp: now + 300 }),
        id_token: jwt({ iss: issuer, sub, aud: CLIENT_ID, nonce: grant.nonce, iat: now, exp: now + 300 }),
      }, cors);
    }
    send(res, 404, { error: "not_found" });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  issuer = `http://127.0.0.1:${server.address().port}`;
  return {
    issuer,
    seen,
    stop: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
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

const storedKeys = (page) => page.evaluate(() => Object.keys(window.sessionStorage));

async function signInWithKey(page, key) {
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in with the key" }).click();
}

async function signOut(page) {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to Temporal State" }).waitFor();
  assert.deepEqual(await storedKeys(page), [], "sign-out leaves nothing in sessionStorage");
}

await mkdir(SHOTS, { recursive: true });

test("console sign-in: API keys and OpenID Connect", { timeout: 240_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "console-auth-e2e-"));
  const keysFile = join(dir, "api-keys.json");
  await writeFile(
    keysFile,
    JSON.stringify(Object.entries(KEYS).map(([name, key]) => ({ name, sha256: sha256(key).toString("hex"), scopes: SCOPES[name] }))),
  );
  const provider = await startProvider();
  let engine;
  let consoleSrv;
  let browser;
  try {
    engine = await startEngine({
      env: {
        AUTH_API_KEYS_FILE: keysFile,
        AUTH_JWKS_URL: `${provider.issuer}/jwks`,
        AUTH_JWT_ISSUER: provider.issuer,
        AUTH_JWT_AUDIENCE: AUDIENCE,
        CONSOLE_OIDC_ISSUER: provider.issuer,
        CONSOLE_OIDC_CLIENT_ID: CLIENT_ID,
        CONSOLE_OIDC_SCOPES: "openid write",
      },
    });
    consoleSrv = await startConsole({ engineUrl: engine.url, consoleUrl: engine.consoleUrl });
    const consoleUrl = consoleSrv.url;
    const admin = createTemporalStateClient(
      createGrpcWebTransport({
        baseUrl: engine.url,
        interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${KEYS.admin}`); return next(req); }],
      }),
    );
    const type = `auth_${Date.now().toString(36)}`;
    await admin.entityTypes.createEntityType({ name: type, schema: { type: "object", properties: { n: { type: "integer" } } } });
    const created = await admin.instances.createInstance({ entityType: type, externalId: "o-1", initialState: { n: 0 } });
    const instanceId = created.instance.id;
    const writers = async () => (await admin.queries.getHistory({ instanceId })).events.map((e) => e.recordedBy);
    const instanceUrl = `${consoleUrl}/types/${type}/instances/o-1`;

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 60_000 });
    const { page, problems } = await newPage(browser);

    // No credential: the sign-in page, offering both ways.
    await page.goto(instanceUrl);
    await page.getByRole("heading", { name: "Sign in to Temporal State" }).waitFor();
    await page.getByRole("button", { name: "Sign in with OpenID Connect" }).waitFor();
    await page.screenshot({ path: join(SHOTS, "auth-sign-in.png"), fullPage: true });

    // A wrong key: the engine's reason, and nothing kept.
    await signInWithKey(page, "not-a-key");
    const refusal = page.locator('[data-testid="signin-refusal"]');
    await refusal.waitFor();
    assert.match(await refusal.textContent(), /not a valid API key/);
    assert.deepEqual(await storedKeys(page), []);
    await page.screenshot({ path: join(SHOTS, "auth-wrong-key.png"), fullPage: true });

    // A read-only key: who it is in the header; no create or apply controls anywhere.
    await signInWithKey(page, KEYS.reader);
    await page.locator('[data-testid="whoami"]', { hasText: "reader" }).waitFor();
    assert.equal(await page.locator('[data-testid="whoami-scopes"]').textContent(), "read");
    await page.locator('[data-testid="read-only"]').waitFor();
    await page.locator('[data-testid="current-version"]', { hasText: "1" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Apply event" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Archive" }).count(), 0);
    assert.deepEqual(await storedKeys(page), ["temporal-state.credential"]);
    await page.screenshot({ path: join(SHOTS, "auth-read-only.png"), fullPage: true });
    await page.goto(`${consoleUrl}/types/${type}/instances?create=1`);
    await page.getByRole("heading", { name: `Instances of ${type}` }).waitFor();
    await page.locator("tbody tr").first().waitFor();
    assert.equal(await page.getByRole("button", { name: "Create an instance" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Close the form" }).count(), 0);
    await page.goto(`${consoleUrl}/types?create=1`);
    await page.getByRole("link", { name: type }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Create a type" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Close the form" }).count(), 0);
    await page.goto(`${consoleUrl}/types/${type}?edit=1`);
    await page.getByRole("heading", { name: type, level: 1 }).waitFor();
    await page.getByRole("heading", { name: "Schema versions" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Edit schema" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Delete type" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Edit description" }).count(), 0);
    assert.equal(await page.locator('[data-testid="edit-schema"]').count(), 0);
    await signOut(page);

    // A write key: it applies an event, recorded as written by that key.
    await page.goto(instanceUrl);
    await signInWithKey(page, KEYS.writer);
    await page.locator('[data-testid="whoami"]', { hasText: "writer" }).waitFor();
    await page.getByLabel("Event type").fill("Counted");
    const payload = page.locator('[data-testid="ev-payload"] .cm-content');
    await payload.click();
    await page.keyboard.press("ControlOrMeta+a");
    await page.keyboard.press("Delete");
    await payload.fill('{"n": 1}');
    await page.getByRole("button", { name: "Apply event" }).click();
    await page.getByText("Applied as version 2.").waitFor();
    assert.deepEqual(await writers(), ["admin", "writer"]);
    // Archiving takes write: offered here (not clicked: the flows are in console.e2e.mjs).
    await page.getByRole("button", { name: "Archive", exact: true }).waitFor();
    // Write is not admin: no type creation; but instances, yes.
    await page.goto(`${consoleUrl}/types`);
    await page.getByRole("link", { name: type }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Create a type" }).count(), 0);
    await page.goto(`${consoleUrl}/types/${type}`);
    await page.getByRole("heading", { name: "Schema versions" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Edit schema" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Delete type" }).count(), 0);
    await page.goto(`${consoleUrl}/types/${type}/instances`);
    await page.getByRole("button", { name: "Create an instance" }).waitFor();
    await signOut(page);

    // OpenID Connect: to the provider and back, PKCE checked there, the access token used here.
    await page.goto(instanceUrl);
    await page.getByRole("button", { name: "Sign in with OpenID Connect" }).click();
    await page.locator('[data-testid="whoami"]', { hasText: "ada@example.com" }).waitFor();
    assert.equal(await page.locator('[data-testid="whoami-scopes"]').textContent(), "write");
    assert.equal(new URL(page.url()).pathname, `/types/${type}/instances/o-1`, "back where the sign-in began");
    assert.deepEqual(provider.seen, { authorize: 1, tokens: 1, refused: [] });
    assert.deepEqual(await storedKeys(page), ["temporal-state.credential"], "the pending sign-in is gone");
    await page.getByLabel("Event type").fill("CountedBySso");
    await payload.click();
    await page.keyboard.press("ControlOrMeta+a");
    await page.keyboard.press("Delete");
    await payload.fill('{"n": 2}');
    await page.getByRole("button", { name: "Apply event" }).click();
    await page.getByText("Applied as version 3.").waitFor();
    assert.deepEqual(await writers(), ["admin", "writer", "ada@example.com"]);
    await page.screenshot({ path: join(SHOTS, "auth-oidc-signed-in.png"), fullPage: true });
    // The callback again (a replayed answer): refused, nothing kept.
    await page.goto(`${consoleUrl}/auth/callback?code=replayed&state=whatever`);
    await page.locator('[data-testid="whoami"]', { hasText: "ada@example.com" }).waitFor();
    await signOut(page);
    await page.goto(`${consoleUrl}/auth/callback?code=replayed&state=whatever`);
    await page.locator('[data-testid="signin-refusal"]', { hasText: "no sign-in was started" }).waitFor();
    assert.deepEqual(await storedKeys(page), []);
    await assertClean(page, problems);
  } catch (e) {
    for (const ctx of browser?.contexts() ?? []) {
      let n = 0;
      for (const p of ctx.pages()) await p.screenshot({ path: join(SHOTS, `auth-failure-${n++}.png`), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    await browser?.close();
    await consoleSrv?.stop();
    await engine?.stop();
    await provider.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
