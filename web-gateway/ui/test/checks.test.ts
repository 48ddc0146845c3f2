import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { TimelinePointSchema } from "@temporal-state/client";
import { checkSchemaText } from "../src/lib/schemaCheck";
import { checkState } from "../src/lib/stateCheck";
import { seriesWindow } from "../src/pages/Analytics";
import { timelineSeries } from "../src/pages/instance/FieldTimeline";

describe("meta-schema check (ajv, compiled at build time)", () => {
  it("accepts a valid 2020-12 schema and names the draft", () => {
    expect(checkSchemaText('{"type":"object","properties":{"a":{"type":"integer","minimum":0}}}')).toEqual({ violations: [], draft: "2020-12" });
  });
  it("lists violations per path", () => {
    const r = checkSchemaText('{"type":"object","properties":{"a":{"type":"integr"},"b":{"minimum":"zero"}}}');
    const paths = r.violations.map((v) => v.path);
    expect(paths).toContain("/properties/a/type");
    expect(paths).toContain("/properties/b/minimum");
  });
  it("follows $schema, and says when the browser cannot check a draft", () => {
    expect(checkSchemaText('{"$schema":"http://json-schema.org/draft-07/schema#","type":"objekt"}').draft).toBe("draft-07");
    expect(checkSchemaText('{"$schema":"http://json-schema.org/draft-07/schema#","type":"objekt"}').violations.length).toBeGreaterThan(0);
    const r = checkSchemaText('{"$schema":"http://json-schema.org/draft-04/schema#","type":"objekt"}');
    expect(r.violations).toEqual([]);
    expect(r.draft).toMatch(/not checked in the browser/);
  });
  it("rejects what is not a JSON object", () => {
    expect(checkSchemaText("[]").parseError).toMatch(/JSON object/);
    expect(checkSchemaText("{").parseError).toMatch(/not JSON/);
  });
});

describe("state check (@cfworker/json-schema, no eval)", () => {
  const schema = {
    type: "object",
    properties: { name: { type: "string" }, score: { type: "integer", minimum: 0 }, stats: { type: "object", properties: { level: { type: "integer" } } } },
    required: ["name"],
  };
  it("passes a valid state", () => {
    expect(checkState(schema, { name: "Ada", score: 3 })).toEqual([]);
  });
  it("names the deepest failing paths", () => {
    const paths = checkState(schema, { score: -1, stats: { level: "x" } }).map((v) => v.path).sort();
    expect(paths).toEqual(["", "/score", "/stats/level"]);
    const extra = checkState({ ...schema, additionalProperties: false }, { name: "a", zz: 1 });
    expect(extra).toEqual([{ path: "", message: expect.stringContaining("zz") }]);
  });
});

describe("analytics window", () => {
  it("ends at the end of the current interval and spans the range", () => {
    const now = new Date("2025-03-01T10:17:30Z");
    const w = seriesWindow("1h", "1m", now);
    expect(w.end.toISOString()).toBe("2025-03-01T10:18:00.000Z");
    expect(w.start.toISOString()).toBe("2025-03-01T09:18:00.000Z");
    expect(w.intervalMs).toBe(60_000);
  });
  it("coarsens an interval that would ask for too many buckets, and honours a custom range", () => {
    expect(seriesWindow("30d", "1m", new Date()).intervalMs).toBeGreaterThanOrEqual(30 * 24 * 60 * 60_000 / 2000);
    const start = new Date("2025-01-01T00:00:00Z");
    const end = new Date("2025-01-01T06:00:00Z");
    expect(seriesWindow("24h", "1h", new Date(), { start, end })).toEqual({ start, end, intervalMs: 3_600_000 });
  });
});

describe("field timeline series", () => {
  const point = (version: number, seconds: number, value?: unknown) =>
    create(TimelinePointSchema, {
      version: BigInt(version),
      recordedAt: timestampFromDate(new Date(seconds * 1000)),
      value: value === undefined ? undefined : create(ValueSchema, toValueInit(value)),
    });
  function toValueInit(v: unknown) {
    if (typeof v === "number") return { kind: { case: "numberValue" as const, value: v } };
    return { kind: { case: "stringValue" as const, value: String(v) } };
  }
  it("draws numbers as they are", () => {
    const s = timelineSeries([point(1, 100, 1), point(2, 160, 5), point(3, 200)]);
    expect(s).toEqual({ xs: [100, 160, 200], ys: [1, 5, null], numeric: true, labels: [] });
  });
  it("draws other values as steps over their distinct values", () => {
    const s = timelineSeries([point(1, 1, "bronze"), point(2, 2, "silver"), point(3, 3, "bronze")]);
    expect(s.numeric).toBe(false);
    expect(s.labels).toEqual(['"bronze"', '"silver"']);
    expect(s.ys).toEqual([0, 1, 0]);
  });
});
