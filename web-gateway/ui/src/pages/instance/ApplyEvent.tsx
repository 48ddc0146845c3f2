// The apply-event form: event type, payload, mode, and expected_version prefilled with the
// current version. ABORTED means someone else changed the instance first: say so, offer a reload.
// While the instance is archived the form is disabled, saying why (the engine would refuse).
// "Preview" sends the same request with `dry_run`: the engine decides the event exactly as for a
// write (payload schema, guards, transform, state schema) and stores nothing; the form shows the
// would-be state marked against the current one, the event as it would be recorded, every guard,
// or the refusal the write would meet.
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { Code } from "@connectrpc/connect";
import { ApplyMode, EventService, type ApplyEventResponse, type Instance } from "@temporal-state/client";
import { isCode } from "../../api/errors";
import { ErrorView } from "../../components/Status";
import { JsonEditor } from "../../components/LazyJsonEditor";
import { JsonTree } from "../../components/JsonTree";
import { ChangeTable } from "../../components/Changes";
import { diffJson, highlightMap, parseObject, type JsonObject } from "../../lib/json";

const MODES: [ApplyMode, string][] = [
  [ApplyMode.MERGE_PATCH, "Merge patch (RFC 7386)"],
  [ApplyMode.REPLACE, "Replace the whole state"],
  [ApplyMode.JSON_PATCH, "JSON Patch (RFC 6902)"],
];

export function ApplyEventForm({
  instance,
  archived = false,
  onReload,
}: {
  instance: Instance;
  archived?: boolean;
  onReload: () => Promise<bigint | undefined>;
}) {
  const [eventType, setEventType] = useState("");
  const [mode, setMode] = useState<ApplyMode>(ApplyMode.MERGE_PATCH);
  const [payload, setPayload] = useState("{}");
  const [expected, setExpected] = useState(instance.version.toString());
  const [checkVersion, setCheckVersion] = useState(true);
  const [done, setDone] = useState<string | undefined>();
  const qc = useQueryClient();
  const apply = useMutation(EventService.method.applyEvent, {
    onSuccess: (r) => {
      setDone(`Applied as version ${r.event!.version}.`);
      setExpected(r.event!.version.toString());
      void qc.invalidateQueries();
    },
  });
  // A dry run changes nothing, so it invalidates nothing.
  const preview = useMutation(EventService.method.applyEvent);
  const resetPreview = preview.reset;
  // A preview answers one request on one version: any edit, or a new version, makes it stale.
  useEffect(() => resetPreview(), [resetPreview, eventType, payload, mode, expected, checkVersion, instance.version]);
  // A reload (or a live update) that brings a newer version moves an untouched prefill along.
  const [prefilledFrom, setPrefilledFrom] = useState(instance.version);
  useEffect(() => {
    if (instance.version !== prefilledFrom) {
      if (expected === prefilledFrom.toString()) setExpected(instance.version.toString());
      setPrefilledFrom(instance.version);
    }
  }, [instance.version, prefilledFrom, expected]);
  const parsed = useMemo(() => parseObject(payload), [payload]);
  const conflict = apply.isError && isCode(apply.error, Code.Aborted);
  const request = (payload: JsonObject) => ({
    instanceId: instance.id,
    eventType: eventType.trim(),
    payload,
    mode,
    expectedVersion: checkVersion && /^[0-9]+$/.test(expected) ? BigInt(expected) : undefined,
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setDone(undefined);
    preview.reset();
    if (!parsed.value) return;
    apply.mutate(request(parsed.value));
  };
  const submitPreview = (e: FormEvent) => {
    // The form's own validation (a required event type) first, as for Apply.
    const form = (e.currentTarget as HTMLButtonElement).form;
    if (form && !form.reportValidity()) return;
    setDone(undefined);
    apply.reset();
    if (!parsed.value) return;
    preview.mutate({ ...request(parsed.value), dryRun: true });
  };
  const busy = apply.isPending || preview.isPending;
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="apply-h" aria-describedby={archived ? "apply-disabled" : undefined}>
      <h2 id="apply-h">Apply an event</h2>
      {archived ? (
        <p className="notice" id="apply-disabled" data-testid="apply-disabled">
          Disabled: the instance is archived, and an archived instance refuses events. Restore it to apply events.
        </p>
      ) : null}
      <fieldset className="plain" disabled={archived}>
      <label htmlFor="ev-type">Event type</label>
      <input id="ev-type" value={eventType} onChange={(e) => setEventType(e.target.value)} placeholder="ScoreIncreased" required maxLength={128} autoComplete="off" />
      <label htmlFor="ev-mode">Mode</label>
      <select id="ev-mode" value={mode} onChange={(e) => setMode(Number(e.target.value) as ApplyMode)}>
        {MODES.map(([m, label]) => (
          <option key={m} value={m}>
            {label}
          </option>
        ))}
      </select>
      <label htmlFor="ev-payload">Payload</label>
      <JsonEditor id="ev-payload" label="Payload" value={payload} onChange={setPayload} readOnly={archived} />
      {mode === ApplyMode.JSON_PATCH ? (
        <small className="muted">{'{"patch": [{"op": "replace", "path": "/score", "value": 1}]}'}</small>
      ) : null}
      {parsed.error ? <p className="field-error">Payload {parsed.error}</p> : null}
      <div className="inline-form">
        <input id="ev-check" type="checkbox" checked={checkVersion} onChange={(e) => setCheckVersion(e.target.checked)} />
        <label htmlFor="ev-check">Only if the instance is still at version</label>
        <input
          id="ev-expected"
          aria-label="Expected version"
          type="number"
          min={1}
          value={expected}
          disabled={!checkVersion}
          onChange={(e) => setExpected(e.target.value)}
        />
      </div>
      {conflict ? (
        <div className="state state-error" role="alert" data-code="ABORTED">
          <p>
            <strong>Changed by someone else.</strong> The instance is no longer at version {expected}; nothing was
            applied. <code className="code-name">ABORTED</code> {apply.error?.rawMessage}
          </p>
          <button
            type="button"
            onClick={async () => {
              apply.reset();
              const version = await onReload();
              if (version !== undefined) setExpected(version.toString());
            }}
          >
            Reload the current state
          </button>
        </div>
      ) : apply.isError ? (
        <ErrorView error={apply.error} title="The engine refused the event" />
      ) : null}
      {done ? (
        <p className="ok" role="status">
          {done}
        </p>
      ) : null}
      <div className="actions">
        <button type="submit" className="primary" disabled={archived || busy || !parsed.value}>
          {apply.isPending ? "Applying…" : "Apply event"}
        </button>
        <button type="button" onClick={submitPreview} disabled={archived || busy || !parsed.value}>
          {preview.isPending ? "Previewing…" : "Preview"}
        </button>
      </div>
      {preview.isError ? (
        <div data-testid="preview-refused">
          <ErrorView error={preview.error} title="Preview: the engine would refuse this event">
            <p className="muted">Nothing was stored.</p>
          </ErrorView>
        </div>
      ) : preview.data ? (
        <Preview current={instance} answer={preview.data} />
      ) : null}
      </fieldset>
    </form>
  );
}

const MODE_NAMES: Partial<Record<ApplyMode, string>> = {
  [ApplyMode.MERGE_PATCH]: "a merge patch",
  [ApplyMode.REPLACE]: "a replacement",
  [ApplyMode.JSON_PATCH]: "a JSON Patch",
};

/** A dry run's answer: the would-be state marked against the current one, the changes, every
 *  guard, and the event as it would be recorded. */
function Preview({ current, answer }: { current: Instance; answer: ApplyEventResponse }) {
  const event = answer.event;
  const after = answer.state;
  const changes = useMemo(() => diffJson(current.state ?? {}, after ?? {}), [current.state, after]);
  const marks = useMemo(() => highlightMap(changes, "to"), [changes]);
  const version = event?.version.toString() ?? "?";
  return (
    <section className="preview" aria-labelledby="preview-h" data-testid="preview">
      <h3 id="preview-h">Preview: nothing was stored</h3>
      <p className="muted">
        Applied now, <strong>{event?.eventType}</strong> would be recorded as version {version}, as{" "}
        {MODE_NAMES[event?.mode ?? ApplyMode.MERGE_PATCH] ?? "a merge patch"}; the instance stays at version{" "}
        {current.version.toString()}.
      </p>
      {answer.guards.length > 0 ? (
        <>
          <h4>Guards</h4>
          <ul className="guards" data-testid="preview-guards">
            {answer.guards.map((g, i) => (
              <li key={i} className={g.passed ? "guard-passed" : "guard-failed"}>
                <span className="mark-badge">{g.passed ? "holds" : "fails"}</span> {g.message || <code>{g.expression}</code>}
                {g.message ? (
                  <>
                    {" "}
                    <code className="muted">{g.expression}</code>
                  </>
                ) : null}
              </li>
            ))}
          </ul>
        </>
      ) : null}
      <h4>State after the event</h4>
      <JsonTree value={after} marks={marks} label="state after the event" testId="preview-state" />
      <h4>Changes from the current state</h4>
      <ChangeTable changes={changes} fromLabel={`Now (v${current.version})`} toLabel={`After (v${version})`} testId="preview-changes" />
      <h4>The event as it would be recorded</h4>
      <dl className="preview-event">
        <dt>Payload (as sent)</dt>
        <dd>
          <pre data-testid="preview-payload">{JSON.stringify(event?.payload ?? {}, null, 2)}</pre>
        </dd>
        {event?.change ? (
          <>
            <dt>Change (the fields its transform sets, recorded beside the payload)</dt>
            <dd>
              <pre data-testid="preview-change">{JSON.stringify(event.change, null, 2)}</pre>
            </dd>
          </>
        ) : null}
      </dl>
    </section>
  );
}
