// The loading, empty and error states every page shows.
import type { ReactNode } from "react";
import { toShownError } from "../api/errors";

export function Loading({ what }: { what: string }) {
  return (
    <p className="state state-loading" role="status" aria-live="polite">
      <span className="spinner" aria-hidden="true" /> Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="state state-empty">{children}</p>;
}

/** A failed call: its gRPC code name and message, and schema violations listed per path. */
export function ErrorView({
  error,
  title,
  children,
  hideViolations = false,
}: {
  error: unknown;
  title?: string;
  children?: ReactNode;
  /** For a page that lists the violations itself, in more detail. */
  hideViolations?: boolean;
}) {
  const e = toShownError(error);
  return (
    <div className="state state-error" role="alert" data-code={e.codeName}>
      <p>
        {title ? <strong>{title}: </strong> : null}
        <code className="code-name">{e.codeName}</code> {e.message}
      </p>
      {e.violations.length > 0 && !hideViolations ? (
        <ul className="violations" aria-label="Schema violations">
          {e.violations.map((v, i) => (
            <li key={i}>
              <code className="violation-path">{v.path === "" ? "(root)" : v.path}</code>{" "}
              <span className="violation-message">{v.message}</span>
            </li>
          ))}
        </ul>
      ) : null}
      {children}
    </div>
  );
}
