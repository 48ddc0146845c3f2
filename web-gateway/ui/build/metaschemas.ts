// A Vite plugin giving the module `virtual:metaschemas`: validators of the JSON Schema
// meta-schemas (2020-12, 2019-09, draft-07) compiled by ajv at BUILD time into plain code
// (ajv's "standalone" mode). Ajv compiling at run time needs `new Function`, which the console's
// CSP (`script-src 'self'`, no 'unsafe-eval') forbids; the meta-schemas never change, so the
// browser gets their validators as ordinary code.
import type { Plugin } from "vite";
import Ajv2020Module from "ajv/dist/2020.js";
import Ajv2019Module from "ajv/dist/2019.js";
import AjvModule from "ajv";
import standaloneModule from "ajv/dist/standalone/index.js";

const ID = "virtual:metaschemas";
const RESOLVED = "\0" + ID;

type AjvCtor = new (opts: object) => import("ajv").default;
const interop = <T>(m: T): T => ((m as { default?: T }).default ?? m) as T;

function generate(): string {
  const opts = { code: { source: true, esm: true, lines: false }, allErrors: true, strict: false };
  const parts: string[] = [];
  const drafts: [string, AjvCtor, string][] = [
    ["meta202012", interop(Ajv2020Module) as unknown as AjvCtor, "https://json-schema.org/draft/2020-12/schema"],
    ["meta201909", interop(Ajv2019Module) as unknown as AjvCtor, "https://json-schema.org/draft/2019-09/schema"],
    ["metaDraft07", interop(AjvModule) as unknown as AjvCtor, "http://json-schema.org/draft-07/schema"],
  ];
  const standalone = interop(standaloneModule) as unknown as (ajv: object, refs: Record<string, string>) => string;
  for (const [name, Ajv, id] of drafts) {
    const ajv = new Ajv(opts);
    let code = standalone(ajv, { [name]: id });
    code = code.replace(/^"use strict";/, "");
    // The only run-time helper the meta-schemas need is ajv's deep equality (for enum/const):
    // it is fast-deep-equal, imported as an ES module instead of a CommonJS require.
    code = code.split('require("ajv/dist/runtime/equal").default').join("__deepEqual");
    if (code.includes("require(")) {
      throw new Error(`metaschemas: ${name} needs an ajv runtime module this plugin does not map`);
    }
    // Each draft's code declares the same local names; a block keeps them apart.
    const exported = new RegExp(`export const ${name} = (\\w+);`);
    const m = code.match(exported);
    if (!m) throw new Error(`metaschemas: no export for ${name}`);
    code = code.replace(exported, "");
    parts.push(`export const ${name} = (() => {${code}\nreturn ${m[1]};})();`);
  }
  return `import __deepEqual from "fast-deep-equal";\n${parts.join("\n")}\n`;
}

export function metaschemas(): Plugin {
  let cached: string | undefined;
  return {
    name: "temporal-state-metaschemas",
    resolveId(id) {
      return id === ID ? RESOLVED : undefined;
    },
    load(id) {
      if (id !== RESOLVED) return undefined;
      cached ??= generate();
      return cached;
    },
  };
}
