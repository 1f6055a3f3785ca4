// The grid's layout arithmetic: column widths from the widths of their text, zoom, the compact
// (colour-only) mode, fit-to-width, the column range shown, and the row height. Pure functions:
// the grid measures text and calls these.

/** Sizes at zoom 1 (CSS pixels). */
export const BASE = {
  /** row height, and the header row's */
  rowH: 20,
  headH: 22,
  /** width of the row headers (layer labels), and of the position labels when transposed */
  headW: 52,
  headWTransposed: 120,
  /** cell and header text size */
  font: 11,
  /** room beside a column's widest text */
  pad: 8,
  /** narrowest and widest column in normal mode (a wider text is cut with "…") */
  minColW: 28,
  maxColW: 240,
  /** a column's width in compact mode */
  compactW: 10,
  /** auto height: rows shrink (down to minRowH) so that the grid fits in this many pixels */
  autoH: 720,
  minRowH: 14,
} as const;

export const ZOOM_MIN = 0.5;
export const ZOOM_MAX = 3;
/** one zoom step multiplies (in) or divides (out) by this */
export const ZOOM_STEP = 1.25;

/** A zoom factor within [ZOOM_MIN, ZOOM_MAX] (anything not a positive number: 1). */
export function clampZoom(z: unknown): number {
  const v = Number(z);
  if (!Number.isFinite(v) || v <= 0) return 1;
  return Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, v));
}

/** `steps` zoom steps from `z` (negative: out), rounded to 3 decimals, clamped. */
export function zoomBy(z: number, steps: number): number {
  return clampZoom(Math.round(clampZoom(z) * ZOOM_STEP ** steps * 1000) / 1000);
}

/** `BASE[key]` at zoom `z`, in whole pixels (at least 1). */
export function scaled(px: number, z: number): number {
  return Math.max(1, Math.round(px * z));
}

/** The columns shown, `[lo, hi]` inclusive, of `n` columns: `range` is `[first, last]` (negative
 * counts from the end: `[-8, -1]` is the last 8), clamped to the grid; anything else (`[]`, not two
 * integers, first after last) is every column. `n == 0`: `[0, -1]`. */
export function colRange(range: unknown, n: number): [number, number] {
  if (n <= 0) return [0, -1];
  if (!Array.isArray(range) || range.length !== 2 || !range.every((v) => Number.isInteger(v))) return [0, n - 1];
  const at = (v: number) => Math.min(n - 1, Math.max(0, v < 0 ? n + v : v));
  const lo = at(range[0]);
  const hi = at(range[1]);
  return lo <= hi ? [lo, hi] : [0, n - 1];
}

/** Each column's width from its widest text (measured at the zoomed font): text + padding,
 * within [minColW, maxColW] (zoomed); in compact mode every column is `compactW` (zoomed). */
export function naturalWidths(textWidths: ArrayLike<number>, zoom: number, compact: boolean): number[] {
  const z = clampZoom(zoom);
  if (compact) return Array.from({ length: textWidths.length }, () => scaled(BASE.compactW, z));
  const lo = scaled(BASE.minColW, z);
  const hi = scaled(BASE.maxColW, z);
  return Array.from(textWidths, (t) => Math.min(hi, Math.max(lo, Math.ceil((Number.isFinite(t) ? t : 0) + BASE.pad * z))));
}

/** Widths whose sum is at most `available` (when n ≤ available): unchanged if they fit, else each
 * shrunk in proportion (whole pixels, at least 1). */
export function fitWidths(widths: readonly number[], available: number): number[] {
  const total = widths.reduce((a, b) => a + b, 0);
  if (total <= available || widths.length === 0) return widths.slice();
  const f = Math.max(0, available) / total;
  return widths.map((w) => Math.max(1, Math.floor(w * f)));
}

/** Left edges of the columns and, last, the total width: `out[i]` = sum of `widths[0..i)`. */
export function offsets(widths: readonly number[]): Float64Array {
  const out = new Float64Array(widths.length + 1);
  for (let i = 0; i < widths.length; i++) out[i + 1] = out[i] + widths[i];
  return out;
}

/** The column under `x` (offset from the first column's left edge), or -1 outside. */
export function indexAt(off: ArrayLike<number>, x: number): number {
  const n = off.length - 1;
  if (n <= 0 || !(x >= off[0]) || x >= off[n]) return -1;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (off[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Row height: with a fixed box (`fixedHeight` > 0) rows keep their size and the box scrolls;
 * in the auto height (0) rows shrink from `rowH` toward `minRowH` so that `nRows` fit in `autoH`,
 * then the whole grid shows (no inner scroll). Zoom scales the result. */
export function rowHeight(nRows: number, zoom: number, fixedHeight: number): number {
  const z = clampZoom(zoom);
  if (fixedHeight > 0 || nRows <= 0) return scaled(BASE.rowH, z);
  const fit = Math.floor((BASE.autoH - BASE.headH) / nRows);
  return scaled(Math.min(BASE.rowH, Math.max(BASE.minRowH, fit)), z);
}
