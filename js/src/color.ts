// Colour scales: map a value to a palette colour (sequential, diverging). Which values a metric
// shows, and transforms such as log ranks, live in metrics.ts.
import { fmt } from "./format";

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
const RDBU = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];
export const N_COLORS = 256;

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

/** Colour index of a fraction 0..1 (clamped). */
const indexOf = (t: number) => (t <= 0 ? 0 : t >= 1 ? N_COLORS - 1 : Math.round(t * (N_COLORS - 1)));

export function sequential(lo: number, hi: number): Scale {
  const span = hi > lo ? hi - lo : 1;
  return { kind: "seq", lo, hi, ...SEQUENTIAL, index: (v) => (v !== v ? -1 : indexOf((v - lo) / span)), format: fmt };
}

/** Diverging scale centred on 0, symmetric [-m, m]. */
export function diverging(m: number): Scale {
  const mm = m > 0 && Number.isFinite(m) ? m : 1;
  return { kind: "div", lo: -mm, hi: mm, ...DIVERGING, index: (v) => (v !== v ? -1 : indexOf((v + mm) / (2 * mm))), format: fmt };
}
