// Pinned cells, the detail panel (top-k, full-vocab detail) and the trajectory across layers.
import type { LensData } from "./data";
import type { Cell } from "./grid";
import type { MetricView } from "./metrics";
import type { Requester } from "./requests";
import { cellStats, cellSummary } from "./tooltip";
import { h } from "./dom";
import { displayToken } from "./tokens";

const LINE_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

export interface PanelHost {
  req: Requester;
  track(tokenId: number): void;
  unpin(cell: Cell): void;
  select(cell: Cell): void;
  status(text: string, isError?: boolean): void;
}

/** What the trajectory chart plots across layers. */
export type TrajMetric = "probability" | "logit" | "rank";
const TRAJ_METRICS: TrajMetric[] = ["probability", "logit", "rank"];

interface TrajSeries {
  id: number;
  /** the chosen metric at every site (null where unknown) */
  values: (number | null)[];
  partial: boolean;
}

/** One token's kernel trajectory (all three metrics, one value per site). */
interface TrajRow {
  probs: number[];
  logits: number[];
  ranks: number[];
}

export class Panel {
  readonly el: HTMLDivElement;
  private pins: HTMLDivElement;
  private detail: HTMLDivElement;
  private chart: HTMLCanvasElement;
  private chartNote: HTMLDivElement;
  private lens: LensData | null = null;
  private view: MetricView | null = null;
  private cell: Cell | null = null;
  private chosen: number[] = [];
  private trajToken = 0;
  private trajMetric: TrajMetric = "probability";
  private trajTitle: HTMLSpanElement;
  /** kernel trajectories for `lens` and column `col`, by token id (the reply carries every metric) */
  private trajCache: { lens: LensData; col: number; rows: Map<number, TrajRow> } | null = null;
  private alive = true;

  constructor(parent: HTMLElement, private host: PanelHost) {
    this.el = h("div", "lw-panel");
    this.pins = h("div", "lw-pins");
    this.detail = h("div", "lw-detail");
    const trajBox = h("div", "lw-traj");
    const head = h("div", "lw-traj-head");
    this.trajTitle = h("span", "lw-traj-title", "probability across layers");
    const pick = h("select", "lw-traj-metric", undefined, { "aria-label": "trajectory metric", title: "what the chart plots" });
    for (const m of TRAJ_METRICS) pick.appendChild(h("option", "", m, { value: m }));
    pick.value = this.trajMetric;
    pick.onchange = () => {
      this.trajMetric = TRAJ_METRICS.includes(pick.value as TrajMetric) ? (pick.value as TrajMetric) : "probability";
      this.trajTitle.textContent = `${this.trajMetric} across layers`;
      this.drawTrajectory();
    };
    head.append(this.trajTitle, pick);
    trajBox.append(head);
    this.chart = h("canvas", "lw-chart");
    this.chart.width = 320;
    this.chart.height = 140;
    this.chartNote = h("div", "lw-note");
    trajBox.append(this.chart, this.chartNote);
    this.el.append(this.pins, this.detail, trajBox);
    parent.appendChild(this.el);
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
      const label = h("button", "lw-chip-label", `${lens.siteLabels[cell.site]} · ${lens.positions[cell.col]} `);
      label.appendChild(h("span", "lw-tok", lens.display(lens.topkIds[(cell.site * lens.P + cell.col) * lens.k])));
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
    if (changedCol && cell && this.lens) {
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
    if (!lens || !cell) {
      this.detail.append(h("div", "lw-note", "Select a cell to see its top tokens."));
      this.drawTrajectory();
      return;
    }
    this.detail.append(...cellSummary(lens, cell));
    const i = cell.site * lens.P + cell.col;
    const table = h("table", "lw-detail-topk");
    for (let j = 0; j < lens.k; j++) {
      const id = lens.topkIds[i * lens.k + j];
      table.appendChild(this.tokenRow(id, lens.topkProbs[i * lens.k + j], lens.display(id)));
    }
    this.detail.append(table, cellStats(lens, cell, this.view));
    const more = h("button", "lw-more", "full vocabulary detail");
    more.onclick = () => this.fetchDetail(cell);
    this.detail.append(more);
    this.drawTrajectory();
  }

  private tokenRow(id: number, p: number, display: string, extra = ""): HTMLTableRowElement {
    const tr = h("tr", "lw-detail-row", undefined, { "data-id": String(id) });
    const tok = h("button", "lw-tok lw-track", display, { title: `track token #${id}` });
    tok.onclick = () => this.host.track(id);
    const bar = h("span", "lw-bar");
    bar.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    const barTd = h("td", "lw-barcell");
    barTd.appendChild(bar);
    const chk = h("input", "lw-chart-toggle", undefined, { type: "checkbox", title: "show across layers" });
    chk.checked = this.chosen.includes(id);
    chk.onchange = () => {
      this.chosen = chk.checked ? [...this.chosen.filter((x) => x !== id), id] : this.chosen.filter((x) => x !== id);
      this.drawTrajectory();
    };
    const tdTok = h("td");
    tdTok.appendChild(tok);
    const tdChk = h("td");
    tdChk.appendChild(chk);
    tr.append(tdChk, tdTok, barTd, h("td", "lw-prob", p.toFixed(4)), h("td", "lw-id", `#${id}${extra}`));
    return tr;
  }

  private async fetchDetail(cell: Cell): Promise<void> {
    this.host.status("asking the kernel for the full distribution…");
    try {
      const r = await this.host.req.request<{
        top_ids: Int32Array;
        top_probs: Float32Array;
        tokens: Record<string, string>;
        entropy: number;
      }>("cell_detail", { site: cell.site, col: cell.col, k: 50 });
      if (!this.alive || this.cell !== cell) return;
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

  /** The chosen metric of every chosen token at every site for the current column. */
  private async drawTrajectory(): Promise<void> {
    const lens = this.lens;
    const cell = this.cell;
    const metric = this.trajMetric;
    const ctx = this.chart.getContext ? this.chart.getContext("2d") : null;
    const token = ++this.trajToken;
    this.chartNote.textContent = "";
    this.chart.dataset.metric = metric;
    if (!lens || !cell) {
      ctx?.clearRect(0, 0, this.chart.width, this.chart.height);
      return;
    }
    const col = cell.col;
    if (!this.trajCache || this.trajCache.lens !== lens || this.trajCache.col !== col)
      this.trajCache = { lens, col, rows: new Map() };
    const cache = this.trajCache.rows;
    const series: TrajSeries[] = [];
    const missing: number[] = [];
    for (const id of this.chosen) {
      const m = lens.trackedIds.indexOf(id);
      const values: (number | null)[] = [];
      let partial = false;
      const known = cache.get(id);
      for (let s = 0; s < lens.S; s++) {
        const i = s * lens.P + col;
        if (m >= 0) {
          const src = metric === "logit" ? lens.trackedLogit : metric === "rank" ? lens.trackedRank : lens.trackedProb;
          values.push(src[i * lens.M + m]);
        } else if (known) {
          values.push((metric === "logit" ? known.logits : metric === "rank" ? known.ranks : known.probs)[s] ?? null);
        } else if (metric === "probability") {
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
      if (partial) missing.push(id);
      series.push({ id, values, partial });
    }
    this.paintChart(ctx, lens, series, metric);
    if (missing.length === 0) return;
    try {
      const r = await this.host.req.request<{ probs: Float32Array; logits?: Float32Array; ranks?: Int32Array }>("trajectory", {
        col,
        token_ids: missing,
      });
      if (!this.alive || token !== this.trajToken) return;
      const n = missing.length;
      const column = (a: ArrayLike<number> | undefined, j: number) =>
        Array.from({ length: lens.S }, (_, site) => (a && site * n + j < a.length ? a[site * n + j] : NaN));
      missing.forEach((id, j) => {
        const row = { probs: column(r.probs, j), logits: column(r.logits, j), ranks: column(r.ranks, j) };
        if (this.trajCache?.lens === lens && this.trajCache.col === col) this.trajCache.rows.set(id, row);
        const s = series.find((x) => x.id === id);
        if (!s) return;
        s.values = metric === "logit" ? row.logits : metric === "rank" ? row.ranks : row.probs;
        s.partial = false;
      });
      this.paintChart(ctx, lens, series, metric);
    } catch (e) {
      if (!this.alive || token !== this.trajToken) return;
      const why = (e as Error).message;
      this.chartNote.textContent =
        metric === "probability"
          ? `dotted: known only where in the top-${lens.k} (${why})`
          : `the ${metric} of an untracked token needs the kernel; track the token to keep its ${metric} in the data (${why})`;
    }
  }

  private paintChart(ctx: CanvasRenderingContext2D | null, lens: LensData, series: TrajSeries[], metric: TrajMetric): void {
    this.chart.dataset.metric = metric;
    this.chart.dataset.series = JSON.stringify(
      series.map((s) => ({ id: s.id, partial: s.partial, values: s.values.map((v) => (v === null || !Number.isFinite(v) ? null : v)) })),
    );
    if (!ctx) return;
    const W = this.chart.width;
    const H = this.chart.height;
    const cs = getComputedStyle(this.el);
    const fg = cs.getPropertyValue("--lw-fg").trim() || "#111";
    const line = cs.getPropertyValue("--lw-line").trim() || "#ccc";
    ctx.clearRect(0, 0, W, H);
    ctx.font = "10px system-ui, sans-serif";
    // the y axis: probability 0..1; logit min..max of what is plotted; rank on a log scale, 1 at the top
    const finite: number[] = [];
    for (const s of series) for (const v of s.values) if (v !== null && Number.isFinite(v)) finite.push(v);
    let top = 1;
    let bottom = 0;
    let frac: (v: number) => number = (v) => v; // 0 at the bottom, 1 at the top
    let topLabel = "1";
    let bottomLabel = "0";
    if (metric === "logit") {
      let lo = finite.length ? Math.min(...finite) : 0;
      let hi = finite.length ? Math.max(...finite) : 1;
      if (hi - lo < 1e-6) {
        lo -= 0.5;
        hi += 0.5;
      }
      top = hi;
      bottom = lo;
      frac = (v) => (v - bottom) / (top - bottom);
      const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1));
      topLabel = fmt(top);
      bottomLabel = fmt(bottom);
    } else if (metric === "rank") {
      const maxRank = Math.max(2, ...finite.map((v) => Math.max(1, v)));
      frac = (v) => 1 - Math.log(Math.max(1, v)) / Math.log(maxRank);
      topLabel = "1";
      bottomLabel = String(Math.round(maxRank));
    }
    const L = Math.max(28, Math.ceil(Math.max(ctx.measureText(topLabel).width, ctx.measureText(bottomLabel).width)) + 8);
    const B = 16;
    const x = (s: number) => L + (lens.S > 1 ? (s / (lens.S - 1)) * (W - L - 6) : 0);
    const y = (v: number) => 4 + (1 - frac(v)) * (H - B - 8);
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.strokeRect(L, 4, W - L - 6, H - B - 8);
    ctx.fillStyle = fg;
    ctx.fillText(topLabel, 4, 4 + 4);
    ctx.fillText(bottomLabel, 4, H - B - 4);
    ctx.fillText(lens.siteLabels[0] ?? "", L, H - 3);
    const last = lens.siteLabels[lens.S - 1] ?? "";
    ctx.fillText(last, W - 6 - ctx.measureText(last).width, H - 3);
    series.forEach((s, n) => {
      const color = LINE_COLORS[n % LINE_COLORS.length];
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1.5;
      ctx.setLineDash(s.partial ? [3, 3] : []);
      ctx.beginPath();
      let started = false;
      s.values.forEach((v, site) => {
        if (v === null || !Number.isFinite(v)) {
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
      ctx.fillText(lens.display(s.id), L + 4, 14 + n * 11);
    });
  }

  destroy(): void {
    this.alive = false;
    this.el.remove();
  }
}
