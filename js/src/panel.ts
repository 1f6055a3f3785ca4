// Pinned cells, the detail panel (top-k, full-vocab detail) and the trajectory across layers.
import type { LensData } from "./data";
import type { Cell } from "./grid";
import type { Requester } from "./requests";
import type { CellDetailResult, CompareDetailResult, TrajectoryResult } from "./model";
import {
  DEFAULT_TRAJECTORY_METRIC,
  TRAJECTORY_LABELS,
  TRAJECTORY_METRICS,
  isTrajMetric,
  trackedArray,
  type MetricView,
  type TrajMetric,
} from "./metrics";
import { cellStats, cellSummary, compareCell } from "./tooltip";
import { clearChart, paintChart, type TrajSeries } from "./chart";
import { tokenRow } from "./tokenrow";
import { h } from "./dom";
import { displayToken } from "./tokens";
import { AttributionView } from "./attribution";

export interface PanelHost {
  req: Requester;
  track(tokenId: number): void;
  unpin(cell: Cell): void;
  select(cell: Cell): void;
  status(text: string, isError?: boolean): void;
  /** whether a kernel answers (the attribution button needs one) */
  kernel(): { ok: boolean | null; reason: string };
  diffTokens(): number[];
  /** the kept attribution (`last_attribution`) and the prompt shown: the attribution view shows it on its cell */
  carried(): unknown;
  promptIndex(): number;
}

/** One token's kernel trajectory: every metric, one value per site. */
type TrajRow = Record<TrajMetric, number[]>;

/** The series of the chosen tokens, and the tokens whose values only the kernel has. */
interface Collected {
  series: TrajSeries[];
  missing: number[];
}

/** One token's values at every site of column `col`, from the data (tracked, top-k) or the kernel's reply. */
function seriesOf(lens: LensData, col: number, id: number, metric: TrajMetric, known: TrajRow | undefined): TrajSeries {
  const m = lens.trackedIds.indexOf(id);
  const values: (number | null)[] = [];
  let partial = false;
  for (let s = 0; s < lens.S; s++) {
    const i = s * lens.P + col;
    if (m >= 0) values.push(trackedArray(lens, metric)[i * lens.M + m]);
    else if (known) values.push(known[metric][s] ?? null);
    else if (metric === "prob") {
      // the data only has top-k probabilities for untracked tokens
      let p: number | null = null;
      for (let j = 0; j < lens.k; j++) if (lens.topkIds[i * lens.k + j] === id) p = lens.topkProbs[i * lens.k + j];
      if (p === null) partial = true;
      values.push(p);
    } else {
      // logits and ranks of untracked tokens are not in the data: only the kernel has them
      partial = true;
      values.push(null);
    }
  }
  return { id, values, partial };
}

/** A trajectory reply as one row per asked token. */
function rowsOf(r: TrajectoryResult, ids: number[], S: number): Map<number, TrajRow> {
  const n = ids.length;
  const column = (a: ArrayLike<number> | undefined, j: number) =>
    Array.from({ length: S }, (_, site) => (a && site * n + j < a.length ? a[site * n + j] : NaN));
  return new Map(ids.map((id, j) => [id, { prob: column(r.probs, j), logit: column(r.logits, j), rank: column(r.ranks, j) }]));
}

function kernelNote(metric: TrajMetric, k: number, why: string): string {
  const name = TRAJECTORY_LABELS[metric];
  return metric === "prob"
    ? `dotted: known only where in the top-${k} (${why})`
    : `the ${name} of an untracked token needs the kernel; track the token to keep its ${name} in the data (${why})`;
}

export class Panel {
  readonly el: HTMLDivElement;
  private pins: HTMLDivElement;
  private detail: HTMLDivElement;
  private chart: HTMLCanvasElement;
  private chartNote: HTMLDivElement;
  /** the chart's title and metric picker, and the chart: shown once a cell is selected */
  private trajHead: HTMLDivElement;
  private lens: LensData | null = null;
  private view: MetricView | null = null;
  private cell: Cell | null = null;
  private chosen: number[] = [];
  /** `chosen` was set for the mean view (leaving it picks one prompt's defaults again) */
  private chosenForMean = false;
  private trajToken = 0;
  private trajMetric: TrajMetric = DEFAULT_TRAJECTORY_METRIC;
  private trajTitle: HTMLSpanElement;
  /** kernel trajectories for `lens` and column `col`, by token id (the reply carries every metric) */
  private trajCache: { lens: LensData; col: number; rows: Map<number, TrajRow> } | null = null;
  private alive = true;
  /** "who wrote this cell?": the attribution of the cell shown */
  readonly attribution: AttributionView;

  constructor(parent: HTMLElement, private host: PanelHost) {
    this.attribution = new AttributionView(host);
    this.el = h("div", "lw-panel");
    this.pins = h("div", "lw-pins");
    this.detail = h("div", "lw-detail");
    const trajBox = h("div", "lw-traj");
    const head = (this.trajHead = h("div", "lw-traj-head"));
    this.trajTitle = h("span", "lw-traj-title");
    head.append(this.trajTitle, this.metricPicker());
    this.setTitle();
    this.chart = h("canvas", "lw-chart");
    this.chart.width = 320;
    this.chart.height = 140;
    this.chartNote = h("div", "lw-note");
    trajBox.append(head, this.chart, this.chartNote);
    this.el.append(this.pins, this.detail, trajBox);
    parent.appendChild(this.el);
  }

  private metricPicker(): HTMLSelectElement {
    const pick = h("select", "lw-traj-metric", undefined, { "aria-label": "trajectory metric", title: "what the chart plots" });
    for (const m of TRAJECTORY_METRICS) pick.appendChild(h("option", "", TRAJECTORY_LABELS[m], { value: m }));
    pick.value = this.trajMetric;
    pick.onchange = () => {
      this.trajMetric = isTrajMetric(pick.value) ? pick.value : DEFAULT_TRAJECTORY_METRIC;
      this.setTitle();
      void this.drawTrajectory();
    };
    return pick;
  }

  private setTitle(): void {
    this.trajTitle.textContent = `${TRAJECTORY_LABELS[this.trajMetric]} across layers`;
  }

  setData(lens: LensData | null, view: MetricView | null): void {
    this.lens = lens;
    this.view = view;
    if (this.cell && lens && (this.cell.site >= lens.S || this.cell.col >= lens.P)) this.cell = null;
    this.renderDetail();
  }

  renderPins(pinned: Cell[]): void {
    const lens = this.lens;
    this.pins.replaceChildren();
    if (!lens || pinned.length === 0) {
      this.pins.append(h("span", "lw-note", "Click a cell or press Enter to pin it; Esc clears pins."));
      return;
    }
    for (const cell of pinned) {
      if (cell.site >= lens.S || cell.col >= lens.P) continue;
      const chip = h("span", "lw-chip", undefined, { "data-site": String(cell.site), "data-col": String(cell.col) });
      const label = h("button", "lw-chip-label", `${lens.siteLabels[cell.site]} · ${lens.columnLabels?.[cell.col] ?? lens.positions[cell.col]} `);
      const cmp = lens.compare;
      if (cmp) {
        // a pin of the diff grid pins the cell on both sides: their top-1, a then b
        const top = (side: LensData, col: number) => side.display(side.topkIds[(cell.site * side.P + col) * side.k]);
        label.append(h("span", "lw-tok lw-pin-a", top(cmp.a, cmp.colsA[cell.col])), h("span", "", "│"), h("span", "lw-tok lw-pin-b", top(cmp.b, cmp.colsB[cell.col])));
      } else label.appendChild(h("span", "lw-tok", lens.display(lens.topkIds[(cell.site * lens.P + cell.col) * lens.k])));
      label.onclick = () => this.host.select(cell);
      const x = h("button", "lw-chip-x", "×", { "aria-label": "unpin" });
      x.onclick = () => this.host.unpin(cell);
      chip.append(label, x);
      this.pins.appendChild(chip);
    }
  }

  show(cell: Cell | null): void {
    const changedCol = !this.cell || !cell || this.cell.col !== cell.col;
    this.cell = cell;
    const wasMean = this.chosenForMean;
    this.chosenForMean = !!this.lens?.aggregate;
    if (this.lens?.aggregate) this.chosen = Array.from(this.lens.trackedIds); // a mean has only the tracked tokens
    else if ((changedCol || wasMean) && cell && this.lens) {
      // default tokens to follow: final layer's top-1 and the actual next token
      const lens = this.lens;
      const ids = [lens.topkIds[((lens.S - 1) * lens.P + cell.col) * lens.k]];
      const nxt = lens.nextIds[cell.col];
      if (nxt >= 0 && !ids.includes(nxt)) ids.push(nxt);
      this.chosen = ids;
    }
    this.renderDetail();
  }

  private renderDetail(): void {
    const lens = this.lens;
    const cell = this.cell;
    this.detail.replaceChildren();
    const attributable = !!lens && !!cell && !lens.compare && !lens.aggregate;
    this.attribution.setCell(attributable ? lens : null, attributable ? cell : null);
    this.showChart(!!lens && !!cell && !lens.compare);
    if (!lens || !cell) {
      this.detail.append(h("div", "lw-note lw-hint", "Select a cell to see its top tokens and, here, their probability across layers."));
      void this.drawTrajectory();
      return;
    }
    if (lens.compare) return this.renderCompare(lens, cell);
    this.detail.append(...cellSummary(lens, cell));
    const i = cell.site * lens.P + cell.col;
    const table = h("table", "lw-detail-topk");
    for (let j = 0; j < (lens.aggregate ? 0 : lens.k); j++) {
      const id = lens.topkIds[i * lens.k + j];
      table.appendChild(this.tokenRow(id, lens.topkProbs[i * lens.k + j], lens.display(id)));
    }
    this.detail.append(table, cellStats(lens, cell, this.view));
    if (lens.aggregate) return void this.drawTrajectory(); // the kernel answers for one prompt, not for a mean
    const more = h("button", "lw-more", "full vocabulary detail");
    more.onclick = () => void this.fetchDetail(cell);
    this.detail.append(more, this.attribution.el);
    void this.drawTrajectory();
  }

  /** The chart (and its head) only with a cell to chart: no empty box before the first click. */
  private showChart(on: boolean): void {
    this.chart.hidden = this.trajHead.hidden = !on;
  }

  /** A diff-grid cell: both sides next to each other; the kernel answers the full vocabulary of both. */
  private renderCompare(lens: LensData, cell: Cell): void {
    this.detail.append(...compareCell(lens, cell, this.view));
    const more = h("button", "lw-more", "full vocabulary detail (both sides)");
    more.onclick = () => void this.fetchCompareDetail(cell);
    this.detail.append(more);
    clearChart(this.chart);
    this.chartNote.textContent = "the trajectory shows one side: switch the compare view off to see it";
  }

  private async fetchCompareDetail(cell: Cell): Promise<void> {
    this.host.status("asking the kernel for both sides' full distributions…");
    const lens = this.lens;
    try {
      const r = await this.host.req.request<CompareDetailResult>("compare_detail", { site: cell.site, col: cell.col, k: 50 });
      if (!this.alive || this.cell !== cell || this.lens !== lens) return;
      for (const which of ["a", "b"] as const) {
        const d = r[which];
        const table = h("table", `lw-topk lw-topk-${which} lw-full`);
        for (let j = 0; j < d.top_ids.length; j++) {
          const id = d.top_ids[j];
          table.appendChild(tokenRow({ id, prob: d.top_probs[j], display: displayToken(String(d.tokens?.[String(id)] ?? "")), rowClass: "lw-tip-row" }));
        }
        this.detail.querySelector(`.lw-topk-${which}`)?.replaceWith(table);
      }
      this.host.status("");
    } catch (e) {
      if (this.alive) this.host.status((e as Error).message, true);
    }
  }

  /** A top-k row: a chart toggle, the token as a "track" button, its bar, probability and id. */
  private tokenRow(id: number, prob: number, display: string): HTMLTableRowElement {
    const tok = h("button", "lw-tok lw-track", display, { title: `track token #${id}` });
    tok.onclick = () => this.host.track(id);
    const chk = h("input", "lw-chart-toggle", undefined, { type: "checkbox", title: "show across layers" });
    chk.checked = this.chosen.includes(id);
    chk.onchange = () => {
      this.chosen = chk.checked ? [...this.chosen.filter((x) => x !== id), id] : this.chosen.filter((x) => x !== id);
      void this.drawTrajectory();
    };
    return tokenRow({ id, prob, display, rowClass: "lw-detail-row", lead: [chk], token: tok });
  }

  private async fetchDetail(cell: Cell): Promise<void> {
    this.host.status("asking the kernel for the full distribution…");
    const lens = this.lens;
    try {
      const r = await this.host.req.request<CellDetailResult>("cell_detail", { site: cell.site, col: cell.col, k: 50 });
      if (!this.alive || this.cell !== cell || this.lens !== lens) return; // another cell, lens or prompt since
      const table = h("table", "lw-detail-topk lw-full");
      for (let j = 0; j < r.top_ids.length; j++) {
        const id = r.top_ids[j];
        table.appendChild(this.tokenRow(id, r.top_probs[j], displayToken(String(r.tokens?.[String(id)] ?? ""))));
      }
      this.detail.querySelector(".lw-detail-topk")?.replaceWith(table);
      this.host.status("");
    } catch (e) {
      if (this.alive) this.host.status((e as Error).message, true);
    }
  }

  /** Kernel rows cached for this lens and column (a new lens or column starts an empty cache). */
  private cachedRows(lens: LensData, col: number): Map<number, TrajRow> {
    if (!this.trajCache || this.trajCache.lens !== lens || this.trajCache.col !== col) this.trajCache = { lens, col, rows: new Map() };
    return this.trajCache.rows;
  }

  private collect(lens: LensData, col: number, metric: TrajMetric): Collected {
    const cache = this.cachedRows(lens, col);
    const series = this.chosen.map((id) => seriesOf(lens, col, id, metric, cache.get(id)));
    return { series, missing: series.filter((s) => s.partial).map((s) => s.id) };
  }

  /** The chosen metric of every chosen token at every site for the current column. */
  private async drawTrajectory(): Promise<void> {
    const { lens, cell } = this;
    const metric = this.trajMetric;
    const token = ++this.trajToken;
    this.chartNote.textContent = "";
    this.chart.dataset.metric = metric;
    if (!lens || !cell) return clearChart(this.chart);
    if (lens.compare) return clearChart(this.chart);
    const col = cell.col;
    const { series, missing } = this.collect(lens, col, metric);
    paintChart(this.chart, this.el, lens, series, metric);
    if (missing.length === 0 || lens.aggregate) return;
    const current = () => this.alive && token === this.trajToken;
    try {
      const r = await this.host.req.request<TrajectoryResult>("trajectory", { col, token_ids: missing });
      if (!current()) return;
      const rows = rowsOf(r, missing, lens.S);
      for (const [id, row] of rows) this.cachedRows(lens, col).set(id, row);
      paintChart(this.chart, this.el, lens, this.collect(lens, col, metric).series, metric);
    } catch (e) {
      if (current()) this.chartNote.textContent = kernelNote(metric, lens.k, (e as Error).message);
    }
  }

  destroy(): void {
    this.alive = false;
    this.attribution.destroy();
    this.el.remove();
  }
}
