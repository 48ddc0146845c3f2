// Overview: every entity type with its instance and event counts, the types by recent activity,
// and a live feed of every event committed (Subscribe with no filter).
import { useCallback, useMemo, useState } from "react";
import { Link } from "react-router";
import { useQueries } from "@tanstack/react-query";
import { useQuery, useTransport, createQueryOptions } from "@connectrpc/connect-query";
import { AnalyticsService, EntityTypeService, type Event } from "@temporal-state/client";
import { useSubscription, liveLabel } from "../api/subscribe";
import { Empty, ErrorView, Loading } from "../components/Status";
import { InstanceLink } from "../components/InstanceLink";
import { useCaller } from "../auth/AuthGate";
import { formatTs, tsDate } from "../lib/time";
import { analyticsPath, instancesPath, typePath } from "../lib/url";

const FEED_MAX = 50;

export function Overview() {
  const { can } = useCaller();
  const types = useQuery(EntityTypeService.method.listEntityTypes, { pageSize: 1000 });
  const transport = useTransport();
  const list = useMemo(() => types.data?.entityTypes ?? [], [types.data]);
  const summaries = useQueries({
    queries: list.map((t) => ({
      ...createQueryOptions(AnalyticsService.method.getSummary, { entityType: t.id }, { transport }),
      refetchInterval: 15_000,
    })),
  });
  const names = useMemo(() => new Map(list.map((t) => [t.id, t.name])), [list]);

  const [feed, setFeed] = useState<Event[]>([]);
  const onEvent = useCallback((e: Event) => setFeed((f) => [e, ...f].slice(0, FEED_MAX)), []);
  const live = useSubscription({}, onEvent);

  if (types.isPending) return <Loading what="entity types" />;
  if (types.isError) return <ErrorView error={types.error} title="Listing entity types failed" />;

  const rows = list.map((t, i) => ({ t, s: summaries[i] }));
  const recent = rows
    .filter((r) => r.s?.data?.lastEventAt)
    .sort((a, b) => (tsDate(b.s.data!.lastEventAt)!.getTime() - tsDate(a.s.data!.lastEventAt)!.getTime()))
    .slice(0, 8);

  return (
    <section>
      <h1>Overview</h1>
      {list.length === 0 ? (
        <Empty>
          No entity types{can("admin") ? " yet" : " you may read"}.{" "}
          {can("admin") ? <Link to="/types?create=1">Create the first one</Link> : null}
        </Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption>Entity types{types.data.nextPageToken ? " (first 1000)" : ""}</caption>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col" className="num">Instances</th>
                <th scope="col" className="num">Events</th>
                <th scope="col" className="num">Last 24 h</th>
                <th scope="col">Last event</th>
                <th scope="col">Pages</th>
              </tr>
            </thead>
            <tbody>
              {rows.map(({ t, s }) => (
                <tr key={t.id} data-type={t.name}>
                  <th scope="row">
                    <Link to={typePath(t.name)}>{t.name}</Link>
                  </th>
                  {s?.isError ? (
                    <td colSpan={4}>
                      <ErrorView error={s.error} />
                    </td>
                  ) : (
                    <>
                      <td className="num" data-col="instances">{s?.data ? s.data.instanceCount.toString() : "…"}</td>
                      <td className="num" data-col="events">{s?.data ? s.data.eventCount.toString() : "…"}</td>
                      <td className="num">{s?.data ? s.data.eventsLast24h.toString() : "…"}</td>
                      <td>{s?.data ? formatTs(s.data.lastEventAt) : "…"}</td>
                    </>
                  )}
                  <td className="links">
                    <Link to={instancesPath(t.name)}>Instances</Link>{" "}
                    <Link to={analyticsPath(t.name)}>Analytics</Link>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}

      <div className="two-col">
        <section aria-labelledby="recent-h">
          <h2 id="recent-h">Recent activity</h2>
          {recent.length === 0 ? (
            <Empty>No events recorded yet.</Empty>
          ) : (
            <ol className="plain-list">
              {recent.map(({ t, s }) => (
                <li key={t.id}>
                  <Link to={analyticsPath(t.name)}>{t.name}</Link>: last event {formatTs(s.data!.lastEventAt)},{" "}
                  {s.data!.eventsLast24h.toString()} in the last 24 h
                </li>
              ))}
            </ol>
          )}
        </section>
        <section aria-labelledby="feed-h">
          <h2 id="feed-h">
            Live feed <span className={`live live-${live.status}`} data-testid="live-status">{liveLabel(live)}</span>
          </h2>
          {feed.length === 0 ? (
            <Empty>Waiting for events… new events appear here as they are committed.</Empty>
          ) : (
            <ol className="feed" aria-live="polite" data-testid="live-feed">
              {feed.map((e) => (
                <li key={`${e.instanceId}/${e.version}`}>
                  <time>{formatTs(e.recordedAt)}</time> <strong>{e.eventType}</strong> on{" "}
                  {names.get(e.entityTypeId) ?? "?"} <InstanceLink instanceId={e.instanceId} version={e.version} /> v
                  {e.version.toString()}
                </li>
              ))}
            </ol>
          )}
        </section>
      </div>
    </section>
  );
}
