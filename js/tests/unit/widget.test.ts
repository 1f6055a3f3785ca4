import { describe, expect, it, vi } from "vitest";
import widget from "../../src/widget";
import { Requester } from "../../src/requests";
import { answer, FakeModel, makeData, mount, submit } from "../fixture";

const tick = () => new Promise((r) => setTimeout(r, 0));

const { render } = widget;

describe("render", () => {
  it("renders under one namespaced root, and cleanup releases every listener", () => {
    const model = new FakeModel({ data: makeData() });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = render({ model: model as never, el });
    expect(typeof widget.render).toBe("function");
    const root = el.querySelector(".lens-widget")!;
    expect(root).toBeTruthy();
    expect(root.querySelector("style")!.textContent).toContain(".lens-widget");
    expect(root.querySelector("canvas.lw-canvas")).toBeTruthy();
    expect(model.listenerCount()).toBeGreaterThan(5);
    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.children.length).toBe(0);
  });

  it("hostile token strings only ever become text", () => {
    const model = new FakeModel({ data: makeData(), selected: { site: 0, col: 0, position: 0 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    expect(el.querySelector("img")).toBeNull();
    expect(el.textContent).toContain("<img␣src=x␣onerror=alert(1)>");
    cleanup();
  });

  it("metric select, keyboard and pins drive the traits", () => {
    const model = new FakeModel({ data: makeData() });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = render({ model: model as never, el });
    const sel = el.querySelector<HTMLSelectElement>("select.lw-metric")!;
    sel.value = "entropy";
    sel.dispatchEvent(new Event("change"));
    expect(model.state.metric).toBe("entropy");
    const vp = el.querySelector<HTMLElement>(".lw-viewport")!;
    vp.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown" }));
    // starts at the final layer (row 0), col 0; one row down = site S-2
    expect(model.state.selected).toEqual({ site: 2, col: 0, position: 0 });
    vp.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight" }));
    expect(model.state.selected).toEqual({ site: 2, col: 1, position: 1 });
    vp.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter" }));
    expect(model.state.pinned).toEqual([[2, 1]]);
    expect(el.querySelectorAll(".lw-chip")).toHaveLength(1);
    vp.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" }));
    expect(model.state.pinned).toEqual([]);
    expect(model.saves).toBeGreaterThan(3);
    cleanup();
  });

  it("shows the error trait and the busy indicator", () => {
    const model = new FakeModel({ data: makeData() });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    model.set("error", "boom <b>");
    expect(el.querySelector<HTMLElement>(".lw-error")!.hidden).toBe(false);
    expect(el.querySelector(".lw-error")!.textContent).toBe("boom <b>");
    expect(el.querySelector(".lw-error b")).toBeNull();
    model.set("busy", true);
    expect(el.querySelector<HTMLElement>(".lw-busy")!.hidden).toBe(false);
    // the grid stays
    expect(el.querySelector("canvas.lw-canvas")).toBeTruthy();
    cleanup();
  });

  it("search sends a tagged request and renders matches and multi-token pieces as text", async () => {
    const { model, el, cleanup } = await mount({ data: makeData() });
    submit(el, "search", "New York");
    const msg = model.sent.find((m) => m.type === "search")!;
    expect(msg.query).toBe("New York");
    answer(model, msg, { result: { matches: [{ id: 5, text: " New", display: "␣New", exact: true }], pieces: [[5, " New"], [6, " York"]] } });
    await tick();
    expect(el.querySelector(".lw-multi")!.textContent).toContain("2 tokens");
    expect(el.querySelector(".lw-match")!.textContent).toContain("␣New");
    cleanup();
  });

  it("data of another wire version shows why it cannot be read", async () => {
    const { el, cleanup } = await mount({ data: { ...makeData(), version: 2 } });
    const box = el.querySelector<HTMLElement>(".lw-error")!;
    expect(box.hidden).toBe(false);
    expect(box.textContent).toMatch(/^cannot read data: data has wire version 2/);
    expect(el.querySelector(".lw-title")!.textContent).toBe("no lens data");
    cleanup();
  });
});

describe("Requester", () => {
  it("resolves replies by request id, rejects ok:false and times out", async () => {
    vi.useFakeTimers();
    const model = new FakeModel({});
    const req = new Requester(model as never, 1000);
    const a = req.request("trajectory", { col: 1, token_ids: [3] });
    const b = req.request("search", { query: "x" });
    const c = req.request("search", { query: "y" });
    const [ma, mb] = model.sent;
    const buf = new Float32Array([0.5, 0.25]);
    model.emit("msg:custom", { type: "reply", request_id: ma.request_id, ok: true, result: { probs: { dtype: "float32", shape: [2, 1], buffer_index: 0 } } }, [new DataView(buf.buffer)]);
    model.emit("msg:custom", { type: "reply", request_id: mb.request_id, ok: false, error: "bad query" }, []);
    model.emit("msg:custom", { type: "something-else" }, []);
    expect(Array.from(((await a) as { probs: Float32Array }).probs)).toEqual([0.5, 0.25]);
    await expect(b).rejects.toThrow("bad query");
    vi.advanceTimersByTime(1001);
    await expect(c).rejects.toThrow(/no reply/);
    expect(req.size).toBe(0);
    req.dispose();
    expect(model.listenerCount()).toBe(0);
    vi.useRealTimers();
  });
});
