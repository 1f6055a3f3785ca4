// The view controls: zoom out / in, compact (colour-only) cells, fit-to-width, and the range of
// columns shown. They read and write the traits that size the grid (height, compact, zoom,
// fit_width, col_range) and pass them to the grid.
import { setTrait, setTraits, type LensModel } from "./model";
import { DEFAULT_VIEW, type Grid, type GridView } from "./grid";
import { clampZoom, colRange, zoomBy } from "./layout";
import { h, type Disposers } from "./dom";

/** The traits that size the grid. */
export const VIEW_TRAITS = ["height", "compact", "zoom", "fit_width", "col_range"] as const;

/** The grid's view from the model's traits (missing ones: the defaults). */
export function gridView(model: LensModel): GridView {
  const height = Number(model.get("height") ?? 0);
  const range = model.get("col_range");
  return {
    height: Number.isFinite(height) && height > 0 ? height : 0,
    compact: !!(model.get("compact") ?? DEFAULT_VIEW.compact),
    zoom: clampZoom(model.get("zoom") ?? DEFAULT_VIEW.zoom),
    fitWidth: !!(model.get("fit_width") ?? DEFAULT_VIEW.fitWidth),
    range: Array.isArray(range) ? range.map(Number) : [],
  };
}

/** A toggle button whose pressed state shows a boolean trait. */
function toggle(cls: string, text: string, title: string): HTMLButtonElement {
  return h("button", `lw-toggle ${cls}`, text, { type: "button", title, "aria-pressed": "false" });
}

export class ViewBar {
  /** the inline group: zoom out, zoom level, zoom in, compact, fit */
  readonly el: HTMLSpanElement;
  /** the column range (for the toolbar's "more" menu) */
  readonly rangeEl: HTMLSpanElement;
  private zoomOut = h("button", "lw-zoom-out", "−", { type: "button", title: "zoom out (smaller cells)", "aria-label": "zoom out" });
  private zoomIn = h("button", "lw-zoom-in", "+", { type: "button", title: "zoom in (larger cells)", "aria-label": "zoom in" });
  private zoomLevel = h("button", "lw-zoom-level", "100%", { type: "button", title: "zoom: click for 100%" });
  private compact = toggle("lw-compact", "compact", "colour only: narrow columns, no text (hover names the cell)");
  private fit = toggle("lw-fit", "fit", "fit the grid to the widget's width (no horizontal scrolling)");
  private from = h("input", "lw-range-from", undefined, { type: "number", min: "0", step: "1", placeholder: "first", "aria-label": "first column shown" });
  private to = h("input", "lw-range-to", undefined, { type: "number", min: "0", step: "1", placeholder: "last", "aria-label": "last column shown" });
  private all = h("button", "lw-range-all", "all", { type: "button", title: "show every column" });

  constructor(private model: LensModel, private grid: Grid, d: Disposers) {
    this.el = h("span", "lw-viewbar", undefined, { role: "group", "aria-label": "grid size" });
    this.el.append(this.zoomOut, this.zoomLevel, this.zoomIn, this.compact, this.fit);
    this.rangeEl = h("span", "lw-range", undefined, { title: "columns shown (0-based, inclusive)" });
    this.rangeEl.append(h("span", "", "columns "), this.from, h("span", "", " – "), this.to, this.all);

    const zoom = (steps: number) => setTrait(model, "zoom", zoomBy(Number(model.get("zoom") ?? 1), steps));
    d.listen(this.zoomOut, "click", () => zoom(-1));
    d.listen(this.zoomIn, "click", () => zoom(1));
    d.listen(this.zoomLevel, "click", () => setTrait(model, "zoom", 1));
    d.listen(this.compact, "click", () => setTrait(model, "compact", !model.get("compact")));
    d.listen(this.fit, "click", () => setTrait(model, "fit_width", !model.get("fit_width")));
    const setRange = () => {
      const a = this.from.value.trim();
      const b = this.to.value.trim();
      if (a === "" && b === "") return setTrait(model, "col_range", []);
      setTraits(model, { col_range: [a === "" ? 0 : Math.trunc(Number(a)), b === "" ? -1 : Math.trunc(Number(b))] });
    };
    d.listen(this.from, "change", setRange);
    d.listen(this.to, "change", setRange);
    d.listen(this.all, "click", () => setTrait(model, "col_range", []));
    for (const t of VIEW_TRAITS) d.on(model, `change:${t}`, () => this.sync());
    grid.onLayout = () => this.syncRange();
    this.sync();
  }

  /** Size the grid by the traits and show them on the controls. */
  sync(): void {
    const v = gridView(this.model);
    this.grid.setView(v);
    this.zoomLevel.textContent = `${Math.round(v.zoom * 100)}%`;
    this.zoomOut.disabled = zoomBy(v.zoom, -1) === v.zoom;
    this.zoomIn.disabled = zoomBy(v.zoom, 1) === v.zoom;
    this.compact.setAttribute("aria-pressed", String(v.compact));
    this.fit.setAttribute("aria-pressed", String(v.fitWidth));
    this.syncRange();
  }

  /** The range inputs show the columns shown (blank: every column). */
  syncRange(): void {
    const P = this.grid.columnCount();
    const [lo, hi] = colRange(gridView(this.model).range, P);
    const every = lo === 0 && hi === P - 1;
    this.from.value = every ? "" : String(lo);
    this.to.value = every ? "" : String(hi);
    this.from.max = this.to.max = String(Math.max(0, P - 1));
  }
}
