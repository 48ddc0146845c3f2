/// <reference types="vitest/config" />
// Build of the console. The output in dist/ is committed and embedded into the gateway binary,
// so the build must be deterministic: no absolute paths, no timestamps, content-hashed names.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";
import { metaschemas } from "./build/metaschemas.ts";

// `npm run dev` talks to an engine directly through this proxy (same origin, like the gateway).
const engine = process.env.ENGINE_URL ?? "http://127.0.0.1:50051";

export default defineConfig({
  plugins: [react(), metaschemas()],
  resolve: {
    // The client SDK is linked (file:../../client-sdk/typescript); resolving its imports from
    // here, not from its real path, gives one copy of the runtime whether or not the SDK has
    // node_modules of its own (it does in CI, for its own tests).
    preserveSymlinks: true,
    // The client SDK is a file: dependency with its own node_modules; one copy of the runtime.
    dedupe: ["@connectrpc/connect", "@bufbuild/protobuf", "react", "react-dom"],
  },
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    // Small assets stay files: inlining them as data: URLs would need a wider CSP.
    assetsInlineLimit: 0,
    // Inline <style>/<script> would break `style-src 'self'` / `script-src 'self'`.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      "/temporal_state.v1.": { target: engine, changeOrigin: false },
    },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
    setupFiles: ["test/setup.ts"],
    // Bundled like in the app, so its imports resolve from here (see resolve.preserveSymlinks).
    server: { deps: { inline: ["@temporal-state/client"] } },
  },
});
