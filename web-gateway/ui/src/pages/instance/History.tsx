// The instance's history: newest first, paged, filtered by event type and recording time range.
// Each event shows the schema version that validated it; the lifecycle events the engine records
// (InstanceArchived, InstanceRestored) read as what they are, not as empty patches.
import { useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { ApplyMode, QueryService, type Instance } from "@temporal-state/client";
import { ErrorView, Empty, Loading } from "../../components/Status";
import { Pager, usePageToken } from "../../components/Pager";
import { formatTsParts, fromLocalInput, isoOrUndefined, toLocalInput, toTimestamp } from "../../lib/time";
import { shortJson } from "../../lib/json";
import { instancePath, updateParams } from "../../lib/url";

const PAGE_SIZE = 20;

/** The event types only the engine records, and what they mean. */
export const LIFECYCLE: Record<string, { badge: string; note: string }> = {
  InstanceArchived: { badge: "archived", note: "Writes refused from here on; state unchanged." },
  InstanceRestored: { badge: "restored", note: "Writable again; state unchanged." },
};

const modeName: Record<ApplyMode, string> = {
  [ApplyMode.UNSPECIFIED]: "merge patch",
  [ApplyMode.MERGE_PATCH]: "merge patch",
  [ApplyMode.REPLACE]: "replace",
  [ApplyMode.JSON_PATCH]: "JSON patch",
};

export function History({ instance }: { instance: Instance }) {
  const [params, setParams] = useSearchParams();
  const pager = usePageToken("hpage");
  const eventType = params.get("htype") ?? "";
  const start = isoOrUndefined(params.get("hstart"));
  const end = isoOrUndefined(params.get("hend"));
  const [draft, setDraft] = useState({
    type: eventType,
    start: start ? toLocalInput(start) : "",
    end: end ? toLocalInput(end) : "",
  });
  const history = useQuery(QueryService.method.getHistory, {
    instanceId: instance.id,
    pageSize: PAGE_SIZE,
    pageToken: pager.token,
    eventTypes: eventType ? [eventType] : [],
    startTime: start ? toTimestamp(start) : undefined,
    endTime: end ? toTimestamp(end) : undefined,
    descending: true,
  });
  // The page invalidates the history when a live event arrives, but a fetch already in flight at
  // that moment may have been answered before the event committed. The instance's version moves
  // only once the current state was re-read after the event, so refetching on that change always
  // sees it.
  const shownVersion = useRef(instance.version);
  const { refetch } = history;
  useEffect(() => {
    if (shownVersion.current === instance.version) return;
    shownVersion.current = instance.version;
    void refetch();
  }, [instance.version, refetch]);
  const apply = (e: FormEvent) => {
    e.preventDefault();
    pager.reset();
    setParams((p) =>
      updateParams(p, {
        htype: draft.type.trim(),
        hstart: fromLocalInput(draft.start)?.toISOString(),
        hend: fromLocalInput(draft.end)?.toISOString(),
        hpage: undefined,
      }),
    );
  };
  const filtered = eventType !== "" || start !== undefined || end !== undefined;
  return (
    <div className="history">
      <h2>History</h2>
      <form className="inline-form filters" onSubmit={apply} aria-label="History filters">
        <label htmlFor="h-type">Event type</label>
        <input id="h-type" value={draft.type} onChange={(e) => setDraft({ ...draft, type: e.target.value })} placeholder="any" />
        <label htmlFor="h-start">From</label>
        <input id="h-start" type="datetime-local" step={1} value={draft.start} onChange={(e) => setDraft({ ...draft, start: e.target.value })} />
        <label htmlFor="h-end">To</label>
        <input id="h-end" type="datetime-local" step={1} value={draft.end} onChange={(e) => setDraft({ ...draft, end: e.target.value })} />
        <button type="submit">Filter</button>
        {filtered ? (
          <button
            type="button"
            onClick={() => {
              setDraft({ type: "", start: "", end: "" });
              pager.reset();
              setParams((p) => updateParams(p, { htype: undefined, hstart: undefined, hend: undefined, hpage: undefined }));
            }}
          >
            Clear
          </button>
        ) : null}
      </form>
      {history.isPending ? (
        <Loading what="the history" />
      ) : history.isError ? (
        <ErrorView error={history.error} title="History" />
      ) : history.data.events.length === 0 ? (
        <Empty>{filtered ? "No events match these filters." : "No events."}</Empty>
      ) : (
        <div className="table-wrap">
          <table data-testid="history-table">
            <thead>
              <tr>
                <th scope="col" className="num">Version</th>
                <th scope="col">Event type</th>
                <th scope="col">Mode</th>
                <th scope="col" className="num">
                  <abbr title="The schema version the state after this event was validated against">Schema</abbr>
                </th>
                <th scope="col">Recorded</th>
                <th scope="col">Payload</th>
              </tr>
            </thead>
            <tbody>
              {history.data.events.map((e) => {
                const life = LIFECYCLE[e.eventType];
                const hasMetadata = e.metadata !== undefined && Object.keys(e.metadata).length > 0;
                return (
                  <tr key={e.version.toString()} className={life ? "lifecycle" : undefined} data-event-type={e.eventType}>
                    <td className="num">
                      <Link
                        to={instancePath(instance.entityTypeName, instance.externalId, { version: e.version.toString() })}
                        aria-label={`State after version ${e.version}`}
                      >
                        {e.version.toString()}
                      </Link>
                    </td>
                    <td>
                      {e.eventType}
                      {life ? <span className={`badge badge-${life.badge}`}>{life.badge}</span> : null}
                    </td>
                    <td>{life ? <span className="muted">—</span> : modeName[e.mode]}</td>
                    <td className="num" data-col="schema-version">
                      v{e.schemaVersion.toString()}
                    </td>
                    <td className="when">
                      {formatTsParts(e.recordedAt).map((part, i) => (
                        <span key={i}>{part}</span>
                      ))}
                    </td>
                    <td>
                      {life ? (
                        <>
                          <span className="muted">{life.note}</span>
                          {hasMetadata ? (
                            <details>
                              <summary>
                                <code>{shortJson(e.metadata, 48)}</code>
                              </summary>
                              <pre aria-label="metadata">{JSON.stringify(e.metadata, null, 2)}</pre>
                            </details>
                          ) : null}
                        </>
                      ) : (
                        <details>
                          <summary>
                            <code>{shortJson(e.payload, 48)}</code>
                          </summary>
                          <pre>{JSON.stringify(e.payload, null, 2)}</pre>
                          {hasMetadata ? <pre aria-label="metadata">{JSON.stringify(e.metadata, null, 2)}</pre> : null}
                        </details>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <Pager pager={pager} nextToken={history.data?.nextPageToken} label="History" />
    </div>
  );
}
