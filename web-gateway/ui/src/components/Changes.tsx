// The flat list of changes of a CompareVersions answer (or of a preview, diffed in the browser),
// and its conversion to tree marks.
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema, type Value } from "@bufbuild/protobuf/wkt";
import { ChangeKind, type FieldChange } from "@temporal-state/client";
import type { ChangeMark, JsonChange, PathChange } from "../lib/json";
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
  const rows: JsonChange[] = [];
  for (const c of changes) {
    rows.push({ path: c.path, kind: changeMark(c.kind) ?? "changed", oldValue: valueJson(c.oldValue), newValue: valueJson(c.newValue) });
  }
  return <ChangeTable changes={rows} fromLabel={fromLabel} toLabel={toLabel} />;
}

/** The changes as a table: one row per path, its mark, and the values on either side. */
export function ChangeTable({
  changes,
  fromLabel,
  toLabel,
  testId = "change-list",
}: {
  changes: JsonChange[];
  fromLabel: string;
  toLabel: string;
  testId?: string;
}) {
  if (changes.length === 0) return <p className="ok">No differences.</p>;
  return (
    <div className="table-wrap">
      <table className="changes" data-testid={testId}>
        <thead>
          <tr>
            <th scope="col">Path</th>
            <th scope="col">Change</th>
            <th scope="col">{fromLabel}</th>
            <th scope="col">{toLabel}</th>
          </tr>
        </thead>
        <tbody>
          {changes.map((c) => (
            <tr key={c.path} className={`mark-${c.kind}`} data-path={c.path}>
              <th scope="row">
                <code>{c.path || "(root)"}</code>
              </th>
              <td>
                <span className="mark-badge">{c.kind}</span>
              </td>
              <td>
                <code>{c.oldValue !== undefined ? shortJson(c.oldValue) : "—"}</code>
              </td>
              <td>
                <code>{c.newValue !== undefined ? shortJson(c.newValue) : "—"}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
