// The trajectory chart: one line per token across layers, on a canvas; the y axis per metric.
import type { LensData } from "./data";
import { rankFraction } from "./color";
import type { TrajMetric } from "./metrics";

const LINE_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
const LEFT_MIN = 28;
const BOTTOM = 16;

export interface TrajSeries {
  id: number;
  /** the chosen metric at every site (null where unknown) */
  values: (number | null)[];
  partial: boolean;
}

/** The y axis: where a value sits (0 bottom, 1 top) and the labels of both ends. */
interface Axis {
  frac(v: number): number;
  topLabel: string;
  bottomLabel: string;
}

const isKnown = (v: number | null): v is number => v !== null && Number.isFinite(v);

/** probability 0..1; logit min..max of what is plotted; rank on a log scale, 1 at the top. */
export function axisFor(metric: TrajMetric, finite: number[]): Axis {
  if (metric === "logit") {
    let lo = finite.length ? Math.min(...finite) : 0;
    let hi = finite.length ? Math.max(...finite) : 1;
    if (hi - lo < 1e-6) {
      lo -= 0.5;
      hi += 0.5;
    }
    const label = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
    return { frac: (v) => (v - lo) / (hi - lo), topLabel: label(hi), bottomLabel: label(lo) };
  }
  if (metric === "rank") {
    const maxRank = Math.max(2, ...finite.map((v) => Math.max(1, v)));
    return { frac: (v) => rankFraction(v, maxRank), topLabel: "1", bottomLabel: String(Math.round(maxRank)) };
  }
  return { frac: (v) => v, topLabel: "1", bottomLabel: "0" };
}

/** What is plotted, readable by tests and hosts as data-metric / data-series on the canvas. */
function publish(canvas: HTMLCanvasElement, series: TrajSeries[], metric: TrajMetric): void {
  canvas.dataset.metric = metric;
  canvas.dataset.series = JSON.stringify(
    series.map((s) => ({ id: s.id, partial: s.partial, values: s.values.map((v) => (isKnown(v) ? v : null)) })),
  );
}

interface Plot {
  ctx: CanvasRenderingContext2D;
  lens: LensData;
  W: number;
  H: number;
  left: number;
  x(site: number): number;
  y(v: number): number;
}

function makePlot(ctx: CanvasRenderingContext2D, lens: LensData, W: number, H: number, axis: Axis): Plot {
  const left = Math.max(LEFT_MIN, Math.ceil(Math.max(ctx.measureText(axis.topLabel).width, ctx.measureText(axis.bottomLabel).width)) + 8);
  return {
    ctx,
    lens,
    W,
    H,
    left,
    x: (s) => left + (lens.S > 1 ? (s / (lens.S - 1)) * (W - left - 6) : 0),
    y: (v) => 4 + (1 - axis.frac(v)) * (H - BOTTOM - 8),
  };
}

function drawFrame(p: Plot, axis: Axis, fg: string, line: string): void {
  const { ctx, lens, W, H, left } = p;
  ctx.strokeStyle = line;
  ctx.lineWidth = 1;
  ctx.strokeRect(left, 4, W - left - 6, H - BOTTOM - 8);
  ctx.fillStyle = fg;
  ctx.fillText(axis.topLabel, 4, 4 + 4);
  ctx.fillText(axis.bottomLabel, 4, H - BOTTOM - 4);
  ctx.fillText(lens.siteLabels[0] ?? "", left, H - 3);
  const last = lens.siteLabels[lens.S - 1] ?? "";
  ctx.fillText(last, W - 6 - ctx.measureText(last).width, H - 3);
}

function drawSeries(p: Plot, s: TrajSeries, n: number): void {
  const { ctx, x, y } = p;
  const color = LINE_COLORS[n % LINE_COLORS.length];
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(s.partial ? [3, 3] : []);
  ctx.beginPath();
  let started = false;
  s.values.forEach((v, site) => {
    if (!isKnown(v)) {
      started = false;
      return;
    }
    if (!started) ctx.moveTo(x(site), y(v));
    else ctx.lineTo(x(site), y(v));
    started = true;
    ctx.fillRect(x(site) - 1.5, y(v) - 1.5, 3, 3);
  });
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillText(p.lens.display(s.id), p.left + 4, 14 + n * 11);
}

/** Paint the series on the canvas (theme colours read from `themed`'s CSS variables). */
export function paintChart(canvas: HTMLCanvasElement, themed: HTMLElement, lens: LensData, series: TrajSeries[], metric: TrajMetric): void {
  publish(canvas, series, metric);
  const ctx = canvas.getContext ? canvas.getContext("2d") : null;
  if (!ctx) return;
  const cs = getComputedStyle(themed);
  const fg = cs.getPropertyValue("--lw-fg").trim() || "#111";
  const line = cs.getPropertyValue("--lw-line").trim() || "#ccc";
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "10px system-ui, sans-serif";
  const finite = series.flatMap((s) => s.values.filter(isKnown));
  const axis = axisFor(metric, finite);
  const plot = makePlot(ctx, lens, canvas.width, canvas.height, axis);
  drawFrame(plot, axis, fg, line);
  series.forEach((s, n) => drawSeries(plot, s, n));
}

export function clearChart(canvas: HTMLCanvasElement): void {
  const ctx = canvas.getContext ? canvas.getContext("2d") : null;
  ctx?.clearRect(0, 0, canvas.width, canvas.height);
}
