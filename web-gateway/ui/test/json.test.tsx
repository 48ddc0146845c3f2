import { describe, expect, it } from "vitest";
import { render } from "@testing-library/react";
import { childPointer, diffJson, highlightMap, pointerTokens, schemaFields, valueAt, parseObject } from "../src/lib/json";
import { JsonTree } from "../src/components/JsonTree";

describe("JSON pointers", () => {
  it("escape and unescape ~ and /", () => {
    expect(childPointer("/a", "b/c~d")).toBe("/a/b~1c~0d");
    expect(pointerTokens("/a/b~1c~0d")).toEqual(["a", "b/c~d"]);
    expect(pointerTokens("")).toEqual([]);
  });
  it("find values, and nothing where there is none", () => {
    const doc = { a: { "b/c": [10, 20] }, z: null };
    expect(valueAt(doc, "/a/b~1c/1")).toBe(20);
    expect(valueAt(doc, "/z")).toBeNull();
    expect(valueAt(doc, "/a/missing")).toBeUndefined();
    expect(valueAt(doc, "/a/b~1c/01")).toBeUndefined();
    expect(valueAt(doc, "/z/deeper")).toBeUndefined();
  });
  it("parse only objects", () => {
    expect(parseObject('{"a":1}').value).toEqual({ a: 1 });
    expect(parseObject("[1]").error).toMatch(/JSON object/);
    expect(parseObject("{").error).toMatch(/^not JSON/);
  });
});

describe("schemaFields", () => {
  it("lists nested properties, follows local $refs and allOf, and knows what is numeric", () => {
    const schema = {
      type: "object",
      $defs: { stats: { type: "object", properties: { level: { type: "integer" }, title: { type: "string" } } } },
      properties: {
        score: { type: "number" },
        nick: { type: ["string", "null"] },
        stats: { $ref: "#/$defs/stats" },
        tier: { enum: ["a", "b"] },
        tags: { type: "array", items: { type: "string" } },
      },
      allOf: [{ properties: { extra: { const: 3 } } }],
    };
    expect(schemaFields(schema).map((f) => [f.pointer, f.kinds.join("|"), f.numeric])).toEqual([
      ["/score", "number", true],
      ["/nick", "string|null", false],
      ["/stats", "object", false],
      ["/stats/level", "integer", true],
      ["/stats/title", "string", false],
      ["/tier", "string", false],
      ["/tags", "array", false],
      ["/extra", "number", true],
    ]);
  });
  it("stops at recursive schemas and ignores garbage", () => {
    const tree = { $defs: { node: { type: "object", properties: { child: { $ref: "#/$defs/node" }, v: { type: "integer" } } } }, $ref: "#/$defs/node" };
    const fields = schemaFields(tree).map((f) => f.pointer);
    expect(fields).toContain("/child");
    expect(fields).toContain("/v");
    expect(fields.length).toBeLessThan(40);
    expect(schemaFields(undefined)).toEqual([]);
    expect(schemaFields({ properties: [1, 2] })).toEqual([]);
  });
});

describe("diff highlighting", () => {
  const changes = [
    { path: "/score", kind: "changed" as const },
    { path: "/stats/level", kind: "added" as const },
    { path: "/old", kind: "removed" as const },
  ];
  it("keeps what each side can show and marks the ancestors", () => {
    const from = highlightMap(changes, "from");
    expect([...from.marks]).toEqual([["/score", "changed"], ["/old", "removed"]]);
    const to = highlightMap(changes, "to");
    expect([...to.marks]).toEqual([["/score", "changed"], ["/stats/level", "added"]]);
    expect(to.containing.has("/stats")).toBe(true);
    expect(from.containing.has("/stats")).toBe(false);
  });
  it("marks the rows of the tree and opens collapsed branches that contain a change", () => {
    const value = { score: 5, a: { b: { c: { d: 1, e: 2 } } } };
    const marks = highlightMap([{ path: "/a/b/c/d", kind: "changed" }], "to");
    const { container } = render(<JsonTree value={value} marks={marks} />);
    const row = container.querySelector('[data-path="/a/b/c/d"]')!;
    expect(row.className).toContain("mark-changed");
    expect(row.textContent).toContain("changed");
    expect(container.querySelector('[data-path="/score"]')!.className).not.toContain("mark-");
    // depth 3 would start closed; it is open because it contains the change
    expect((container.querySelector('details[data-path="/a/b/c"]') as HTMLDetailsElement).open).toBe(true);
    const unmarked = render(<JsonTree value={value} />).container;
    expect((unmarked.querySelector('details[data-path="/a/b/c"]') as HTMLDetailsElement).open).toBe(false);
  });
});

describe("diffJson", () => {
  it("walks objects, compares anything else whole, and sorts by path, as CompareVersions does", () => {
    const from = { balance: 50, owner: { name: "Ada", "a/b": 1 }, tags: [1, 2], gone: { x: 1 }, same: [{ k: 1 }] };
    const to = { balance: 30, owner: { name: "Ada", "a/b": 2, since: 2020 }, tags: [1, 2, 3], same: [{ k: 1 }], added: null };
    expect(diffJson(from, to)).toEqual([
      { path: "/added", kind: "added", newValue: null },
      { path: "/balance", kind: "changed", oldValue: 50, newValue: 30 },
      { path: "/gone", kind: "removed", oldValue: { x: 1 } },
      { path: "/owner/a~1b", kind: "changed", oldValue: 1, newValue: 2 },
      { path: "/owner/since", kind: "added", newValue: 2020 },
      { path: "/tags", kind: "changed", oldValue: [1, 2], newValue: [1, 2, 3] },
    ]);
    expect(diffJson(to, to)).toEqual([]);
  });
});
