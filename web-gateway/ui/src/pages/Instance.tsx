// One instance, the heart of the console: its current state, live; the apply-event form (disabled
// while the instance is archived); archive and restore; and the time-travel views (slider and moment, compare, field timeline, history), each with its
// state in the URL (`?version=12`, `?view=compare&from=3&to=7`, ...).
import { useCallback, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { InstanceService, type Event } from "@temporal-state/client";
import { useSubscription, liveLabel } from "../api/subscribe";
import { ErrorView, Loading } from "../components/Status";
import { JsonTree } from "../components/JsonTree";
import { formatTs } from "../lib/time";
import { typePath, updateParams } from "../lib/url";
import { ApplyEventForm } from "./instance/ApplyEvent";
import { useCaller } from "../auth/AuthGate";
import { TimeTravel } from "./instance/TimeTravel";
import { Compare } from "./instance/Compare";
import { FieldTimeline } from "./instance/FieldTimeline";
import { History } from "./instance/History";
import { LifecycleButton, LifecycleDialog, useLifecycle } from "./instance/Lifecycle";
import { EraseButton, EraseDialog, useErase } from "./instance/Erase";
import { ArchivedBadge } from "../components/Badges";

const VIEWS = [
  ["travel", "Time travel"],
  ["compare", "Compare"],
  ["field", "Field timeline"],
  ["history", "History"],
] as const;
type View = (typeof VIEWS)[number][0];

/** Queries whose answer changes when the instance gets a new event. */
const MOVING = new Set(["GetCurrentState", "GetInstance", "GetHistory", "GetFieldTimeline", "GetSummary"]);

export default function InstancePage() {
  const { type = "", externalId = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const { can } = useCaller();
  const current = useQuery(InstanceService.method.getCurrentState, { entityType: type, externalId });
  const instance = current.data?.instance;
  const qc = useQueryClient();
  const lifecycle = useLifecycle(() => void current.refetch());
  const erasing = useErase(type);

  // Live updates: subscribe from the version first loaded (+1), so nothing committed after the
  // page loaded is missed; after a reconnect, resume after the last event seen.
  const firstVersion = useRef<bigint | undefined>(undefined);
  if (instance && firstVersion.current === undefined) firstVersion.current = instance.version;
  const lastSeen = useRef<bigint | undefined>(undefined);
  const [arrived, setArrived] = useState<Event[]>([]);
  const onEvent = useCallback(
    (e: Event) => {
      lastSeen.current = e.version;
      setArrived((a) => [e, ...a].slice(0, 5));
      void qc.invalidateQueries({
        predicate: (q) => {
          const k = q.queryKey[1] as { methodName?: string } | undefined;
          return q.queryKey[0] === "connect-query" && MOVING.has(k?.methodName ?? "");
        },
      });
    },
    [qc],
  );
  const live = useSubscription(
    instance && firstVersion.current !== undefined
      ? { instanceId: instance.id, fromVersion: firstVersion.current + 1n }
      : null,
    onEvent,
    () => (lastSeen.current ?? firstVersion.current ?? 0n) + 1n,
  );

  if (current.isPending) return <Loading what={`instance ${externalId}`} />;
  if (current.isError) return <ErrorView error={current.error} title={`Instance ${type}/${externalId}`} />;
  const inst = instance!;
  const view: View = (VIEWS.find(([v]) => v === params.get("view"))?.[0] ?? "travel") as View;
  const setView = (v: View) => setParams((p) => updateParams(p, { view: v === "travel" ? undefined : v }), { replace: true });

  return (
    <section className="instance">
      <div className="page-head">
        <h1>
          <Link to={typePath(type)}>{type}</Link> / <span data-testid="external-id">{inst.externalId}</span>
          {inst.archived ? <ArchivedBadge /> : null}
        </h1>
        <div className="actions head-actions">
          <span className={`live live-${live.status}`} data-testid="live-status" aria-live="polite">
            {liveLabel(live)}
          </span>
          {can("write", type) ? <LifecycleButton instance={inst} state={lifecycle} /> : null}
          {can("admin", type) ? <EraseButton state={erasing} /> : null}
        </div>
      </div>
      <LifecycleDialog instance={inst} state={lifecycle} />
      <EraseDialog instance={inst} state={erasing} />
      {inst.archived ? (
        <div className="banner banner-archived" role="status" data-testid="archived-banner">
          <strong>Archived.</strong> This instance refuses events until it is restored. Its state, history and time
          travel stay readable.
        </div>
      ) : null}
      <dl className="facts">
        <div>
          <dt>Version</dt>
          <dd data-testid="current-version">{inst.version.toString()}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatTs(inst.createdAt)}</dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd>{formatTs(inst.updatedAt)}</dd>
        </div>
        <div>
          <dt>Id</dt>
          <dd>
            <code>{inst.id}</code>
          </dd>
        </div>
      </dl>
      {arrived.length > 0 ? (
        <ul className="arrived" aria-live="polite" data-testid="arrived">
          {arrived.map((e) => (
            <li key={e.version.toString()}>
              Live: version {e.version.toString()} <strong>{e.eventType}</strong> at {formatTs(e.recordedAt)}
            </li>
          ))}
        </ul>
      ) : null}
      <div className="instance-grid">
        <div className="col">
          <section className="card" aria-labelledby="current-h">
            <h2 id="current-h">Current state</h2>
            <JsonTree value={inst.state} label="current state" testId="current-state" />
          </section>
          {can("write", type) ? (
            <ApplyEventForm instance={inst} archived={inst.archived} onReload={async () => (await current.refetch()).data?.instance?.version} />
          ) : (
            <p className="muted" data-testid="read-only">
              Your scopes let you read {type}, not write it: no events can be applied from here.
            </p>
          )}
        </div>
        <div className="col">
          <div role="tablist" aria-label="Time travel views" className="tabs">
            {VIEWS.map(([v, label]) => (
              <button
                key={v}
                role="tab"
                type="button"
                id={`tab-${v}`}
                aria-selected={view === v}
                aria-controls={`panel-${v}`}
                tabIndex={view === v ? 0 : -1}
                onClick={() => setView(v)}
                onKeyDown={(e) => {
                  const i = VIEWS.findIndex(([x]) => x === v);
                  const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
                  if (d !== 0) {
                    const next = VIEWS[(i + d + VIEWS.length) % VIEWS.length][0];
                    setView(next);
                    document.getElementById(`tab-${next}`)?.focus();
                  }
                }}
              >
                {label}
              </button>
            ))}
          </div>
          <div role="tabpanel" id={`panel-${view}`} aria-labelledby={`tab-${view}`} className="card panel">
            {view === "travel" ? <TimeTravel instance={inst} /> : null}
            {view === "compare" ? <Compare instance={inst} /> : null}
            {view === "field" ? <FieldTimeline instance={inst} /> : null}
            {view === "history" ? <History instance={inst} /> : null}
          </div>
        </div>
      </div>
    </section>
  );
}
