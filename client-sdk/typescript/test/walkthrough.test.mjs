// The README's player_profile walk-through through the @temporal-state/client package, against a
// real server at SERVER_ADDR (host:port) over gRPC (HTTP/2). client-sdk/rust/tests/typescript_sdk.rs
// starts the server on a fresh database, installs the packed package and runs this file;
// `npm test` runs it against this folder (the package imports itself by name).
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { toJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ApplyMode, ChangeKind, createTemporalStateClient } from "@temporal-state/client";

const SCHEMA = {
  type: "object",
  properties: {
    username: { type: "string", minLength: 3 },
    email: { type: "string", format: "email" },
    score: { type: "integer", minimum: 0 },
    level: { type: "integer", minimum: 1 },
    achievements: { type: "array", items: { type: "string" } },
  },
  required: ["username", "email"],
};
const ALICE = { username: "alice", email: "alice@example.com", score: 0, level: 1, achievements: [] };

function server() {
  const addr = process.env.SERVER_ADDR;
  assert.ok(
    addr,
    "SERVER_ADDR is not set: run `cargo test -p temporal-state-client --test typescript_sdk`, " +
      "or start a server on a fresh database and export SERVER_ADDR=host:port",
  );
  return createTemporalStateClient(createGrpcTransport({ baseUrl: `http://${addr}` }));
}

async function refused(call) {
  try {
    await call();
  } catch (e) {
    return ConnectError.from(e);
  }
  assert.fail("the call was expected to fail");
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

test("the player_profile walk-through", async () => {
  const client = server();

  const { entityType } = await client.entityTypes.createEntityType({
    name: "player_profile",
    description: "A player of our game",
    schema: SCHEMA,
  });
  assert.equal(entityType.name, "player_profile");
  assert.deepEqual(entityType.schema, SCHEMA);

  const created = await client.instances.createInstance({
    entityType: "player_profile",
    externalId: "player-001",
    initialState: ALICE,
  });
  const instanceId = created.instance.id;
  assert.equal(created.instance.version, 1n);
  assert.equal(created.event.eventType, "InstanceCreated");

  // A merge patch, only at version 1, with an idempotency key.
  const request = {
    instanceId,
    eventType: "ScoreIncreased",
    payload: { score: 150, level: 2 },
    expectedVersion: 1n,
    eventId: "player-001-score-1",
  };
  const applied = await client.events.applyEvent(request);
  assert.equal(applied.event.version, 2n);
  assert.equal(applied.event.mode, ApplyMode.MERGE_PATCH);
  assert.deepEqual(applied.state, { ...ALICE, score: 150, level: 2 });
  // A retry with the same event_id returns the first recording, never a second event.
  const again = await client.events.applyEvent({ ...request, expectedVersion: undefined });
  assert.equal(again.event.id, "player-001-score-1");
  assert.equal(again.event.version, 2n);

  const { instance } = await client.instances.getCurrentState({
    entityType: "player_profile",
    externalId: "player-001",
  });
  assert.equal(instance.version, 2n);
  assert.equal(instance.state.score, 150);

  // Time travel.
  const at1 = await client.queries.getStateAtVersion({ instanceId, version: 1n });
  assert.deepEqual(at1.state, ALICE);
  const now = await client.queries.getStateAtTime({ instanceId, timestamp: timestampFromDate(new Date()) });
  assert.equal(now.version, 2n);
  const diff = await client.queries.compareVersions({ instanceId, version1: 1n, version2: 2n });
  const score = diff.changes.find((c) => c.path === "/score");
  assert.equal(score.kind, ChangeKind.CHANGED);
  // google.protobuf.Value fields are messages; Struct fields are plain JSON objects.
  assert.equal(toJson(ValueSchema, score.oldValue), 0);
  assert.equal(toJson(ValueSchema, score.newValue), 150);
  const history = await client.queries.getHistory({ instanceId });
  assert.deepEqual(history.events.map((e) => e.version), [1n, 2n]);

  // The history again, as a stream: a replay from version 1.
  const abort = new AbortController();
  const streamed = [];
  for await (const message of client.events.subscribe({ instanceId, fromVersion: 1n }, { signal: abort.signal })) {
    streamed.push(message.event.version);
    if (streamed.length === 2) break;
  }
  abort.abort();
  assert.deepEqual(streamed, [1n, 2n]);

  // A state that breaks the schema is refused, naming the path, and nothing is stored.
  const invalid = await refused(() =>
    client.events.applyEvent({ instanceId, eventType: "ScoreIncreased", payload: { score: -5 } }),
  );
  assert.equal(invalid.code, Code.InvalidArgument);
  assert.match(invalid.rawMessage, /\/score/);
  // A stale expected_version is ABORTED, naming the current version.
  const conflict = await refused(() =>
    client.events.applyEvent({ instanceId, eventType: "X", payload: {}, expectedVersion: 1n }),
  );
  assert.equal(conflict.code, Code.Aborted);
  assert.match(conflict.rawMessage, /at version 2/);
  assert.equal((await client.instances.getInstance({ instanceId })).instance.version, 2n);

  const summary = await client.analytics.getSummary({ entityType: "player_profile" });
  assert.equal(summary.instanceCount, 1n);
  assert.equal(summary.eventCount, 2n);
  assert.deepEqual(summary.eventTypes, ["InstanceCreated", "ScoreIncreased"]);
});
