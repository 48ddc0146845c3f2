// JSON helpers of the console: JSON pointers, the fields a schema declares (for the field pickers),
// and which paths of a state a comparison touched (for highlighting).
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import equal from "fast-deep-equal";

export type { JsonObject, JsonValue };

export function escapePointerToken(token: string): string {
  return token.replace(/~/g, "~0").replace(/\//g, "~1");
}

export function unescapePointerToken(token: string): string {
  return token.replace(/~1/g, "/").replace(/~0/g, "~");
}

export function childPointer(parent: string, key: string | number): string {
  return `${parent}/${escapePointerToken(String(key))}`;
}

export function pointerTokens(pointer: string): string[] {
  if (pointer === "") return [];
  return pointer.slice(1).split("/").map(unescapePointerToken);
}

/** The value at a JSON pointer, or undefined when absent. */
export function valueAt(doc: JsonValue | undefined, pointer: string): JsonValue | undefined {
  let cur: JsonValue | undefined = doc;
  for (const t of pointerTokens(pointer)) {
    if (cur === null || typeof cur !== "object") return undefined;
    if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]*)$/.test(t)) return undefined;
      cur = cur[Number(t)];
    } else {
      if (!Object.prototype.hasOwnProperty.call(cur, t)) return undefined;
      cur = cur[t];
    }
  }
  return cur;
}

export type FieldKind = "number" | "integer" | "string" | "boolean" | "object" | "array" | "null" | "any";

export interface SchemaField {
  /** JSON pointer of the field, e.g. `/stats/level`. */
  pointer: string;
  /** The kinds the schema allows; "any" when it does not say. */
  kinds: FieldKind[];
  /** True when every allowed kind is numeric: its timeline is a line, not steps. */
  numeric: boolean;
}

const MAX_DEPTH = 8;

function resolveRef(root: JsonObject, ref: string): JsonObject | undefined {
  if (!ref.startsWith("#")) return undefined;
  const target = valueAt(root, decodeURIComponent(ref.slice(1)));
  return target && typeof target === "object" && !Array.isArray(target) ? target : undefined;
}

function kindsOf(schema: JsonObject): FieldKind[] {
  const t = schema.type;
  const kinds = (Array.isArray(t) ? t : typeof t === "string" ? [t] : []).filter(
    (k): k is FieldKind => typeof k === "string",
  );
  if (kinds.length > 0) return kinds;
  if (schema.properties) return ["object"];
  if (schema.items) return ["array"];
  const vals = "const" in schema ? [schema.const] : Array.isArray(schema.enum) ? schema.enum : [];
  if (vals.length > 0) {
    const ks = new Set<FieldKind>();
    for (const v of vals) {
      ks.add(v === null ? "null" : Array.isArray(v) ? "array" : (typeof v as FieldKind));
    }
    return [...ks];
  }
  return ["any"];
}

/**
 * Every field a schema declares through `properties` (nested objects included, local `$ref`s and
 * `allOf` followed), as JSON pointers in declaration order. Arrays are fields themselves; their
 * items are not listed, since a field timeline follows one path.
 */
export function schemaFields(schema: JsonValue | undefined): SchemaField[] {
  const out: SchemaField[] = [];
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) return out;
  const root = schema;
  const seen = new Set<string>();
  const walk = (node: JsonObject, pointer: string, depth: number, refs: Set<string>) => {
    if (depth > MAX_DEPTH) return;
    let n = node;
    if (typeof n.$ref === "string") {
      if (refs.has(n.$ref)) return; // recursive schema: stop at the first repetition
      const target = resolveRef(root, n.$ref);
      if (target) {
        refs = new Set(refs).add(n.$ref);
        n = { ...target, ...Object.fromEntries(Object.entries(n).filter(([k]) => k !== "$ref")) };
      }
    }
    const parts: JsonObject[] = [n];
    if (Array.isArray(n.allOf)) {
      for (const p of n.allOf) if (p && typeof p === "object" && !Array.isArray(p)) parts.push(p);
    }
    for (const part of parts) {
      const props = part.properties;
      if (!props || typeof props !== "object" || Array.isArray(props)) continue;
      for (const [key, sub] of Object.entries(props)) {
        if (!sub || typeof sub !== "object" || Array.isArray(sub)) continue;
        const p = childPointer(pointer, key);
        let resolved = sub;
        if (typeof sub.$ref === "string") resolved = resolveRef(root, sub.$ref) ?? sub;
        const kinds = kindsOf(resolved);
        if (!seen.has(p)) {
          seen.add(p);
          out.push({
            pointer: p,
            kinds,
            numeric: kinds.every((k) => k === "number" || k === "integer"),
          });
        }
        walk(sub, p, depth + 1, refs);
      }
    }
  };
  walk(root, "", 0, new Set());
  return out;
}

export type ChangeMark = "added" | "removed" | "changed";

export interface PathChange {
  path: string;
  kind: ChangeMark;
}

/**
 * Marks for a JSON tree from a flat list of changed paths: the paths themselves, and
 * "contains" marks on their ancestors so a collapsed branch still shows that something inside
 * it changed. `side` picks what one side of a comparison shows: the "from" side has no added
 * paths (they do not exist there), the "to" side no removed ones.
 */
export function highlightMap(
  changes: PathChange[],
  side: "from" | "to" | "both" = "both",
): { marks: Map<string, ChangeMark>; containing: Set<string> } {
  const marks = new Map<string, ChangeMark>();
  const containing = new Set<string>();
  for (const c of changes) {
    if (side === "from" && c.kind === "added") continue;
    if (side === "to" && c.kind === "removed") continue;
    marks.set(c.path, c.kind);
    const tokens = pointerTokens(c.path);
    let p = "";
    containing.add("");
    for (const t of tokens.slice(0, -1)) {
      p = childPointer(p, t);
      containing.add(p);
    }
  }
  return { marks, containing };
}

/** A short one-line rendering of a JSON value (for tables and tooltips). */
export function shortJson(v: JsonValue | undefined, max = 80): string {
  if (v === undefined) return "—";
  const s = JSON.stringify(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Parses text that must be a JSON object; the error says why it is not. */
export function parseObject(text: string): { value?: JsonObject; error?: string } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { error: `not JSON: ${(e as Error).message}` };
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    return { error: "must be a JSON object ({...})" };
  }
  return { value: v as JsonObject };
}

/** One field that differs between two states, as the engine's CompareVersions lists it. */
export interface JsonChange {
  path: string;
  kind: ChangeMark;
  /** The value before; undefined when added. */
  oldValue?: JsonValue;
  /** The value after; undefined when removed. */
  newValue?: JsonValue;
}

const isObject = (v: JsonValue | undefined): v is JsonObject => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * The fields that differ from `from` to `to`, with the engine's rules (server/src/domain/diff.rs),
 * so a preview reads like CompareVersions: objects on both sides are walked into, anything else
 * (arrays included) is compared whole; sorted by path.
 */
export function diffJson(from: JsonObject, to: JsonObject): JsonChange[] {
  const out: JsonChange[] = [];
  const walk = (a: JsonObject, b: JsonObject, path: string) => {
    for (const [k, old] of Object.entries(a)) {
      const p = childPointer(path, k);
      if (!Object.prototype.hasOwnProperty.call(b, k)) out.push({ path: p, kind: "removed", oldValue: old });
      else if (isObject(old) && isObject(b[k])) walk(old, b[k], p);
      else if (!equal(old, b[k])) out.push({ path: p, kind: "changed", oldValue: old, newValue: b[k] });
    }
    for (const [k, v] of Object.entries(b)) {
      if (!Object.prototype.hasOwnProperty.call(a, k)) out.push({ path: childPointer(path, k), kind: "added", newValue: v });
    }
  };
  walk(from, to, "");
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}
