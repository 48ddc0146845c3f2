// The README's player_profile walk-through through the @temporal-state/client package, written
// once for every runtime: Node over gRPC (HTTP/2), Node over gRPC-web (fetch) and a real browser
// over gRPC-web (browser/page.mjs). It imports nothing from Node, so the browser bundle can take
// it as it is; failures throw an Error naming what differed.
import { toJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ApplyMode, ChangeKind } from "@temporal-state/client";

export const SCHEMA = {
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

// JSON with sorted keys and bigints kept apart from numbers, so equal values print the same.
function canonical(value) {
  return JSON.stringify(value, (_, v) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]));
    }
    return v;
  });
}

function same(actual, expected, what) {
  if (canonical(actual) !== canonical(expected)) {
    throw new Error(`${what}: expected ${canonical(expected)}, got ${canonical(actual)}`);
  }
}

function matches(text, pattern, what) {
  if (!pattern.test(text)) throw new Error(`${what}: ${JSON.stringify(text)} does not match ${pattern}`);
}

async function refused(call, what) {
  try {
    await call();
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error(`${what}: the call was expected to fail`);
}

/**
 * Runs the walk-through with `client` (from createTemporalStateClient) on a server whose
 * database has no entity type `entityType` yet. Returns what it saw, for the caller to print.
 */
export async function walkthrough(client, { entityType = "player_profile", externalId = "player-001" } = {}) {
  const created_type = await client.entityTypes.createEntityType({
    name: entityType,
    description: "A player of our game",
    schema: SCHEMA,
  });
  same(created_type.entityType.name, entityType, "entity type name");
  same(created_type.entityType.schema, SCHEMA, "entity type schema");

  const created = await client.instances.createInstance({ entityType, externalId, initialState: ALICE });
  const instanceId = created.instance.id;
  same(created.instance.version, 1n, "version after CreateInstance");
  same(created.event.eventType, "InstanceCreated", "first event type");

  // A merge patch, only at version 1, with an idempotency key.
  const request = {
    instanceId,
    eventType: "ScoreIncreased",
    payload: { score: 150, level: 2 },
    expectedVersion: 1n,
    eventId: `${externalId}-score-1`,
  };
  const applied = await client.events.applyEvent(request);
  same(applied.event.version, 2n, "version after ApplyEvent");
  same(applied.event.mode, ApplyMode.MERGE_PATCH, "default apply mode");
  same(applied.state, { ...ALICE, score: 150, level: 2 }, "state after ApplyEvent");
  // A retry with the same event_id returns the first recording, never a second event.
  const again = await client.events.applyEvent({ ...request, expectedVersion: undefined });
  same(again.event.id, `${externalId}-score-1`, "event id of the retry");
  same(again.event.version, 2n, "version of the retry");

  const { instance } = await client.instances.getCurrentState({ entityType, externalId });
  same(instance.version, 2n, "current version");
  same(instance.state.score, 150, "current score");

  // Time travel.
  const at1 = await client.queries.getStateAtVersion({ instanceId, version: 1n });
  same(at1.state, ALICE, "state at version 1");
  const now = await client.queries.getStateAtTime({ instanceId, timestamp: timestampFromDate(new Date()) });
  same(now.version, 2n, "version now");
  const diff = await client.queries.compareVersions({ instanceId, version1: 1n, version2: 2n });
  const score = diff.changes.find((c) => c.path === "/score");
  same(score?.kind, ChangeKind.CHANGED, "kind of the /score change");
  // google.protobuf.Value fields are messages; Struct fields are plain JSON objects.
  same(toJson(ValueSchema, score.oldValue), 0, "old /score");
  same(toJson(ValueSchema, score.newValue), 150, "new /score");
  const history = await client.queries.getHistory({ instanceId });
  same(history.events.map((e) => e.version), [1n, 2n], "history versions");

  // The history again, as a stream: a replay from version 1.
  const abort = new AbortController();
  const streamed = [];
  for await (const message of client.events.subscribe({ instanceId, fromVersion: 1n }, { signal: abort.signal })) {
    streamed.push(message.event.version);
    if (streamed.length === 2) break;
  }
  abort.abort();
  same(streamed, [1n, 2n], "streamed versions");

  // A state that breaks the schema is refused, naming the path, and nothing is stored.
  const invalid = await refused(
    () => client.events.applyEvent({ instanceId, eventType: "ScoreIncreased", payload: { score: -5 } }),
    "a negative score",
  );
  same(invalid.code, Code.InvalidArgument, "code of a schema violation");
  matches(invalid.rawMessage, /\/score/, "message of a schema violation");
  // A stale expected_version is ABORTED, naming the current version.
  const conflict = await refused(
    () => client.events.applyEvent({ instanceId, eventType: "X", payload: {}, expectedVersion: 1n }),
    "a stale expected_version",
  );
  same(conflict.code, Code.Aborted, "code of a stale expected_version");
  matches(conflict.rawMessage, /at version 2/, "message of a stale expected_version");
  same((await client.instances.getInstance({ instanceId })).instance.version, 2n, "version after refusals");

  const summary = await client.analytics.getSummary({ entityType });
  same(summary.instanceCount, 1n, "instance count");
  same(summary.eventCount, 2n, "event count");
  same(summary.eventTypes, ["InstanceCreated", "ScoreIncreased"], "event types");
  return { instanceId, versions: streamed.map(String) };
}
