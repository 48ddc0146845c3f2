// The apply-event form: event type, payload, mode, and expected_version prefilled with the
// current version. ABORTED means someone else changed the instance first: say so, offer a reload.
// While the instance is archived the form is disabled, saying why (the engine would refuse).
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { Code } from "@connectrpc/connect";
import { ApplyMode, EventService, type Instance } from "@temporal-state/client";
import { isCode } from "../../api/errors";
import { ErrorView } from "../../components/Status";
import { JsonEditor } from "../../components/LazyJsonEditor";
import { parseObject } from "../../lib/json";

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
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setDone(undefined);
    if (!parsed.value) return;
    apply.mutate({
      instanceId: instance.id,
      eventType: eventType.trim(),
      payload: parsed.value,
      mode,
      expectedVersion: checkVersion && /^[0-9]+$/.test(expected) ? BigInt(expected) : undefined,
    });
  };
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
        <button type="submit" className="primary" disabled={archived || apply.isPending || !parsed.value}>
          {apply.isPending ? "Applying…" : "Apply event"}
        </button>
      </div>
      </fieldset>
    </form>
  );
}
