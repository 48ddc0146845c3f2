// What the browser test runs in Chromium (bundled by esbuild, loaded by index.html): the
// walk-through over gRPC-web against ?server=host:port, whose GRPC_WEB_ALLOWED_ORIGINS lists this
// page's origin, then one call to ?refusing=host:port, a server that allows no other origin,
// which the browser must block. The outcome goes to window.__result for the driver to read.
import { Code, ConnectError } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";

import { walkthrough } from "../walkthrough.mjs";

const client = (addr) => createTemporalStateClient(createGrpcWebTransport({ baseUrl: `http://${addr}` }));

async function run() {
  const params = new URLSearchParams(location.search);
  const seen = await walkthrough(client(params.get("server")), {
    entityType: "player_profile_browser",
    externalId: "player-browser-001",
  });
  let blocked;
  try {
    await client(params.get("refusing")).analytics.getSummary({ entityType: "player_profile_browser" });
    blocked = "the call to a server that allows no other origin succeeded";
  } catch (e) {
    const err = ConnectError.from(e);
    // fetch() rejects before any response is readable: no gRPC status ever reaches the page.
    blocked = err.code === Code.Unknown || err.code === Code.Unavailable ? "blocked" : `unexpected ${err.message}`;
  }
  return { ok: blocked === "blocked", seen, blocked, userAgent: navigator.userAgent };
}

run().then(
  (result) => {
    window.__result = result;
  },
  (e) => {
    window.__result = { ok: false, error: String(e?.stack ?? e) };
  },
);
