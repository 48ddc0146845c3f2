// The console's shell: providers, sign-in (auth/), layout and routes. Pages other than the overview are loaded on
// demand, so the first screen needs only the shell.
import { lazy, Suspense, type ReactNode } from "react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { TransportProvider } from "@connectrpc/connect-query";
import type { Transport } from "@connectrpc/connect";
import { BrowserRouter, NavLink, Route, Routes, useParams, Link } from "react-router";
import { Code, ConnectError } from "@connectrpc/connect";
import { Loading } from "./components/Status";
import { Overview } from "./pages/Overview";
import { AuthGate, WhoAmI } from "./auth/AuthGate";
import type { Session } from "./auth/session";

const Types = lazy(() => import("./pages/Types"));
const TypeDetail = lazy(() => import("./pages/TypeDetail"));
const Instances = lazy(() => import("./pages/Instances"));
const InstancePage = lazy(() => import("./pages/Instance"));
const Analytics = lazy(() => import("./pages/Analytics"));

export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: 5_000,
        refetchOnWindowFocus: false,
        // A wrong name or a bad argument will not get better by asking again.
        retry: (count, error) => {
          const code = ConnectError.from(error).code;
          const final = [Code.NotFound, Code.InvalidArgument, Code.PermissionDenied, Code.Unauthenticated, Code.FailedPrecondition, Code.Unimplemented];
          return !final.includes(code) && count < 2;
        },
      },
    },
  });
}

export function Providers({
  transport,
  client,
  children,
}: {
  transport: Transport;
  client?: QueryClient;
  children: ReactNode;
}) {
  return (
    <TransportProvider transport={transport}>
      <QueryClientProvider client={client ?? defaultClient}>{children}</QueryClientProvider>
    </TransportProvider>
  );
}

const defaultClient = createQueryClient();

export function App({ transport, session }: { transport: Transport; session: Session }) {
  return (
    <Providers transport={transport}>
      <AuthGate session={session} transport={transport}>
        <BrowserRouter>
          <Layout>
            <ConsoleRoutes />
          </Layout>
        </BrowserRouter>
      </AuthGate>
    </Providers>
  );
}

export function ConsoleRoutes() {
  return (
    <Suspense fallback={<Loading what="page" />}>
      <Routes>
        <Route path="/" element={<Overview />} />
        <Route path="/types" element={<Types />} />
        <Route path="/types/:type" element={<TypeDetail />} />
        <Route path="/types/:type/instances" element={<Instances />} />
        <Route path="/types/:type/instances/:externalId" element={<InstancePage />} />
        <Route path="/types/:type/analytics" element={<Analytics />} />
        <Route path="*" element={<NotFound />} />
      </Routes>
    </Suspense>
  );
}

function Layout({ children }: { children: ReactNode }) {
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/" className="brand">
          Temporal State
        </Link>
        <nav aria-label="Main">
          <NavLink to="/" end>
            Overview
          </NavLink>
          <NavLink to="/types">Entity types</NavLink>
        </nav>
        <TypeCrumb />
        <WhoAmI />
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </>
  );
}

function TypeCrumb() {
  return (
    <Routes>
      <Route path="/types/:type/*" element={<Crumb />} />
      <Route path="*" element={null} />
    </Routes>
  );
}

function Crumb() {
  const { type = "" } = useParams();
  const base = `/types/${encodeURIComponent(type)}`;
  return (
    <nav aria-label="Entity type" className="crumb">
      <NavLink to={base} end>
        {type}
      </NavLink>
      <NavLink to={`${base}/instances`}>Instances</NavLink>
      <NavLink to={`${base}/analytics`}>Analytics</NavLink>
    </nav>
  );
}

function NotFound() {
  return (
    <section>
      <h1>Not found</h1>
      <p>
        No page here. <Link to="/">Back to the overview</Link>.
      </p>
    </section>
  );
}
