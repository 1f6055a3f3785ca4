import { describe, expect, it } from "vitest";
import { diverging, LOGPROB_FLOOR, logProbScale, N_COLORS, ramp, rankScale, sequential } from "../../src/color";
import { metricView } from "../../src/metrics";
import { decodeLens } from "../../src/data";
import { makeData } from "../fixture";

describe("scales", () => {
  it("sequential maps lo..hi onto the colour range and NaN to no colour", () => {
    const s = sequential(0, 1);
    expect(s.index(0)).toBe(0);
    expect(s.index(1)).toBe(N_COLORS - 1);
    expect(s.index(0.5)).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(s.index(-3)).toBe(0);
    expect(s.index(7)).toBe(N_COLORS - 1);
    expect(s.index(NaN)).toBe(-1);
    expect(s.colors).toHaveLength(N_COLORS);
  });
  it("log rank: rank 1 brightest, log spaced, 0 = none", () => {
    const s = rankScale(1000);
    expect(s.index(1)).toBe(N_COLORS - 1);
    expect(s.index(1000)).toBe(0);
    expect(s.index(Math.sqrt(1000))).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(s.index(0)).toBe(-1);
  });
  it("diverging is centred on zero and symmetric", () => {
    const s = diverging(4);
    expect(s.index(0)).toBe(Math.round(0.5 * (N_COLORS - 1)));
    expect(s.index(-4)).toBe(0);
    expect(s.index(4)).toBe(N_COLORS - 1);
    // mirror values get mirror colours: index(x) + index(-x) = N_COLORS - 1 (within rounding)
    for (const x of [0, 0.01, 0.3, 1, 1.7, 2, 3.99, 4, 9]) {
      const sum = s.index(x) + s.index(-x);
      expect(Math.abs(sum - (N_COLORS - 1)), `x = ${x}: ${s.index(x)} + ${s.index(-x)}`).toBeLessThanOrEqual(1);
    }
    expect(s.index(2)).toBeGreaterThan(s.index(0));
    expect(s.colors[Math.round(0.5 * (N_COLORS - 1))]).toMatch(/rgb\(24[0-9],24[0-9],24[0-9]\)/);
  });
  it("ramp hits the first and last stop", () => {
    const r = ramp(["#000000", "#ffffff"], 3);
    expect(r).toEqual([[0, 0, 0], [128, 128, 128], [255, 255, 255]]);
  });
});

describe("metricView", () => {
  const lens = decodeLens(makeData(4, 6, 3))!;
  it("top1_prob reads topk_probs[..., 0]", () => {
    const v = metricView(lens, "top1_prob");
    expect(v.values[5]).toBeCloseTo(0.5);
    expect(v.scale.kind).toBe("seq");
  });
  it("next_rank uses a log scale and NaN where there is no next token", () => {
    const v = metricView(lens, "next_rank");
    expect(v.scale.kind).toBe("log");
    expect(Number.isNaN(v.values[5])).toBe(true);
    expect(v.values[0]).toBe(1);
  });
  it("tracked_prob picks the tracked column, logit_diff is diverging", () => {
    expect(metricView(lens, "tracked_prob", 7).values[0]).toBeCloseTo(0.2);
    expect(metricView(lens, "tracked_prob", -1).values[0]).toBeCloseTo(0.7);
    const d = metricView(lens, "logit_diff", -1, [3, 7]);
    expect(d.scale.kind).toBe("div");
    expect(d.values[0]).toBeCloseTo(3);
    expect(metricView(lens, "logit_diff", -1, [3, 99]).note).toMatch(/two tracked/);
    expect(metricView(lens, "tracked_prob", 42).note).toMatch(/not tracked/);
  });
  it("entropy and kl scale to their maximum; unknown metric falls back", () => {
    expect(metricView(lens, "kl").scale.hi).toBe(23);
    expect(metricView(lens, "nonsense").metric).toBe("top1_prob");
  });
});
