// The one place the metric names of the grid and of the trajectory chart live (Python keeps its
// own list in lens_widget; a Python test reads the two `as const` lines below and compares), with
// their labels and their math: which array a metric reads and how it is transformed.
import type { LensData } from "./data";
import { diverging, logProbScale, rankScale, sequential, type Scale } from "./color";

export const METRIC_NAMES = ["top1_prob", "next_prob", "next_rank", "entropy", "kl", "tracked_prob", "tracked_logprob", "tracked_rank", "logit_diff"] as const;
export type Metric = (typeof METRIC_NAMES)[number];
export const DEFAULT_METRIC: Metric = "top1_prob";

export const METRIC_LABELS: Record<Metric, string> = {
  top1_prob: "top-1 prob",
  next_prob: "next-token prob",
  next_rank: "next-token rank",
  entropy: "entropy (nats)",
  kl: "KL to final (nats)",
  tracked_prob: "tracked token prob",
  tracked_logprob: "tracked token log-prob",
  tracked_rank: "tracked token rank",
  logit_diff: "logit diff a−b",
};

/** What the diff grid of a comparison colours by (Python: lens_widget.metrics.COMPARE_METRICS; b − a). */
export const COMPARE_METRICS = ["d_top1_prob", "d_next_prob", "next_rank_log_ratio", "d_entropy", "d_kl", "d_tracked_prob", "d_logit_diff", "js", "top1_agree"] as const;
export type CompareMetric = (typeof COMPARE_METRICS)[number];
export const DEFAULT_COMPARE_METRIC: CompareMetric = "js";

export const COMPARE_LABELS: Record<CompareMetric, string> = {
  d_top1_prob: "Δ top-1 prob",
  d_next_prob: "Δ next-token prob",
  next_rank_log_ratio: "log(rank b / rank a)",
  d_entropy: "Δ entropy (nats)",
  d_kl: "Δ KL to final (nats)",
  d_tracked_prob: "Δ tracked token prob",
  d_logit_diff: "Δ logit diff a−b",
  js: "JS divergence (nats)",
  top1_agree: "top-1 agrees",
};

export function isCompareMetric(x: unknown): x is CompareMetric {
  return typeof x === "string" && (COMPARE_METRICS as readonly string[]).includes(x);
}

/** Metrics that read the tracked tokens (the cell stats show them as an extra line). */
export const TOKEN_METRICS: readonly string[] = ["tracked_prob", "tracked_logprob", "tracked_rank", "logit_diff", "d_tracked_prob", "d_logit_diff"];
/** Metrics of one tracked token (the control bar shows which). */
export const ONE_TOKEN_METRICS: readonly string[] = ["tracked_prob", "tracked_logprob", "tracked_rank", "d_tracked_prob"];

export function isMetric(x: unknown): x is Metric {
  return typeof x === "string" && (METRIC_NAMES as readonly string[]).includes(x);
}

/** What the trajectory chart plots across layers (Python's names: `LensResult.tracked(metric=...)`). */
export const TRAJECTORY_METRICS = ["prob", "logit", "rank"] as const;
export type TrajMetric = (typeof TRAJECTORY_METRICS)[number];
export const DEFAULT_TRAJECTORY_METRIC: TrajMetric = "prob";
export const TRAJECTORY_LABELS: Record<TrajMetric, string> = { prob: "probability", logit: "logit", rank: "rank" };

export function isTrajMetric(x: unknown): x is TrajMetric {
  return typeof x === "string" && (TRAJECTORY_METRICS as readonly string[]).includes(x);
}

/** The data's [S, P, M] array of a trajectory metric for the tracked tokens. */
export function trackedArray(lens: LensData, metric: TrajMetric): ArrayLike<number> {
  return metric === "logit" ? lens.trackedLogit : metric === "rank" ? lens.trackedRank : lens.trackedProb;
}

export interface MetricView {
  /** a grid metric, or a compare metric on the diff grid (compare.ts) */
  metric: Metric | CompareMetric;
  values: Float32Array;
  scale: Scale;
  label: string;
  /** why the metric cannot be shown ("" when it can) */
  note: string;
}

function maxFinite(a: ArrayLike<number>, skip?: Uint8Array): number {
  let m = -Infinity;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v > m && v !== Infinity && !(skip && skip[i])) m = v;
  }
  return m === -Infinity ? 1 : m;
}

type Computed = Omit<MetricView, "metric" | "label" | "note"> & { label?: string; note?: string };

/** Smallest value over the cells with data (NaN when there is none). */
function minFinite(a: ArrayLike<number>, skip: Uint8Array): number {
  let m = Infinity;
  for (let i = 0; i < a.length; i++) if (!skip[i] && Number.isFinite(a[i]) && a[i] < m) m = a[i];
  return m === Infinity ? NaN : m;
}

type TrackedMetric = "tracked_prob" | "tracked_logprob" | "tracked_rank";

/** One tracked token's probability, log-probability (nats) or rank at every cell. */
function trackedView(lens: LensData, metric: TrackedMetric, values: Float32Array, metricToken: number): Computed {
  const { M } = lens;
  const j = M === 0 ? -1 : metricToken >= 0 ? lens.trackedIds.indexOf(metricToken) : 0;
  const empty = metric === "tracked_rank" ? rankScale(2) : metric === "tracked_logprob" ? logProbScale(NaN) : sequential(0, 1);
  if (j < 0) {
    values.fill(NaN);
    return { values, scale: empty, note: M === 0 ? "no tracked tokens" : `token id ${metricToken} is not tracked` };
  }
  const tok = lens.display(lens.trackedIds[j]);
  if (metric === "tracked_rank") {
    for (let i = 0; i < values.length; i++) values[i] = lens.trackedRank[i * M + j] > 0 ? lens.trackedRank[i * M + j] : NaN;
    return { values, scale: rankScale(maxFinite(values, lens.nonfinite)), label: `rank(${tok})` };
  }
  if (metric === "tracked_logprob") {
    for (let i = 0; i < values.length; i++) values[i] = Math.log(lens.trackedProb[i * M + j]);
    return { values, scale: logProbScale(minFinite(values, lens.nonfinite)), label: `log p(${tok})` };
  }
  for (let i = 0; i < values.length; i++) values[i] = lens.trackedProb[i * M + j];
  return { values, scale: sequential(0, 1), label: `p(${tok})` };
}

function logitDiffView(lens: LensData, values: Float32Array, diffTokens: number[]): Computed {
  const { M } = lens;
  const a = M ? lens.trackedIds.indexOf(diffTokens[0] ?? lens.trackedIds[0]) : -1;
  const b = M ? lens.trackedIds.indexOf(diffTokens[1] ?? lens.trackedIds[1]) : -1;
  if (a < 0 || b < 0) {
    values.fill(NaN);
    return { values, scale: diverging(1), note: "logit diff needs two tracked tokens" };
  }
  let mx = 0;
  for (let i = 0; i < values.length; i++) {
    const v = lens.trackedLogit[i * M + a] - lens.trackedLogit[i * M + b];
    values[i] = v;
    if (!lens.nonfinite[i] && Number.isFinite(v) && Math.abs(v) > mx) mx = Math.abs(v);
  }
  const label = `logit(${lens.display(lens.trackedIds[a])}) − logit(${lens.display(lens.trackedIds[b])})`;
  return { values, scale: diverging(mx), label };
}

function compute(lens: LensData, metric: Metric, values: Float32Array, metricToken: number, diffTokens: number[]): Computed {
  switch (metric) {
    case "next_prob":
      values.set(lens.nextProb);
      return { values, scale: sequential(0, 1) };
    case "next_rank":
      for (let i = 0; i < values.length; i++) values[i] = lens.nextRank[i] > 0 ? lens.nextRank[i] : NaN;
      return { values, scale: rankScale(maxFinite(values)) };
    case "entropy":
    case "kl":
      values.set(metric === "kl" ? lens.kl : lens.entropy);
      return { values, scale: sequential(0, maxFinite(values, lens.nonfinite)) };
    case "tracked_prob":
    case "tracked_logprob":
    case "tracked_rank":
      return trackedView(lens, metric, values, metricToken);
    case "logit_diff":
      return logitDiffView(lens, values, diffTokens);
    case "top1_prob":
      for (let i = 0; i < values.length; i++) values[i] = lens.topkProbs[i * lens.k];
      return { values, scale: sequential(0, 1) };
  }
}

/** Metric value of every cell (index s*P + c) and its colour scale; an unknown metric falls back to top-1. */
export function metricView(lens: LensData, metric: string, metricToken = -1, diffTokens: number[] = []): MetricView {
  const m = isMetric(metric) ? metric : DEFAULT_METRIC;
  const r = compute(lens, m, new Float32Array(lens.S * lens.P), metricToken, diffTokens);
  return { metric: m, values: r.values, scale: r.scale, label: r.label ?? METRIC_LABELS[m], note: r.note ?? "" };
}
