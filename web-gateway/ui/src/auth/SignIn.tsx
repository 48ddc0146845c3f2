// The sign-in page: paste an API key, or sign in with OpenID Connect when the gateway names an
// issuer. Shown when the engine answers UNAUTHENTICATED; the reason a credential was refused
// (a wrong key, an expired token) is said above the form.
import { useState, type FormEvent } from "react";
import { beginSignIn, type OidcSettings } from "./oidc";
import type { Session } from "./session";

export function SignIn({ session, oidc, refusal }: { session: Session; oidc: OidcSettings | null; refusal: string | null }) {
  const [key, setKey] = useState("");
  const [redirecting, setRedirecting] = useState(false);
  const [oidcError, setOidcError] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const token = key.trim();
    if (token) session.signIn({ kind: "api-key", token });
  };
  const withOidc = async () => {
    setOidcError(null);
    setRedirecting(true);
    try {
      const here = window.location.pathname + window.location.search;
      const url = await beginSignIn(oidc!, { storage: window.sessionStorage, origin: window.location.origin, returnTo: here });
      window.location.assign(url);
    } catch (e) {
      setOidcError((e as Error).message);
      setRedirecting(false);
    }
  };
  return (
    <main id="main" className="signin">
      <section className="card signin-card" aria-labelledby="signin-h">
        <h1 id="signin-h">Sign in to Temporal State</h1>
        <p className="muted">This server requires credentials for every call.</p>
        {refusal ? (
          <div className="state state-error" role="alert" data-testid="signin-refusal">
            <p>
              <strong>Not signed in: </strong>
              {refusal}
            </p>
          </div>
        ) : null}
        {oidc ? (
          <>
            <button type="button" className="primary" onClick={() => void withOidc()} disabled={redirecting}>
              {redirecting ? "Redirecting…" : "Sign in with OpenID Connect"}
            </button>
            <p className="muted small">at {oidc.issuer}</p>
            {oidcError ? (
              <div className="state state-error" role="alert">
                <p>{oidcError}</p>
              </div>
            ) : null}
            <p className="signin-or muted">or</p>
          </>
        ) : null}
        <form onSubmit={submit} className="signin-form">
          <label htmlFor="api-key">API key</label>
          <input
            id="api-key"
            type="password"
            autoComplete="off"
            spellCheck={false}
            value={key}
            onChange={(e) => setKey(e.target.value)}
          />
          <button type="submit" className={oidc ? undefined : "primary"} disabled={key.trim() === ""}>
            Sign in with the key
          </button>
        </form>
        <p className="muted small">
          The key stays in this tab's session storage (gone when the tab closes) and is sent to the server as
          <code> authorization: Bearer …</code>.
        </p>
      </section>
    </main>
  );
}
