import { describe, expect, it } from "vitest";
import { decodeLens, type LensData } from "../../src/data";
import { alignedLabel, meanLens } from "../../src/aggregate";
import { metricView } from "../../src/metrics";
import { cellStats, cellSummary, topkTable } from "../../src/tooltip";
import "../../src/widget"; // loaded before the tests (mount imports it), so no test pays for the import
import { makeData, mount, wire } from "../fixture";

/** makeData with every top-k id shifted by `shift` (another lens's grid) and a lens name. */
function lensData(shift: number, lensName: string, S = 4, P = 6, k = 3) {
  const d = makeData(S, P, k);
  const ids: number[] = [];
  for (let s = 0; s < S; s++) for (let c = 0; c < P; c++) for (let j = 0; j < k; j++) ids.push((s + c + j + shift) % 8);
  return { ...d, lens_name: lensName, topk_ids: wire("int32", [S, P, k], ids) };
}

/** A prompt's grid with P columns and entropy / rank / kl values that identify it. */
function promptData(P: number, base: number, prompt: string) {
  const S = 2;
  const d = makeData(S, P, 2);
  const n = S * P;
  return {
    ...d,
    prompt,
    entropy: wire("float32", [S, P], Array.from({ length: n }, (_, i) => base + i)),
    next_rank: wire("int32", [S, P], Array.from({ length: n }, (_, i) => ((i % P) === P - 1 ? 0 : base))),
    nonfinite: wire("uint8", [S, P], new Array(n).fill(0)),
  };
}

const select = (el: HTMLElement, cls: string) => el.querySelector<HTMLSelectElement>(`select.${cls}`)!;
function choose(sel: HTMLSelectElement, value: string) {
  sel.value = value;
  sel.dispatchEvent(new Event("change"));
}

describe("lens switch", () => {
  it("is hidden with one lens, and the title, legend and root name the lens", async () => {
    const { el, cleanup } = await mount({ data: { ...makeData(), lens_name: "logit lens" } });
    expect(select(el, "lw-lens").hidden).toBe(true);
    expect(select(el, "lw-prompt-select").hidden).toBe(true);
    expect(el.querySelector(".lw-title")!.textContent).toBe("fixture · logit lens — 4 sites × 6 tokens");
    expect(el.querySelector(".lw-legend-lens")!.textContent).toBe("logit lens");
    expect(el.querySelector<HTMLElement>(".lens-widget")!.dataset.lens).toBe("logit lens");
    cleanup();
  });

  it("switches the grid without the kernel and names the lens shown everywhere", async () => {
    const logit = lensData(0, "logit lens");
    const tuned = lensData(3, "tuned lens");
    const { model, el, cleanup } = await mount({
      data: logit,
      lenses: ["logit", "tuned"],
      lens: "logit",
      prompts: ["p"],
      prompt_index: 0,
      grids: { logit: [logit], tuned: [tuned] },
      selected: { site: 1, col: 2, position: 2 },
    });
    const sel = select(el, "lw-lens");
    expect(sel.hidden).toBe(false);
    expect(Array.from(sel.options).map((o) => [o.value, o.textContent])).toEqual([["logit", "logit"], ["tuned", "tuned"]]);
    const detailIds = () => Array.from(el.querySelectorAll<HTMLElement>(".lw-detail-row")).map((r) => Number(r.dataset.id));
    expect(detailIds()).toEqual([3, 4, 5]); // (1 + 2 + j) % 8
    const asked = () => model.sent.filter((m) => m.type !== "trajectory").length;
    const sent = asked();
    choose(sel, "tuned");
    expect(model.state.lens).toBe("tuned");
    expect(model.saves).toBeGreaterThan(0);
    expect(asked()).toBe(sent); // no request needed
    expect(detailIds()).toEqual([6, 7, 0]); // the tuned grid: shifted by 3
    expect(el.querySelector(".lw-title")!.textContent).toContain("· tuned —");
    expect(el.querySelector(".lw-legend-lens")!.textContent).toBe("tuned");
    expect(el.querySelector(".lw-detail .lw-tip-lens")!.textContent).toBe("tuned");
    // the kernel (or another view) switching back is followed too
    model.set("lens", "logit");
    expect(sel.value).toBe("logit");
    expect(detailIds()).toEqual([3, 4, 5]);
    cleanup();
  });

  it("the tooltip's parts name the lens", () => {
    const lens = decodeLens(lensData(0, "tuned lens"))!;
    const parts = cellSummary(lens, { site: 0, col: 0 });
    expect(parts.find((p) => p.classList.contains("lw-tip-lens"))!.textContent).toBe("tuned lens");
    expect(decodeLens(lensData(0, "tuned lens"), "tuned")!.lensName).toBe("tuned");
    expect(decodeLens(makeData())!.lensName).toBe("logit lens");
  });
});

describe("prompt selector", () => {
  const prompts = ["first <img src=x onerror=alert(1)>", "second", "third"];
  const grids = [promptData(3, 10, prompts[0]), promptData(5, 20, prompts[1]), promptData(4, 30, prompts[2])];
  const state = { data: grids[0], lenses: ["logit lens"], lens: "logit lens", prompts, prompt_index: 0, aggregate: false, grids: { "logit lens": grids } };

  it("lists each prompt as text, and the mean view", async () => {
    const { el, cleanup } = await mount(state);
    const sel = select(el, "lw-prompt-select");
    expect(sel.hidden).toBe(false);
    expect(Array.from(sel.options).map((o) => o.value)).toEqual(["0", "1", "2", "mean"]);
    expect(sel.options[0].textContent).toBe("1: first <img src=x onerror=alert(1)>");
    expect(el.querySelector("img")).toBeNull();
    expect(sel.options[3].textContent).toBe("mean of 3 prompts (aligned on the last token)");
    cleanup();
  });

  it("shows each prompt's own grid and the mean, setting prompt_index and aggregate", async () => {
    const { model, el, cleanup } = await mount(state);
    const sel = select(el, "lw-prompt-select");
    const title = () => el.querySelector(".lw-title")!.textContent;
    expect(title()).toBe("fixture · logit lens · prompt 1 of 3 — 2 sites × 3 tokens");
    choose(sel, "1");
    expect(model.state).toMatchObject({ prompt_index: 1, aggregate: false });
    expect(title()).toBe("fixture · logit lens · prompt 2 of 3 — 2 sites × 5 tokens");
    choose(sel, "mean");
    expect(model.state.aggregate).toBe(true);
    expect(title()).toBe("fixture · logit lens · mean of 3 prompts, aligned on the last token — 2 sites × 3 tokens");
    expect(el.querySelector<HTMLElement>(".lens-widget")!.dataset.view).toBe("mean");
    choose(sel, "2");
    expect(model.state).toMatchObject({ prompt_index: 2, aggregate: false });
    expect(title()).toContain("prompt 3 of 3 — 2 sites × 4 tokens");
    cleanup();
  });

  it("the mean view's panel asks the kernel nothing", async () => {
    const { model, el, cleanup } = await mount({ ...state, aggregate: true, selected: { site: 1, col: 2, position: -1 }, pinned: [[1, 1]] });
    expect(el.querySelector(".lw-chip-label")!.textContent).toBe("0 · last−1 "); // site 1 of 2 is block 0
    expect(el.querySelector(".lw-detail .lw-agg-note")!.textContent).toBe("mean over 3 prompts, aligned on the last token");
    expect(el.querySelector(".lw-more")).toBeNull();
    expect(el.querySelectorAll(".lw-detail-row")).toHaveLength(0);
    expect(model.sent.filter((m) => m.type === "trajectory" || m.type === "cell_detail")).toEqual([]);
    // the chart follows the tracked tokens' means; back on one prompt, that prompt's defaults
    const series = () => JSON.parse(el.querySelector<HTMLCanvasElement>("canvas.lw-chart")!.dataset.series ?? "[]").map((x: { id: number }) => x.id);
    expect(series()).toEqual([3, 7]);
    choose(select(el, "lw-prompt-select"), "0");
    expect(series()).not.toEqual([3, 7]);
    expect(series()[0]).toBe(decodeLens(grids[0])!.topkIds[(1 * 3 + 2) * 2]); // final top-1 at column 2
    cleanup();
  });
});

describe("meanLens", () => {
  const lenses = [promptData(3, 10, "a"), promptData(5, 20, "b")].map((d) => decodeLens(d)!) as LensData[];

  it("aligns on the last token and averages every metric", () => {
    const m = meanLens(lenses)!;
    expect(m.P).toBe(3);
    expect(m.aggregate).toEqual({ count: 2, lengths: [3, 5] });
    expect(m.columnLabels).toEqual(["last−2", "last−1", "last"]);
    expect(Array.from(m.positions)).toEqual([-3, -2, -1]);
    // entropy of prompt a at (s, c) = 10 + s*3 + c; of prompt b = 20 + s*5 + c
    for (let s = 0; s < 2; s++)
      for (let j = 0; j < 3; j++) {
        const a = 10 + s * 3 + j;
        const b = 20 + s * 5 + (5 - 3 + j);
        expect(m.entropy[s * 3 + j]).toBeCloseTo((a + b) / 2, 5);
      }
    // ranks: geometric mean (10 and 20 -> sqrt(200)); the last token has none
    expect(m.nextRank[0]).toBeCloseTo(Math.sqrt(200), 4);
    expect(m.nextRank[2]).toBe(0);
    expect(Number.isNaN(m.nextProb[2])).toBe(true);
    // the metric views read it like one prompt's data
    const view = metricView(m, "entropy");
    expect(view.values[5]).toBeCloseTo(m.entropy[5], 6);
    expect(metricView(m, "next_rank").values[0]).toBeCloseTo(Math.sqrt(200), 4);
    // tracked tokens are shared: their mean is kept
    expect(Array.from(m.trackedIds)).toEqual([3, 7]);
    expect(metricView(m, "tracked_prob").values[0]).toBeCloseTo(0.7, 6);
  });

  it("leaves non-finite cells out of the mean, and has no top-k", () => {
    const d = promptData(3, 10, "a");
    const bad = { ...promptData(3, 40, "b"), nonfinite: wire("uint8", [2, 3], [1, 0, 0, 0, 0, 0]) };
    const m = meanLens([decodeLens(d)!, decodeLens(bad)!])!;
    expect(m.entropy[0]).toBeCloseTo(10, 6); // only prompt a
    expect(m.nonfinite[0]).toBe(0);
    expect(m.entropy[1]).toBeCloseTo((11 + 41) / 2, 6);
    const both = meanLens([decodeLens(bad)!, decodeLens(bad)!])!;
    expect(both.nonfinite[0]).toBe(1);
    expect(topkTable(m, { site: 0, col: 0 }).rows).toHaveLength(0);
    const stats = cellStats(m, { site: 0, col: 0 }, null).textContent!;
    expect(stats).toContain("mean entropy");
    expect(stats).toContain("geometric mean");
  });

  it("labels columns from the end", () => {
    expect([0, 1, 2, 3].map((j) => alignedLabel(j, 4))).toEqual(["last−3", "last−2", "last−1", "last"]);
  });
});
