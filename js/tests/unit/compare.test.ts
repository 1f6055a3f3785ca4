import { describe, expect, it } from "vitest";
import widget from "../../src/widget";
import { compareView, decodeComparison, diffLens, type CompareData } from "../../src/compare";
import { COMPARE_METRICS } from "../../src/metrics";
import { N_COLORS } from "../../src/color";
import { FakeModel, makeData, wire } from "../fixture";

const S = 4;
const PA = 6;
const PB = 4;

/** A comparison laid out as lens_widget.wire.comparison_to_wire: a (6 columns) vs b (4), aligned on the last token. */
function makeComparison(over: Record<string, unknown> = {}) {
  const P = PB;
  const n = S * P;
  const d = (f: (i: number) => number) => wire("float32", [S, P], Array.from({ length: n }, (_, i) => f(i)), 4);
  return {
    version: 1,
    label_a: "<b>side a</b>",
    label_b: "side b",
    align: "on the last token",
    js_exact: false,
    js_label: "JS divergence (top-3 approximation)",
    n_sites: S,
    n_positions: P,
    a: makeData(S, PA, 3),
    b: makeData(S, PB, 3),
    cols_a: wire("int32", [P], [2, 3, 4, 5], 4),
    cols_b: wire("int32", [P], [0, 1, 2, 3], 4),
    d_top1_prob: d((i) => (i % 3) - 1),
    d_next_prob: d((i) => (i % P === P - 1 ? NaN : 0.1 * (i % 5) - 0.2)),
    next_rank_log_ratio: d((i) => Math.log(1 + i) - 1),
    d_entropy: d((i) => -0.5 + i / n),
    d_kl: d((i) => (i === 5 ? 1000 : i - 8)), // cell 5 is non-finite: left out of the scale
    js: d((i) => i / (4 * n)),
    top1_agree: wire("uint8", [S, P], Array.from({ length: n }, (_, i) => i % 2), 4),
    nonfinite: wire("uint8", [S, P], Array.from({ length: n }, (_, i) => (i === 5 ? 1 : 0)), 4),
    tracked_ids: wire("int32", [2], [3, 7], 4),
    d_tracked_prob: wire("float32", [S, P, 2], Array.from({ length: 2 * n }, (_, i) => (i % 2 ? -0.3 : 0.1)), 4),
    d_tracked_logit: wire("float32", [S, P, 2], Array.from({ length: 2 * n }, (_, i) => (i % 2 ? -1 : 2)), 4),
    ...over,
  };
}

describe("comparison decoding", () => {
  it("decodes both sides, the aligned columns and the Δ arrays (byteOffset honoured)", () => {
    const c = decodeComparison(makeComparison()) as CompareData;
    expect(c.S).toBe(S);
    expect(c.P).toBe(PB);
    expect(c.a.P).toBe(PA);
    expect(c.b.P).toBe(PB);
    expect(Array.from(c.colsA)).toEqual([2, 3, 4, 5]);
    expect(c.jsExact).toBe(false);
    expect(c.deltas.d_entropy[0]).toBeCloseTo(-0.5);
    expect(c.M).toBe(2);
  });
  it("refuses another wire version and mismatched shapes, and reads an empty trait as none", () => {
    expect(decodeComparison({})).toBeNull();
    expect(() => decodeComparison(makeComparison({ version: 99 }))).toThrow(/version/);
    expect(() => decodeComparison(makeComparison({ n_positions: 5 }))).toThrow(RangeError);
  });
  it("the diff grid shows b's top-1 and both sides' tokens in the column headers", () => {
    const c = decodeComparison(makeComparison())!;
    const lens = diffLens(c);
    expect(lens.P).toBe(PB);
    expect(lens.compare).toBe(c);
    for (let s = 0; s < S; s++)
      for (let col = 0; col < PB; col++) expect(lens.topkIds[s * PB + col]).toBe(c.b.topkIds[(s * PB + c.colsB[col]) * c.b.k]);
    const ta = c.a.display(c.a.tokenAt(2));
    const tb = c.b.display(c.b.tokenAt(0));
    expect(lens.columnLabels![0]).toBe(ta === tb ? ta : `${ta}│${tb}`);
  });
});

describe("compare scales", () => {
  it("Δ metrics use a diverging scale centred on zero, symmetric about the largest |Δ| with data", () => {
    const c = decodeComparison(makeComparison())!;
    const v = compareView(c, "d_kl");
    expect(v.scale.kind).toBe("div");
    // |Δ| max over cells with data: cell 5 (1000) is non-finite and left out; the rest span -8..7
    expect(v.scale.hi).toBe(8);
    expect(v.scale.lo).toBe(-8);
    expect(v.scale.index(0)).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(v.scale.index(v.values[0])).toBe(0); // -8: the bluest
    for (const m of ["d_top1_prob", "d_next_prob", "next_rank_log_ratio", "d_entropy", "d_tracked_prob", "d_logit_diff"])
      expect(compareView(c, m).scale.kind, m).toBe("div");
    const ld = compareView(c, "d_logit_diff", -1, [3, 7]);
    expect(ld.values[0]).toBe(3); // 2 - (-1)
    expect(compareView(c, "d_tracked_prob", 7).values[0]).toBeCloseTo(-0.3);
  });
  it("JS and agreement are sequential; JS is labelled exact or approximate", () => {
    const c = decodeComparison(makeComparison())!;
    const js = compareView(c, "js");
    expect(js.scale.kind).toBe("seq");
    expect(js.label).toMatch(/approximation/);
    expect(compareView(decodeComparison(makeComparison({ js_exact: true, js_label: "JS divergence (exact, full vocabulary)" }))!, "js").label).toMatch(/exact/);
    expect(Array.from(compareView(c, "top1_agree").values.slice(0, 4))).toEqual([0, 1, 0, 1]);
    expect(compareView(c, "kl").metric).toBe("js"); // not a compare metric: JS
    expect(COMPARE_METRICS).toContain("js");
  });
});

describe("the compare view of the widget", () => {
  it("toggles to the diff grid, lists compare metrics and keeps every label as text", () => {
    const model = new FakeModel({ data: makeData(S, PA, 3), comparison: makeComparison(), compare_view: true, metric: "d_kl", prompts: ["p"], lenses: ["x"], lens: "x" });
    const el = document.createElement("div");
    const cleanup = widget.render({ model: model as never, el });
    const root = el.querySelector(".lens-widget") as HTMLElement;
    expect(root.dataset.view).toBe("compare");
    const opts = Array.from(el.querySelectorAll("select.lw-metric option")).map((o) => (o as HTMLOptionElement).value);
    expect(opts).toEqual([...COMPARE_METRICS]);
    expect(el.querySelector(".lw-title")!.textContent).toContain("<b>side a</b> vs side b");
    // the label's markup is text, never parsed: no <b> element holds "side a"
    expect(Array.from(el.querySelectorAll("b")).some((b) => b.textContent === "side a")).toBe(false);
    const toggle = el.querySelector("input.lw-compare-toggle") as HTMLInputElement;
    expect(toggle.checked).toBe(true);
    toggle.checked = false;
    toggle.dispatchEvent(new Event("change"));
    expect(model.state.compare_view).toBe(false);
    expect(model.state.metric).toBe("top1_prob");
    expect(root.dataset.view).toBe("0");
    cleanup();
  });
});

describe("the one compare control", () => {
  it("with two lenses on one prompt and no comparison yet: one checkbox, sides named by lens; checking it asks for the pair", () => {
    const data = makeData(S, PA, 3);
    const model = new FakeModel({ data, grids: { "logit lens": [data], "tuned lens": [data] }, prompts: ["The capital of France is"], lenses: ["logit lens", "tuned lens"], lens: "logit lens" });
    const el = document.createElement("div");
    const cleanup = widget.render({ model: model as never, el });
    const toggle = el.querySelector("input.lw-compare-toggle") as HTMLInputElement;
    expect((el.querySelector(".lw-compare") as HTMLElement).hidden).toBe(false);
    expect(el.querySelectorAll("button.lw-cmp-go")).toHaveLength(0);
    expect(Array.from(el.querySelectorAll("select.lw-cmp-a option")).map((o) => o.textContent)).toEqual(["logit lens", "tuned lens"]);
    toggle.checked = true;
    toggle.dispatchEvent(new Event("change"));
    expect(model.state.compare_pair).toEqual([["logit lens", 0], ["tuned lens", 0]]);
    expect(toggle.checked).toBe(false); // checked once the kernel's comparison arrives
    cleanup();
  });
});
