// Colour scales (sequential, log-rank, diverging), metric values per cell, and the legend.
import type { LensData } from "./data";

export type Metric = "top1_prob" | "next_prob" | "next_rank" | "entropy" | "kl" | "tracked_prob" | "logit_diff";
export const METRICS: { value: Metric; label: string }[] = [
  { value: "top1_prob", label: "top-1 prob" },
  { value: "next_prob", label: "next-token prob" },
  { value: "next_rank", label: "next-token rank" },
  { value: "entropy", label: "entropy (nats)" },
  { value: "kl", label: "KL to final (nats)" },
  { value: "tracked_prob", label: "tracked token prob" },
  { value: "logit_diff", label: "logit diff a−b" },
];

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];
export const N_COLORS = 256;

function hexToRgb(h: string): [number, number, number] {
  const n = parseInt(h.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** N evenly spaced colours interpolated through the stops, as [r,g,b]. */
export function ramp(stops: string[], n = N_COLORS): [number, number, number][] {
  const rgb = stops.map(hexToRgb);
  const out: [number, number, number][] = [];
  for (let i = 0; i < n; i++) {
    const t = (i / (n - 1)) * (rgb.length - 1);
    const j = Math.min(Math.floor(t), rgb.length - 2);
    const f = t - j;
    const a = rgb[j];
    const b = rgb[j + 1];
    out.push([0, 1, 2].map((q) => Math.round(a[q] + (b[q] - a[q]) * f)) as [number, number, number]);
  }
  return out;
}

const css = (c: [number, number, number]) => `rgb(${c[0]},${c[1]},${c[2]})`;
const luminance = (c: [number, number, number]) => (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255;
const VIRIDIS_RGB = ramp(VIRIDIS);
const RDBU_RGB = ramp(RDBU);
const VIRIDIS_CSS = VIRIDIS_RGB.map(css);
const RDBU_CSS = RDBU_RGB.map(css);
const VIRIDIS_TEXT = VIRIDIS_RGB.map((c) => (luminance(c) > 0.5 ? "#000" : "#fff"));
const RDBU_TEXT = RDBU_RGB.map((c) => (luminance(c) > 0.5 ? "#000" : "#fff"));

export interface Scale {
  kind: "seq" | "log" | "div";
  lo: number;
  hi: number;
  /** CSS colours, index 0..N_COLORS-1 */
  colors: string[];
  /** readable text colour on each colour */
  text: string[];
  /** colour index of a value, -1 for "no value" (NaN) */
  index(v: number): number;
  format(v: number): string;
}

const clampIdx = (t: number) => (t <= 0 ? 0 : t >= 1 ? N_COLORS - 1 : Math.round(t * (N_COLORS - 1)));
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(3);
}

export function sequential(lo: number, hi: number): Scale {
  const span = hi > lo ? hi - lo : 1;
  return {
    kind: "seq", lo, hi, colors: VIRIDIS_CSS, text: VIRIDIS_TEXT,
    index: (v) => (v !== v ? -1 : clampIdx((v - lo) / span)),
    format: fmt,
  };
}

/** Log scale for ranks: rank 1 (best) gets the brightest colour; 0 or NaN = no value. */
export function logRank(hi: number): Scale {
  const L = Math.log(Math.max(hi, 2));
  return {
    kind: "log", lo: 1, hi: Math.max(hi, 2), colors: VIRIDIS_CSS, text: VIRIDIS_TEXT,
    index: (v) => (!(v >= 1) ? -1 : clampIdx(1 - Math.log(v) / L)),
    format: (v) => (Number.isFinite(v) ? String(Math.round(v)) : "–"),
  };
}

/** Diverging scale centred on 0, symmetric [-m, m]. */
export function diverging(m: number): Scale {
  const mm = m > 0 && Number.isFinite(m) ? m : 1;
  return {
    kind: "div", lo: -mm, hi: mm, colors: RDBU_CSS, text: RDBU_TEXT,
    index: (v) => (v !== v ? -1 : clampIdx((v + mm) / (2 * mm))),
    format: fmt,
  };
}

export interface MetricView {
  metric: Metric;
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

/** Metric value of every cell (index s*P + c) and its colour scale. */
export function metricView(lens: LensData, metric: string, metricToken = -1, diffTokens: number[] = []): MetricView {
  const { S, P, k, M } = lens;
  const n = S * P;
  const values = new Float32Array(n);
  let note = "";
  let m = (METRICS.find((x) => x.value === metric)?.value ?? "top1_prob") as Metric;
  let label = METRICS.find((x) => x.value === m)!.label;
  let scale: Scale;
  switch (m) {
    case "next_prob":
      values.set(lens.nextProb);
      scale = sequential(0, 1);
      break;
    case "next_rank":
      for (let i = 0; i < n; i++) values[i] = lens.nextRank[i] > 0 ? lens.nextRank[i] : NaN;
      scale = logRank(maxFinite(values));
      break;
    case "entropy":
      values.set(lens.entropy);
      scale = sequential(0, maxFinite(values, lens.nonfinite));
      break;
    case "kl":
      values.set(lens.kl);
      scale = sequential(0, maxFinite(values, lens.nonfinite));
      break;
    case "tracked_prob": {
      let j = metricToken >= 0 ? lens.trackedIds.indexOf(metricToken) : 0;
      if (M === 0) j = -1;
      if (j < 0) {
        values.fill(NaN);
        note = M === 0 ? "no tracked tokens" : `token ${metricToken} is not tracked`;
      } else {
        for (let i = 0; i < n; i++) values[i] = lens.trackedProb[i * M + j];
        label = `p(${lens.display(lens.trackedIds[j])})`;
      }
      scale = sequential(0, 1);
      break;
    }
    case "logit_diff": {
      const a = M ? lens.trackedIds.indexOf(diffTokens[0] ?? lens.trackedIds[0]) : -1;
      const b = M ? lens.trackedIds.indexOf(diffTokens[1] ?? lens.trackedIds[1]) : -1;
      if (a < 0 || b < 0) {
        values.fill(NaN);
        note = "logit diff needs two tracked tokens";
        scale = diverging(1);
      } else {
        let mx = 0;
        for (let i = 0; i < n; i++) {
          const v = lens.trackedLogit[i * M + a] - lens.trackedLogit[i * M + b];
          values[i] = v;
          if (!lens.nonfinite[i] && Number.isFinite(v) && Math.abs(v) > mx) mx = Math.abs(v);
        }
        label = `logit(${lens.display(lens.trackedIds[a])}) − logit(${lens.display(lens.trackedIds[b])})`;
        scale = diverging(mx);
      }
      break;
    }
    default:
      m = "top1_prob";
      for (let i = 0; i < n; i++) values[i] = lens.topkProbs[i * k];
      scale = sequential(0, 1);
  }
  return { metric: m, values, scale, label, note };
}

/** A legend: title, gradient bar, low / high labels. DOM only, text through textContent. */
export function renderLegend(host: HTMLElement, view: MetricView): void {
  host.replaceChildren();
  const title = document.createElement("span");
  title.className = "lw-legend-title";
  title.textContent = view.note ? `${view.label} — ${view.note}` : view.label;
  const lo = document.createElement("span");
  const hi = document.createElement("span");
  lo.className = hi.className = "lw-legend-tick";
  const s = view.scale;
  lo.textContent = s.kind === "log" ? "rank 1" : s.format(s.lo);
  hi.textContent = s.kind === "log" ? `rank ${s.format(s.hi)}` : s.format(s.hi);
  const bar = document.createElement("span");
  bar.className = "lw-legend-bar";
  const stops = [];
  const cols = s.kind === "log" ? s.colors.slice().reverse() : s.colors;
  for (let i = 0; i <= 8; i++) stops.push(cols[Math.round((i / 8) * (N_COLORS - 1))]);
  bar.style.background = `linear-gradient(to right, ${stops.join(",")})`;
  host.append(title, lo, bar, hi);
}
