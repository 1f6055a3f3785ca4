// Performance hooks read by the browser tests and benchmarks: data-first-paint-ms (decode + first
// draw), data-draw-ms (the last draw), data-tooltip-ms (the last tooltip), a "lens-widget:first-paint" mark.
import type { Grid } from "./grid";

export function watchPaint(root: HTMLElement, grid: Grid, t0: number): void {
  const drawn = () => {
    root.dataset.drawMs = grid.lastDrawMs.toFixed(3);
  };
  grid.onDrawn = () => {
    grid.onDrawn = drawn;
    root.dataset.firstPaintMs = (performance.now() - t0).toFixed(2);
    drawn();
    try {
      performance.mark("lens-widget:first-paint");
    } catch {
      /* ignore */
    }
  };
}

/** Run `fn` and record how long it took as data-tooltip-ms. */
export function timeTooltip(root: HTMLElement, fn: () => void): void {
  const t = performance.now();
  fn();
  root.dataset.tooltipMs = (performance.now() - t).toFixed(3);
}
