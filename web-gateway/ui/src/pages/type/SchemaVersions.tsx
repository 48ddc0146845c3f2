// Every version of a type's schema, oldest first as the engine keeps them, shown newest first;
// each can be viewed (`?schema=N`, shareable).
import { Link, useSearchParams } from "react-router";
import type { SchemaVersion } from "@temporal-state/client";
import { formatTs } from "../../lib/time";
import { intParam, updateParams } from "../../lib/url";

/** The version `?schema=N` asks for, when the type has it; otherwise the current one. */
export function selectedVersion(params: URLSearchParams, versions: SchemaVersion[]): SchemaVersion | undefined {
  const wanted = intParam(params, "schema");
  const current = versions.at(-1);
  if (wanted === undefined) return current;
  return versions.find((v) => v.version === BigInt(wanted)) ?? current;
}

export function SchemaVersions({ versions, shown }: { versions: SchemaVersion[]; shown: bigint | undefined }) {
  const [params] = useSearchParams();
  const current = versions.at(-1)?.version;
  const linkTo = (v: bigint) => `?${updateParams(params, { schema: v === current ? undefined : v.toString() }).toString()}`;
  return (
    <div className="table-wrap">
      <table data-testid="schema-versions">
        <thead>
          <tr>
            <th scope="col" className="num">Version</th>
            <th scope="col">Accepted</th>
            <th scope="col">Schema</th>
          </tr>
        </thead>
        <tbody>
          {[...versions].reverse().map((v) => (
            <tr key={v.version.toString()} data-version={v.version.toString()} className={v.version === shown ? "selected" : undefined}>
              <th scope="row" className="num">
                {v.version.toString()}
                {v.version === current ? <span className="badge badge-current">current</span> : null}
              </th>
              <td>{formatTs(v.createdAt)}</td>
              <td>
                {v.version === shown ? (
                  <span className="muted" aria-current="true">
                    shown above
                  </span>
                ) : (
                  <Link to={linkTo(v.version)} aria-label={`View schema version ${v.version}`} replace>
                    View
                  </Link>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
