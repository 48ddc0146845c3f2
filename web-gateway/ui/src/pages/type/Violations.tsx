// What a schema check found (UpdateEntityType with dry_run, or the answer of an update accepted
// with allow_invalid_existing): how many current states were checked, how many break the new
// schema, and the first of them with each violating path, linked to the instance.
import { Link } from "react-router";
import type { UpdateEntityTypeResponse } from "@temporal-state/client";
import { instancePath } from "../../lib/url";

export function checkSummary(r: Pick<UpdateEntityTypeResponse, "checkedInstances" | "invalidInstances" | "violations">): string {
  const checked = r.checkedInstances;
  const invalid = r.invalidInstances;
  const states = (n: bigint) => `${n} current state${n === 1n ? "" : "s"}`;
  if (invalid === 0n) {
    return checked === 0n ? "No current states to check: the type has no instances." : `All ${states(checked)} satisfy the new schema.`;
  }
  const shown = BigInt(r.violations.length);
  const more = shown < invalid ? ` (the first ${shown} below)` : "";
  return `${invalid} of ${states(checked)} break${invalid === 1n ? "s" : ""} the new schema${more}.`;
}

export function SchemaViolations({ type, result }: { type: string; result: UpdateEntityTypeResponse }) {
  const bad = result.invalidInstances > 0n;
  return (
    <div className="check-result" data-testid="dry-run" aria-live="polite">
      <p className={bad ? "field-error" : "ok"}>{checkSummary(result)}</p>
      {result.violations.length > 0 ? (
        <div className="table-wrap">
          <table className="violation-table" data-testid="dry-run-violations">
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col" className="num">Version</th>
                <th scope="col">What breaks the new schema</th>
              </tr>
            </thead>
            <tbody>
              {result.violations.map((v) => (
                <tr key={v.instanceId} data-external-id={v.externalId}>
                  <th scope="row">
                    <Link to={instancePath(type, v.externalId)}>{v.externalId}</Link>
                  </th>
                  <td className="num">{v.version.toString()}</td>
                  <td>
                    <ul className="violations">
                      {v.paths.map((p, i) => (
                        <li key={i}>
                          <code className="violation-path">{p === "" ? "(root)" : p}</code>{" "}
                          <span className="violation-message">{v.messages[i] ?? ""}</span>
                        </li>
                      ))}
                    </ul>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </div>
  );
}
