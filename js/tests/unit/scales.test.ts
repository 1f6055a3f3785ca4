// The log-probability and rank colour scales (color.ts), the tracked-token metrics that use them
// (metrics.ts), the next-token mark's one colour and its legend key, and the compare sides' names.
import { describe, expect, it } from "vitest";
import { LOGPROB_FLOOR, logProbScale, N_COLORS, NEXT_MARK_COLOR, rankFraction, rankScale } from "../../src/color";
import { metricView } from "../../src/metrics";
import { decodeLens } from "../../src/data";
import { renderLegend } from "../../src/legend";
import { sideOptions } from "../../src/controls";
import { trackedTable } from "../../src/tooltip";
import { makeData, wire } from "../fixture";

/** index(v) never decreases as v grows (over a dense sample of the domain and beyond). */
function monotone(index: (v: number) => number, from: number, to: number, n = 2000): boolean {
  let last = -Infinity;
  for (let i = 0; i <= n; i++) {
    const c = index(from + ((to - from) * i) / n);
    if (c < last) return false;
    last = c;
  }
  return true;
}

describe("log-probability scale", () => {
  it("is linear in log p over [lo, 0]: 0 is the top colour, lo the bottom, the middle the middle", () => {
    const s = logProbScale(-8);
    expect(s.kind).toBe("logp");
    expect([s.lo, s.hi]).toEqual([-8, 0]);
    expect(s.index(0)).toBe(N_COLORS - 1);
    expect(s.index(-8)).toBe(0);
    expect(s.index(-4)).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(s.index(Math.log(0.5))).toBe(Math.round((1 - Math.log(2) / 8) * (N_COLORS - 1)));
  });
  it("is monotone, and clamps: below lo (and −∞, p = 0) the darkest colour, above 0 the brightest", () => {
    const s = logProbScale(-12);
    expect(monotone(s.index, -30, 2)).toBe(true);
    expect(s.index(-1e9)).toBe(0);
    expect(s.index(-Infinity)).toBe(0);
    expect(s.index(1e-7)).toBe(N_COLORS - 1);
  });
  it("NaN is no value; the range never reaches below the floor, and says when it clamps", () => {
    expect(logProbScale(-5).index(NaN)).toBe(-1);
    const deep = logProbScale(-300);
    expect(deep.lo).toBe(LOGPROB_FLOOR);
    expect(deep.ticks[0]).toBe(`≤ log p ${LOGPROB_FLOOR.toFixed(1)}`);
    expect(logProbScale(-5).ticks[0]).toBe("log p -5.000");
    expect(logProbScale(-Infinity).lo).toBe(LOGPROB_FLOOR);
    expect(logProbScale(NaN).lo).toBe(LOGPROB_FLOOR);
    expect(logProbScale(-40, -50).lo).toBe(-40);
    // every cell at p = 1: a non-empty range still (no division by zero)
    const flat = logProbScale(0);
    expect(flat.lo).toBeLessThan(0);
    expect(flat.index(0)).toBe(N_COLORS - 1);
  });
});

describe("rank scale", () => {
  it("rank 1 is the brightest, hi the darkest, log spaced", () => {
    const s = rankScale(50000);
    expect(s.index(1)).toBe(N_COLORS - 1);
    expect(s.index(50000)).toBe(0);
    expect(s.index(Math.sqrt(50000))).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(s.ticks).toEqual(["rank 1", "rank 50000"]);
  });
  it("is monotone decreasing in the rank, clamps ranks past hi, and 0 / negative / NaN are no value", () => {
    const s = rankScale(1000);
    expect(monotone((v) => -s.index(v), 1, 5000)).toBe(true);
    expect(s.index(10 ** 6)).toBe(0);
    for (const v of [0, -3, NaN]) expect(s.index(v)).toBe(-1);
    expect(rankFraction(10 ** 6, 1000)).toBe(0);
    expect(rankFraction(1, 1000)).toBe(1);
  });
  it("a grid where every rank is 1 still has a range (hi at least 2)", () => {
    const s = rankScale(1);
    expect(s.hi).toBe(2);
    expect(s.index(1)).toBe(N_COLORS - 1);
    expect(s.index(2)).toBe(0);
    expect(rankScale(NaN).hi).toBe(2);
  });
});

describe("tracked-token metrics", () => {
  const S = 4;
  const P = 6;
  const n = S * P;
  const data = makeData(S, P, 3);
  // token 3: p = 2^-(c+1) at column c (log p = −(c+1) ln 2), rank = 10^site; token 7: p = 0 (log p −∞)
  data.tracked_prob = wire("float32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => (i % 2 ? 0 : 2 ** -((Math.floor(i / 2) % P) + 1))));
  data.tracked_rank = wire("int32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => (i % 2 ? 49152 : 10 ** Math.floor(i / 2 / P))));
  const lens = decodeLens(data)!;

  it("tracked_logprob is the log of the probability, on a log-prob scale from the lowest value", () => {
    const v = metricView(lens, "tracked_logprob", 3);
    expect(v.scale.kind).toBe("logp");
    expect(v.label).toMatch(/^log p\(/);
    for (let i = 0; i < n; i++) expect(v.values[i]).toBeCloseTo(-((i % P) + 1) * Math.LN2, 5);
    // cell 1 is non-finite in the fixture and left out of the range: lo is column 5's (col 1 skipped)
    expect(v.scale.lo).toBeCloseTo(-6 * Math.LN2, 5);
    const zero = metricView(lens, "tracked_logprob", 7);
    expect(zero.values[0]).toBe(-Infinity);
    expect(zero.scale.index(zero.values[0])).toBe(0);
    expect(zero.scale.lo).toBe(LOGPROB_FLOOR);
  });
  it("tracked_rank reads the exact ranks on the rank scale up to the largest", () => {
    const v = metricView(lens, "tracked_rank", 3);
    expect(v.scale.kind).toBe("log");
    expect(v.scale.hi).toBe(1000);
    for (let i = 0; i < n; i++) expect(v.values[i]).toBe(10 ** Math.floor(i / P));
    expect(v.scale.index(v.values[0])).toBe(N_COLORS - 1);
    expect(metricView(lens, "tracked_rank", 99).note).toMatch(/token id 99 is not tracked/);
  });
  it("the tooltip's tracked table lists every tracked token's probability, rank and labelled id", () => {
    const t = trackedTable(lens, { site: 2, col: 3 });
    const rows = Array.from(t.querySelectorAll("tr.lw-tracked-row")) as HTMLElement[];
    expect(rows.map((r) => r.dataset.id)).toEqual(["3", "7"]);
    expect(Number(rows[0].dataset.prob)).toBe(2 ** -4);
    expect(rows[0].dataset.rank).toBe("100");
    expect(rows[0].querySelector(".lw-tracked-rank")!.textContent).toBe("100");
    expect(rows[1].querySelector(".lw-tracked-rank")!.textContent).toBe("49152");
    expect(rows[0].querySelector(".lw-id")!.textContent).toBe("id 3");
    const none = decodeLens({ ...makeData(S, P, 3), tracked_ids: wire("int32", [0], []), tracked_prob: wire("float32", [S, P, 0], []), tracked_logit: wire("float32", [S, P, 0], []), tracked_rank: wire("int32", [S, P, 0], []) })!;
    expect(trackedTable(none, { site: 0, col: 0 }).children).toHaveLength(0);
  });
});

describe("the next-token mark and the compare sides", () => {
  it("the legend has a key of the mark in its one colour", () => {
    const host = document.createElement("div");
    renderLegend(host, metricView(decodeLens(makeData())!, "top1_prob"));
    const sw = host.querySelector(".lw-mark-swatch") as HTMLElement;
    expect(sw.dataset.color).toBe(NEXT_MARK_COLOR);
    expect(host.querySelector(".lw-legend-mark")!.textContent).toContain("top-1 = next token");
  });
  it("sides are named by what differs: lenses on one prompt, prompts with one lens, both otherwise", () => {
    expect(sideOptions(["logit lens", "tuned lens"], ["The capital of France is"]).map((o) => o[1])).toEqual(["logit lens", "tuned lens"]);
    expect(sideOptions(["logit lens"], ["a", "b"]).map((o) => o[1])).toEqual(["prompt 1: a", "prompt 2: b"]);
    expect(sideOptions(["x", "y"], ["a", "b"]).map((o) => o[1])).toEqual(["x · prompt 1: a", "x · prompt 2: b", "y · prompt 1: a", "y · prompt 2: b"]);
    expect(JSON.parse(sideOptions(["x", "y"], ["a"])[1][0])).toEqual(["y", 0]);
  });
});
