// One entity type: its schema and every earlier version of it, its fields, and links to its
// instances and analytics. An admin edits the description and the schema (a new schema version,
// checked against every current state first: see type/EditSchema.tsx) and deletes a type that
// has no instances. URL state: `?schema=N` shows version N, `?edit=1` opens the schema editor.
import { useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { AnalyticsService, EntityTypeService, type UpdateEntityTypeResponse } from "@temporal-state/client";
import { useCaller } from "../auth/AuthGate";
import { ErrorView, Loading } from "../components/Status";
import { JsonTree } from "../components/JsonTree";
import { formatTs } from "../lib/time";
import { analyticsPath, instancesPath, updateParams } from "../lib/url";
import { schemaFields } from "../lib/json";
import { EditSchema } from "./type/EditSchema";
import { SchemaVersions, selectedVersion } from "./type/SchemaVersions";
import { DeleteTypeDialog, useDeleteType } from "./type/DeleteType";
import { Description } from "./type/Description";
import { SchemaViolations } from "./type/Violations";

export default function TypeDetail() {
  const { type = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const t = useQuery(EntityTypeService.method.getEntityType, { entityType: type });
  const summary = useQuery(AnalyticsService.method.getSummary, t.data?.entityType ? { entityType: t.data.entityType.id } : skipToken);
  const isAdmin = useCaller().can("admin", type);
  const deletion = useDeleteType(type);
  const [saved, setSaved] = useState<UpdateEntityTypeResponse | undefined>();
  if (t.isPending) return <Loading what={`entity type ${type}`} />;
  if (t.isError) return <ErrorView error={t.error} title={`Entity type ${type}`} />;
  const et = t.data.entityType!;
  const versions = t.data.schemaVersions;
  const shown = selectedVersion(params, versions);
  const shownSchema = shown?.schema ?? et.schema;
  const isCurrent = shown === undefined || shown.version === et.schemaVersion;
  const fields = schemaFields(shownSchema);
  const editing = params.get("edit") === "1" && isAdmin;
  const setEditing = (on: boolean) => setParams((p) => updateParams(p, { edit: on ? "1" : undefined }), { replace: true });
  return (
    <section className="type-page">
      <div className="page-head">
        <h1>{et.name}</h1>
        <div className="actions">
          <Link className="button" to={instancesPath(et.name)}>
            Instances
          </Link>
          <Link className="button" to={analyticsPath(et.name)}>
            Analytics
          </Link>
          {isAdmin ? (
            <>
              <button
                type="button"
                aria-expanded={editing}
                onClick={() => {
                  setSaved(undefined);
                  setEditing(!editing);
                }}
              >
                {editing ? "Close the editor" : "Edit schema"}
              </button>
              <button type="button" className="danger-outline" onClick={() => deletion.setConfirming(true)} disabled={deletion.del.isPending}>
                {deletion.del.isPending ? "Deleting…" : "Delete type"}
              </button>
            </>
          ) : null}
        </div>
      </div>
      <DeleteTypeDialog type={et.name} instanceCount={summary.data?.instanceCount} state={deletion} />
      <Description key={et.description} type={et.name} description={et.description} editable={isAdmin} />
      <dl className="facts">
        <div>
          <dt>Id</dt>
          <dd>
            <code>{et.id}</code>
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatTs(et.createdAt)}</dd>
        </div>
        <div>
          <dt>Schema version</dt>
          <dd data-testid="schema-version">{et.schemaVersion.toString()}</dd>
        </div>
        <div>
          <dt>Instances</dt>
          <dd>{summary.data ? summary.data.instanceCount.toString() : "…"}</dd>
        </div>
        <div>
          <dt>Events</dt>
          <dd>{summary.data ? summary.data.eventCount.toString() : "…"}</dd>
        </div>
      </dl>
      {saved ? (
        <div className="state state-ok" role="status" data-testid="schema-saved">
          <p>
            <strong>Saved as schema version {saved.entityType!.schemaVersion.toString()}.</strong>{" "}
            {saved.invalidInstances > 0n
              ? "Accepted although current states break it: each must be fixed by its next event."
              : `Checked ${saved.checkedInstances} current state${saved.checkedInstances === 1n ? "" : "s"}: all satisfy it.`}
          </p>
          {saved.invalidInstances > 0n ? <SchemaViolations type={et.name} result={saved} /> : null}
        </div>
      ) : null}
      {editing ? (
        <EditSchema
          key={et.id}
          entityType={et}
          onClose={() => setEditing(false)}
          onSaved={(r) => {
            setSaved(r);
            setParams((p) => updateParams(p, { edit: undefined, schema: undefined }), { replace: true });
          }}
          onReload={async () => (await t.refetch()).data?.entityType}
        />
      ) : null}
      <div className="two-col">
        <section aria-labelledby="schema-h">
          <h2 id="schema-h">
            Schema{" "}
            <span className="muted" data-testid="shown-schema-version">
              version {(shown?.version ?? et.schemaVersion).toString()}
              {isCurrent ? " (current)" : ` of ${et.schemaVersion}`}
            </span>
          </h2>
          {!isCurrent ? (
            <p className="muted">
              An earlier version, accepted {formatTs(shown?.createdAt)}.{" "}
              <Link to={`?${updateParams(params, { schema: undefined }).toString()}`} replace>
                Show the current one
              </Link>
            </p>
          ) : null}
          <JsonTree value={shownSchema} label="schema" testId="schema-tree" />
        </section>
        <div>
          <section aria-labelledby="fields-h">
            <h2 id="fields-h">Fields</h2>
            {fields.length === 0 ? (
              <p className="muted">The schema declares no properties.</p>
            ) : (
              <ul className="plain-list">
                {fields.map((f) => (
                  <li key={f.pointer}>
                    <code>{f.pointer}</code> <span className="muted">{f.kinds.join(" | ")}</span>
                  </li>
                ))}
              </ul>
            )}
          </section>
          <section aria-labelledby="versions-h" className="versions">
            <h2 id="versions-h">Schema versions</h2>
            <SchemaVersions versions={versions} shown={shown?.version} />
          </section>
        </div>
      </div>
    </section>
  );
}
