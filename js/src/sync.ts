// Trait -> view: decode the grid shown (`data`, or the lens and prompt chosen in `grids`, or their
// mean), recolour on a metric change, show busy / error, follow the host theme.
import type { LensModel } from "./model";
import { decodeLens, withColumn, type ColumnUpdate, type LensData } from "./data";
import { meanLens } from "./aggregate";
import { compareView, decodeComparison, diffLens } from "./compare";
import { DEFAULT_METRIC, metricView, type MetricView } from "./metrics";
import type { Controls } from "./controls";
import type { Grid } from "./grid";
import type { Panel } from "./panel";
import type { PromptBox } from "./prompt";
import type { Selection } from "./selection";
import type { Notices } from "./status";
import type { Tooltip } from "./tooltip";
import type { Disposers } from "./dom";
import { alignedCol, coneOverlay, type Overlay, type PatchInfo, type PatchTool } from "./patch";

export interface Views {
  root: HTMLElement;
  title: HTMLElement;
  notices: Notices;
  controls: Controls;
  prompt: PromptBox;
  grid: Grid;
  panel: Panel;
  tooltip: Tooltip;
  selection: Selection;
  patch: PatchTool;
}

/** Attributes on <body> by which hosts switch themes (JupyterLab, VS Code). */
const THEME_ATTRIBUTES = ["data-jp-theme-name", "data-jp-theme-light", "class", "data-vscode-theme-kind"];

export class TraitSync {
  lens: LensData | null = null;
  view: MetricView | null = null;
  /** why `data` could not be decoded ("" when it could) */
  private dataError = "";
  /** decoded grids by the wire object they came from: a grid is decoded once, however often it is shown */
  private decoded = new WeakMap<object, LensData | null>();
  /** mean views by the list of grids they average */
  private means = new WeakMap<object, LensData | null>();
  /** diff grids by the comparison they show */
  private diffs = new WeakMap<object, LensData | null>();

  constructor(private model: LensModel, private v: Views) {}

  /** Show every trait once, then follow their changes (released by `d`). */
  start(d: Disposers): void {
    const { model, v } = this;
    v.grid.setTranspose(!!model.get("transpose"));
    this.loadData();
    this.syncBusy();
    this.syncError();
    const on = (trait: string, fn: () => void) => d.on(model, `change:${trait}`, fn);
    for (const t of ["data", "grids", "lens", "prompt_index", "aggregate", "compare_view"]) on(t, () => this.loadData());
    on("compare_pair", () => this.syncControls());
    on("comparison", () => {
      v.patch.resetSide(); // a new patch shows its diff grid first
      this.loadData();
    });
    for (const t of ["lenses", "prompts"]) on(t, () => this.syncControls());
    on("tracked", () => this.syncControls());
    for (const t of ["metric", "metric_token", "diff_tokens"]) on(t, () => (this.syncControls(), this.recolor()));
    on("transpose", () => (this.syncControls(), v.grid.setTranspose(!!model.get("transpose"))));
    on("pinned", () => v.selection.syncPins());
    on("busy", () => this.syncBusy());
    on("error", () => this.syncError());
    on("prompt", () => this.syncControls());
    this.followTheme(d);
  }

  syncControls(): void {
    this.v.controls.syncViews();
    this.v.controls.sync(this.lens);
    this.v.prompt.sync(this.lens?.prompt ?? "");
  }

  recolor(): void {
    const { model, v, lens } = this;
    const args = [model.get("metric") ?? DEFAULT_METRIC, model.get("metric_token") ?? -1, model.get("diff_tokens") ?? []] as const;
    this.view = !lens ? null : lens.compare ? compareView(lens.compare, ...args) : metricView(lens, ...args);
    v.grid.setData(lens, this.view);
    v.panel.setData(lens, this.view);
    v.controls.showLegend(this.view, lens?.lensName ?? "");
    v.root.dataset.metric = this.view?.metric ?? "";
    v.tooltip.hide();
    this.syncOverlay();
  }

  /** The patch's overlay on the grid shown: the cone shaded (unless switched off), the patched
   * cell marked; and, while a patch is being picked, its source. */
  syncOverlay(): void {
    const { v, lens } = this;
    const cmp = this.model.get("compare_view") ? this.diffGrid()?.compare : undefined;
    const info = cmp?.patch;
    const o: Overlay = { shade: null, marks: [] };
    if (cmp && info && lens && (lens.compare || lens === cmp.a || lens === cmp.b)) {
      const side = lens.compare ? "diff" : lens === cmp.b ? "b" : "a";
      const ac = alignedCol(cmp.colsB, info.targetCol);
      const cols = side === "diff" ? null : side === "b" ? cmp.colsB : cmp.colsA;
      const markCol = side === "diff" ? ac : side === "b" ? info.targetCol : ac >= 0 ? cmp.colsA[ac] : -1;
      const cone = coneOverlay(info, cmp.S, cmp.P, cols, lens.P, markCol);
      if (v.patch.cone) o.shade = cone.shade;
      o.marks.push(...cone.marks);
    }
    const src = lens && !lens.compare ? v.patch.sourceMark() : null;
    if (src && lens && src.site < lens.S && src.col < lens.P) o.marks.push({ cell: src, kind: "source" });
    const to = lens && !lens.compare ? v.patch.targetPreview(this.patchHover) : null;
    if (to && lens && to.site < lens.S && to.col < lens.P) o.marks.push({ cell: to, kind: "target" });
    v.grid.setOverlay(o);
    v.root.dataset.patch = info ? (lens?.compare ? "diff" : lens === cmp?.b ? "b" : lens === cmp?.a ? "a" : "off") : "";
  }

  /** The cell under the pointer while a patch's target is picked (its preview follows it). */
  private patchHover: { site: number; col: number } | null = null;

  setPatchHover(cell: { site: number; col: number } | null): void {
    const was = this.patchHover;
    this.patchHover = cell;
    if (this.v.patch.state.mode === "target" && (was?.col !== cell?.col || !was !== !cell)) this.syncOverlay();
  }

  /** The patch of the comparison shown (null: none, or the compare view is off). */
  patchInfo(): PatchInfo | null {
    return (this.model.get("compare_view") && this.diffGrid()?.compare?.patch) || null;
  }

  private decode(raw: unknown, label: string): LensData | null {
    if (!raw || typeof raw !== "object") return decodeLens(raw, label);
    let lens = this.decoded.get(raw);
    if (lens === undefined) this.decoded.set(raw, (lens = decodeLens(raw, label)));
    return lens;
  }

  /** The diff grid of the `comparison` trait (decoded once per trait value), or null. */
  private diffGrid(): LensData | null {
    const raw = this.model.get("comparison");
    if (!raw || typeof raw !== "object") return null;
    let lens = this.diffs.get(raw);
    if (lens === undefined) {
      const cmp = decodeComparison(raw);
      this.diffs.set(raw, (lens = cmp ? diffLens(cmp) : null));
    }
    return lens;
  }

  /** The grid to show: the diff grid (or, for a patch, the side chosen), the mean view, else the
   * chosen lens and prompt in `grids`, else `data`. */
  private current(): LensData | null {
    const model = this.model;
    if (model.get("compare_view")) {
      const diff = this.diffGrid();
      const side = this.v.patch.side;
      if (diff?.compare?.patch && side !== "diff") return side === "b" ? diff.compare.b : diff.compare.a;
      if (diff) return diff;
    }
    const label = String(model.get("lens") ?? "");
    const grids = model.get("grids");
    const list = grids && typeof grids === "object" && Array.isArray(grids[label]) ? grids[label] : null;
    if (list && model.get("aggregate") && list.length > 1) {
      let mean = this.means.get(list);
      if (mean === undefined) {
        const all = list.map((raw) => this.decode(raw, label));
        mean = all.every((l): l is LensData => l !== null) ? meanLens(all) : null;
        this.means.set(list, mean);
      }
      if (mean) return mean;
    }
    const pi = Number(model.get("prompt_index") ?? 0);
    return this.decode(list?.[pi] ?? model.get("data"), label);
  }

  /** What the title says: model, lens, which prompt (or the mean), grid size. */
  private titleText(lens: LensData | null): string {
    if (!lens) return "no lens data";
    const n = (this.model.get("prompts") ?? []).length;
    if (lens.compare) return `${lens.modelName} · compare: ${lens.compare.labelA} vs ${lens.compare.labelB} (b − a, aligned ${lens.compare.align}) — ${lens.S} sites × ${lens.P} tokens`;
    const which = lens.aggregate
      ? ` · mean of ${lens.aggregate.count} prompts, aligned on the last token`
      : n > 1
        ? ` · prompt ${Number(this.model.get("prompt_index") ?? 0) + 1} of ${n}`
        : "";
    const held = lens.aggregate ? "" : positionsNote(lens.positions.subarray(0, lens.P), lens.inputIds.length);
    return `${lens.modelName} · ${lens.lensName}${which} — ${lens.S} sites × ${lens.P} tokens${held ? ` (${held})` : ""}`;
  }

  loadData(): void {
    const v = this.v;
    try {
      this.lens = this.current();
      this.dataError = "";
    } catch (e) {
      this.lens = null;
      this.dataError = `cannot read data: ${(e as Error).message}`;
    }
    this.syncError();
    const lens = this.lens;
    v.title.textContent = this.titleText(lens);
    v.root.dataset.lens = lens?.lensName ?? "";
    const cmp = this.model.get("compare_view") ? this.diffGrid()?.compare : undefined;
    v.root.dataset.view = lens?.compare ? "compare" : cmp && (lens === cmp.a || lens === cmp.b) ? `compare-${lens === cmp.b ? "b" : "a"}` : lens?.aggregate ? "mean" : String(this.model.get("prompt_index") ?? 0);
    v.patch.sync(!!cmp?.patch, cmp?.patch ?? null);
    this.markRoot(lens);
    this.syncControls();
    this.recolor();
    v.selection.syncPins();
    v.selection.restore();
  }

  /** A `column` message: the grid shown grows (or one column is replaced) in place, without
   * the kernel re-sending the grid. Ignored on the mean view, another lens, or when it does not fit. */
  applyColumn(u: ColumnUpdate): boolean {
    const { v, lens } = this;
    if (!lens || lens.aggregate) return false;
    if (u.lens && u.lens !== String(this.model.get("lens") ?? "")) return false;
    const next = withColumn(lens, u);
    if (next === lens) return false;
    const vp = v.grid.viewport;
    const atEnd = vp.scrollLeft + vp.clientWidth >= vp.scrollWidth - 2;
    this.lens = next;
    v.title.textContent = this.titleText(next);
    this.markRoot(next);
    this.recolor();
    v.selection.syncPins();
    if (atEnd && !this.model.get("transpose")) vp.scrollLeft = vp.scrollWidth; // follow the newest token
    return true;
  }

  private markRoot(lens: LensData | null): void {
    this.v.root.dataset.nPositions = String(lens?.P ?? 0);
    this.v.root.dataset.generatedFrom = String(lens?.generatedFrom ?? -1);
  }

  syncBusy(): void {
    this.v.root.classList.toggle("lw-is-busy", this.v.prompt.syncBusy());
  }

  /** The `error` trait, else why `data` cannot be read (the latter is not hidden by an empty trait). */
  syncError(): void {
    this.v.notices.setError(this.model.get("error") || this.dataError);
  }

  /** Host theme switches (JupyterLab sets data-jp-theme-* on <body>): re-read the colours. */
  private followTheme(d: Disposers): void {
    if (typeof MutationObserver === "undefined" || !document.body) return;
    const mo = new MutationObserver(() => {
      this.v.grid.refreshTheme();
      this.recolor();
    });
    mo.observe(document.body, { attributes: true, attributeFilter: THEME_ATTRIBUTES });
    d.add(() => mo.disconnect());
  }
}

/** Which token positions a grid holds, when not the whole prompt of `nTokens` tokens (0-based, as
 * in Python): "positions 26–33 of 34", "position 25 of 34", "positions 0, 5, 9 of 34", or
 * "12 positions of 40"; "" when every token is there. */
export function positionsNote(positions: ArrayLike<number>, nTokens: number): string {
  const n = positions.length;
  if (n === 0) return "";
  let contiguous = true;
  for (let i = 1; i < n; i++) if (positions[i] !== positions[i - 1] + 1) contiguous = false;
  const first = positions[0];
  const last = positions[n - 1];
  if (contiguous && first === 0 && last === nTokens - 1) return "";
  const of = nTokens > 0 ? ` of ${nTokens}` : "";
  if (n === 1) return `position ${first}${of}`;
  if (contiguous) return `positions ${first}–${last}${of}`;
  if (n <= 6) return `positions ${Array.from(positions).join(", ")}${of}`;
  return `${n} positions${of}`;
}
