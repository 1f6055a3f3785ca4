import { describe, expect, it } from "vitest";
import { Requester } from "../../src/requests";
import { answer, FakeModel, makeData, mount, submit } from "../fixture";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** Submit two prompts; both set_prompt requests are in flight (the kernel has not answered). */
async function twoInFlight() {
  const m = await mount({ data: makeData() });
  submit(m.el, "prompt", "first");
  submit(m.el, "prompt", "second");
  const [first, second] = m.model.sent.filter((s) => s.type === "set_prompt");
  expect([first.prompt, second.prompt]).toEqual(["first", "second"]);
  expect(first.request_id).not.toBe(second.request_id);
  const errorBox = m.el.querySelector<HTMLElement>(".lw-error")!;
  return { ...m, first, second, errorBox };
}

describe("set_prompt", () => {
  it("an ok:false reply shows its error and keeps the grid", async () => {
    const { model, el, cleanup } = await mount({ data: makeData() });
    submit(el, "prompt", "new");
    const msg = model.sent.find((m) => m.type === "set_prompt")!;
    expect(msg.prompt).toBe("new");
    answer(model, msg, { error: "prompt too long" });
    await tick();
    expect(el.querySelector(".lw-error")!.textContent).toBe("prompt too long");
    expect(el.querySelector("canvas.lw-canvas")).toBeTruthy();
    cleanup();
  });

  it("the earlier prompt failing after the later one succeeded shows no error", async () => {
    const { model, first, second, errorBox, cleanup } = await twoInFlight();
    answer(model, second, { result: { n_positions: 6 } });
    await tick();
    answer(model, first, { error: "first failed" });
    await tick();
    expect(errorBox.hidden).toBe(true);
    expect(errorBox.textContent).toBe("");
    cleanup();
  });

  it("the later prompt's error stays when the earlier one answers last (ok or not)", async () => {
    for (const late of [{ result: { n_positions: 6 } }, { error: "first failed" }]) {
      const { model, first, second, errorBox, cleanup } = await twoInFlight();
      answer(model, second, { error: "second failed" });
      await tick();
      answer(model, first, late);
      await tick();
      expect(errorBox.hidden).toBe(false);
      expect(errorBox.textContent).toBe("second failed");
      cleanup();
    }
  });
});

describe("Requester routing", () => {
  it("replies answered out of order reach the request with their id", async () => {
    const model = new FakeModel({});
    const req = new Requester(model as never, 1000);
    const a = req.request("set_prompt", { prompt: "a" });
    const b = req.request("set_prompt", { prompt: "b" });
    const [ma, mb] = model.sent;
    answer(model, mb, { result: { n_positions: 2 } });
    answer(model, ma, { result: { n_positions: 1 } });
    answer(model, ma, { error: "a duplicate reply is dropped" });
    expect(await a).toEqual({ n_positions: 1 });
    expect(await b).toEqual({ n_positions: 2 });
    expect(req.size).toBe(0);
    req.dispose();
  });
});
