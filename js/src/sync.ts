// Trait -> view: decode `data`, recolour on a metric change, show busy / error, follow the host theme.
import type { LensModel } from "./model";
import { decodeLens, type LensData } from "./data";
import { DEFAULT_METRIC, metricView, type MetricView } from "./metrics";
import type { Controls } from "./controls";
import type { Grid } from "./grid";
import type { Panel } from "./panel";
import type { PromptBox } from "./prompt";
import type { Selection } from "./selection";
import type { Notices } from "./status";
import type { Tooltip } from "./tooltip";
import type { Disposers } from "./dom";

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
}

/** Attributes on <body> by which hosts switch themes (JupyterLab, VS Code). */
const THEME_ATTRIBUTES = ["data-jp-theme-name", "data-jp-theme-light", "class", "data-vscode-theme-kind"];

export class TraitSync {
  lens: LensData | null = null;
  view: MetricView | null = null;
  /** why `data` could not be decoded ("" when it could) */
  private dataError = "";

  constructor(private model: LensModel, private v: Views) {}

  /** Show every trait once, then follow their changes (released by `d`). */
  start(d: Disposers): void {
    const { model, v } = this;
    v.grid.setHeight(model.get("height"));
    v.grid.setTranspose(!!model.get("transpose"));
    this.loadData();
    this.syncBusy();
    this.syncError();
    const on = (trait: string, fn: () => void) => d.on(model, `change:${trait}`, fn);
    on("data", () => this.loadData());
    on("tracked", () => this.syncControls());
    for (const t of ["metric", "metric_token", "diff_tokens"]) on(t, () => (this.syncControls(), this.recolor()));
    on("transpose", () => (this.syncControls(), v.grid.setTranspose(!!model.get("transpose"))));
    on("pinned", () => v.selection.syncPins());
    on("height", () => v.grid.setHeight(model.get("height")));
    on("busy", () => this.syncBusy());
    on("error", () => this.syncError());
    on("prompt", () => this.syncControls());
    this.followTheme(d);
  }

  syncControls(): void {
    this.v.controls.sync(this.lens);
    this.v.prompt.sync(this.lens?.prompt ?? "");
  }

  recolor(): void {
    const { model, v, lens } = this;
    this.view = lens ? metricView(lens, model.get("metric") ?? DEFAULT_METRIC, model.get("metric_token") ?? -1, model.get("diff_tokens") ?? []) : null;
    v.grid.setData(lens, this.view);
    v.panel.setData(lens, this.view);
    v.controls.showLegend(this.view);
    v.root.dataset.metric = this.view?.metric ?? "";
    v.tooltip.hide();
  }

  loadData(): void {
    const v = this.v;
    try {
      this.lens = decodeLens(this.model.get("data"));
      this.dataError = "";
    } catch (e) {
      this.lens = null;
      this.dataError = `cannot read data: ${(e as Error).message}`;
    }
    this.syncError();
    const lens = this.lens;
    v.title.textContent = lens ? `${lens.modelName} — ${lens.S} sites × ${lens.P} tokens` : "no lens data";
    this.syncControls();
    this.recolor();
    v.selection.syncPins();
    v.selection.restore();
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
