// A state checked against its entity type's schema in the browser, before the engine sees it.
// @cfworker/json-schema interprets the schema (no eval, so it runs under the console's CSP).
// The engine remains the judge: its answer is shown whatever this check says.
import { Validator, type Schema } from "@cfworker/json-schema";
import type { Violation } from "../api/errors";

function draftOf(schema: Schema): "4" | "7" | "2019-09" | "2020-12" {
  const s = typeof schema.$schema === "string" ? schema.$schema : "";
  if (s.includes("draft-04")) return "4";
  if (s.includes("draft-06") || s.includes("draft-07")) return "7";
  if (s.includes("2019-09")) return "2019-09";
  return "2020-12";
}

const SUMMARIES = new Set([
  "properties",
  "patternProperties",
  "items",
  "prefixItems",
  "additionalItems",
  "allOf",
  "$ref",
  "$recursiveRef",
  "$dynamicRef",
  "dependentSchemas",
  "false",
]);

export function checkState(schema: unknown, state: unknown): Violation[] {
  if (schema === null || typeof schema !== "object") return [];
  const s = schema as Schema;
  let result;
  try {
    result = new Validator(s, draftOf(s), false).validate(state);
  } catch (e) {
    return [{ path: "", message: `the browser could not check this schema: ${(e as Error).message}` }];
  }
  if (result.valid) return [];
  // cfworker also reports each applicator whose subschema failed ("Property "score" does not
  // match schema."); those only repeat a deeper error, so the deeper one is what is listed.
  const out: Violation[] = [];
  const seen = new Set<string>();
  for (const err of result.errors) {
    if (SUMMARIES.has(err.keyword)) continue;
    const path = err.instanceLocation.replace(/^#/, "");
    const key = `${path}\u0000${err.error}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ path, message: err.error });
  }
  if (out.length === 0) out.push({ path: "", message: "the state does not satisfy the schema" });
  return out;
}
