// The end-to-end harness: starts a real engine and the console in front of it, each on
// 127.0.0.1 with a port of the OS's choosing, and stops them.
//
// How the console is reached is decided in ONE place, startConsole():
//   - CONSOLE_URL set: a console already running there, used as is;
//   - GATEWAY_BIN set: that gateway binary (temporal-state-gateway), started with
//     `--listen 127.0.0.1:0 --upstream <engine>`, in front of the engine;
//   - otherwise, by default: the console the engine itself serves (the gateway library mounted by
//     the server on CONSOLE_ADDR, here 127.0.0.1:0): what `cargo run -p temporal-state-server`
//     gives a user;
//   - CONSOLE=node: serveConsole() below, a small Node server that serves dist/ with the
//     gateway's headers and forwards /temporal_state.v1.* to the engine (for UI work without a
//     Rust build of the gateway).
import { spawn } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { readFile, stat, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const UI_DIR = resolve(here, "..");
export const DIST = join(UI_DIR, "dist");

/** The CSP the gateway sends with the console (keep equal to web-gateway's). */
export const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, "");

/** Starts `bin` and resolves once a line of its output matches `ready`; rejects on exit or timeout. */
function startProcess(bin, args, env, ready, name, timeoutMs = 60_000) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, NO_COLOR: "1", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${name} did not start within ${timeoutMs} ms:\n${log}`)), timeoutMs);
    const finish = (err, match) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        child.kill("SIGKILL");
        reject(err);
      } else resolvePromise({ child, match, log: () => log });
    };
    const onData = (chunk) => {
      const text = stripAnsi(chunk.toString());
      log += text;
      if (process.env.E2E_VERBOSE) process.stderr.write(`[${name}] ${text}`);
      const m = log.match(ready);
      if (m) finish(null, m);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code, signal) => finish(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${log}`)));
    child.on("error", (e) => finish(e));
  });
}

function stopProcess(child) {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) return r();
    child.once("exit", () => r());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  });
}

/**
 * A real engine (SERVER_BIN) on 127.0.0.1:0: on the embedded store in a fresh directory, or on
 * PostgreSQL when `databaseUrl` is given; `env` adds environment variables (AUTH_API_KEYS_FILE...).
 * Resolves to { url, stop }.
 */
export async function startEngine({ databaseUrl, env: extraEnv = {} } = {}) {
  const bin = process.env.SERVER_BIN;
  if (!bin) throw new Error("SERVER_BIN is not set (the path of target/debug/temporal-state-server)");
  const dataDir = await mkdtemp(join(tmpdir(), "console-e2e-"));
  const env = { GRPC_ADDR: "127.0.0.1:0", CONSOLE_ADDR: "127.0.0.1:0", DATA_DIR: dataDir, RUST_LOG: "info", ...extraEnv };
  if (databaseUrl) env.DATABASE_URL = databaseUrl;
  // Ready once both lines are out, in whichever order: the gRPC address and the console's URL.
  const ready = /^(?=[\s\S]*serving gRPC.*?addr=(\S+))(?=[\s\S]*console: (http:\/\/127\.0\.0\.1:\d+))/;
  const p = await startProcess(bin, [], env, ready, "engine");
  return {
    url: `http://${p.match[1]}`,
    consoleUrl: p.match[2],
    log: p.log,
    stop: async () => {
      await stopProcess(p.child);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The console in front of the engine at `engineUrl`. Resolves to { url, stop }. See the top. */
export async function startConsole({ engineUrl, consoleUrl }) {
  if (process.env.CONSOLE_URL) return { url: process.env.CONSOLE_URL.replace(/\/$/, ""), stop: async () => {} };
  if (process.env.GATEWAY_BIN) {
    const p = await startProcess(
      process.env.GATEWAY_BIN,
      ["--listen", "127.0.0.1:0", "--upstream", engineUrl],
      {},
      /console: (http:\/\/127\.0\.0\.1:\d+)/,
      "gateway",
    );
    const addr = p.match[1].startsWith("http") ? p.match[1] : `http://${p.match[1]}`;
    return { url: addr, stop: () => stopProcess(p.child) };
  }
  if (process.env.CONSOLE === "node" || !consoleUrl) return serveConsole({ engineUrl });
  return { url: consoleUrl, stop: async () => {} };
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
};

/** A stand-in for the gateway until it lands: dist/ plus a streaming same-origin forwarder. */
export async function serveConsole({ engineUrl }) {
  const upstream = new URL(engineUrl);
  const server = createServer(async (req, res) => {
    const security = {
      "content-security-policy": CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    };
    if (req.url.startsWith("/temporal_state.v1.")) {
      const up = httpRequest(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
        (ur) => {
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          res.flushHeaders();
          ur.pipe(res);
        },
      );
      up.on("error", () => {
        if (!res.headersSent) res.writeHead(502, security);
        res.end();
      });
      req.on("aborted", () => up.destroy());
      res.on("close", () => up.destroy());
      req.pipe(up);
      return;
    }
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = normalize(join(DIST, path));
    if (!file.startsWith(DIST)) {
      res.writeHead(400, security).end();
      return;
    }
    let isFile = false;
    try {
      isFile = (await stat(file)).isFile();
    } catch {
      isFile = false;
    }
    if (!isFile) {
      if (path.startsWith("/assets/")) {
        res.writeHead(404, security).end();
        return;
      }
      file = join(DIST, "index.html"); // client-side routes
    }
    const body = await readFile(file);
    const hashed = file.includes(`${DIST}/assets/`);
    res.writeHead(200, {
      ...security,
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "cache-control": hashed ? "public, max-age=31536000, immutable" : "no-cache",
    });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A fresh PostgreSQL database for one run; `drop()` removes it. Needs psql. */
export async function freshDatabase(baseUrl) {
  const base = new URL(baseUrl);
  const name = `console_e2e_${process.pid}_${Date.now()}`;
  const psql = (sql) =>
    new Promise((r, j) => {
      const c = spawn("psql", [base.toString(), "-v", "ON_ERROR_STOP=1", "-qc", sql], { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      c.stderr.on("data", (d) => (err += d));
      c.on("exit", (code) => (code === 0 ? r() : j(new Error(`psql: ${err}`))));
      c.on("error", j);
    });
  await psql(`CREATE DATABASE ${name}`);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
