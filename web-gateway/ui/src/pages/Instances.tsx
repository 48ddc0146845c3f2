// The instances of one type: a paged table (archived ones only with `?archived=1`, marked),
// search by external id, and a form that creates an instance, its initial state checked against
// the type's schema as you type.
import { useMemo, useState, type FormEvent } from "react";
import { Link, useLocation, useNavigate, useParams, useSearchParams } from "react-router";
import { useMutation, useQuery } from "@connectrpc/connect-query";
import { skipToken, useQueryClient } from "@tanstack/react-query";
import { Code } from "@connectrpc/connect";
import { InstanceService } from "@temporal-state/client";
import { useEntityType } from "../api/hooks";
import { useCaller } from "../auth/AuthGate";
import { isCode } from "../api/errors";
import { Empty, ErrorView, Loading } from "../components/Status";
import { Pager, usePageToken } from "../components/Pager";
import { ArchivedBadge } from "../components/Badges";
import { JsonEditor } from "../components/LazyJsonEditor";
import { checkState } from "../lib/stateCheck";
import { parseObject } from "../lib/json";
import { formatTs } from "../lib/time";
import { instancePath, updateParams } from "../lib/url";

const PAGE_SIZE = 25;

export default function Instances() {
  const { type = "" } = useParams();
  const [params, setParams] = useSearchParams();
  const pager = usePageToken();
  const q = params.get("q") ?? "";
  const [search, setSearch] = useState(q);
  const mayCreate = useCaller().can("write", type);
  const creating = params.get("create") === "1" && mayCreate;
  const showArchived = params.get("archived") === "1";
  const notice = (useLocation().state as { notice?: string } | null)?.notice;
  const list = useQuery(InstanceService.method.listInstances, {
    entityType: type,
    pageSize: PAGE_SIZE,
    pageToken: pager.token,
    includeArchived: showArchived,
  });
  const found = useQuery(InstanceService.method.getCurrentState, q ? { entityType: type, externalId: q } : skipToken);
  const submitSearch = (e: FormEvent) => {
    e.preventDefault();
    setParams((p) => updateParams(p, { q: search.trim() }));
  };
  return (
    <section>
      <div className="page-head">
        <h1>Instances of {type}</h1>
        {mayCreate ? (
          <button
            type="button"
            aria-expanded={creating}
            onClick={() => setParams((p) => updateParams(p, { create: creating ? undefined : "1" }))}
          >
            {creating ? "Close the form" : "Create an instance"}
          </button>
        ) : null}
      </div>
      {notice ? (
        <p className="state state-ok" role="status" data-testid="notice">
          {notice}
        </p>
      ) : null}
      {creating ? <CreateInstance type={type} /> : null}
      <form className="search" role="search" onSubmit={submitSearch}>
        <label htmlFor="search-id">External id</label>
        <input id="search-id" value={search} onChange={(e) => setSearch(e.target.value)} placeholder="player-001" />
        <button type="submit">Find</button>
        {q ? (
          <button type="button" onClick={() => { setSearch(""); setParams((p) => updateParams(p, { q: undefined })); }}>
            Clear
          </button>
        ) : null}
        <span className="toggle">
          <input
            id="show-archived"
            type="checkbox"
            checked={showArchived}
            onChange={(e) => {
              // Another list, so its pages start over.
              pager.reset();
              setParams((p) => updateParams(p, { archived: e.target.checked ? "1" : undefined, page: undefined }));
            }}
          />
          <label htmlFor="show-archived">Show archived</label>
        </span>
      </form>
      {q ? (
        <div className="card" aria-live="polite">
          {found.isPending ? (
            <Loading what={`instance ${q}`} />
          ) : found.isError ? (
            isCode(found.error, Code.NotFound) ? (
              <Empty>No instance of {type} has the external id “{q}”.</Empty>
            ) : (
              <ErrorView error={found.error} title="Search failed" />
            )
          ) : (
            <p>
              Found <Link to={instancePath(type, found.data.instance!.externalId)}>{found.data.instance!.externalId}</Link> at
              version {found.data.instance!.version.toString()}
              {found.data.instance!.archived ? <ArchivedBadge /> : null}.
            </p>
          )}
        </div>
      ) : null}
      {list.isPending ? (
        <Loading what="instances" />
      ) : list.isError ? (
        <ErrorView error={list.error} title={`Listing instances of ${type} failed`} />
      ) : list.data.instances.length === 0 ? (
        <Empty>
          No {showArchived ? "" : "active "}instances{pager.hasPrev ? " on this page" : " yet"}.
          {showArchived ? null : " Archived ones are listed with “Show archived”."}
        </Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">External id</th>
                <th scope="col" className="num">Version</th>
                <th scope="col">Created</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {list.data.instances.map((i) => (
                <tr key={i.id} data-external-id={i.externalId} className={i.archived ? "archived" : undefined}>
                  <th scope="row">
                    <Link to={instancePath(type, i.externalId)}>{i.externalId}</Link>
                    {i.archived ? <ArchivedBadge /> : null}
                  </th>
                  <td className="num">{i.version.toString()}</td>
                  <td>{formatTs(i.createdAt)}</td>
                  <td>{formatTs(i.updatedAt)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager pager={pager} nextToken={list.data?.nextPageToken} label="Instance" />
    </section>
  );
}

function CreateInstance({ type }: { type: string }) {
  const et = useEntityType(type);
  const [externalId, setExternalId] = useState("");
  const [stateText, setStateText] = useState("{}");
  const parsed = useMemo(() => parseObject(stateText), [stateText]);
  const violations = useMemo(
    () => (parsed.value && et.data ? checkState(et.data.schema, parsed.value) : []),
    [parsed.value, et.data],
  );
  const navigate = useNavigate();
  const qc = useQueryClient();
  const create = useMutation(InstanceService.method.createInstance, {
    onSuccess: (r) => {
      void qc.invalidateQueries();
      navigate(instancePath(type, r.instance!.externalId));
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (!parsed.value) return;
    create.mutate({ entityType: type, externalId, initialState: parsed.value });
  };
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="create-instance-h">
      <h2 id="create-instance-h">Create an instance of {type}</h2>
      <label htmlFor="instance-external-id">External id</label>
      <input id="instance-external-id" value={externalId} onChange={(e) => setExternalId(e.target.value)} required autoComplete="off" />
      <label htmlFor="instance-state">Initial state</label>
      <JsonEditor id="instance-state" label="Initial state" value={stateText} onChange={setStateText} />
      <div className="check" aria-live="polite" data-testid="state-check">
        {parsed.error ? (
          <p className="field-error">{parsed.error}</p>
        ) : et.isPending ? (
          <p className="muted">Loading the schema…</p>
        ) : et.isError ? (
          <ErrorView error={et.error} title="The type's schema" />
        ) : violations.length > 0 ? (
          <>
            <p className="field-error">The state does not satisfy the schema of {type}:</p>
            <ul className="violations">
              {violations.map((v, i) => (
                <li key={i}>
                  <code className="violation-path">{v.path || "(root)"}</code> {v.message}
                </li>
              ))}
            </ul>
          </>
        ) : (
          <p className="ok">The state satisfies the schema.</p>
        )}
      </div>
      {create.isError ? <ErrorView error={create.error} title="The engine refused the instance" /> : null}
      <div className="actions">
        <button type="submit" className="primary" disabled={create.isPending || !parsed.value || violations.length > 0}>
          {create.isPending ? "Creating…" : "Create instance"}
        </button>
      </div>
    </form>
  );
}
