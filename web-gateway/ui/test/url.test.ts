import { describe, expect, it } from "vitest";
import { instancePath, intParam, updateParams, analyticsPath } from "../src/lib/url";

describe("URL state", () => {
  it("builds shareable instance URLs with the external id escaped", () => {
    expect(instancePath("player_profile", "player-001", { version: 12 })).toBe("/types/player_profile/instances/player-001?version=12");
    expect(instancePath("t", "a/b c?", { version: undefined })).toBe("/types/t/instances/a%2Fb%20c%3F");
    expect(analyticsPath("t", { interval: "1m", field: "/score" })).toBe("/types/t/analytics?interval=1m&field=%2Fscore");
  });
  it("reads positive integers only", () => {
    const p = new URLSearchParams("version=12&a=0&b=-3&c=1e3&d=");
    expect(intParam(p, "version")).toBe(12);
    for (const k of ["a", "b", "c", "d", "missing"]) expect(intParam(p, k)).toBeUndefined();
  });
  it("updates and removes parameters without touching the others", () => {
    const p = new URLSearchParams("view=compare&from=1&to=3");
    expect(updateParams(p, { from: 2, to: undefined, view: "" }).toString()).toBe("from=2");
    expect(p.toString()).toBe("view=compare&from=1&to=3");
  });
});
