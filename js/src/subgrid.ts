// A grid beside the main one (the sweep's, the other prompt's while patching): the same canvas
// Grid, under class names of its own, so that the main grid stays the widget's one `.lw-viewport`
// and `.lw-canvas` (hosts, tests and keyboard focus find the main grid by them).
import { Grid, type GridCallbacks } from "./grid";

/** A Grid in `parent` whose viewport is `.lw-subgrid-viewport.<name>-viewport` and canvas `.lw-subgrid-canvas.<name>-canvas`. */
export function subGrid(parent: HTMLElement, name: string, cb: GridCallbacks, height: number): Grid {
  const grid = new Grid(parent, cb);
  grid.viewport.className = `lw-subgrid-viewport ${name}-viewport`;
  grid.canvas.className = `lw-subgrid-canvas ${name}-canvas`;
  grid.setHeight(height);
  return grid;
}
