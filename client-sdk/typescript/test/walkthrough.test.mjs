// The walk-through (walkthrough.mjs) in Node against a real server at SERVER_ADDR (host:port),
// over gRPC (HTTP/2, @connectrpc/connect-node) and over gRPC-web (fetch, @connectrpc/connect-web,
// the transport browsers use). client-sdk/rust/tests/typescript_sdk.rs starts the server on a
// fresh database, installs the packed package and runs this file; `npm test` runs it against
// this folder (the package imports itself by name).
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { createGrpcTransport } from "@connectrpc/connect-node";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";

import { walkthrough } from "./walkthrough.mjs";

function baseUrl() {
  const addr = process.env.SERVER_ADDR;
  assert.ok(
    addr,
    "SERVER_ADDR is not set: run `cargo test -p temporal-state-client --test typescript_sdk`, " +
      "or start a server on a fresh database and export SERVER_ADDR=host:port",
  );
  return `http://${addr}`;
}

test("the installed package is the one tested", (t) => {
  const expected = process.env.TSE_PACKAGE_INSTALLED_IN;
  if (!expected) {
    t.skip("not run by typescript_sdk.rs");
    return;
  }
  const where = fileURLToPath(import.meta.resolve("@temporal-state/client"));
  assert.ok(where.startsWith(expected), `${where} is not under ${expected}`);
});

test("the player_profile walk-through over gRPC", async () => {
  const client = createTemporalStateClient(createGrpcTransport({ baseUrl: baseUrl() }));
  await walkthrough(client, { entityType: "player_profile", externalId: "player-001" });
});

test("the player_profile walk-through over gRPC-web", async () => {
  const client = createTemporalStateClient(createGrpcWebTransport({ baseUrl: baseUrl() }));
  await walkthrough(client, { entityType: "player_profile_web", externalId: "player-web-001" });
});
