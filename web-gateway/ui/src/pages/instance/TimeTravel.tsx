// Time travel: a slider over versions 1..N and a date-time picker. Shows the state at that point,
// marked with what differs from now, and the list of those differences.
import { useEffect, useState } from "react";
import { useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { QueryService, type Instance } from "@temporal-state/client";
import { ErrorView, Loading } from "../../components/Status";
import { JsonTree } from "../../components/JsonTree";
import { ChangeList, toPathChanges } from "../../components/Changes";
import { highlightMap } from "../../lib/json";
import { formatTs, fromLocalInput, isoOrUndefined, toLocalInput, toTimestamp } from "../../lib/time";
import { intParam, updateParams } from "../../lib/url";

export function TimeTravel({ instance }: { instance: Instance }) {
  const [params, setParams] = useSearchParams();
  const n = Number(instance.version);
  const at = isoOrUndefined(params.get("at"));
  const urlVersion = Math.min(intParam(params, "version") ?? n, n);
  // The slider moves at once; the URL (and the query) follow when it rests.
  const [slider, setSlider] = useState(urlVersion);
  useEffect(() => setSlider(urlVersion), [urlVersion]);
  useEffect(() => {
    if (slider === urlVersion || at) return;
    const t = setTimeout(
      () => setParams((p) => updateParams(p, { version: slider === n ? undefined : slider }), { replace: true }),
      150,
    );
    return () => clearTimeout(t);
  }, [slider, urlVersion, n, at, setParams]);

  const byVersion = useQuery(
    QueryService.method.getStateAtVersion,
    at ? skipToken : { instanceId: instance.id, version: BigInt(urlVersion) },
    { staleTime: Infinity },
  );
  const byTime = useQuery(
    QueryService.method.getStateAtTime,
    at ? { instanceId: instance.id, timestamp: toTimestamp(at) } : skipToken,
    { staleTime: Infinity },
  );
  const shown = at ? byTime : byVersion;
  const shownVersion = shown.data?.version;
  const diff = useQuery(
    QueryService.method.compareVersions,
    shownVersion !== undefined && shownVersion !== instance.version
      ? { instanceId: instance.id, version1: shownVersion, version2: instance.version }
      : skipToken,
    { staleTime: Infinity },
  );
  const changes = diff.data ? toPathChanges(diff.data.changes) : [];
  const marks = highlightMap(changes, "from");

  return (
    <div className="travel">
      <h2>Time travel</h2>
      <div className="slider-row">
        <label htmlFor="version-slider">
          Version <output data-testid="slider-version">{at ? (shownVersion?.toString() ?? "…") : slider}</output> of {n}
        </label>
        <input
          id="version-slider"
          type="range"
          min={1}
          max={Math.max(1, n)}
          step={1}
          value={at && shownVersion !== undefined ? Number(shownVersion) : slider}
          onChange={(e) => {
            if (at) setParams((p) => updateParams(p, { at: undefined }), { replace: true });
            setSlider(Number(e.target.value));
          }}
          aria-valuetext={`version ${slider} of ${n}`}
        />
        <div className="actions">
          <button type="button" onClick={() => setSlider((v) => Math.max(1, v - 1))} disabled={slider <= 1 && !at}>
            ◀ Older
          </button>
          <button type="button" onClick={() => setSlider((v) => Math.min(n, v + 1))} disabled={slider >= n && !at}>
            Newer ▶
          </button>
          <button type="button" onClick={() => setParams((p) => updateParams(p, { version: undefined, at: undefined }), { replace: true })}>
            Now
          </button>
        </div>
      </div>
      <div className="at-row">
        <label htmlFor="at-picker">Or as the engine knew it at</label>
        <input
          id="at-picker"
          type="datetime-local"
          step={1}
          value={at ? toLocalInput(at) : ""}
          onChange={(e) => {
            const d = fromLocalInput(e.target.value);
            setParams((p) => updateParams(p, { at: d?.toISOString(), version: undefined }), { replace: true });
          }}
        />
      </div>
      {shown.isPending ? (
        <Loading what="the past state" />
      ) : shown.isError ? (
        <ErrorView error={shown.error} title={at ? "State at that moment" : `State at version ${urlVersion}`} />
      ) : shown.data ? (
        <>
          <p className="muted" data-testid="travel-caption">
            State after version {shown.data.version.toString()}, recorded {formatTs(shown.data.recordedAt)}
            {shown.data.version === instance.version ? " (the current version)" : ""}.
          </p>
          <JsonTree value={shown.data.state} marks={marks} label="state then" testId="travel-state" />
          {shown.data.version !== instance.version ? (
            <>
              <h3>What differs from now (version {instance.version.toString()})</h3>
              {diff.isPending ? (
                <Loading what="differences" />
              ) : diff.isError ? (
                <ErrorView error={diff.error} title="Comparison" />
              ) : (
                <ChangeList changes={diff.data.changes} fromLabel="Then" toLabel="Now" />
              )}
            </>
          ) : null}
        </>
      ) : null}
    </div>
  );
}
