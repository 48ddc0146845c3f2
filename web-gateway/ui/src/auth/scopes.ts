// What the caller's scopes allow, by the engine's own rule (server/src/domain/principal.rs):
// `read` < `write` < `admin`, each including the ones below, each optionally narrowed to one
// entity type (`write:orders`). Used only to hide controls: the engine checks every call anyway.
export type Access = "read" | "write" | "admin";

const RANK: Record<Access, number> = { read: 1, write: 2, admin: 3 };

interface Scope {
  rank: number;
  entityType: string | null;
}

function parse(text: string): Scope | null {
  const [level, type, extra] = text.split(":");
  if (extra !== undefined || !(level in RANK)) return null;
  if (type !== undefined && type === "") return null;
  return { rank: RANK[level as Access], entityType: type ?? null };
}

/** Whether `scopes` allow `access` to the type `entityType`, or, without one, to some type. */
export function allows(scopes: readonly string[], access: Access, entityType?: string): boolean {
  return scopes
    .map(parse)
    .some((s) => s !== null && s.rank >= RANK[access] && (entityType === undefined || s.entityType === null || s.entityType === entityType));
}
