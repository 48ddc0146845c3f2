// Live events over Subscribe (gRPC-web server streaming). Reconnects with a growing delay when the
// stream ends or fails, and says which state it is in so the page can show it.
import { useEffect, useRef, useState } from "react";
import { createClient, type Transport } from "@connectrpc/connect";
import { useTransport } from "@connectrpc/connect-query";
import { EventService, type Event, type SubscribeRequest } from "@temporal-state/client";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeRequestSchema } from "@temporal-state/client";
import { toShownError } from "./errors";

export type LiveState = { status: "connecting" } | { status: "live" } | { status: "retrying"; error: string };

export function useSubscription(
  request: MessageInitShape<typeof SubscribeRequestSchema> | null,
  onEvent: (e: Event) => void,
  /** Version to resume from after a reconnect, for an instance subscription (no gap). */
  resumeFrom?: () => bigint | undefined,
): LiveState {
  const transport = useTransport();
  const [state, setState] = useState<LiveState>({ status: "connecting" });
  const handler = useRef(onEvent);
  handler.current = onEvent;
  const resume = useRef(resumeFrom);
  resume.current = resumeFrom;
  const key = request ? JSON.stringify(request, (_k, v) => (typeof v === "bigint" ? v.toString() : v)) : "";
  useEffect(() => {
    if (!request) return;
    const abort = new AbortController();
    void run(transport, request, abort.signal, (e) => handler.current(e), setState, () => resume.current?.());
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps -- `key` stands for `request`
  }, [transport, key]);
  return state;
}

async function run(
  transport: Transport,
  request: MessageInitShape<typeof SubscribeRequestSchema>,
  signal: AbortSignal,
  onEvent: (e: Event) => void,
  setState: (s: LiveState) => void,
  resumeFrom: () => bigint | undefined,
) {
  const client = createClient(EventService, transport);
  let delay = 500;
  let req: MessageInitShape<typeof SubscribeRequestSchema> = request;
  while (!signal.aborted) {
    setState({ status: "connecting" });
    try {
      // The engine sends the response headers as soon as the subscription is registered, so
      // "live" shows before the first event (and means events from then on will arrive).
      const stream = client.subscribe(req, { signal, onHeader: () => setState({ status: "live" }) });
      for await (const msg of stream) {
        if (msg.event) onEvent(msg.event);
        delay = 500;
      }
      // A stream that ends without error (server shutdown): reconnect.
      if (!signal.aborted) setState({ status: "retrying", error: "the stream ended" });
    } catch (e) {
      if (signal.aborted) return;
      const err = toShownError(e);
      setState({ status: "retrying", error: `${err.codeName} ${err.message}` });
    }
    if (signal.aborted) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
    const from = resumeFrom();
    if (from !== undefined) req = { ...request, fromVersion: from };
  }
}

/** The "live" indicator. */
export function liveLabel(s: LiveState): string {
  switch (s.status) {
    case "connecting":
      return "connecting…";
    case "live":
      return "live";
    case "retrying":
      return `reconnecting (${s.error})`;
  }
}

export type { SubscribeRequest };
