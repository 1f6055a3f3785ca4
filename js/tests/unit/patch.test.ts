import { describe, expect, it } from "vitest";
import { alignedCol, coneOverlay, decodePatch, describePatch, patchKey, patchStep, PatchTool, type PatchInfo, type PatchState } from "../../src/patch";
import { Disposers } from "../../src/dom";
import { answer, makeData, mount, wire } from "../fixture";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** A cone as the kernel computes it: later sites at or after the target column, and the patched cell. */
function cone(S: number, P: number, site: number, col: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < S; s++) for (let c = 0; c < P; c++) out.push((s > site && c >= col) || (s === site && c === col) ? 1 : 0);
  return out;
}

function info(S: number, P: number, site: number, col: number, targetCol = col): PatchInfo {
  return decodePatch({ site, site_name: `resid_out_${site - 1}`, target_position: targetCol, target_col: targetCol, source: "prompt", source_col: 1, source_position: 1, source_prompt_index: 0, target_prompt_index: 1, cone: wire("uint8", [S, P], cone(S, P, site, col)) }, S, P)!;
}

describe("decodePatch", () => {
  it("reads the patch key, and says none for a plain comparison", () => {
    const p = info(4, 5, 1, 2);
    expect([p.site, p.targetCol, p.sourcePromptIndex, p.targetPromptIndex, p.source]).toEqual([1, 2, 0, 1, "prompt"]);
    expect(Array.from(p.cone)).toEqual(cone(4, 5, 1, 2));
    expect(decodePatch(undefined, 4, 5)).toBeNull();
    expect(decodePatch({ site: 1 }, 4, 5)).toBeNull();
    expect(() => decodePatch({ cone: wire("uint8", [2, 2], [0, 0, 0, 1]) }, 4, 5)).toThrow(/cone has 4 cells/);
  });
});

describe("coneOverlay", () => {
  it("on the diff grid: the cone's cells as they are, the patched cell marked", () => {
    const p = info(4, 5, 1, 2);
    const o = coneOverlay(p, 4, 5, null, 5, 2);
    expect(Array.from(o.shade!)).toEqual(cone(4, 5, 1, 2));
    expect(o.marks).toEqual([{ cell: { site: 1, col: 2 }, kind: "patched" }]);
  });

  it("on a side's own grid: through its column map (aligned c -> the side's column)", () => {
    // the diff grid has 3 aligned columns; the side has 5 columns, aligned on the last token
    const S = 3;
    const p = { ...info(S, 3, 1, 1), targetCol: 3 };
    const cols = Int32Array.from([2, 3, 4]);
    const o = coneOverlay(p, S, 3, cols, 5, 3);
    const want = new Uint8Array(S * 5);
    for (let s = 0; s < S; s++) for (let c = 0; c < 3; c++) want[s * 5 + cols[c]] = p.cone[s * 3 + c];
    expect(Array.from(o.shade!)).toEqual(Array.from(want));
    expect(o.shade![1 * 5 + 3]).toBe(1); // the patched cell (site 1, aligned 1 = own column 3)
    expect(o.shade![1 * 5 + 4]).toBe(0); // later columns at the patched site are outside
    expect(o.shade![2 * 5 + 2]).toBe(0); // earlier columns too
    expect(o.marks).toEqual([{ cell: { site: 1, col: 3 }, kind: "patched" }]);
    expect(alignedCol(cols, 3)).toBe(1);
    expect(alignedCol(cols, 0)).toBe(-1);
  });

  it("marks nothing off the grid", () => {
    expect(coneOverlay(info(4, 5, 1, 2), 4, 5, null, 5, -1).marks).toEqual([]);
    expect(coneOverlay(info(4, 5, 1, 2), 4, 5, null, 5, 7).marks).toEqual([]);
  });
});

describe("the patch flow", () => {
  const off: PatchState = { mode: "off" };
  const cell = (site: number, col: number) => ({ site, col });

  it("click-click: toggle, source on one prompt, target column on another (the source's site)", () => {
    let s = patchStep(off, { type: "toggle" });
    expect(s).toEqual({ state: { mode: "source" }, request: null });
    s = patchStep(s.state, { type: "pick", prompt: 0, cell: cell(2, 3) });
    expect(s).toEqual({ state: { mode: "target", source: { prompt: 0, site: 2, col: 3 } }, request: null });
    s = patchStep(s.state, { type: "pick", prompt: 1, cell: cell(0, 5) });
    expect(s.request).toEqual({ source: [0, 2, 3], target: [1, 5] });
    expect(s.state).toEqual({ mode: "source" }); // ready for the next one
    expect(patchStep(s.state, { type: "toggle" }).state).toEqual(off);
  });

  it("clicks do nothing with the mode off; cancel steps back, then leaves", () => {
    expect(patchStep(off, { type: "pick", prompt: 0, cell: cell(1, 1) })).toEqual({ state: off, request: null });
    const picking: PatchState = { mode: "target", source: { prompt: 0, site: 1, col: 1 } };
    expect(patchStep(picking, { type: "cancel" }).state).toEqual({ mode: "source" });
    expect(patchStep({ mode: "source" }, { type: "cancel" }).state).toEqual(off);
  });

  it("keys: s marks the cursor from any mode, t patches into the cursor's column", () => {
    let s = patchStep(off, { type: "mark", prompt: 1, cell: cell(3, 2) });
    expect(s.state).toEqual({ mode: "target", source: { prompt: 1, site: 3, col: 2 } });
    expect(patchStep({ mode: "source" }, { type: "target", prompt: 0, col: 4 }).request).toBeNull();
    s = patchStep(s.state, { type: "target", prompt: 0, col: 4 });
    expect(s.request).toEqual({ source: [1, 3, 2], target: [0, 4] });
  });

  it("a drag patches from the first cell into the last one's column, on the prompt shown", () => {
    expect(patchStep(off, { type: "drag", prompt: 0, from: cell(1, 1), to: cell(2, 4) }).request).toBeNull();
    const s = patchStep({ mode: "source" }, { type: "drag", prompt: 1, from: cell(1, 1), to: cell(2, 4) });
    expect(s.request).toEqual({ source: [1, 1, 1], target: [1, 4] });
  });

  it("maps keys: s, t only with a source, p and Esc only in the mode, none with a modifier", () => {
    const picking: PatchState = { mode: "target", source: { prompt: 0, site: 1, col: 1 } };
    expect(patchKey("s", off)).toBe("mark");
    expect(patchKey("t", off)).toBeNull();
    expect(patchKey("t", { mode: "source" })).toBeNull();
    expect(patchKey("t", picking)).toBe("target");
    expect(patchKey("p", off)).toBeNull();
    expect(patchKey("p", { mode: "source" })).toBe("next-prompt");
    expect(patchKey("Escape", off)).toBeNull(); // Esc keeps clearing the pins
    expect(patchKey("Escape", picking)).toBe("cancel");
    expect(patchKey("s", off, true)).toBeNull();
    expect(patchKey("ArrowUp", picking)).toBeNull();
  });
});

describe("the patch bar in the widget", () => {
  const two = { data: {}, grids: { "logit lens": [makeData(), makeData()] }, lenses: ["logit lens"], lens: "logit lens", prompts: ["a", "b"], prompt_index: 0 };

  it("is disabled, saying why, when no kernel answers; enabled when one does", async () => {
    for (const ok of [false, true]) {
      const { model, el, cleanup } = await mount(two);
      const toggle = el.querySelector<HTMLButtonElement>("button.lw-patch-mode")!;
      expect(toggle.hidden).toBe(false);
      expect(toggle.disabled).toBe(true); // not known yet
      const ready = model.sent.find((m) => m.type === "view_ready")!;
      answer(model, ready, ok ? { result: { generating: false } } : { error: "no kernel (exported page)" });
      await tick();
      expect(toggle.disabled).toBe(!ok);
      if (!ok) expect(toggle.title).toContain("no kernel (exported page)");
      cleanup();
    }
  });

  it("click-click on the grid sends the patch request, and does not pin", async () => {
    const { model, el, cleanup } = await mount(two, true);
    answer(model, model.sent.find((m) => m.type === "view_ready")!, { result: {} });
    await tick();
    el.querySelector<HTMLButtonElement>("button.lw-patch-mode")!.click();
    const canvas = el.querySelector("canvas")!;
    // happy-dom has no layout: click through the grid's cell lookup (its published geometry)
    const click = (site: number, col: number) => {
      const g = JSON.parse(el.querySelector<HTMLElement>(".lw-viewport")!.dataset.geometry!);
      const ev = new MouseEvent("click", { bubbles: true });
      Object.defineProperty(ev, "offsetX", { value: g.headW + g.colX[col] + 2 });
      Object.defineProperty(ev, "offsetY", { value: g.headH + (4 - 1 - site) * g.rowH + 5 });
      canvas.dispatchEvent(ev);
    };
    click(2, 1);
    model.set("prompt_index", 1);
    click(0, 4);
    const p = model.sent.filter((m) => m.type === "patch");
    expect(p.map((m) => [m.source, m.target])).toEqual([[[0, 2, 1], [1, 4]]]);
    expect(model.get("pinned")).toEqual([]);
    // the task bar tells the patch's progress in its words; the reply ends it
    const root = el.querySelector<HTMLElement>(".lens-widget")!;
    const text = el.querySelector(".lw-progress-text")!;
    model.emit("msg:custom", { type: "progress", task: "compute", state: "running", done: 1, total: 2, eta_s: 1, elapsed_s: 1 });
    expect(root.dataset.task).toBe("running");
    expect(text.textContent).toMatch(/^patching prompt 1 .* \(1 \/ 2\)$/);
    model.emit("msg:custom", { type: "progress", task: "compute", state: "done", done: -1, total: 2, eta_s: 0, elapsed_s: 1 });
    expect(root.dataset.task).toBe("running");
    answer(model, p[0], { result: { seconds: 0.5, max_js: 0.25 } });
    await tick();
    expect(root.dataset.task).not.toBe("running");
    expect(text.textContent).toBe("patch done in 0.50 s · largest JS 0.250 nats");
    cleanup();
  });

  it("is hidden with one prompt and no patch", async () => {
    const { el, cleanup } = await mount({ data: makeData() });
    expect(el.querySelector<HTMLElement>(".lw-patch")!.hidden).toBe(true);
    cleanup();
  });
});

describe("PatchTool marks", () => {
  it("marks the source on its own prompt and previews the target at the source's site", () => {
    let shown: number | null = 0;
    const tool = new PatchTool(
      {
        req: {} as never, promptShown: () => shown, prompts: () => ["a", "b"], showPrompt: () => {}, targetPrompt: () => 0,
        kernel: () => ({ ok: true, reason: "" }), taskStarted: () => {}, taskEnded: () => {}, changed: () => {}, sideChanged: () => {},
      },
      new Disposers(),
    );
    expect(tool.targetPreview({ site: 0, col: 4 })).toBeNull(); // no source yet
    tool.apply({ type: "toggle" });
    tool.click({ site: 2, col: 1 });
    expect(tool.sourceMark()).toEqual({ site: 2, col: 1 });
    expect(tool.targetPreview({ site: 0, col: 4 })).toEqual({ site: 2, col: 4 });
    shown = 1; // another prompt: the source is not on it, the preview is
    expect(tool.sourceMark()).toBeNull();
    expect(tool.targetPreview({ site: 3, col: 0 })).toEqual({ site: 2, col: 0 });
    shown = null; // the diff grid: neither
    expect(tool.targetPreview({ site: 3, col: 0 })).toBeNull();
  });

  it("describes the patch shown", () => {
    expect(describePatch(info(4, 5, 1, 2))).toBe("patched resid_out_0: prompt 1 pos 1 → prompt 2 pos 2; shaded: the cells it can change");
  });
});
