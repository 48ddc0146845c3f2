// One entity type: its schema, its fields, and links to its instances and analytics.
import { Link, useParams } from "react-router";
import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { AnalyticsService } from "@temporal-state/client";
import { useEntityType } from "../api/hooks";
import { ErrorView, Loading } from "../components/Status";
import { JsonTree } from "../components/JsonTree";
import { formatTs } from "../lib/time";
import { analyticsPath, instancesPath } from "../lib/url";
import { schemaFields } from "../lib/json";

export default function TypeDetail() {
  const { type = "" } = useParams();
  const t = useEntityType(type);
  const summary = useQuery(AnalyticsService.method.getSummary, t.data ? { entityType: t.data.id } : skipToken);
  if (t.isPending) return <Loading what={`entity type ${type}`} />;
  if (t.isError) return <ErrorView error={t.error} title={`Entity type ${type}`} />;
  const et = t.data!;
  const fields = schemaFields(et.schema);
  return (
    <section>
      <div className="page-head">
        <h1>{et.name}</h1>
        <div className="actions">
          <Link className="button" to={instancesPath(et.name)}>
            Instances
          </Link>
          <Link className="button" to={analyticsPath(et.name)}>
            Analytics
          </Link>
        </div>
      </div>
      {et.description ? <p>{et.description}</p> : null}
      <dl className="facts">
        <dt>Id</dt>
        <dd>
          <code>{et.id}</code>
        </dd>
        <dt>Created</dt>
        <dd>{formatTs(et.createdAt)}</dd>
        <dt>Instances</dt>
        <dd>{summary.data ? summary.data.instanceCount.toString() : "…"}</dd>
        <dt>Events</dt>
        <dd>{summary.data ? summary.data.eventCount.toString() : "…"}</dd>
      </dl>
      <div className="two-col">
        <section aria-labelledby="schema-h">
          <h2 id="schema-h">Schema</h2>
          <JsonTree value={et.schema} label="schema" />
        </section>
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
      </div>
    </section>
  );
}
