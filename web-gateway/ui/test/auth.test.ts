import { describe, expect, it, vi } from "vitest";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { AuthService, CallerKind } from "@temporal-state/client";
import { beginSignIn, completeSignIn, jwtClaims, s256, type Pending } from "../src/auth/oidc";
import { authInterceptor, CREDENTIAL_KEY, PENDING_KEY, Session } from "../src/auth/session";
import { allows } from "../src/auth/scopes";

const ISSUER = "https://login.example.com/realms/main";
const discovery = {
  issuer: ISSUER,
  authorization_endpoint: `${ISSUER}/authorize`,
  token_endpoint: `${ISSUER}/token`,
  code_challenge_methods_supported: ["S256"],
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** An unsigned JWT with these claims (the browser never checks signatures; the engine does). */
function jwt(claims: Record<string, unknown>): string {
  const b64 = (o: unknown) =>
    btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(o)))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${b64({ alg: "RS256" })}.${b64(claims)}.sig`;
}

/** A sign-in begun against a fake issuer: the authorization URL and what was stored. */
async function begun() {
  const storage = window.sessionStorage;
  storage.clear();
  const fetchFn = vi.fn(async () => json(discovery));
  const url = new URL(
    await beginSignIn(
      { issuer: ISSUER, clientId: "console", scopes: "openid read" },
      { storage, origin: "http://127.0.0.1:8080", returnTo: "/types?x=1", fetchFn },
    ),
  );
  const pending = JSON.parse(storage.getItem(PENDING_KEY)!) as Pending;
  return { storage, url, pending };
}

describe("PKCE and the OpenID Connect sign-in", () => {
  it("computes the S256 challenge of RFC 7636's example", async () => {
    expect(await s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  });

  it("sends the user to the issuer with a fresh state, nonce and S256 challenge", async () => {
    const { url, pending } = await begun();
    expect(url.origin + url.pathname).toBe(`${ISSUER}/authorize`);
    const p = url.searchParams;
    expect(p.get("response_type")).toBe("code");
    expect(p.get("client_id")).toBe("console");
    expect(p.get("redirect_uri")).toBe("http://127.0.0.1:8080/auth/callback");
    expect(p.get("scope")).toBe("openid read");
    expect(p.get("code_challenge_method")).toBe("S256");
    expect(p.get("state")).toBe(pending.state);
    expect(p.get("nonce")).toBe(pending.nonce);
    expect(p.get("code_challenge")).toBe(await s256(pending.verifier));
    expect(pending.verifier).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(pending.returnTo).toBe("/types?x=1");
    const again = await begun();
    expect(again.pending.state).not.toBe(pending.state);
    expect(again.pending.verifier).not.toBe(pending.verifier);
  });

  it("exchanges the code with the verifier and keeps the access token", async () => {
    const { storage, pending } = await begun();
    const fetchFn = vi.fn(async (_url: RequestInfo | URL, init?: RequestInit) => {
      const form = new URLSearchParams(init!.body as URLSearchParams);
      expect(form.get("grant_type")).toBe("authorization_code");
      expect(form.get("code")).toBe("the-code");
      expect(form.get("code_verifier")).toBe(pending.verifier);
      expect(form.get("redirect_uri")).toBe(pending.redirectUri);
      expect(form.get("client_id")).toBe("console");
      return json({
        access_token: "the-access-token",
        id_token: jwt({ iss: ISSUER, aud: "console", nonce: pending.nonce, sub: "ada" }),
        expires_in: 300,
      });
    });
    const done = await completeSignIn(`?code=the-code&state=${pending.state}`, { storage, fetchFn, now: 1000 });
    expect(fetchFn).toHaveBeenCalledWith(`${ISSUER}/token`, expect.anything());
    expect(done.credential).toEqual({ kind: "oidc", token: "the-access-token", expiresAt: 301_000 });
    expect(done.returnTo).toBe("/types?x=1");
    expect(storage.getItem(PENDING_KEY)).toBeNull();
    // The pending sign-in is used once: the same answer again is refused.
    await expect(completeSignIn(`?code=the-code&state=${pending.state}`, { storage, fetchFn })).rejects.toThrow(/no sign-in was started/);
  });

  it("refuses an answer with another state, without calling the token endpoint", async () => {
    const { storage } = await begun();
    const fetchFn = vi.fn();
    await expect(completeSignIn("?code=c&state=forged", { storage, fetchFn })).rejects.toThrow(/state differs/);
    expect(fetchFn).not.toHaveBeenCalled();
    expect(storage.getItem(PENDING_KEY)).toBeNull();
  });

  it("refuses an ID token with another nonce, issuer or audience", async () => {
    for (const [claims, why] of [
      [{ nonce: "replayed" }, /nonce/],
      [{ iss: "https://evil.example" }, /issued by/],
      [{ aud: "another-client" }, /aud/],
    ] as const) {
      const { storage, pending } = await begun();
      const id: Record<string, unknown> = Object.assign({ iss: ISSUER, aud: "console", nonce: pending.nonce }, claims);
      const fetchFn = vi.fn(async () => json({ access_token: "t", id_token: jwt(id) }));
      await expect(completeSignIn(`?code=c&state=${pending.state}`, { storage, fetchFn })).rejects.toThrow(why);
    }
  });

  it("says what the issuer or the token endpoint refused", async () => {
    let { storage, pending } = await begun();
    await expect(completeSignIn(`?error=access_denied&state=${pending.state}`, { storage })).rejects.toThrow(/access_denied/);
    ({ storage, pending } = await begun());
    const fetchFn = vi.fn(async () => json({ error: "invalid_grant", error_description: "PKCE verification failed" }, 400));
    await expect(completeSignIn(`?code=c&state=${pending.state}`, { storage, fetchFn })).rejects.toThrow(/invalid_grant PKCE verification failed/);
  });

  it("refuses a discovery document naming another issuer", async () => {
    const fetchFn = vi.fn(async () => json({ ...discovery, issuer: "https://evil.example" }));
    await expect(
      beginSignIn({ issuer: ISSUER, clientId: "c", scopes: "openid" }, { storage: window.sessionStorage, origin: "http://x", returnTo: "/", fetchFn }),
    ).rejects.toThrow(/names the issuer/);
  });

  it("reads JWT claims with base64url padding", () => {
    expect(jwtClaims(jwt({ sub: "ä?>", n: 1 }))).toEqual({ sub: "ä?>", n: 1 });
  });
});

describe("the session and its interceptor", () => {
  /** An engine stand-in that answers GetCaller by the bearer it receives. */
  function transportFor(session: Session) {
    const seen: (string | null)[] = [];
    const transport = createRouterTransport(
      ({ service }) => {
        service(AuthService, {
          getCaller(_req, ctx) {
            const h = ctx.requestHeader.get("authorization");
            seen.push(h);
            if (h !== "Bearer good-key") throw new ConnectError("unknown API key", Code.Unauthenticated);
            return { name: "ops", kind: CallerKind.API_KEY, scopes: ["read"], authenticationEnabled: true };
          },
        });
      },
      { transport: { interceptors: [authInterceptor(session)] } },
    );
    return { client: createClient(AuthService, transport), seen };
  }

  it("sends the bearer token while signed in, and nothing otherwise", async () => {
    window.sessionStorage.clear();
    const session = new Session(window.sessionStorage);
    const { client, seen } = transportFor(session);
    await expect(client.getCaller({})).rejects.toThrow(/unknown API key/);
    session.signIn({ kind: "api-key", token: "good-key" });
    expect((await client.getCaller({})).name).toBe("ops");
    expect(seen).toEqual([null, "Bearer good-key"]);
    // Kept for the tab: a new session (a reload) finds it.
    expect(new Session(window.sessionStorage).token()).toBe("good-key");
  });

  it("drops a credential the engine refuses, saying why, and sign-out clears the storage", async () => {
    window.sessionStorage.clear();
    const session = new Session(window.sessionStorage);
    const { client } = transportFor(session);
    session.signIn({ kind: "api-key", token: "wrong-key" });
    await expect(client.getCaller({})).rejects.toThrow();
    expect(session.getSnapshot()).toEqual({ credential: null, refusal: "unknown API key" });
    expect(window.sessionStorage.getItem(CREDENTIAL_KEY)).toBeNull();

    session.signIn({ kind: "api-key", token: "good-key" });
    window.sessionStorage.setItem(PENDING_KEY, "{}");
    session.signOut();
    expect(window.sessionStorage.length).toBe(0);
    expect(session.getSnapshot()).toEqual({ credential: null, refusal: null });
  });
});

describe("scopes", () => {
  it("follow the engine's rule: levels include the ones below, narrowing holds", () => {
    expect(allows(["write:orders"], "write", "orders")).toBe(true);
    expect(allows(["write:orders"], "read", "orders")).toBe(true);
    expect(allows(["write:orders"], "write", "players")).toBe(false);
    expect(allows(["write:orders"], "admin")).toBe(false);
    expect(allows(["write:orders"], "write")).toBe(true);
    expect(allows(["read"], "write", "orders")).toBe(false);
    expect(allows(["admin"], "write", "anything")).toBe(true);
    expect(allows(["openid", "reader"], "read", "x")).toBe(false);
    expect(allows([], "read")).toBe(false);
  });
});
