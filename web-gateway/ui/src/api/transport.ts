// The one gRPC-web transport of the console. The page is served by the web gateway from the same
// origin as the API (`/temporal_state.v1.<Service>/<Method>`), so the base URL is the page's own
// origin and no CORS is involved.
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createTemporalStateClient } from "@temporal-state/client";
import type { Interceptor, Transport } from "@connectrpc/connect";

export function createConsoleTransport(baseUrl: string = window.location.origin, interceptors: Interceptor[] = []): Transport {
  return createGrpcWebTransport({ baseUrl, interceptors });
}

export const createClient = createTemporalStateClient;
