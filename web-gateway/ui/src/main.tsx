// Entry point: one gRPC-web transport to the page's own origin (carrying the session's bearer
// token), TanStack Query for caching, and the router whose URLs carry every view's state.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { createConsoleTransport } from "./api/transport";
import { authInterceptor, Session } from "./auth/session";
import "./styles.css";

const session = new Session(window.sessionStorage);

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App transport={createConsoleTransport(window.location.origin, [authInterceptor(session)])} session={session} />
  </StrictMode>,
);
