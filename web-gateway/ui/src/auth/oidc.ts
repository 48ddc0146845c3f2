// OpenID Connect sign-in, entirely in the browser: the authorization code flow with PKCE (S256)
// for a public client (no secret). `beginSignIn` makes the state, nonce and code verifier, keeps
// them in sessionStorage and returns the issuer's authorization URL; the issuer sends the user
// back to /auth/callback, where `completeSignIn` checks the state, exchanges the code with the
// verifier at the token endpoint and checks the nonce of the ID token.
//
// The bearer sent to the engine is the ACCESS token: it is the token meant for an API, and the
// one that carries the `scope` / `scp` claim the engine reads scopes from. The engine checks its
// signature against its JWKS (AUTH_JWKS_URL), and its issuer, audience and expiry. The ID token is
// only read here, for its nonce (the browser cannot and need not verify its signature: it came
// straight from the token endpoint over the connection the browser opened).
import { PENDING_KEY, type Credential } from "./session";

export interface OidcSettings {
  issuer: string;
  clientId: string;
  /** Space-separated. */
  scopes: string;
}

export interface Pending {
  state: string;
  nonce: string;
  verifier: string;
  issuer: string;
  clientId: string;
  redirectUri: string;
  tokenEndpoint: string;
  /** The console path to go back to once signed in. */
  returnTo: string;
}

export const CALLBACK_PATH = "/auth/callback";

type Fetch = typeof fetch;

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** `bytes` random bytes as base64url (32 bytes: a 43-character PKCE verifier). */
export function randomString(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)) (RFC 7636 4.2). */
export async function s256(verifier: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** The issuer's endpoints, from its discovery document (whose `issuer` must be the one asked). */
export async function discover(issuer: string, fetchFn: Fetch = fetch) {
  const url = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  let doc: Record<string, unknown>;
  try {
    const r = await fetchFn(url, { headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    doc = (await r.json()) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`the issuer's discovery document (${url}) could not be read: ${(e as Error).message}`);
  }
  if (doc.issuer !== issuer) throw new Error(`the discovery document names the issuer ${String(doc.issuer)}, not ${issuer}`);
  const auth = doc.authorization_endpoint;
  const token = doc.token_endpoint;
  if (typeof auth !== "string" || typeof token !== "string") throw new Error("the discovery document lacks authorization_endpoint or token_endpoint");
  const methods = doc.code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes("S256")) throw new Error("the issuer does not support PKCE with S256");
  return { authorizationEndpoint: auth, tokenEndpoint: token };
}

/** Prepares a sign-in: stores what the callback needs and returns the URL to send the user to. */
export async function beginSignIn(
  settings: OidcSettings,
  { storage, origin, returnTo, fetchFn = fetch }: { storage: Storage; origin: string; returnTo: string; fetchFn?: Fetch },
): Promise<string> {
  const { authorizationEndpoint, tokenEndpoint } = await discover(settings.issuer, fetchFn);
  const pending: Pending = {
    state: randomString(),
    nonce: randomString(),
    verifier: randomString(),
    issuer: settings.issuer,
    clientId: settings.clientId,
    redirectUri: `${origin}${CALLBACK_PATH}`,
    tokenEndpoint,
    returnTo: returnTo.startsWith("/") && !returnTo.startsWith("//") ? returnTo : "/",
  };
  storage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(authorizationEndpoint);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("client_id", settings.clientId);
  url.searchParams.set("redirect_uri", pending.redirectUri);
  url.searchParams.set("scope", settings.scopes);
  url.searchParams.set("state", pending.state);
  url.searchParams.set("nonce", pending.nonce);
  url.searchParams.set("code_challenge", await s256(pending.verifier));
  url.searchParams.set("code_challenge_method", "S256");
  return url.toString();
}

/** The claims of a JWT, unverified. */
export function jwtClaims(jwt: string): Record<string, unknown> {
  const part = jwt.split(".")[1];
  if (!part) throw new Error("not a JWT");
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const text = new TextDecoder().decode(Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)));
  return JSON.parse(text) as Record<string, unknown>;
}

/**
 * Finishes a sign-in on the callback URL's query (`?code=...&state=...`): the pending sign-in is
 * used once and removed whatever happens. Resolves to the credential and where to go back to.
 */
export async function completeSignIn(
  search: string,
  { storage, fetchFn = fetch, now = Date.now() }: { storage: Storage; fetchFn?: Fetch; now?: number },
): Promise<{ credential: Credential; returnTo: string }> {
  const raw = storage.getItem(PENDING_KEY);
  storage.removeItem(PENDING_KEY);
  const params = new URLSearchParams(search);
  if (!raw) throw new Error("no sign-in was started in this tab (or it was already completed): sign in again");
  const pending = JSON.parse(raw) as Pending;
  if (params.get("state") !== pending.state) throw new Error("the sign-in answer does not match the sign-in this tab started (state differs): sign in again");
  const error = params.get("error");
  if (error) throw new Error(`the issuer refused the sign-in: ${error}${params.get("error_description") ? ` (${params.get("error_description")})` : ""}`);
  const code = params.get("code");
  if (!code) throw new Error("the issuer sent no authorization code");
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code,
    redirect_uri: pending.redirectUri,
    client_id: pending.clientId,
    code_verifier: pending.verifier,
  });
  let tokens: Record<string, unknown>;
  try {
    const r = await fetchFn(pending.tokenEndpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body,
    });
    tokens = (await r.json()) as Record<string, unknown>;
    if (!r.ok) throw new Error(`HTTP ${r.status} ${String(tokens.error ?? "")} ${String(tokens.error_description ?? "")}`.trim());
  } catch (e) {
    throw new Error(`the token endpoint refused the code: ${(e as Error).message}`);
  }
  const accessToken = tokens.access_token;
  if (typeof accessToken !== "string" || accessToken === "") throw new Error("the token endpoint sent no access token");
  const idToken = tokens.id_token;
  if (typeof idToken === "string") {
    const claims = jwtClaims(idToken);
    if (claims.nonce !== pending.nonce) throw new Error("the ID token's nonce is not the one this sign-in sent: refused");
    if (claims.iss !== pending.issuer) throw new Error(`the ID token was issued by ${String(claims.iss)}, not ${pending.issuer}`);
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(pending.clientId)) throw new Error("the ID token is not meant for this console (aud)");
  } else {
    // The nonce is checked only in an ID token; without one, a replayed answer could not be told.
    throw new Error("the token endpoint sent no ID token (ask for the `openid` scope)");
  }
  const expiresIn = typeof tokens.expires_in === "number" ? tokens.expires_in : undefined;
  return {
    credential: { kind: "oidc", token: accessToken, expiresAt: expiresIn ? now + expiresIn * 1000 : undefined },
    returnTo: pending.returnTo,
  };
}
