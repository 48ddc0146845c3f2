// Entry point: one gRPC-web transport to the page's own origin, TanStack Query for caching, and
// the router whose URLs carry every view's state.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { createConsoleTransport } from "./api/transport";
import "./styles.css";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App transport={createConsoleTransport()} />
  </StrictMode>,
);
