// Analytics of one entity type: summary cards, events over time (interval and range pickers),
// events by type, the most active instances, and statistics of a field, now or as of a moment.
import { useMemo, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { AnalyticsService, type GetFieldAggregationResponse } from "@temporal-state/client";
import { useEntityType } from "../api/hooks";
import { ErrorView, Empty, Loading } from "../components/Status";
import { SeriesChart } from "../components/LazyChart";
import { valueJson } from "../components/Changes";
import { schemaFields, shortJson } from "../lib/json";
import { formatDate, formatTs, fromLocalInput, isoOrUndefined, toLocalInput, toTimestamp, tsDate } from "../lib/time";
import { instancePath, updateParams } from "../lib/url";

const MIN = 60_000;
export const INTERVALS: Record<string, number> = { "1m": MIN, "5m": 5 * MIN, "15m": 15 * MIN, "1h": 60 * MIN, "6h": 360 * MIN, "1d": 1440 * MIN };
export const RANGES: Record<string, number> = { "1h": 60 * MIN, "6h": 360 * MIN, "24h": 1440 * MIN, "7d": 7 * 1440 * MIN, "30d": 30 * 1440 * MIN };
/** Most buckets asked for at once; a finer interval over a long range is coarsened. */
const MAX_BUCKETS = 2000;

/**
 * The time-series window: a named range ending at the end of the current interval, or an explicit
 * start and end. Both ends are aligned to the interval so buckets fall on round times.
 */
export function seriesWindow(
  rangeKey: string,
  intervalKey: string,
  now: Date,
  custom?: { start?: Date; end?: Date },
): { start: Date; end: Date; intervalMs: number } {
  let intervalMs = INTERVALS[intervalKey] ?? INTERVALS["1h"];
  let start: Date;
  let end: Date;
  if (custom?.start && custom?.end && custom.start < custom.end) {
    start = custom.start;
    end = custom.end;
  } else {
    const range = RANGES[rangeKey] ?? RANGES["24h"];
    end = new Date(Math.ceil((now.getTime() + 1) / intervalMs) * intervalMs);
    start = new Date(end.getTime() - range);
  }
  while ((end.getTime() - start.getTime()) / intervalMs > MAX_BUCKETS) intervalMs *= 2;
  return { start, end, intervalMs };
}

export default function Analytics() {
  const { type = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const et = useEntityType(type);
  const rangeKey = params.get("range") ?? "24h";
  const intervalKey = params.get("interval") ?? (rangeKey === "1h" ? "1m" : rangeKey === "6h" ? "15m" : rangeKey === "24h" ? "1h" : "1d");
  const customStart = isoOrUndefined(params.get("start"));
  const customEnd = isoOrUndefined(params.get("end"));
  const [now, setNow] = useState(() => new Date());
  const win = useMemo(
    () => seriesWindow(rangeKey, intervalKey, now, { start: customStart, end: customEnd }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [rangeKey, intervalKey, now, params.get("start"), params.get("end")],
  );
  const span = { startTime: toTimestamp(win.start), endTime: toTimestamp(win.end) };
  const summary = useQuery(AnalyticsService.method.getSummary, { entityType: type });
  const series = useQuery(AnalyticsService.method.getEventTimeSeries, {
    entityType: type,
    interval: durationFromMs(win.intervalMs),
    ...span,
  });
  const counts = useQuery(AnalyticsService.method.getEventCounts, { entityType: type, ...span });
  const active = useQuery(AnalyticsService.method.getMostActive, { entityType: type, limit: 10, ...span });
  const set = (changes: Record<string, string | undefined>) => setParams((p) => updateParams(p, changes), { replace: true });

  const chart = useMemo(() => {
    const b = series.data?.buckets ?? [];
    return { xs: b.map((x) => (tsDate(x.bucketStart)?.getTime() ?? 0) / 1000), ys: b.map((x) => Number(x.count)) };
  }, [series.data]);

  if (et.isError) return <ErrorView error={et.error} title={`Entity type ${type}`} />;

  return (
    <section>
      <div className="page-head">
        <h1>Analytics of {type}</h1>
        <button type="button" onClick={() => setNow(new Date())}>
          Refresh
        </button>
      </div>
      {summary.isPending ? (
        <Loading what="the summary" />
      ) : summary.isError ? (
        <ErrorView error={summary.error} title="Summary" />
      ) : (
        <div className="cards" data-testid="summary-cards">
          <Card label="Instances" value={summary.data.instanceCount.toString()} />
          <Card label="Events" value={summary.data.eventCount.toString()} />
          <Card label="Events, last 24 h" value={summary.data.eventsLast24h.toString()} />
          <Card label="First event" value={formatTs(summary.data.firstEventAt)} />
          <Card label="Last event" value={formatTs(summary.data.lastEventAt)} />
          <Card label="Event types" value={String(summary.data.eventTypes.length)} />
        </div>
      )}

      <section className="card" aria-labelledby="series-h">
        <h2 id="series-h">Events over time</h2>
        <div className="inline-form">
          <label htmlFor="an-range">Range</label>
          <select id="an-range" value={customStart && customEnd ? "custom" : rangeKey} onChange={(e) => set({ range: e.target.value === "custom" ? rangeKey : e.target.value, start: e.target.value === "custom" ? toIso(win.start) : undefined, end: e.target.value === "custom" ? toIso(win.end) : undefined })}>
            {Object.keys(RANGES).map((r) => (
              <option key={r} value={r}>
                last {r}
              </option>
            ))}
            <option value="custom">custom…</option>
          </select>
          <label htmlFor="an-interval">Interval</label>
          <select id="an-interval" value={intervalKey} onChange={(e) => set({ interval: e.target.value })}>
            {Object.keys(INTERVALS).map((i) => (
              <option key={i} value={i}>
                {i}
              </option>
            ))}
          </select>
          {customStart && customEnd ? (
            <>
              <label htmlFor="an-start">From</label>
              <input id="an-start" type="datetime-local" step={1} value={toLocalInput(customStart)} onChange={(e) => set({ start: fromLocalInput(e.target.value)?.toISOString() })} />
              <label htmlFor="an-end">to</label>
              <input id="an-end" type="datetime-local" step={1} value={toLocalInput(customEnd)} onChange={(e) => set({ end: fromLocalInput(e.target.value)?.toISOString() })} />
            </>
          ) : null}
        </div>
        <p className="muted">
          {formatDate(win.start)} – {formatDate(win.end)}, buckets of {Math.round(win.intervalMs / MIN)} min
        </p>
        {series.isPending ? (
          <Loading what="the time series" />
        ) : series.isError ? (
          <ErrorView error={series.error} title="Time series" />
        ) : (
          <>
            <SeriesChart xs={chart.xs} ys={chart.ys} kind="bars" label="events per bucket" />
            <details>
              <summary>Buckets as a table ({series.data.buckets.filter((b) => b.count > 0n).length} not empty)</summary>
              <div className="table-wrap">
                <table data-testid="series-table">
                  <thead>
                    <tr>
                      <th scope="col">Bucket start</th>
                      <th scope="col" className="num">Events</th>
                    </tr>
                  </thead>
                  <tbody>
                    {series.data.buckets
                      .filter((b) => b.count > 0n)
                      .map((b) => (
                        <tr key={String(tsDate(b.bucketStart)?.getTime())} data-start={tsDate(b.bucketStart)?.toISOString()}>
                          <td>{formatTs(b.bucketStart)}</td>
                          <td className="num">{b.count.toString()}</td>
                        </tr>
                      ))}
                  </tbody>
                </table>
              </div>
            </details>
          </>
        )}
      </section>

      <div className="two-col">
        <section className="card" aria-labelledby="counts-h">
          <h2 id="counts-h">Events by type</h2>
          {counts.isPending ? (
            <Loading what="event counts" />
          ) : counts.isError ? (
            <ErrorView error={counts.error} title="Event counts" />
          ) : counts.data.counts.length === 0 ? (
            <Empty>No events in this range.</Empty>
          ) : (
            <BarList items={counts.data.counts.map((c) => ({ label: c.eventType, value: Number(c.count) }))} testId="event-counts" />
          )}
        </section>
        <section className="card" aria-labelledby="active-h">
          <h2 id="active-h">Most active instances</h2>
          {active.isPending ? (
            <Loading what="the most active instances" />
          ) : active.isError ? (
            <ErrorView error={active.error} title="Most active" />
          ) : active.data.entries.length === 0 ? (
            <Empty>No events in this range.</Empty>
          ) : (
            <ol className="plain-list" data-testid="most-active">
              {active.data.entries.map((a) => (
                <li key={a.instanceId}>
                  <Link to={instancePath(type, a.externalId)}>{a.externalId}</Link>: {a.eventCount.toString()} events, last{" "}
                  {formatTs(a.lastEventAt)}
                </li>
              ))}
            </ol>
          )}
        </section>
      </div>
      <FieldStats type={type} schema={et.data?.schema} />
    </section>
  );
}

function toIso(d: Date): string {
  return d.toISOString();
}

function Card({ label, value }: { label: string; value: string }) {
  return (
    <div className="stat">
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
    </div>
  );
}

function BarList({ items, testId }: { items: { label: string; value: number }[]; testId?: string }) {
  const max = Math.max(1, ...items.map((i) => i.value));
  return (
    <ul className="bars" data-testid={testId}>
      {items.map((i) => (
        <li key={i.label}>
          <span className="bar-label">{i.label}</span>
          <meter className="bar" min={0} max={max} value={i.value} aria-label={`${i.label}: ${i.value}`} />
          <span className="bar-value num">{i.value}</span>
        </li>
      ))}
    </ul>
  );
}

function FieldStats({ type, schema }: { type: string; schema: Parameters<typeof schemaFields>[0] }) {
  const [params, setParams] = useSearchParams();
  const fields = useMemo(() => schemaFields(schema), [schema]);
  const field = params.get("field") ?? "";
  const asOf = isoOrUndefined(params.get("asof"));
  const agg = useQuery(
    AnalyticsService.method.getFieldAggregation,
    field ? { entityType: type, field, asOf: asOf ? toTimestamp(asOf) : undefined } : skipToken,
  );
  const set = (changes: Record<string, string | undefined>) => setParams((p) => updateParams(p, changes), { replace: true });
  return (
    <section className="card" aria-labelledby="fieldstats-h">
      <h2 id="fieldstats-h">Field statistics</h2>
      <div className="inline-form">
        <label htmlFor="fs-field">Field</label>
        <select id="fs-field" value={field} onChange={(e) => set({ field: e.target.value })}>
          <option value="">Pick a field…</option>
          {fields.map((f) => (
            <option key={f.pointer} value={f.pointer}>
              {f.pointer} ({f.kinds.join(" | ")})
            </option>
          ))}
        </select>
        <label htmlFor="fs-asof">As of</label>
        <input id="fs-asof" type="datetime-local" step={1} value={asOf ? toLocalInput(asOf) : ""} onChange={(e) => set({ asof: fromLocalInput(e.target.value)?.toISOString() })} />
        {asOf ? (
          <button type="button" onClick={() => set({ asof: undefined })}>
            Now
          </button>
        ) : null}
      </div>
      {field === "" ? (
        <Empty>Pick a field to see its statistics over all instances{asOf ? " as of that moment" : ""}.</Empty>
      ) : agg.isPending ? (
        <Loading what={`statistics of ${field}`} />
      ) : agg.isError ? (
        <ErrorView error={agg.error} title={`Statistics of ${field}`} />
      ) : (
        <AggregationView a={agg.data} />
      )}
    </section>
  );
}

function AggregationView({ a }: { a: GetFieldAggregationResponse }) {
  const num = (v: number | undefined) => (v === undefined ? "—" : Number.isInteger(v) ? String(v) : v.toFixed(3));
  return (
    <>
      <div className="cards" data-testid="field-stats">
        <Card label="Instances with it" value={a.count.toString()} />
        <Card label="Missing" value={a.missing.toString()} />
        <Card label="Min" value={num(a.min)} />
        <Card label="Max" value={num(a.max)} />
        <Card label="Mean" value={num(a.mean)} />
        <Card label="Sum" value={num(a.sum)} />
      </div>
      {a.topValues.length > 0 ? (
        <BarList items={a.topValues.map((t) => ({ label: shortJson(valueJson(t.value), 40), value: Number(t.count) }))} />
      ) : null}
    </>
  );
}
