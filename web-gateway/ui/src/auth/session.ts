// The console's credential: an API key pasted by the user or the access token of an OpenID
// Connect sign-in, kept in sessionStorage (this tab only, gone when it closes; never
// localStorage) and sent with every call as `authorization: Bearer <token>` by the interceptor
// below. The engine checks it on every call; the console only remembers it.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** The sessionStorage key of the credential. */
export const CREDENTIAL_KEY = "temporal-state.credential";
/** The sessionStorage key of an OpenID Connect sign-in in progress (state, nonce, verifier). */
export const PENDING_KEY = "temporal-state.oidc-pending";

export interface Credential {
  kind: "api-key" | "oidc";
  /** What goes after `Bearer `: the API key, or the OIDC access token. */
  token: string;
  /** OIDC: when the access token expires (ms since the epoch), if the issuer said. */
  expiresAt?: number;
}

export interface SessionState {
  credential: Credential | null;
  /** Why the last credential was dropped (the engine refused it, it expired): shown at sign-in. */
  refusal: string | null;
}

function read(storage: Storage): Credential | null {
  try {
    const raw = storage.getItem(CREDENTIAL_KEY);
    if (!raw) return null;
    const c = JSON.parse(raw) as Credential;
    if ((c.kind !== "api-key" && c.kind !== "oidc") || typeof c.token !== "string" || c.token === "") return null;
    return c;
  } catch {
    return null;
  }
}

/** The signed-in state of one tab, observable by React (useSyncExternalStore). */
export class Session {
  private state: SessionState;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly storage: Storage) {
    this.state = { credential: read(storage), refusal: null };
  }

  readonly subscribe = (listener: () => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly getSnapshot = (): SessionState => this.state;

  /** The bearer token to send now, or null. */
  token(): string | null {
    return this.state.credential?.token ?? null;
  }

  signIn(credential: Credential) {
    this.storage.setItem(CREDENTIAL_KEY, JSON.stringify(credential));
    this.set({ credential, refusal: null });
  }

  /** Forgets the credential and anything of a sign-in in progress; `refusal` says why, if it
   *  was not the user's choice. */
  signOut(refusal: string | null = null) {
    this.storage.removeItem(CREDENTIAL_KEY);
    this.storage.removeItem(PENDING_KEY);
    this.set({ credential: null, refusal });
  }

  private set(state: SessionState) {
    this.state = state;
    for (const l of this.listeners) l();
  }
}

/**
 * Adds `authorization: Bearer <token>` to every call while a credential is held. When the engine
 * answers UNAUTHENTICATED to a call that carried one (a wrong or revoked key, an expired token),
 * the credential is dropped so the console asks again; a call without one is left alone (the
 * console then simply shows the sign-in page).
 */
export function authInterceptor(session: Pick<Session, "token" | "signOut">): Interceptor {
  return (next) => async (req) => {
    const token = session.token();
    if (token) req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (e) {
      const err = ConnectError.from(e);
      if (token && err.code === Code.Unauthenticated && session.token() === token) {
        session.signOut(err.rawMessage || "the server refused the credential");
      }
      throw e;
    }
  };
}
