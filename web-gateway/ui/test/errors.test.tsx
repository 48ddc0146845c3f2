import { describe, expect, it } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { codeName, decodeBadRequest, toShownError } from "../src/api/errors";
import { ErrorView } from "../src/components/Status";

/** A ConnectError as the gRPC-web client makes it from a status with grpc-status-details-bin. */
function received(message: string, code: Code, details: { type: string; value: Uint8Array }[]): ConnectError {
  const err = new ConnectError(message, code);
  err.details.push(...details);
  return err;
}

/** google.rpc.BadRequest bytes, as tonic-types writes them. */
function badRequest(violations: [string, string][]): Uint8Array {
  const w = new BinaryWriter();
  for (const [field, description] of violations) {
    w.tag(1, 2).fork().tag(1, 2).string(field).tag(2, 2).string(description).join();
  }
  return w.finish();
}

describe("errors", () => {
  it("names codes the way gRPC does", () => {
    expect(codeName(Code.InvalidArgument)).toBe("INVALID_ARGUMENT");
    expect(codeName(Code.Aborted)).toBe("ABORTED");
    expect(codeName(Code.DeadlineExceeded)).toBe("DEADLINE_EXCEEDED");
    expect(codeName(Code.NotFound)).toBe("NOT_FOUND");
  });

  it("decodes BadRequest field violations and skips unknown fields", () => {
    const bytes = badRequest([
      ["/score", "-1 is less than the minimum of 0"],
      ["", "\"name\" is a required property"],
    ]);
    // An unknown trailing field (e.g. a newer FieldViolation.reason) must not break decoding.
    const extra = new BinaryWriter().tag(1, 2).fork().tag(1, 2).string("/x").tag(3, 2).string("REASON").join().finish();
    const all = new Uint8Array([...bytes, ...extra]);
    expect(decodeBadRequest(all)).toEqual([
      { path: "/score", message: "-1 is less than the minimum of 0" },
      { path: "", message: "\"name\" is a required property" },
      { path: "/x", message: "" },
    ]);
  });

  it("turns a ConnectError with details into code, message and violations", () => {
    const err = received("state violates the schema", Code.InvalidArgument, [
      { type: "google.rpc.BadRequest", value: badRequest([["/score", "must be >= 0"]]) },
      { type: "google.rpc.DebugInfo", value: new Uint8Array([1, 2, 3]) },
    ]);
    expect(toShownError(err)).toEqual({
      code: Code.InvalidArgument,
      codeName: "INVALID_ARGUMENT",
      message: "state violates the schema",
      violations: [{ path: "/score", message: "must be >= 0" }],
    });
    expect(toShownError(new Error("boom")).codeName).toBe("UNKNOWN");
  });

  it("renders the code name, the message and each violation with its path", () => {
    const err = received("2 violations", Code.InvalidArgument, [
      { type: "google.rpc.BadRequest", value: badRequest([["/score", "must be >= 0"], ["", "name is required"]]) },
    ]);
    render(<ErrorView error={err} title="The engine refused the event" />);
    const alert = screen.getByRole("alert");
    expect(alert.getAttribute("data-code")).toBe("INVALID_ARGUMENT");
    expect(alert.textContent).toContain("INVALID_ARGUMENT");
    expect(alert.textContent).toContain("2 violations");
    const items = within(screen.getByRole("list", { name: "Schema violations" })).getAllByRole("listitem");
    expect(items.map((li) => li.textContent)).toEqual(["/score must be >= 0", "(root) name is required"]);
  });

  it("renders an error without details as code and message only", () => {
    render(<ErrorView error={new ConnectError("no such instance", Code.NotFound)} />);
    expect(screen.getByRole("alert").textContent).toBe("NOT_FOUND no such instance");
    expect(screen.queryByRole("list")).toBeNull();
  });
});
