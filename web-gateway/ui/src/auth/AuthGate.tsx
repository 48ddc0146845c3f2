// Decides, before the console's pages render, who the user is: it finishes an OpenID Connect
// sign-in on /auth/callback, asks the engine GetCaller with the held credential, and shows the
// sign-in page when the engine wants credentials. Pages read the caller with `useCaller()` to
// hide what its scopes do not allow.
import { createContext, useContext, useEffect, useState, useSyncExternalStore, type ReactNode } from "react";
import { createClient, Code, ConnectError, type Transport } from "@connectrpc/connect";
import { useQueryClient } from "@tanstack/react-query";
import { AuthService, CallerKind, type GetCallerResponse } from "@temporal-state/client";
import { toShownError } from "../api/errors";
import { Loading } from "../components/Status";
import { allows, type Access } from "./scopes";
import { CALLBACK_PATH, completeSignIn, type OidcSettings } from "./oidc";
import type { Session } from "./session";
import { SignIn } from "./SignIn";

export interface CallerInfo {
  /** Null: unknown (an engine without GetCaller, or it failed): nothing is hidden. */
  caller: GetCallerResponse | null;
  session: Session | null;
  /** Whether the caller may `access` the type `entityType` (or, without one, some type). */
  can: (access: Access, entityType?: string) => boolean;
}

const CallerContext = createContext<CallerInfo>({ caller: null, session: null, can: () => true });

export function useCaller(): CallerInfo {
  return useContext(CallerContext);
}

export interface ConsoleConfig {
  oidc: OidcSettings | null;
}

/** `/console-config.json` from the gateway; a server without it (the Vite dev server) means no OIDC. */
export async function loadConsoleConfig(fetchFn: typeof fetch = fetch): Promise<ConsoleConfig> {
  try {
    const r = await fetchFn("/console-config.json", { headers: { accept: "application/json" } });
    if (!r.ok || !(r.headers.get("content-type") ?? "").includes("json")) return { oidc: null };
    const c = (await r.json()) as Partial<ConsoleConfig>;
    return { oidc: c.oidc ?? null };
  } catch {
    return { oidc: null };
  }
}

type Phase =
  | { phase: "loading" }
  | { phase: "signed-in"; caller: GetCallerResponse | null }
  | { phase: "sign-in" };

export function AuthGate({ session, transport, children }: { session: Session; transport: Transport; children: ReactNode }) {
  const state = useSyncExternalStore(session.subscribe, session.getSnapshot);
  const queries = useQueryClient();
  const [config, setConfig] = useState<ConsoleConfig | null>(null);
  const [callbackError, setCallbackError] = useState<string | null>(null);
  const [phase, setPhase] = useState<Phase>({ phase: "loading" });
  const [finishing, setFinishing] = useState(() => window.location.pathname === CALLBACK_PATH);

  useEffect(() => {
    void loadConsoleConfig().then(setConfig);
  }, []);

  // Back from the issuer: exchange the code, then continue where the user was.
  useEffect(() => {
    if (!finishing) return;
    let live = true;
    completeSignIn(window.location.search, { storage: window.sessionStorage })
      .then(({ credential, returnTo }) => {
        if (!live) return;
        window.history.replaceState(null, "", returnTo);
        session.signIn(credential);
      })
      .catch((e: Error) => {
        if (!live) return;
        window.history.replaceState(null, "", "/");
        setCallbackError(e.message);
      })
      .finally(() => live && setFinishing(false));
    return () => {
      live = false;
    };
  }, [finishing, session]);

  // Who the engine takes us for, again whenever the credential changes. A change of user also
  // drops every cached answer: what one user may read is not what the next may.
  const token = state.credential?.token ?? null;
  useEffect(() => setCallbackError(null), [token]);
  useEffect(() => {
    if (finishing) return;
    let live = true;
    queries.clear();
    setPhase({ phase: "loading" });
    createClient(AuthService, transport)
      .getCaller({})
      .then((caller) => live && setPhase({ phase: "signed-in", caller }))
      .catch((e) => {
        if (!live) return;
        const code = ConnectError.from(e).code;
        if (code === Code.Unauthenticated) setPhase({ phase: "sign-in" });
        // Unreachable engine, an older one without GetCaller: show the console; its pages say
        // what fails, and nothing is hidden that the engine might allow.
        else setPhase({ phase: "signed-in", caller: null });
      });
    return () => {
      live = false;
    };
  }, [token, transport, finishing, queries]);

  if (finishing || phase.phase === "loading" || config === null) return <Loading what="the console" />;
  if (phase.phase === "sign-in" || (state.credential === null && phase.caller?.authenticationEnabled)) {
    return <SignIn session={session} oidc={config.oidc} refusal={callbackError ?? state.refusal} />;
  }
  const caller = phase.caller;
  const info: CallerInfo = {
    caller,
    session,
    can: (access, entityType) => caller === null || allows(caller.scopes, access, entityType),
  };
  return <CallerContext.Provider value={info}>{children}</CallerContext.Provider>;
}

/** The header's "who am I": the name, how they signed in, the scopes, and sign-out. */
export function WhoAmI() {
  const { caller, session } = useCaller();
  if (!caller || !session || !caller.authenticationEnabled) return null;
  const how = caller.kind === CallerKind.JWT ? "OpenID Connect" : caller.kind === CallerKind.API_KEY ? "API key" : "";
  return (
    <div className="whoami" data-testid="whoami">
      <span className="whoami-name" title={how ? `Signed in with ${how}` : undefined}>
        {caller.name || "(unnamed)"}
      </span>
      <span className="whoami-scopes muted" data-testid="whoami-scopes">
        {caller.scopes.length ? caller.scopes.join(" ") : "no scopes"}
      </span>
      <button type="button" onClick={() => session.signOut()}>
        Sign out
      </button>
    </div>
  );
}

/** What a refused call says, for the sign-in page. */
export function refusalText(e: unknown): string {
  const shown = toShownError(e);
  return `${shown.codeName} ${shown.message}`;
}
