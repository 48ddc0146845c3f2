// Edit a type's schema: the new schema becomes a new schema version. "Check" asks the engine to
// test every current state against it without changing anything (dry_run) and lists the states
// that break it; "Save" applies it only if the type is still at the version shown
// (expected_schema_version: a concurrent update is a clear conflict, never a silent overwrite)
// and only if no current state breaks it; "Save anyway" (allow_invalid_existing) is offered once
// the engine has named the states that break it, behind a confirmation.
import { useMemo, useState, type FormEvent } from "react";
import { useMutation } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { Code } from "@connectrpc/connect";
import equal from "fast-deep-equal";
import { EntityTypeService, type EntityType, type UpdateEntityTypeResponse } from "@temporal-state/client";
import { isCode } from "../../api/errors";
import { ErrorView } from "../../components/Status";
import { ConfirmDialog } from "../../components/Confirm";
import { JsonEditor } from "../../components/LazyJsonEditor";
import { checkSchemaText } from "../../lib/schemaCheck";
import type { JsonObject } from "../../lib/json";
import { SchemaViolations, checkSummary } from "./Violations";

/** What the form may offer for the text in the editor, given what the engine said about it. */
export interface EditOffer {
  /** Check and Save need a JSON object. */
  canSubmit: boolean;
  /** The draft equals the schema of the version it started from: nothing to save. */
  unchanged: boolean;
  /** The engine named current states that break exactly this draft. */
  offerSaveAnyway: boolean;
  /** The last check was of another text. */
  checkStale: boolean;
}

export function editOffer(args: {
  text: string;
  parsed: unknown;
  base: JsonObject | undefined;
  checked?: { text: string; result: Pick<UpdateEntityTypeResponse, "invalidInstances"> };
  refusedText?: string;
}): EditOffer {
  const { text, parsed, base, checked, refusedText } = args;
  const canSubmit = parsed !== undefined;
  const unchanged = canSubmit && equal(parsed, base ?? {});
  const checkedThis = checked !== undefined && checked.text === text;
  const offerSaveAnyway = canSubmit && !unchanged && ((checkedThis && checked.result.invalidInstances > 0n) || refusedText === text);
  return { canSubmit, unchanged, offerSaveAnyway, checkStale: checked !== undefined && !checkedThis };
}

export function EditSchema({
  entityType,
  onSaved,
  onClose,
  onReload,
}: {
  entityType: EntityType;
  onSaved: (r: UpdateEntityTypeResponse) => void;
  onClose: () => void;
  /** Re-reads the type after a conflict; resolves to it. */
  onReload: () => Promise<EntityType | undefined>;
}) {
  const type = entityType.name;
  const [text, setText] = useState(() => JSON.stringify(entityType.schema ?? {}, null, 2));
  // The version the draft started from, sent as expected_schema_version. It moves only when the
  // user reloads after a conflict, never behind their back.
  const [base, setBase] = useState<{ version: bigint; schema: JsonObject | undefined }>(() => ({
    version: entityType.schemaVersion,
    schema: entityType.schema,
  }));
  const [checked, setChecked] = useState<{ text: string; result: UpdateEntityTypeResponse } | undefined>();
  const [refusedText, setRefusedText] = useState<string | undefined>();
  const [confirming, setConfirming] = useState(false);
  const [reloaded, setReloaded] = useState<bigint | undefined>();
  const meta = useMemo(() => checkSchemaText(text), [text]);
  const parsed = useMemo(() => {
    if (meta.parseError) return undefined;
    return JSON.parse(text) as JsonObject;
  }, [text, meta.parseError]);
  const offer = editOffer({ text, parsed, base: base.schema, checked, refusedText });
  const qc = useQueryClient();
  const check = useMutation(EntityTypeService.method.updateEntityType);
  const save = useMutation(EntityTypeService.method.updateEntityType);

  const runCheck = (draft: string, schema: JsonObject) =>
    check.mutate(
      { entityType: type, schema, expectedSchemaVersion: base.version, dryRun: true },
      { onSuccess: (result) => setChecked({ text: draft, result }) },
    );
  const runSave = (allowInvalidExisting: boolean) => {
    if (!parsed) return;
    const draft = text;
    check.reset();
    save.mutate(
      { entityType: type, schema: parsed, expectedSchemaVersion: base.version, allowInvalidExisting },
      {
        onSuccess: (r) => {
          void qc.invalidateQueries();
          onSaved(r);
        },
        onError: (e) => {
          // Refused because current states break it: show which, from a dry run of the same draft.
          if (isCode(e, Code.FailedPrecondition)) {
            setRefusedText(draft);
            runCheck(draft, parsed);
          }
        },
      },
    );
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    runSave(false);
  };
  const conflict = (save.isError && isCode(save.error, Code.Aborted)) || (check.isError && isCode(check.error, Code.Aborted));
  const conflictError = save.isError && isCode(save.error, Code.Aborted) ? save.error : check.error;
  const busy = save.isPending || check.isPending;

  return (
    <form className="card form" onSubmit={submit} aria-labelledby="edit-schema-h" data-testid="edit-schema">
      <h2 id="edit-schema-h">Edit the schema</h2>
      <p className="muted">
        Saving makes a new schema version ({(base.version + 1n).toString()}) from version {base.version.toString()}. Every
        current state of {type} is checked against it first; events are then validated against the new version.
      </p>
      <label htmlFor="edit-schema-text">JSON Schema</label>
      <JsonEditor id="edit-schema-text" label="JSON Schema" value={text} onChange={setText} minHeight="12rem" />
      <div className="check" aria-live="polite" data-testid="edit-schema-check">
        {meta.parseError ? (
          <p className="field-error">{meta.parseError}</p>
        ) : meta.violations.length > 0 ? (
          <>
            <p className="field-error">Not a valid JSON Schema ({meta.draft}):</p>
            <ul className="violations">
              {meta.violations.map((v, i) => (
                <li key={i}>
                  <code className="violation-path">{v.path || "(root)"}</code> {v.message}
                </li>
              ))}
            </ul>
          </>
        ) : offer.unchanged ? (
          <p className="muted">The same schema as version {base.version.toString()}: nothing to save yet.</p>
        ) : (
          <p className="ok">Valid JSON Schema ({meta.draft}).</p>
        )}
      </div>
      {reloaded !== undefined ? (
        <p className="muted" role="status">
          Reloaded: the type is at schema version {reloaded.toString()} now. Your draft is kept; compare it with that
          version before saving.
        </p>
      ) : null}
      {conflict ? (
        <div className="state state-error" role="alert" data-code="ABORTED">
          <p>
            <strong>Changed by someone else.</strong> The schema is no longer at version {base.version.toString()};
            nothing was saved. <code className="code-name">ABORTED</code> {conflictError?.rawMessage}
          </p>
          <button
            type="button"
            onClick={async () => {
              save.reset();
              check.reset();
              setChecked(undefined);
              setRefusedText(undefined);
              const fresh = await onReload();
              if (fresh) {
                setBase({ version: fresh.schemaVersion, schema: fresh.schema });
                setReloaded(fresh.schemaVersion);
              }
            }}
          >
            Reload the type
          </button>
        </div>
      ) : save.isError ? (
        <ErrorView
          error={save.error}
          title="The engine refused the schema"
          hideViolations={isCode(save.error, Code.FailedPrecondition)}
        />
      ) : null}
      {check.isError && !conflict ? <ErrorView error={check.error} title="The check failed" /> : null}
      {checked && !check.isPending ? (
        <>
          {offer.checkStale ? (
            <p className="muted" data-testid="check-stale">
              The draft changed since this check; check again.
            </p>
          ) : null}
          <SchemaViolations type={type} result={checked.result} />
        </>
      ) : null}
      <div className="actions">
        <button
          type="button"
          disabled={busy || !offer.canSubmit || offer.unchanged}
          onClick={() => parsed && runCheck(text, parsed)}
        >
          {check.isPending ? "Checking…" : "Check"}
        </button>
        <button type="submit" className="primary" disabled={busy || !offer.canSubmit || offer.unchanged}>
          {save.isPending ? "Saving…" : "Save"}
        </button>
        {offer.offerSaveAnyway ? (
          <button type="button" className="danger" disabled={busy} onClick={() => setConfirming(true)}>
            Save anyway (allow invalid existing)
          </button>
        ) : null}
        <button type="button" onClick={onClose}>
          Cancel
        </button>
      </div>
      {confirming ? (
        <ConfirmDialog
          title="Save a schema that current states break?"
          confirmLabel="Save anyway"
          danger
          onCancel={() => setConfirming(false)}
          onConfirm={() => {
            setConfirming(false);
            runSave(true);
          }}
        >
          <p>
            {checked && checked.text === text ? checkSummary(checked.result) : "Some current states break this schema."}
          </p>
          <p>
            Those instances keep their state as it is, but every next event of theirs is validated against the new
            schema: each must be fixed by its next event.
          </p>
        </ConfirmDialog>
      ) : null}
    </form>
  );
}
