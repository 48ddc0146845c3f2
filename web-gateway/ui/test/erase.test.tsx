// Erasing an instance from its page: the dialog's button works only once the external id is typed
// out, the request carries the id and the reason, and the user lands on the instances list with a
// notice (the page's external id is gone). The engine is Connect's in-memory router; the
// end-to-end test (e2e/console.e2e.mjs) erases through the real server.
import { describe, expect, it } from "vitest";
import { render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter, Route, Routes, useLocation } from "react-router";
import { createRouterTransport } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { EventSchema, InstanceSchema, InstanceService } from "@temporal-state/client";

import { Providers, createQueryClient } from "../src/App";
import { EraseButton, EraseDialog, useErase } from "../src/pages/instance/Erase";

const instance = create(InstanceSchema, { id: "id-1", externalId: "player-001", version: 3n });

function Page() {
  const state = useErase("player");
  return (
    <>
      <EraseButton state={state} />
      <EraseDialog instance={instance} state={state} />
    </>
  );
}

function Notice() {
  const notice = (useLocation().state as { notice?: string } | null)?.notice;
  return <p data-testid="landed">{notice}</p>;
}

describe("erasing an instance", () => {
  it("needs the external id typed out, sends the reason, and lands on the list with a notice", async () => {
    const calls: string[] = [];
    const transport = createRouterTransport(({ service }) =>
      service(InstanceService, {
        eraseInstance: (req) => {
          calls.push(`${req.instanceId} ${req.reason ?? "-"}`);
          return { event: create(EventSchema, { eventType: "InstanceErased", version: 4n }) };
        },
      }),
    );
    const user = userEvent.setup();
    render(
      <Providers transport={transport} client={createQueryClient()}>
        <MemoryRouter initialEntries={["/types/player/instances/player-001"]}>
          <Routes>
            <Route path="/types/:type/instances/:externalId" element={<Page />} />
            <Route path="/types/:type/instances" element={<Notice />} />
          </Routes>
        </MemoryRouter>
      </Providers>,
    );
    await user.click(screen.getByRole("button", { name: "Erase" }));
    const dialog = await screen.findByRole("dialog", { name: "Erase player-001?" });
    const confirm = within(dialog).getByRole("button", { name: "Erase for good" });
    expect((confirm as HTMLButtonElement).disabled).toBe(true);
    await user.type(within(dialog).getByLabelText(/Type/), "player-00");
    expect((confirm as HTMLButtonElement).disabled).toBe(true);
    // Enter in the form does not get round the typed confirmation either.
    await user.keyboard("{Enter}");
    expect(calls).toEqual([]);
    await user.type(within(dialog).getByLabelText(/Type/), "1");
    expect((confirm as HTMLButtonElement).disabled).toBe(false);
    await user.type(within(dialog).getByLabelText(/Reason/), "GDPR request 118");
    await user.click(confirm);
    await waitFor(() => expect(screen.getByTestId("landed").textContent).toMatch(/^Erased instance id-1/));
    expect(calls).toEqual(["id-1 GDPR request 118"]);
  });

  it("is cancelled with Escape, sending nothing", async () => {
    let called = false;
    const transport = createRouterTransport(({ service }) =>
      service(InstanceService, {
        eraseInstance: () => {
          called = true;
          return {};
        },
      }),
    );
    const user = userEvent.setup();
    render(
      <Providers transport={transport} client={createQueryClient()}>
        <MemoryRouter>
          <Page />
        </MemoryRouter>
      </Providers>,
    );
    await user.click(screen.getByRole("button", { name: "Erase" }));
    await screen.findByRole("dialog", { name: "Erase player-001?" });
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(called).toBe(false);
  });
});
