// Token paging for the List*/GetHistory RPCs: the current page's token lives in the URL (so a page
// is shareable); the tokens of earlier pages are kept in memory for "Previous".
import { useCallback, useRef } from "react";
import { useSearchParams } from "react-router";
import { updateParams } from "../lib/url";

export function usePageToken(param = "page") {
  const [params, setParams] = useSearchParams();
  const token = params.get(param) ?? "";
  const stack = useRef<string[]>([]);
  const go = useCallback(
    (next: string, push: boolean) => {
      if (push) stack.current.push(token);
      setParams((p) => updateParams(p, { [param]: next }));
    },
    [param, setParams, token],
  );
  return {
    token,
    next: (nextToken: string) => go(nextToken, true),
    prev: () => go(stack.current.pop() ?? "", false),
    first: () => {
      stack.current = [];
      go("", false);
    },
    hasPrev: token !== "",
    reset: () => {
      stack.current = [];
    },
  };
}

export function Pager({
  pager,
  nextToken,
  label,
}: {
  pager: ReturnType<typeof usePageToken>;
  nextToken: string | undefined;
  label: string;
}) {
  if (!pager.hasPrev && !nextToken) return null;
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button type="button" onClick={pager.first} disabled={!pager.hasPrev}>
        First
      </button>
      <button type="button" onClick={pager.prev} disabled={!pager.hasPrev}>
        Previous
      </button>
      <button type="button" onClick={() => nextToken && pager.next(nextToken)} disabled={!nextToken}>
        Next
      </button>
    </nav>
  );
}
