// The timeline of one field picked from the type's schema: every version at which its value
// changed, as a line for numbers and as steps for other values, with the points as a table.
import { useMemo } from "react";
import { useSearchParams } from "react-router";
import { useQuery as useTanstackQuery } from "@tanstack/react-query";
import { createClient } from "@connectrpc/connect";
import { useTransport } from "@connectrpc/connect-query";
import { QueryService, type Instance, type TimelinePoint } from "@temporal-state/client";
import { useEntityType } from "../../api/hooks";
import { ErrorView, Empty, Loading } from "../../components/Status";
import { SeriesChart } from "../../components/LazyChart";
import { valueJson } from "../../components/Changes";
import { schemaFields, shortJson, type JsonValue } from "../../lib/json";
import { formatTs, tsDate } from "../../lib/time";
import { updateParams } from "../../lib/url";

/** Most points drawn: the timeline is read page by page up to this many. */
const MAX_POINTS = 5000;

export function FieldTimeline({ instance }: { instance: Instance }) {
  const [params, setParams] = useSearchParams();
  const et = useEntityType(instance.entityTypeName);
  const fields = useMemo(() => schemaFields(et.data?.schema), [et.data]);
  const field = params.get("field") ?? "";
  const transport = useTransport();
  const timeline = useTanstackQuery({
    queryKey: ["field-timeline", instance.id, field, instance.version.toString()],
    enabled: field !== "",
    staleTime: Infinity,
    queryFn: async ({ signal }) => {
      const client = createClient(QueryService, transport);
      const points: TimelinePoint[] = [];
      let pageToken = "";
      do {
        const r = await client.getFieldTimeline({ instanceId: instance.id, field, pageSize: 1000, pageToken }, { signal });
        points.push(...r.points);
        pageToken = r.nextPageToken;
      } while (pageToken && points.length < MAX_POINTS);
      return { points, truncated: pageToken !== "" };
    },
  });
  const picked = fields.find((f) => f.pointer === field);
  return (
    <div className="field-timeline">
      <h2>Field timeline</h2>
      <div className="inline-form">
        <label htmlFor="field-pick">Field</label>
        <select
          id="field-pick"
          value={field}
          onChange={(e) => setParams((p) => updateParams(p, { field: e.target.value }), { replace: true })}
        >
          <option value="">Pick a field…</option>
          {fields.map((f) => (
            <option key={f.pointer} value={f.pointer}>
              {f.pointer} ({f.kinds.join(" | ")})
            </option>
          ))}
          {field && !picked ? <option value={field}>{field}</option> : null}
        </select>
      </div>
      {et.isError ? <ErrorView error={et.error} title="The type's schema" /> : null}
      {field === "" ? (
        <Empty>{fields.length === 0 && et.data ? "The schema declares no fields." : "Pick a field to chart its values over the versions."}</Empty>
      ) : timeline.isPending ? (
        <Loading what={`the timeline of ${field}`} />
      ) : timeline.isError ? (
        <ErrorView error={timeline.error} title={`Timeline of ${field}`} />
      ) : timeline.data.points.length === 0 ? (
        <Empty>{field} never had a value.</Empty>
      ) : (
        <TimelineView points={timeline.data.points} field={field} truncated={timeline.data.truncated} />
      )}
    </div>
  );
}

function TimelineView({ points, field, truncated }: { points: TimelinePoint[]; field: string; truncated: boolean }) {
  const chart = useMemo(() => timelineSeries(points), [points]);
  return (
    <>
      <SeriesChart
        xs={chart.xs}
        ys={chart.ys}
        kind={chart.numeric ? "line" : "steps"}
        yLabels={chart.numeric ? undefined : chart.labels}
        label={`${field} over time`}
      />
      {truncated ? <p className="muted">Only the first {points.length} changes are drawn.</p> : null}
      <details>
        <summary>The {points.length} changes as a table</summary>
        <div className="table-wrap">
          <table data-testid="timeline-table">
            <thead>
              <tr>
                <th scope="col" className="num">Version</th>
                <th scope="col">Recorded</th>
                <th scope="col">Event</th>
                <th scope="col">Value</th>
              </tr>
            </thead>
            <tbody>
              {points.map((p) => (
                <tr key={p.version.toString()}>
                  <td className="num">{p.version.toString()}</td>
                  <td>{formatTs(p.recordedAt)}</td>
                  <td>{p.eventType}</td>
                  <td>
                    <code>{p.value ? shortJson(valueJson(p.value)) : "(removed)"}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </>
  );
}

/**
 * The chart's series of a timeline: x is the recording time in seconds; for numeric values y is
 * the value, otherwise y is the index of the value among the distinct values seen (a removed
 * field is a gap).
 */
export function timelineSeries(points: TimelinePoint[]): {
  xs: number[];
  ys: (number | null)[];
  numeric: boolean;
  labels: string[];
} {
  const values: (JsonValue | undefined)[] = points.map((p) => (p.value ? valueJson(p.value) : undefined));
  const numeric = values.every((v) => v === undefined || typeof v === "number");
  const xs = points.map((p) => (tsDate(p.recordedAt)?.getTime() ?? 0) / 1000);
  if (numeric) return { xs, ys: values.map((v) => (typeof v === "number" ? v : null)), numeric, labels: [] };
  const labels: string[] = [];
  const index = new Map<string, number>();
  const ys = values.map((v) => {
    if (v === undefined) return null;
    const k = shortJson(v, 40);
    if (!index.has(k)) {
      index.set(k, labels.length);
      labels.push(k);
    }
    return index.get(k)!;
  });
  return { xs, ys, numeric, labels };
}
