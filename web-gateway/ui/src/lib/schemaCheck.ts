// Checks as you type, in the browser, without eval (the CSP forbids it):
// - a JSON Schema against its meta-schema, with ajv's validators compiled at build time
//   (build/metaschemas.ts), the draft chosen by `$schema` as the engine does (2020-12 default);
// - a state against an entity type's schema, with @cfworker/json-schema, which interprets
//   schemas instead of compiling them to code.
import { meta201909, meta202012, metaDraft07 } from "virtual:metaschemas";
import type { Violation } from "../api/errors";

export interface SchemaCheck {
  /** Set when the text is not a JSON object at all. */
  parseError?: string;
  /** Meta-schema violations, per path. */
  violations: Violation[];
  /** The draft checked against, or a note that the browser could not check it. */
  draft: string;
}

const DRAFTS: { match: RegExp; name: string; validate: typeof meta202012 }[] = [
  { match: /^https?:\/\/json-schema\.org\/draft\/2020-12\/schema#?$/, name: "2020-12", validate: meta202012 },
  { match: /^https?:\/\/json-schema\.org\/draft\/2019-09\/schema#?$/, name: "2019-09", validate: meta201909 },
  { match: /^https?:\/\/json-schema\.org\/draft-07\/schema#?$/, name: "draft-07", validate: metaDraft07 },
];

export function checkSchemaValue(schema: unknown): SchemaCheck {
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
    return { parseError: "a schema must be a JSON object ({...})", violations: [], draft: "" };
  }
  const declared = (schema as Record<string, unknown>).$schema;
  let entry = DRAFTS[0];
  if (declared !== undefined) {
    const found = typeof declared === "string" ? DRAFTS.find((d) => d.match.test(declared)) : undefined;
    if (!found) {
      return {
        violations: [],
        draft: `${String(declared)} (not checked in the browser; the server checks it)`,
      };
    }
    entry = found;
  }
  const ok = entry.validate(schema);
  const violations: Violation[] = ok
    ? []
    : dedupe(
        (entry.validate.errors ?? []).map((e) => ({
          path: e.instancePath,
          message: e.message ?? e.keyword,
        })),
      );
  return { violations, draft: entry.name };
}

export function checkSchemaText(text: string): SchemaCheck {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { parseError: `not JSON: ${(e as Error).message}`, violations: [], draft: "" };
  }
  return checkSchemaValue(value);
}

function dedupe(vs: Violation[]): Violation[] {
  const seen = new Set<string>();
  return vs.filter((v) => {
    const k = `${v.path}\u0000${v.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
