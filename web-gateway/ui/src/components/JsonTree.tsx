// A JSON document as a collapsible tree (native <details>, so it is keyboard operable), with
// optional marks on added, removed and changed paths.
import type { JsonValue } from "@bufbuild/protobuf";
import { childPointer, type ChangeMark } from "../lib/json";

export interface TreeMarks {
  marks: Map<string, ChangeMark>;
  containing: Set<string>;
}

const markLabel: Record<ChangeMark, string> = { added: "added", removed: "removed", changed: "changed" };

export function JsonTree({
  value,
  marks,
  label = "state",
  testId,
}: {
  value: JsonValue | undefined;
  marks?: TreeMarks;
  label?: string;
  testId?: string;
}) {
  if (value === undefined) return <p className="state state-empty">No {label}.</p>;
  return (
    <div className="json-tree" aria-label={label} data-testid={testId}>
      <Node name={null} value={value} path="" marks={marks} depth={0} />
    </div>
  );
}

function Scalar({ value }: { value: JsonValue }) {
  const t = value === null ? "null" : typeof value;
  return <span className={`json-${t}`}>{JSON.stringify(value)}</span>;
}

function Node({
  name,
  value,
  path,
  marks,
  depth,
}: {
  name: string | null;
  value: JsonValue;
  path: string;
  marks?: TreeMarks;
  depth: number;
}) {
  const mark = marks?.marks.get(path);
  const cls = mark ? `json-row mark-${mark}` : "json-row";
  const key =
    name === null ? null : (
      <>
        <span className="json-key">{name}</span>
        <span className="json-colon">: </span>
      </>
    );
  const badge = mark ? <span className="mark-badge">{markLabel[mark]}</span> : null;
  if (value !== null && typeof value === "object") {
    const entries: [string, JsonValue][] = Array.isArray(value)
      ? value.map((v, i) => [String(i), v])
      : Object.entries(value);
    const open = depth < 2 || (marks?.containing.has(path) ?? false);
    const brackets = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    if (entries.length === 0) {
      return (
        <div className={cls} data-path={path}>
          {key}
          <span className="json-punct">{brackets.join("")}</span>
          {badge}
        </div>
      );
    }
    return (
      <details className={`json-branch ${mark ? `mark-${mark}` : ""}`} open={open} data-path={path}>
        <summary className={cls}>
          {key}
          <span className="json-punct">{brackets[0]}</span>
          <span className="json-count">
            {entries.length} {Array.isArray(value) ? "items" : "fields"}
          </span>
          {badge}
        </summary>
        <div className="json-children">
          {entries.map(([k, v]) => (
            <Node key={k} name={k} value={v} path={childPointer(path, k)} marks={marks} depth={depth + 1} />
          ))}
        </div>
        <span className="json-punct json-close">{brackets[1]}</span>
      </details>
    );
  }
  return (
    <div className={cls} data-path={path}>
      {key}
      <Scalar value={value} />
      {badge}
    </div>
  );
}
