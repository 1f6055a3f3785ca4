// Colour scales: map a value to a palette colour (sequential, log-probability, log-rank,
// diverging), and the one colour of the grid's next-token mark. Which values a metric shows lives
// in metrics.ts. Python writes the same scales again for figures without a browser
// (lens_widget/scales.py; a test keeps the palettes and constants equal).
import { fmt } from "./format";

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];
export const N_COLORS = 256;
/** The mark in a cell's top-right corner when its top-1 token is the prompt's next token: one
 * colour in every host (not a theme variable: JupyterLab's brand colour made it blue there and
 * pink in an exported page), drawn by the grid, the legend and the figures. */
export const NEXT_MARK_COLOR = "#ff2d95";
/** Default lowest log-probability (nats) a log-prob scale spans: p = e^-20 ≈ 2e-9. Lower values
 * (and p = 0, log p = −∞) take the scale's lowest colour. */
export const LOGPROB_FLOOR = -20;

type RGB = [number, number, number];

function hexToRgb(h: string): RGB {
  const n = parseInt(h.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** N evenly spaced colours interpolated through the stops, as [r,g,b]. */
export function ramp(stops: string[], n = N_COLORS): RGB[] {
  const rgb = stops.map(hexToRgb);
  const out: RGB[] = [];
  for (let i = 0; i < n; i++) {
    const t = (i / (n - 1)) * (rgb.length - 1);
    const j = Math.min(Math.floor(t), rgb.length - 2);
    const f = t - j;
    const a = rgb[j];
    const b = rgb[j + 1];
    out.push([0, 1, 2].map((q) => Math.round(a[q] + (b[q] - a[q]) * f)) as RGB);
  }
  return out;
}

const css = (c: RGB) => `rgb(${c[0]},${c[1]},${c[2]})`;
const luminance = (c: RGB) => (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) / 255;

interface Palette {
  colors: string[];
  text: string[];
}
function palette(stops: string[]): Palette {
  const rgb = ramp(stops);
  return { colors: rgb.map(css), text: rgb.map((c) => (luminance(c) > 0.5 ? "#000" : "#fff")) };
}
const SEQUENTIAL = palette(VIRIDIS);
const DIVERGING = palette(RDBU);

export interface Scale {
  /** "log": a rank scale (rank 1 brightest, log spaced); "logp": log-probabilities */
  kind: "seq" | "log" | "logp" | "div";
  lo: number;
  hi: number;
  /** CSS colours, index 0..N_COLORS-1 */
  colors: string[];
  /** readable text colour on each colour */
  text: string[];
  /** colour index of a value, -1 for "no value" (NaN) */
  index(v: number): number;
  format(v: number): string;
  /** the legend's low / high labels */
  ticks: [string, string];
}

/** Colour index of a fraction 0..1 (clamped). */
const indexOf = (t: number) => (t <= 0 ? 0 : t >= 1 ? N_COLORS - 1 : Math.round(t * (N_COLORS - 1)));

export function sequential(lo: number, hi: number): Scale {
  const span = hi > lo ? hi - lo : 1;
  return { kind: "seq", lo, hi, ...SEQUENTIAL, index: (v) => (v !== v ? -1 : indexOf((v - lo) / span)), format: fmt, ticks: [fmt(lo), fmt(hi)] };
}

/** Diverging scale centred on 0, symmetric [-m, m]. */
export function diverging(m: number): Scale {
  const mm = m > 0 && Number.isFinite(m) ? m : 1;
  return { kind: "div", lo: -mm, hi: mm, ...DIVERGING, index: (v) => (v !== v ? -1 : indexOf((v + mm) / (2 * mm))), format: fmt, ticks: [fmt(-mm), fmt(mm)] };
}

/** Log-probabilities (nats) on the sequential palette, linear in log p over [lo, 0]: 0 (p = 1) is
 * the brightest colour; values at or below `lo` (−∞ included: p = 0) the darkest; NaN none.
 * `lo` is the data's lowest finite log p, never below `floor` nor above −1e-6. */
export function logProbScale(minLogProb: number, floor = LOGPROB_FLOOR): Scale {
  const lo = Number.isFinite(minLogProb) ? Math.min(Math.max(minLogProb, floor), -1e-6) : floor;
  const clamped = !(minLogProb >= lo);
  return {
    kind: "logp",
    lo,
    hi: 0,
    ...SEQUENTIAL,
    index: (v) => (v !== v ? -1 : indexOf((v - lo) / -lo)),
    format: fmt,
    ticks: [`${clamped ? "≤ " : ""}log p ${fmt(lo)}`, "log p 0"],
  };
}

/** Ranks on a log scale: 1 (best) -> 1, `maxRank` -> 0 (clamped to 0..1). */
export function rankFraction(rank: number, maxRank: number): number {
  const t = 1 - Math.log(Math.max(1, rank)) / Math.log(Math.max(2, maxRank));
  return Math.max(0, Math.min(1, t));
}

/** Colour scale for ranks (1 = best): log spaced from rank 1 (the brightest colour) to `hi` (the
 * darkest; larger ranks clamp to it); 0, negative or NaN = no value (-1). */
export function rankScale(hi: number): Scale {
  const top = Number.isFinite(hi) ? Math.max(hi, 2) : 2;
  const format = (v: number) => (Number.isFinite(v) ? String(Math.round(v)) : "–");
  return {
    kind: "log",
    lo: 1,
    hi: top,
    ...SEQUENTIAL,
    index: (v) => (!(v >= 1) ? -1 : indexOf(rankFraction(v, top))),
    format,
    ticks: ["rank 1", `rank ${format(top)}`],
  };
}
