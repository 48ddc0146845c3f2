// Entity types: a paged list, and the form that creates a type. The schema editor checks the
// schema against its meta-schema as you type; the engine's own errors are listed per path.
import { useMemo, useState, type FormEvent } from "react";
import { Link, useLocation, useNavigate, useSearchParams } from "react-router";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { EntityTypeService } from "@temporal-state/client";
import { Empty, ErrorView, Loading } from "../components/Status";
import { Pager, usePageToken } from "../components/Pager";
import { useCaller } from "../auth/AuthGate";
import { JsonEditor } from "../components/LazyJsonEditor";
import { checkSchemaText } from "../lib/schemaCheck";
import { formatTs } from "../lib/time";
import { instancesPath, typePath, updateParams } from "../lib/url";
import type { JsonObject } from "../lib/json";

const PAGE_SIZE = 25;

export default function Types() {
  const [params, setParams] = useSearchParams();
  const pager = usePageToken();
  const list = useQuery(EntityTypeService.method.listEntityTypes, { pageSize: PAGE_SIZE, pageToken: pager.token });
  // Creating a type takes `admin` (for that type's name): offered to any admin scope.
  const mayCreate = useCaller().can("admin");
  const creating = params.get("create") === "1" && mayCreate;
  // Set by the type page after a deletion.
  const notice = (useLocation().state as { notice?: string } | null)?.notice;
  return (
    <section>
      <div className="page-head">
        <h1>Entity types</h1>
        {mayCreate ? (
          <button
            type="button"
            aria-expanded={creating}
            onClick={() => setParams((p) => updateParams(p, { create: creating ? undefined : "1" }))}
          >
            {creating ? "Close the form" : "Create a type"}
          </button>
        ) : null}
      </div>
      {notice ? (
        <p className="state state-ok" role="status" data-testid="notice">
          {notice}
        </p>
      ) : null}
      {creating ? <CreateType /> : null}
      {list.isPending ? (
        <Loading what="entity types" />
      ) : list.isError ? (
        <ErrorView error={list.error} title="Listing entity types failed" />
      ) : list.data.entityTypes.length === 0 ? (
        <Empty>No entity types{pager.hasPrev ? " on this page" : " yet"}.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Description</th>
                <th scope="col">Created</th>
                <th scope="col">Instances</th>
              </tr>
            </thead>
            <tbody>
              {list.data.entityTypes.map((t) => (
                <tr key={t.id}>
                  <th scope="row">
                    <Link to={typePath(t.name)}>{t.name}</Link>
                  </th>
                  <td>{t.description || <span className="muted">—</span>}</td>
                  <td>{formatTs(t.createdAt)}</td>
                  <td>
                    <Link to={instancesPath(t.name)}>Instances</Link>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager pager={pager} nextToken={list.data?.nextPageToken} label="Entity type" />
    </section>
  );
}

const EXAMPLE_SCHEMA = `{
  "type": "object",
  "properties": {
    "name": { "type": "string" },
    "score": { "type": "integer", "minimum": 0 }
  },
  "required": ["name"]
}`;

function CreateType() {
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [schemaText, setSchemaText] = useState(EXAMPLE_SCHEMA);
  const check = useMemo(() => checkSchemaText(schemaText), [schemaText]);
  const navigate = useNavigate();
  const qc = useQueryClient();
  const create = useMutation(EntityTypeService.method.createEntityType, {
    onSuccess: (r) => {
      void qc.invalidateQueries();
      navigate(typePath(r.entityType!.name));
    },
  });
  const nameOk = /^[a-z][a-z0-9_]{0,62}$/.test(name);
  const blocked = check.parseError !== undefined || check.violations.length > 0;
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (check.parseError) return;
    create.mutate({ name, description, schema: JSON.parse(schemaText) as JsonObject });
  };
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="create-type-h">
      <h2 id="create-type-h">Create an entity type</h2>
      <label htmlFor="type-name">Name</label>
      <input
        id="type-name"
        value={name}
        onChange={(e) => setName(e.target.value)}
        placeholder="player_profile"
        aria-describedby="type-name-help"
        autoComplete="off"
        required
      />
      <small id="type-name-help" className={name && !nameOk ? "field-error" : "muted"}>
        Lowercase letters, digits and _, starting with a letter (at most 63).
      </small>
      <label htmlFor="type-description">Description</label>
      <input id="type-description" value={description} onChange={(e) => setDescription(e.target.value)} />
      <label htmlFor="type-schema">JSON Schema</label>
      <JsonEditor id="type-schema" label="JSON Schema" value={schemaText} onChange={setSchemaText} minHeight="12rem" />
      <div className="check" aria-live="polite" data-testid="schema-check">
        {check.parseError ? (
          <p className="field-error">{check.parseError}</p>
        ) : check.violations.length > 0 ? (
          <>
            <p className="field-error">Not a valid JSON Schema ({check.draft}):</p>
            <ul className="violations">
              {check.violations.map((v, i) => (
                <li key={i}>
                  <code className="violation-path">{v.path || "(root)"}</code> {v.message}
                </li>
              ))}
            </ul>
          </>
        ) : (
          <p className="ok">Valid JSON Schema ({check.draft}).</p>
        )}
      </div>
      {create.isError ? <ErrorView error={create.error} title="The engine refused the type" /> : null}
      <div className="actions">
        <button type="submit" className="primary" disabled={create.isPending || check.parseError !== undefined}>
          {create.isPending ? "Creating…" : "Create type"}
        </button>
        {blocked && !check.parseError ? (
          <span className="muted">The engine will check it too; submit to see its answer.</span>
        ) : null}
      </div>
    </form>
  );
}
