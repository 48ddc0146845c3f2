// The lifecycle controls of the console: schema versions (check, save, save anyway, conflicts),
// type deletion, archive/restore, the archived filter and the history's lifecycle rows. The
// engine is stood in for by Connect's in-memory router, which records what the console sent; the
// end-to-end test (e2e/console.e2e.mjs) runs the same flows against the real server.
import { describe, expect, it, vi } from "vitest";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes, useLocation } from "react-router";
import { Code, ConnectError, createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AnalyticsService,
  ApplyMode,
  EntityTypeSchema,
  EntityTypeService,
  EventSchema,
  InstanceSchema,
  InstanceService,
  QueryService,
  SchemaVersionSchema,
  type UpdateEntityTypeRequest,
} from "@temporal-state/client";
import type { ReactNode } from "react";

// CodeMirror is loaded lazily and needs layout jsdom lacks; a textarea with the same props
// stands in for it (the e2e test drives the real editor).
vi.mock("../src/components/LazyJsonEditor", () => ({
  JsonEditor: (p: { id: string; label: string; value: string; onChange: (v: string) => void; readOnly?: boolean }) => (
    <textarea id={p.id} aria-label={p.label} value={p.value} readOnly={p.readOnly} onChange={(e) => p.onChange(e.target.value)} />
  ),
}));

import { Providers, createQueryClient } from "../src/App";
import { toShownError, decodePreconditionFailure } from "../src/api/errors";
import { editOffer } from "../src/pages/type/EditSchema";
import { checkSummary, SchemaViolations } from "../src/pages/type/Violations";
import { selectedVersion } from "../src/pages/type/SchemaVersions";
import TypeDetail from "../src/pages/TypeDetail";
import Instances from "../src/pages/Instances";
import { ApplyEventForm } from "../src/pages/instance/ApplyEvent";
import { History } from "../src/pages/instance/History";
import { LifecycleButton, LifecycleDialog, useLifecycle } from "../src/pages/instance/Lifecycle";

const ts = timestampFromDate(new Date("2026-11-20T10:00:00Z"));
const V1 = { type: "object", properties: { score: { type: "integer" } } };
const V2 = { type: "object", properties: { score: { type: "integer", minimum: 0 } } };

function renderAt(path: string, routes: ReactNode, register: (r: ConnectRouter) => void) {
  const transport = createRouterTransport(register);
  let location = "";
  function Where() {
    const l = useLocation();
    location = l.pathname + l.search;
    return null;
  }
  render(
    <Providers transport={transport} client={createQueryClient()}>
      <MemoryRouter initialEntries={[path]}>
        <Routes>{routes}</Routes>
        <Where />
      </MemoryRouter>
    </Providers>,
  );
  return { location: () => location };
}

function preconditionFailure(violations: [string, string][]): Uint8Array {
  const w = new BinaryWriter();
  for (const [subject, description] of violations) {
    w.tag(1, 2).fork().tag(1, 2).string("SCHEMA").tag(2, 2).string(subject).tag(3, 2).string(description).join();
  }
  return w.finish();
}

describe("errors with PreconditionFailure details", () => {
  it("decodes subject and description, and shows them like field violations", () => {
    const bytes = preconditionFailure([['instance 1 ("p1") /score', "-1 is less than the minimum of 0"]]);
    expect(decodePreconditionFailure(bytes)).toEqual([{ path: 'instance 1 ("p1") /score', message: "-1 is less than the minimum of 0" }]);
    const err = new ConnectError("refused", Code.FailedPrecondition);
    err.details.push({ type: "google.rpc.PreconditionFailure", value: bytes });
    expect(toShownError(err)).toMatchObject({ codeName: "FAILED_PRECONDITION", violations: [{ message: "-1 is less than the minimum of 0" }] });
  });
});

describe("what the schema editor offers", () => {
  const base = { a: 1 };
  it("nothing to save for the same schema, or for text that is not JSON", () => {
    expect(editOffer({ text: '{"a":1}', parsed: { a: 1 }, base })).toMatchObject({ canSubmit: true, unchanged: true, offerSaveAnyway: false });
    expect(editOffer({ text: "{", parsed: undefined, base })).toMatchObject({ canSubmit: false, offerSaveAnyway: false });
  });
  it("save anyway only for the very draft the engine found violations in", () => {
    const checked = { text: '{"a":2}', result: { invalidInstances: 3n } };
    expect(editOffer({ text: '{"a":2}', parsed: { a: 2 }, base, checked }).offerSaveAnyway).toBe(true);
    const edited = editOffer({ text: '{"a":3}', parsed: { a: 3 }, base, checked });
    expect(edited).toMatchObject({ offerSaveAnyway: false, checkStale: true });
    expect(editOffer({ text: '{"a":2}', parsed: { a: 2 }, base, checked: { text: '{"a":2}', result: { invalidInstances: 0n } } }).offerSaveAnyway).toBe(false);
    expect(editOffer({ text: '{"a":4}', parsed: { a: 4 }, base, refusedText: '{"a":4}' }).offerSaveAnyway).toBe(true);
  });
  it("summarises a check", () => {
    expect(checkSummary({ checkedInstances: 0n, invalidInstances: 0n, violations: [] })).toMatch(/no instances/);
    expect(checkSummary({ checkedInstances: 1n, invalidInstances: 0n, violations: [] })).toBe("All 1 current state satisfy the new schema.");
    expect(checkSummary({ checkedInstances: 40n, invalidInstances: 25n, violations: new Array(20) })).toBe(
      "25 of 40 current states break the new schema (the first 20 below).",
    );
  });
  it("picks the schema version the URL names, or the current one", () => {
    const versions = [1n, 2n, 3n].map((v) => create(SchemaVersionSchema, { version: v }));
    expect(selectedVersion(new URLSearchParams("schema=2"), versions)?.version).toBe(2n);
    expect(selectedVersion(new URLSearchParams(""), versions)?.version).toBe(3n);
    expect(selectedVersion(new URLSearchParams("schema=9"), versions)?.version).toBe(3n);
    expect(selectedVersion(new URLSearchParams("schema=x"), versions)?.version).toBe(3n);
  });
  it("lists violating instances with links to them", () => {
    render(
      <MemoryRouter>
        <SchemaViolations
          type="player"
          result={{
            $typeName: "temporal_state.v1.UpdateEntityTypeResponse",
            checkedInstances: 2n,
            invalidInstances: 1n,
            applied: false,
            violations: [
              {
                $typeName: "temporal_state.v1.SchemaViolation",
                instanceId: "i1",
                externalId: "p/1",
                version: 4n,
                paths: ["/score", ""],
                messages: ["-1 is less than the minimum of 0", "name is required"],
              },
            ],
          }}
        />
      </MemoryRouter>,
    );
    expect(screen.getByText("1 of 2 current states breaks the new schema.")).toBeTruthy();
    expect(screen.getByRole("link", { name: "p/1" }).getAttribute("href")).toBe("/types/player/instances/p%2F1");
    const items = within(screen.getByTestId("dry-run-violations")).getAllByRole("listitem").map((li) => li.textContent);
    expect(items).toEqual(["/score -1 is less than the minimum of 0", "(root) name is required"]);
  });
});

/** An engine stand-in for one type: versions, updates (recorded), deletion. */
function typeEngine(opts: { invalid?: number; conflictOnce?: boolean; instances?: bigint; deleteError?: ConnectError } = {}) {
  const sent: UpdateEntityTypeRequest[] = [];
  let version = 1n;
  let schema: Record<string, unknown> = V1;
  let conflict = opts.conflictOnce ?? false;
  const versions = [create(SchemaVersionSchema, { version: 1n, schema: V1, createdAt: ts })];
  const deleted: string[] = [];
  const register = ({ service }: ConnectRouter) => {
    const et = () => create(EntityTypeSchema, { id: "t1", name: "player", description: "Players", schema: schema as never, schemaVersion: version, createdAt: ts });
    service(EntityTypeService, {
      getEntityType: () => ({ entityType: et(), schemaVersions: versions }),
      updateEntityType: (req) => {
        sent.push(req);
        if (conflict) {
          conflict = false;
          version += 1n; // someone else's update
          versions.push(create(SchemaVersionSchema, { version, schema: V1, createdAt: ts }));
          throw new ConnectError(`schema version is ${version}`, Code.Aborted);
        }
        if (req.expectedSchemaVersion !== undefined && req.expectedSchemaVersion !== version) {
          throw new ConnectError(`entity type player is at schema version ${version}, not ${req.expectedSchemaVersion}`, Code.Aborted);
        }
        const invalid = BigInt(req.schema ? (opts.invalid ?? 0) : 0);
        const violations = invalid > 0n
          ? [{ instanceId: "i1", externalId: "p1", version: 3n, paths: ["/score"], messages: ["-1 is less than the minimum of 0"] }]
          : [];
        const summary = { checkedInstances: 2n, invalidInstances: invalid, violations };
        if (req.dryRun) return { entityType: et(), ...summary, applied: false };
        if (invalid > 0n && !req.allowInvalidExisting) {
          throw new ConnectError("the new schema of entity type player is refused: 1 of 2 current states break it", Code.FailedPrecondition);
        }
        if (req.schema) {
          version += 1n;
          schema = req.schema;
          versions.push(create(SchemaVersionSchema, { version, schema: req.schema, createdAt: ts }));
        }
        return { entityType: et(), ...summary, applied: true };
      },
      deleteEntityType: (req) => {
        if (opts.deleteError) throw opts.deleteError;
        deleted.push(req.entityType);
        return {};
      },
      listEntityTypes: () => ({ entityTypes: [] }),
    });
    service(AnalyticsService, {
      getSummary: () => ({ instanceCount: opts.instances ?? 2n, eventCount: 5n }),
    });
  };
  return { sent, register, deleted };
}

const typeRoutes = (
  <>
    <Route path="/types/:type" element={<TypeDetail />} />
    <Route path="/types" element={<p>types list</p>} />
  </>
);

async function typeIntoEditor(user: ReturnType<typeof userEvent.setup>, value: object) {
  const editor = await screen.findByLabelText("JSON Schema");
  await user.clear(editor);
  // user.type treats { and [ as key descriptors: paste instead.
  editor.focus();
  await user.paste(JSON.stringify(value));
}

describe("the type page", () => {
  it("lists the schema versions and shows an earlier one", async () => {
    const engine = typeEngine();
    const user = userEvent.setup();
    renderAt("/types/player?edit=1", typeRoutes, engine.register);
    await typeIntoEditor(user, V2);
    await user.click(screen.getByRole("button", { name: "Save" }));
    await screen.findByText(/Saved as schema version 2\./);
    expect(engine.sent.at(-1)).toMatchObject({ expectedSchemaVersion: 1n, dryRun: false, allowInvalidExisting: false });
    const table = await screen.findByTestId("schema-versions");
    await waitFor(() => expect(within(table).getAllByRole("row")).toHaveLength(3));
    await user.click(within(table).getByRole("link", { name: "View schema version 1" }));
    expect(screen.getByTestId("shown-schema-version").textContent).toBe("version 1 of 2");
    expect(within(screen.getByTestId("schema-tree")).queryByText('"minimum"')).toBeNull();
  });

  it("checks a schema (dry run), then saves anyway only after a confirmation", async () => {
    const engine = typeEngine({ invalid: 1 });
    const user = userEvent.setup();
    renderAt("/types/player?edit=1", typeRoutes, engine.register);
    await typeIntoEditor(user, V2);
    await user.click(screen.getByRole("button", { name: "Check" }));
    const result = await screen.findByTestId("dry-run");
    expect(result.textContent).toContain("1 of 2 current states breaks the new schema.");
    expect(within(result).getByRole("link", { name: "p1" }).getAttribute("href")).toBe("/types/player/instances/p1");
    expect(engine.sent.at(-1)).toMatchObject({ dryRun: true, expectedSchemaVersion: 1n });

    // A plain save is refused: the engine's answer, and the same violations.
    await user.click(screen.getByRole("button", { name: "Save" }));
    const refused = await screen.findByRole("alert");
    expect(refused.getAttribute("data-code")).toBe("FAILED_PRECONDITION");
    // Save anyway asks first; cancelling sends nothing.
    const sentBefore = engine.sent.length;
    await user.click(screen.getByRole("button", { name: "Save anyway (allow invalid existing)" }));
    const dialog = await screen.findByRole("dialog", { name: "Save a schema that current states break?" });
    expect(document.activeElement?.textContent).toBe("Cancel");
    await user.click(within(dialog).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(engine.sent.length).toBe(sentBefore);
    await user.click(screen.getByRole("button", { name: "Save anyway (allow invalid existing)" }));
    await user.click(within(await screen.findByRole("dialog")).getByRole("button", { name: "Save anyway" }));
    await screen.findByText(/Saved as schema version 2\./);
    expect(engine.sent.at(-1)).toMatchObject({ allowInvalidExisting: true, dryRun: false, expectedSchemaVersion: 1n });
    expect(screen.getByTestId("schema-saved").textContent).toMatch(/must be fixed by its next event/);
  });

  it("says when someone else changed the schema first, and reloads without losing the draft", async () => {
    const engine = typeEngine({ conflictOnce: true });
    const user = userEvent.setup();
    renderAt("/types/player?edit=1", typeRoutes, engine.register);
    await typeIntoEditor(user, V2);
    await user.click(screen.getByRole("button", { name: "Save" }));
    const alert = await screen.findByRole("alert");
    expect(alert.getAttribute("data-code")).toBe("ABORTED");
    expect(alert.textContent).toMatch(/Changed by someone else\. The schema is no longer at version 1/);
    await user.click(screen.getByRole("button", { name: "Reload the type" }));
    await screen.findByText(/the type is at schema version 2 now/);
    expect(JSON.parse((screen.getByLabelText("JSON Schema") as HTMLTextAreaElement).value)).toEqual(V2);
    await user.click(screen.getByRole("button", { name: "Save" }));
    await screen.findByText(/Saved as schema version 3\./);
    expect(engine.sent.at(-1)).toMatchObject({ expectedSchemaVersion: 2n });
  });

  it("edits the description alone, keeping the schema", async () => {
    const engine = typeEngine();
    const user = userEvent.setup();
    renderAt("/types/player", typeRoutes, engine.register);
    await user.click(await screen.findByRole("button", { name: "Edit description" }));
    const input = screen.getByLabelText("Description");
    await user.clear(input);
    await user.type(input, "Everyone who plays{Enter}");
    await waitFor(() => expect(engine.sent).toHaveLength(1));
    expect(engine.sent[0].description).toBe("Everyone who plays");
    expect(engine.sent[0].schema).toBeUndefined();
  });

  it("deletes a type after a confirmation and goes back to the list", async () => {
    const engine = typeEngine({ instances: 0n });
    const user = userEvent.setup();
    const r = renderAt("/types/player", typeRoutes, engine.register);
    await user.click(await screen.findByRole("button", { name: "Delete type" }));
    const dialog = await screen.findByRole("dialog", { name: "Delete the entity type player?" });
    await user.click(within(dialog).getByRole("button", { name: "Delete type" }));
    await screen.findByText("types list");
    expect(engine.deleted).toEqual(["player"]);
    expect(r.location()).toBe("/types");
  });

  it("shows the engine's refusal to delete a type with instances", async () => {
    const engine = typeEngine({
      instances: 2n,
      deleteError: new ConnectError("entity type player cannot be deleted: it has 2 instances", Code.FailedPrecondition),
    });
    const user = userEvent.setup();
    renderAt("/types/player", typeRoutes, engine.register);
    await user.click(await screen.findByRole("button", { name: "Delete type" }));
    const dialog = await screen.findByRole("dialog");
    expect(dialog.textContent).toMatch(/It has 2 instances/);
    await user.click(within(dialog).getByRole("button", { name: "Delete type" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toBe("Deleting player failed: FAILED_PRECONDITION entity type player cannot be deleted: it has 2 instances");
  });
});

describe("archived instances", () => {
  const inst = (externalId: string, archived: boolean) =>
    create(InstanceSchema, { id: `id-${externalId}`, entityTypeName: "player", externalId, version: 2n, archived, createdAt: ts, updatedAt: ts });

  it("are listed, badged, only with “Show archived”, which lives in the URL", async () => {
    const asked: boolean[] = [];
    const user = userEvent.setup();
    const r = renderAt("/types/player/instances", <Route path="/types/:type/instances" element={<Instances />} />, ({ service }) =>
      service(InstanceService, {
        listInstances: (req) => {
          asked.push(req.includeArchived);
          return { instances: req.includeArchived ? [inst("a", false), inst("b", true)] : [inst("a", false)] };
        },
      }),
    );
    await screen.findByRole("link", { name: "a" });
    expect(screen.queryByText("archived")).toBeNull();
    await user.click(screen.getByLabelText("Show archived"));
    await screen.findByRole("link", { name: "b" });
    expect(r.location()).toBe("/types/player/instances?archived=1");
    const row = screen.getByRole("link", { name: "b" }).closest("tr")!;
    expect(within(row).getByText("archived")).toBeTruthy();
    expect(asked).toEqual([false, true]);
  });

  it("disable the apply-event form, saying why", () => {
    render(
      <Providers transport={createRouterTransport(() => {})} client={createQueryClient()}>
        <ApplyEventForm instance={inst("a", true)} archived onReload={async () => undefined} />
      </Providers>,
    );
    expect(screen.getByTestId("apply-disabled").textContent).toMatch(/archived.*Restore it to apply events/);
    expect(screen.getByLabelText("Event type").matches(":disabled")).toBe(true);
    expect((screen.getByRole("button", { name: "Apply event" }) as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByLabelText("Payload") as HTMLTextAreaElement).readOnly).toBe(true);
  });

  function Lifecycle({ instance, onChanged }: { instance: ReturnType<typeof inst>; onChanged: () => void }) {
    const state = useLifecycle(onChanged);
    return (
      <>
        <LifecycleButton instance={instance} state={state} />
        <LifecycleDialog instance={instance} state={state} />
      </>
    );
  }

  it("archive with a reason and restore, each after a confirmation", async () => {
    const calls: string[] = [];
    const transport = createRouterTransport(({ service }) =>
      service(InstanceService, {
        archiveInstance: (req) => {
          calls.push(`archive ${req.instanceId} ${JSON.stringify(req.metadata ?? null)}`);
          return { instance: inst("a", true) };
        },
        restoreInstance: (req) => {
          calls.push(`restore ${req.instanceId}`);
          throw new ConnectError("instance id-a is not archived: there is nothing to restore", Code.FailedPrecondition);
        },
      }),
    );
    const changed = vi.fn();
    const user = userEvent.setup();
    const { rerender } = render(
      <Providers transport={transport} client={createQueryClient()}>
        <Lifecycle instance={inst("a", false)} onChanged={changed} />
      </Providers>,
    );
    await user.click(screen.getByRole("button", { name: "Archive" }));
    const dialog = await screen.findByRole("dialog", { name: "Archive a?" });
    await user.type(within(dialog).getByLabelText(/Reason/), "season over");
    await user.click(within(dialog).getByRole("button", { name: "Archive" }));
    await waitFor(() => expect(changed).toHaveBeenCalledTimes(1));
    expect(calls).toEqual(['archive id-a {"reason":"season over"}']);

    rerender(
      <Providers transport={transport} client={createQueryClient()}>
        <Lifecycle instance={inst("a", true)} onChanged={changed} />
      </Providers>,
    );
    await user.click(screen.getByRole("button", { name: "Restore" }));
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).toBeNull();
    await user.click(screen.getByRole("button", { name: "Restore" }));
    await user.click(within(await screen.findByRole("dialog", { name: "Restore a?" })).getByRole("button", { name: "Restore" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toMatch(/^Restoring failed: FAILED_PRECONDITION instance id-a is not archived/);
    expect(calls).toEqual(['archive id-a {"reason":"season over"}', "restore id-a"]);
  });

  it("history rows show schema versions, and lifecycle events as what they are", async () => {
    const ev = (version: bigint, eventType: string, schemaVersion: bigint, payload: object, metadata: object = {}) =>
      create(EventSchema, { version, eventType, schemaVersion, payload: payload as never, metadata: metadata as never, mode: ApplyMode.MERGE_PATCH, recordedAt: ts });
    renderAt("/types/player/instances/a?view=history", <Route path="/types/:type/instances/:externalId" element={<History instance={inst("a", false)} />} />, ({ service }) =>
      service(QueryService, {
        getHistory: () => ({
          events: [
            ev(4n, "InstanceRestored", 2n, {}),
            ev(3n, "InstanceArchived", 2n, {}, { reason: "season over" }),
            ev(2n, "ScoreIncreased", 2n, { score: 5 }),
            ev(1n, "InstanceCreated", 1n, { score: 1 }),
          ],
        }),
      }),
    );
    const table = await screen.findByTestId("history-table");
    const rows = within(table).getAllByRole("row").slice(1);
    const schemaCol = rows.map((r) => r.querySelector('[data-col="schema-version"]')!.textContent);
    expect(schemaCol).toEqual(["v2", "v2", "v2", "v1"]);
    expect(rows[1].textContent).toMatch(/InstanceArchived.*archived/);
    expect(rows[1].textContent).toMatch(/Writes refused from here on; state unchanged\./);
    expect(rows[1].textContent).toContain('{"reason":"season over"}');
    expect(rows[0].textContent).toMatch(/Writable again; state unchanged/);
    expect(rows[2].textContent).toContain("merge patch");
  });
});
