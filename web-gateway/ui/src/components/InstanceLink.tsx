// A link to an instance known only by its UUID (events carry no external id): the external id
// is looked up once and cached.
import { Link } from "react-router";
import { useInstanceById } from "../api/hooks";
import { instancePath } from "../lib/url";

export function InstanceLink({ instanceId, version }: { instanceId: string; version?: bigint }) {
  const q = useInstanceById(instanceId);
  if (!q.data) return <code title={instanceId}>{instanceId.slice(0, 8)}…</code>;
  return (
    <Link to={instancePath(q.data.entityTypeName, q.data.externalId, { version: version?.toString() })}>
      {q.data.entityTypeName}/{q.data.externalId}
    </Link>
  );
}
