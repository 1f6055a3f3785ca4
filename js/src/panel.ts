// Pinned cells, the detail panel (top-k, full-vocab detail) and the trajectory across layers.
import type { LensData } from "./data";
import type { Cell } from "./grid";
import type { MetricView } from "./color";
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

interface TrajSeries {
  id: number;
  probs: (number | null)[];
  partial: boolean;
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
  private alive = true;

  constructor(parent: HTMLElement, private host: PanelHost) {
    this.el = h("div", "lw-panel");
    this.pins = h("div", "lw-pins");
    this.detail = h("div", "lw-detail");
    const trajBox = h("div", "lw-traj");
    trajBox.append(h("div", "lw-traj-title", "probability across layers"));
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

  /** Probability of every chosen token at every site for the current column. */
  private async drawTrajectory(): Promise<void> {
    const lens = this.lens;
    const cell = this.cell;
    const ctx = this.chart.getContext ? this.chart.getContext("2d") : null;
    const token = ++this.trajToken;
    this.chartNote.textContent = "";
    if (!lens || !cell) {
      ctx?.clearRect(0, 0, this.chart.width, this.chart.height);
      return;
    }
    const series: TrajSeries[] = [];
    const missing: number[] = [];
    for (const id of this.chosen) {
      const m = lens.trackedIds.indexOf(id);
      const probs: (number | null)[] = [];
      let partial = false;
      for (let s = 0; s < lens.S; s++) {
        const i = s * lens.P + cell.col;
        if (m >= 0) probs.push(lens.trackedProb[i * lens.M + m]);
        else {
          let p: number | null = null;
          for (let j = 0; j < lens.k; j++) if (lens.topkIds[i * lens.k + j] === id) p = lens.topkProbs[i * lens.k + j];
          if (p === null) partial = true;
          probs.push(p);
        }
      }
      if (partial) missing.push(id);
      series.push({ id, probs, partial });
    }
    this.paintChart(ctx, lens, series);
    if (missing.length === 0) return;
    try {
      const r = await this.host.req.request<{ probs: Float32Array }>("trajectory", { col: cell.col, token_ids: missing });
      if (!this.alive || token !== this.trajToken) return;
      for (const s of series) {
        const j = missing.indexOf(s.id);
        if (j < 0) continue;
        s.probs = s.probs.map((_, site) => r.probs[site * missing.length + j]);
        s.partial = false;
      }
      this.paintChart(ctx, lens, series);
    } catch (e) {
      if (!this.alive || token !== this.trajToken) return;
      this.chartNote.textContent = `dotted: known only where in the top-${lens.k} (${(e as Error).message})`;
    }
  }

  private paintChart(ctx: CanvasRenderingContext2D | null, lens: LensData, series: TrajSeries[]): void {
    this.chart.dataset.series = JSON.stringify(series.map((s) => ({ id: s.id, partial: s.partial })));
    if (!ctx) return;
    const W = this.chart.width;
    const H = this.chart.height;
    const cs = getComputedStyle(this.el);
    const fg = cs.getPropertyValue("--lw-fg").trim() || "#111";
    const line = cs.getPropertyValue("--lw-line").trim() || "#ccc";
    ctx.clearRect(0, 0, W, H);
    const L = 28;
    const B = 16;
    const x = (s: number) => L + (lens.S > 1 ? (s / (lens.S - 1)) * (W - L - 6) : 0);
    const y = (p: number) => 4 + (1 - p) * (H - B - 8);
    ctx.strokeStyle = line;
    ctx.lineWidth = 1;
    ctx.strokeRect(L, 4, W - L - 6, H - B - 8);
    ctx.fillStyle = fg;
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillText("1", 4, y(1) + 4);
    ctx.fillText("0", 4, y(0));
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
      s.probs.forEach((p, site) => {
        if (p === null || !Number.isFinite(p)) {
          started = false;
          return;
        }
        if (!started) ctx.moveTo(x(site), y(p));
        else ctx.lineTo(x(site), y(p));
        started = true;
        ctx.fillRect(x(site) - 1.5, y(p) - 1.5, 3, 3);
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
