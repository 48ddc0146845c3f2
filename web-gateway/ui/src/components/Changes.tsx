// The flat list of changes of a CompareVersions answer, and its conversion to tree marks.
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { ChangeKind, type FieldChange } from "@temporal-state/client";
import type { ChangeMark, PathChange } from "../lib/json";
import { shortJson } from "../lib/json";

export function changeMark(kind: ChangeKind): ChangeMark | undefined {
  switch (kind) {
    case ChangeKind.ADDED:
      return "added";
    case ChangeKind.REMOVED:
      return "removed";
    case ChangeKind.CHANGED:
      return "changed";
    default:
      return undefined;
  }
}

export function toPathChanges(changes: FieldChange[]): PathChange[] {
  const out: PathChange[] = [];
  for (const c of changes) {
    const kind = changeMark(c.kind);
    if (kind) out.push({ path: c.path, kind });
  }
  return out;
}

export function valueJson(v: Value | undefined): JsonValue | undefined {
  return v ? toJson(ValueSchema, v) : undefined;
}

export function ChangeList({
  changes,
  fromLabel,
  toLabel,
}: {
  changes: FieldChange[];
  fromLabel: string;
  toLabel: string;
}) {
  if (changes.length === 0) return <p className="ok">No differences.</p>;
  return (
    <div className="table-wrap">
      <table className="changes" data-testid="change-list">
        <thead>
          <tr>
            <th scope="col">Path</th>
            <th scope="col">Change</th>
            <th scope="col">{fromLabel}</th>
            <th scope="col">{toLabel}</th>
          </tr>
        </thead>
        <tbody>
          {changes.map((c) => {
            const mark = changeMark(c.kind) ?? "changed";
            return (
              <tr key={c.path} className={`mark-${mark}`} data-path={c.path}>
                <th scope="row">
                  <code>{c.path || "(root)"}</code>
                </th>
                <td>
                  <span className="mark-badge">{mark}</span>
                </td>
                <td>
                  <code>{c.oldValue ? shortJson(valueJson(c.oldValue)) : "—"}</code>
                </td>
                <td>
                  <code>{c.newValue ? shortJson(valueJson(c.newValue)) : "—"}</code>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
