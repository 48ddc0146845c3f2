#!/usr/bin/env python3
"""The public API of a Rust crate as sorted text lines, from rustdoc's JSON output.

    scripts/rust-public-api.py target/doc/temporal_state_client.json > api.txt
    scripts/rust-public-api.py --diff BASELINE.txt CURRENT.txt

One line per public item reachable from the crate root: modules, types (with their public
fields and variants), functions and inherent methods (with their full signatures), constants,
trait implementations (`impl Trait for Type`), re-exports. A line that is in the baseline and
not in the current API is something a user's code may rely on that changed or went away: a
breaking change. `--diff` prints those (and the additions) and exits 1 when any was removed.

The signatures are rustdoc's own structured types, written as JSON with the ids, docs and
source positions taken out, so only what a caller sees counts. This stands in for
`cargo semver-checks`, which no registry reachable here ships prebuilt (building it costs
minutes in every fresh CI); it catches removals and signature changes, not every subtle semver
rule (a new required trait method, an auto trait lost) that semver-checks knows.
"""

import json
import sys

# Keys that carry no API meaning (positions, docs) or point at items by unstable ids.
DROP = {"id", "span", "docs", "links", "attrs", "deprecation", "impls", "implementations",
        "items", "blanket_impl", "synthetic", "is_stripped", "has_stripped_fields"}


def clean(value):
    if isinstance(value, dict):
        return {k: clean(v) for k, v in sorted(value.items()) if k not in DROP}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def text(value):
    return json.dumps(clean(value), sort_keys=True, separators=(",", ":"))


def shape(inner):
    """A struct's or enum's own line without the ids of its fields and variants: rustdoc numbers
    items anew on every build, so those lists change whenever any item is added. Each public
    field and variant has a line of its own, by name."""
    inner = json.loads(json.dumps(inner))
    inner.pop("variants", None)
    # An enum variant's own line: `{"variant": {"kind": ...}}`.
    target = inner.get("variant", inner)
    kind = target.get("kind")
    if isinstance(kind, dict) and isinstance(kind.get("plain"), dict):
        kind["plain"].pop("fields", None)
    if isinstance(kind, dict) and isinstance(kind.get("struct"), dict):
        fields = kind["struct"].get("fields")
        if isinstance(fields, list):
            kind["struct"]["fields"] = len(fields)
    if isinstance(kind, dict) and isinstance(kind.get("tuple"), list):
        kind["tuple"] = len(kind["tuple"])
    return inner


def type_name(ty):
    """A short readable name for the `for` type of an impl."""
    if "resolved_path" in ty:
        return ty["resolved_path"]["path"]
    if "generic" in ty:
        return ty["generic"]
    if "borrowed_ref" in ty:
        return "&" + type_name(ty["borrowed_ref"]["type"])
    return text(ty)


def api_lines(doc):
    index = doc["index"]
    lines = set()
    seen = set()

    def item(i):
        return index.get(str(i))

    def walk(item_id, prefix):
        it = item(item_id)
        if it is None or it.get("crate_id") != 0 or it.get("visibility") != "public":
            return
        key = (item_id, prefix)
        if key in seen:
            return
        seen.add(key)
        kind, inner = next(iter(it["inner"].items()))
        name = it.get("name") or ""
        path = f"{prefix}::{name}" if prefix and name else (prefix or name)
        if kind == "module":
            lines.add(f"mod {path}")
            for child in inner["items"]:
                walk(child, path)
        elif kind == "use":
            target = inner.get("id")
            if target is not None and item(target) is not None and item(target).get("crate_id") == 0:
                # A re-export of the crate's own item: it is API under this name.
                walk_as(target, prefix, inner["name"])
            else:
                glob = "::*" if inner.get("is_glob") else ""
                lines.add(f"use {prefix}::{inner['name']}{glob} = {inner['source']}")
        elif kind in ("struct", "enum", "union", "trait"):
            lines.add(f"{kind} {path} {text(shape(inner))}")
            if kind == "struct":
                fields = inner["kind"].get("plain", {}).get("fields", []) or inner["kind"].get("tuple", []) or []
                for f in fields:
                    if f is not None and item(f) and item(f).get("visibility") == "public":
                        fi = item(f)
                        lines.add(f"field {path}.{fi['name']} {text(fi['inner'])}")
            if kind == "enum":
                for v in inner["variants"]:
                    vi = item(v)
                    lines.add(f"variant {path}::{vi['name']} {text(shape(vi['inner']))}")
                    vkind = vi["inner"]["variant"]["kind"]
                    vfields = (vkind.get("struct") or {}).get("fields") if isinstance(vkind, dict) else None
                    if vfields is None and isinstance(vkind, dict):
                        vfields = vkind.get("tuple")
                    for f in vfields or []:
                        fi = item(f) if f is not None else None
                        if fi:
                            lines.add(f"variant-field {path}::{vi['name']}.{fi['name']} {text(fi['inner'])}")
            if kind == "trait":
                for m in inner["items"]:
                    mi = item(m)
                    lines.add(f"trait-item {path}::{mi['name']} {text(mi['inner'])}")
            for impl_id in inner.get("impls", []):
                impl = item(impl_id)
                if impl is None:
                    continue
                body = impl["inner"]["impl"]
                if body.get("is_synthetic") or body.get("blanket_impl") is not None:
                    continue
                if body.get("trait") is None:
                    for m in body["items"]:
                        mi = item(m)
                        if mi and mi.get("visibility") == "public":
                            lines.add(f"method {path}::{mi['name']} {text(mi['inner'])}")
                else:
                    lines.add(f"impl {body['trait']['path']} for {path} {text(body['trait'].get('args'))}")
        else:
            lines.add(f"{kind} {path} {text(inner)}")

    def walk_as(item_id, prefix, name):
        it = item(item_id)
        if it is None:
            return
        renamed = dict(it, name=name, visibility="public")
        index[f"alias-{item_id}-{prefix}-{name}"] = renamed
        walk(f"alias-{item_id}-{prefix}-{name}", prefix)

    walk(doc["root"], "")
    return sorted(lines)


def main(argv):
    if len(argv) == 4 and argv[1] == "--diff":
        base = set(open(argv[2]).read().splitlines())
        current = set(open(argv[3]).read().splitlines())
        removed = sorted(base - current)
        added = sorted(current - base)
        for line in removed:
            print(f"- {line[:300]}")
        for line in added:
            print(f"+ {line[:300]}")
        return 1 if removed else 0
    if len(argv) == 2:
        with open(argv[1]) as f:
            doc = json.load(f)
        for line in api_lines(doc):
            print(line)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
