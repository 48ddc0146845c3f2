// Shareable URLs: every view's state lives in its path and query string.
export function typePath(type: string): string {
  return `/types/${encodeURIComponent(type)}`;
}

export function instancesPath(type: string, params?: Record<string, string | undefined>): string {
  return withQuery(`${typePath(type)}/instances`, params);
}

export function analyticsPath(type: string, params?: Record<string, string | undefined>): string {
  return withQuery(`${typePath(type)}/analytics`, params);
}

export function instancePath(
  type: string,
  externalId: string,
  params?: Record<string, string | number | undefined>,
): string {
  return withQuery(`${typePath(type)}/instances/${encodeURIComponent(externalId)}`, params);
}

export function withQuery(path: string, params?: Record<string, string | number | undefined>): string {
  if (!params) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** A positive integer query parameter, or undefined when missing or not one. */
export function intParam(params: URLSearchParams, name: string): number | undefined {
  const v = params.get(name);
  if (v === null || !/^[1-9][0-9]{0,15}$/.test(v)) return undefined;
  return Number(v);
}

/** A copy of `params` with `changes` applied (undefined/"" removes the key). */
export function updateParams(
  params: URLSearchParams,
  changes: Record<string, string | number | undefined | null>,
): URLSearchParams {
  const next = new URLSearchParams(params);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined || v === null || v === "") next.delete(k);
    else next.set(k, String(v));
  }
  return next;
}
