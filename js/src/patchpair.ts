// Patching across prompts with two grids shown: while the patch mode is on (two or more prompts,
// one prompt's own grid shown), a second grid below the main one shows another prompt (a select
// picks which). A source cell is dragged from one prompt's grid onto a target cell of the other's
// (either way), or clicked in one and then the other; the patch flow (patch.ts) turns it into the
// `patch` request. The pure part: which prompt the second grid shows.
import { decodeLens, type LensData } from "./data";
import type { Cell, Grid } from "./grid";
import { subGrid } from "./subgrid";
import { metricView, DEFAULT_METRIC } from "./metrics";
import type { LensModel } from "./model";
import type { PatchSource, PatchTool } from "./patch";
import type { Tooltip } from "./tooltip";
import { h, type Disposers } from "./dom";

/** The second grid's viewport height (px). */
const OTHER_HEIGHT = 260;

/** The prompt the second grid shows: `chosen` when it is another prompt than `shown`, else the next one. */
export function otherPrompt(shown: number, n: number, chosen: number | null): number {
  if (chosen !== null && chosen >= 0 && chosen < n && chosen !== shown) return chosen;
  return (shown + 1) % Math.max(1, n);
}

export interface PairHost {
  model: LensModel;
  patch: PatchTool;
  tooltip: Tooltip;
  /** the main grid (a drag may start or end on it) */
  main: Grid;
  /** the prompt the main grid shows (null: the mean or the diff grid) */
  promptShown(): number | null;
}

export class PromptPair {
  readonly el: HTMLDivElement;
  readonly grid: Grid;
  private pick = h("select", "lw-patch-other-prompt", undefined, { "aria-label": "the other prompt shown" });
  private chosen: number | null = null;
  /** the prompt the second grid shows (-1: hidden) */
  shown = -1;
  private lens: LensData | null = null;
  private decoded = new WeakMap<object, LensData | null>();
  /** where a press started: which prompt's grid, which cell */
  private pressed: (PatchSource & { grid: Grid }) | null = null;

  constructor(private host: PairHost, d: Disposers) {
    this.el = h("div", "lw-patch-other");
    const head = h("div", "lw-patch-other-head lw-note");
    head.append(h("span", "", "other prompt: "), this.pick, h("span", "", " — drag a cell between the two grids, or click one in each"));
    this.el.append(head);
    this.grid = subGrid(this.el, "lw-patch-other", {
      onHover: (cell, ev) => {
        if (!cell || !ev || !this.lens) return host.tooltip.hide();
        const view = this.view();
        if (view) host.tooltip.show(this.lens, view, cell, ev.clientX, ev.clientY);
      },
      onClick: (cell) => host.patch.pickOn(this.shown, cell),
      onKey: () => {},
      onDrag: (from, to) => host.patch.dragAcross({ prompt: this.shown, site: from.site, col: from.col }, to, this.shown),
    }, OTHER_HEIGHT);
    d.listen(this.pick, "change", () => {
      this.chosen = Number(this.pick.value);
      this.sync();
    });
    // a drag from one grid onto the other: the press on one canvas, the release on the other
    const press = (grid: Grid, prompt: () => number | null) => (ev: PointerEvent) => {
      const cell = grid.cellAt(ev.offsetX, ev.offsetY);
      const p = prompt();
      this.pressed = cell && p !== null && p >= 0 ? { grid, prompt: p, ...cell } : null;
    };
    const release = (grid: Grid, prompt: () => number | null) => (ev: PointerEvent) => {
      const from = this.pressed;
      this.pressed = null;
      const cell = grid.cellAt(ev.offsetX, ev.offsetY);
      const p = prompt();
      if (from && from.grid !== grid && cell && p !== null && p >= 0 && host.patch.dragAcross(from, cell, p)) ev.stopImmediatePropagation();
    };
    const mainPrompt = () => host.promptShown();
    const otherShown = () => (this.el.hidden ? null : this.shown);
    d.listen(host.main.canvas, "pointerdown", press(host.main, mainPrompt));
    d.listen(this.grid.canvas, "pointerdown", press(this.grid, otherShown));
    // before the grid's own listener (capture at the target runs first): a drag across is handled
    // here alone, and the grid's press from earlier (on that canvas) makes no drag of its own
    d.listen(host.main.canvas, "pointerup", release(host.main, mainPrompt), { capture: true });
    d.listen(this.grid.canvas, "pointerup", release(this.grid, otherShown), { capture: true });
    this.el.hidden = this.pick.disabled = true;
  }

  private view() {
    const m = this.host.model;
    return this.lens ? metricView(this.lens, String(m.get("metric") ?? DEFAULT_METRIC), Number(m.get("metric_token") ?? -1), (m.get("diff_tokens") ?? []).map(Number)) : null;
  }

  /** Show the second grid while a patch is being picked on one prompt's grid (else hide it). */
  sync(): void {
    const m = this.host.model;
    const prompts = (m.get("prompts") ?? []).map(String);
    const shown = this.host.promptShown();
    const on = this.host.patch.state.mode !== "off" && prompts.length > 1 && shown !== null;
    this.el.hidden = !on;
    this.pick.disabled = !on;
    this.el.parentElement?.classList.toggle("lw-two-grids", on);
    if (!on || shown === null) {
      this.shown = -1;
      return;
    }
    const other = otherPrompt(shown, prompts.length, this.chosen);
    this.pick.replaceChildren();
    prompts.forEach((p, i) => {
      if (i !== shown) this.pick.appendChild(h("option", "", `prompt ${i + 1}: ${p.length > 40 ? `${p.slice(0, 40)}…` : p}`, { value: String(i) }));
    });
    this.pick.value = String(other);
    const label = String(m.get("lens") ?? "");
    const grids = m.get("grids");
    const raw = grids && typeof grids === "object" && Array.isArray(grids[label]) ? grids[label][other] : null;
    let lens: LensData | null = null;
    if (raw && typeof raw === "object") {
      lens = this.decoded.get(raw) ?? null;
      if (!this.decoded.has(raw)) this.decoded.set(raw, (lens = decodeLens(raw, label)));
    }
    this.shown = other;
    this.lens = lens;
    this.el.dataset.prompt = String(other);
    this.grid.setData(lens, this.view());
    const src = this.host.patch.sourceMark(other);
    this.grid.setOverlay(src ? { shade: null, marks: [{ cell: src as Cell, kind: "source" }] } : null);
  }

  destroy(): void {
    this.grid.destroy();
  }
}
