// Two versions side by side, with added, removed and changed fields marked, the flat change list
// and the RFC 6902 patch from the first to the second (all from CompareVersions).
import { useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { QueryService, type Instance } from "@temporal-state/client";
import { ErrorView, Loading } from "../../components/Status";
import { JsonTree } from "../../components/JsonTree";
import { ChangeList, toPathChanges } from "../../components/Changes";
import { highlightMap } from "../../lib/json";
import { intParam, updateParams } from "../../lib/url";

export function Compare({ instance }: { instance: Instance }) {
  const [params, setParams] = useSearchParams();
  const n = Number(instance.version);
  const clamp = (v: number | undefined, d: number) => Math.min(Math.max(v ?? d, 1), n);
  const from = clamp(intParam(params, "from"), Math.max(1, n - 1));
  const to = clamp(intParam(params, "to"), n);
  const cmp = useQuery(
    QueryService.method.compareVersions,
    n >= 1 ? { instanceId: instance.id, version1: BigInt(from), version2: BigInt(to) } : skipToken,
    { staleTime: Infinity },
  );
  const set = (k: "from" | "to", v: string) => {
    const num = Number(v);
    if (Number.isInteger(num) && num >= 1 && num <= n) setParams((p) => updateParams(p, { [k]: num }), { replace: true });
  };
  const changes = cmp.data ? toPathChanges(cmp.data.changes) : [];
  return (
    <div className="compare">
      <h2>Compare two versions</h2>
      <div className="inline-form">
        <label htmlFor="cmp-from">From version</label>
        <input id="cmp-from" type="number" min={1} max={n} value={from} onChange={(e) => set("from", e.target.value)} />
        <label htmlFor="cmp-to">to version</label>
        <input id="cmp-to" type="number" min={1} max={n} value={to} onChange={(e) => set("to", e.target.value)} />
      </div>
      <p className="legend" aria-label="Legend">
        <span className="mark-added"><span className="mark-badge">added</span></span>{" "}
        <span className="mark-removed"><span className="mark-badge">removed</span></span>{" "}
        <span className="mark-changed"><span className="mark-badge">changed</span></span>
      </p>
      {cmp.isPending ? (
        <Loading what="the comparison" />
      ) : cmp.isError ? (
        <ErrorView error={cmp.error} title="Comparison" />
      ) : (
        <>
          <div className="side-by-side">
            <section aria-label={`Version ${from}`}>
              <h3>Version {from}</h3>
              <JsonTree value={cmp.data.state1} marks={highlightMap(changes, "from")} label={`state at version ${from}`} testId="compare-from" />
            </section>
            <section aria-label={`Version ${to}`}>
              <h3>Version {to}</h3>
              <JsonTree value={cmp.data.state2} marks={highlightMap(changes, "to")} label={`state at version ${to}`} testId="compare-to" />
            </section>
          </div>
          <h3>Changes</h3>
          <ChangeList changes={cmp.data.changes} fromLabel={`v${from}`} toLabel={`v${to}`} />
          <h3>RFC 6902 patch</h3>
          <pre className="patch" data-testid="patch">{JSON.stringify(cmp.data.patch, null, 2)}</pre>
        </>
      )}
    </div>
  );
}
