// Virtualised canvas grid: draws only the visible cells, sticky headers, frozen final-layer row.
import type { LensData } from "./data";
import type { MetricView } from "./metrics";

export interface Cell {
  site: number;
  col: number;
}

export interface GridCallbacks {
  onHover(cell: Cell | null, ev: PointerEvent | null): void;
  onClick(cell: Cell, ev: MouseEvent): void;
  onKey(ev: KeyboardEvent): void;
}

interface Theme {
  bg: string;
  fg: string;
  head: string;
  line: string;
  accent: string;
  font: string;
}

const CELL_H = 20;
const CELL_W = 56;
const HEAD_H = 22;

export class Grid {
  readonly viewport: HTMLDivElement;
  readonly sizer: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D | null;
  private lens: LensData | null = null;
  private view: MetricView | null = null;
  private transpose = false;
  private pinned = new Set<number>();
  private selected: Cell | null = null;
  private hover: Cell | null = null;
  private raf = 0;
  private ro: ResizeObserver | null = null;
  private theme: Theme | null = null;
  private fitCache = new Map<number, string>();
  private hatch: CanvasPattern | null = null;
  private cssW = 0;
  private cssH = 0;
  private dpr = 1;
  private disposers: (() => void)[] = [];
  /** performance hook: duration of the last draw (ms) and number of draws */
  lastDrawMs = 0;
  draws = 0;
  onDrawn: (() => void) | null = null;

  // geometry
  cellW = CELL_W;
  cellH = CELL_H;
  headW = 48;
  headH = HEAD_H;
  nRows = 0;
  nCols = 0;
  frozenRows = 1;
  frozenCols = 0;

  constructor(parent: HTMLElement, private cb: GridCallbacks) {
    this.viewport = document.createElement("div");
    this.viewport.className = "lw-viewport";
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute("role", "grid");
    this.viewport.setAttribute("aria-label", "logit lens grid: arrows move, Enter pins, Esc clears pins");
    this.sizer = document.createElement("div");
    this.sizer.className = "lw-sizer";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "lw-canvas";
    this.sizer.appendChild(this.canvas);
    this.viewport.appendChild(this.sizer);
    parent.appendChild(this.viewport);
    this.ctx = this.canvas.getContext ? (this.canvas.getContext("2d") as CanvasRenderingContext2D | null) : null;

    const listen = <K extends keyof HTMLElementEventMap>(
      el: HTMLElement,
      type: K,
      fn: (ev: HTMLElementEventMap[K]) => void,
      opts?: AddEventListenerOptions,
    ) => {
      el.addEventListener(type, fn as EventListener, opts);
      this.disposers.push(() => el.removeEventListener(type, fn as EventListener, opts));
    };
    // One delegated listener per event type on the canvas (never one per cell).
    listen(this.canvas, "pointermove", (ev) => {
      const cell = this.cellAt(ev.offsetX, ev.offsetY);
      if (!sameCell(cell, this.hover)) {
        this.hover = cell;
        this.requestDraw();
      }
      this.cb.onHover(cell, ev);
    });
    listen(this.canvas, "pointerleave", () => {
      this.hover = null;
      this.requestDraw();
      this.cb.onHover(null, null);
    });
    listen(this.canvas, "click", (ev) => {
      const cell = this.cellAt(ev.offsetX, ev.offsetY);
      if (cell) this.cb.onClick(cell, ev);
    });
    listen(this.viewport, "scroll", () => this.requestDraw(), { passive: true });
    listen(this.viewport, "keydown", (ev) => this.cb.onKey(ev));
    if (typeof ResizeObserver !== "undefined") {
      this.ro = new ResizeObserver(() => this.resize());
      this.ro.observe(this.viewport);
    }
  }

  setHeight(px: number): void {
    const h = Number.isFinite(px) && px > 0 ? px : 420;
    this.viewport.style.maxHeight = `${h}px`;
    this.resize();
  }

  setData(lens: LensData | null, view: MetricView | null): void {
    if (lens !== this.lens) this.fitCache.clear();
    this.lens = lens;
    this.view = view;
    this.layout();
  }

  setTranspose(t: boolean): void {
    if (t === this.transpose) return;
    this.transpose = t;
    this.fitCache.clear();
    this.layout();
  }

  setPinned(cells: Cell[]): void {
    const P = this.lens?.P ?? 0;
    this.pinned = new Set(cells.map((c) => c.site * P + c.col));
    this.requestDraw();
  }

  setSelected(cell: Cell | null): void {
    this.selected = cell;
    this.requestDraw();
  }

  getSelected(): Cell | null {
    return this.selected;
  }

  refreshTheme(): void {
    this.theme = null;
    this.requestDraw();
  }

  /** (row, column) in display space -> (site, col) */
  cellOf(r: number, c: number): Cell {
    const S = this.lens!.S;
    return this.transpose ? { site: S - 1 - c, col: r } : { site: S - 1 - r, col: c };
  }

  rcOf(cell: Cell): [number, number] {
    const S = this.lens!.S;
    return this.transpose ? [cell.col, S - 1 - cell.site] : [S - 1 - cell.site, cell.col];
  }

  private layout(): void {
    const lens = this.lens;
    if (!lens) {
      this.nRows = this.nCols = 0;
    } else if (this.transpose) {
      this.nRows = lens.P;
      this.nCols = lens.S;
      this.frozenRows = 0;
      this.frozenCols = Math.min(1, lens.S);
      this.headW = 120;
    } else {
      this.nRows = lens.S;
      this.nCols = lens.P;
      this.frozenRows = Math.min(1, lens.S);
      this.frozenCols = 0;
      this.headW = 52;
    }
    this.sizer.style.width = `${this.headW + this.nCols * this.cellW}px`;
    this.sizer.style.height = `${this.headH + this.nRows * this.cellH}px`;
    this.resize();
  }

  private resize(): void {
    const contentW = this.headW + this.nCols * this.cellW;
    const contentH = this.headH + this.nRows * this.cellH;
    const vw = this.viewport.clientWidth || contentW;
    const vh = this.viewport.clientHeight || contentH;
    const w = Math.max(0, Math.min(vw, contentW));
    const h = Math.max(0, Math.min(vh, contentH));
    const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
    if (w !== this.cssW || h !== this.cssH || dpr !== this.dpr) {
      this.cssW = w;
      this.cssH = h;
      this.dpr = dpr;
      this.canvas.style.width = `${w}px`;
      this.canvas.style.height = `${h}px`;
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(h * dpr);
    }
    this.requestDraw();
  }

  requestDraw(): void {
    if (this.raf) return;
    if (typeof requestAnimationFrame === "undefined") return this.draw();
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.draw();
    });
  }

  /** Cell under canvas CSS coordinates, or null (headers, outside). */
  cellAt(x: number, y: number): Cell | null {
    if (!this.lens || x < this.headW || y < this.headH) return null;
    const st = this.viewport.scrollTop;
    const sl = this.viewport.scrollLeft;
    const fr = this.frozenRows;
    const fc = this.frozenCols;
    const r = y < this.headH + fr * this.cellH ? Math.floor((y - this.headH) / this.cellH) : Math.floor((y - this.headH + st) / this.cellH);
    const c = x < this.headW + fc * this.cellW ? Math.floor((x - this.headW) / this.cellW) : Math.floor((x - this.headW + sl) / this.cellW);
    if (r < 0 || c < 0 || r >= this.nRows || c >= this.nCols) return null;
    return this.cellOf(r, c);
  }

  /** Rectangle of a cell in canvas CSS coordinates (may lie outside the visible area). */
  cellRect(cell: Cell): { x: number; y: number; w: number; h: number } {
    const [r, c] = this.rcOf(cell);
    const st = this.viewport.scrollTop;
    const sl = this.viewport.scrollLeft;
    const y = this.headH + r * this.cellH - (r < this.frozenRows ? 0 : st);
    const x = this.headW + c * this.cellW - (c < this.frozenCols ? 0 : sl);
    return { x, y, w: this.cellW, h: this.cellH };
  }

  /** Scroll so that a cell is fully visible. */
  scrollIntoView(cell: Cell): void {
    const [r, c] = this.rcOf(cell);
    const vp = this.viewport;
    const vh = vp.clientHeight || this.cssH;
    const vw = vp.clientWidth || this.cssW;
    if (r >= this.frozenRows) {
      const top = this.headH + r * this.cellH - vp.scrollTop;
      const minTop = this.headH + this.frozenRows * this.cellH;
      if (top < minTop) vp.scrollTop = this.headH + r * this.cellH - minTop;
      else if (top + this.cellH > vh) vp.scrollTop = this.headH + (r + 1) * this.cellH - vh;
    }
    if (c >= this.frozenCols) {
      const left = this.headW + c * this.cellW - vp.scrollLeft;
      const minLeft = this.headW + this.frozenCols * this.cellW;
      if (left < minLeft) vp.scrollLeft = this.headW + c * this.cellW - minLeft;
      else if (left + this.cellW > vw) vp.scrollLeft = this.headW + (c + 1) * this.cellW - vw;
    }
    this.requestDraw();
  }

  private getTheme(): Theme {
    if (this.theme) return this.theme;
    const cs = getComputedStyle(this.viewport);
    const v = (name: string, fb: string) => cs.getPropertyValue(name).trim() || fb;
    this.theme = {
      bg: v("--lw-bg", "#fff"),
      fg: v("--lw-fg", "#111"),
      head: v("--lw-head", "#f3f3f3"),
      line: v("--lw-line", "#ccc"),
      accent: v("--lw-accent", "#ff2d55"),
      font: v("--lw-font", "system-ui, sans-serif"),
    };
    return this.theme;
  }

  private getHatch(ctx: CanvasRenderingContext2D): CanvasPattern | null {
    if (this.hatch) return this.hatch;
    const c = document.createElement("canvas");
    c.width = c.height = 8;
    const g = c.getContext("2d");
    if (!g) return null;
    g.fillStyle = "#bbb";
    g.fillRect(0, 0, 8, 8);
    g.strokeStyle = "#666";
    g.lineWidth = 1.5;
    g.beginPath();
    g.moveTo(0, 8);
    g.lineTo(8, 0);
    g.moveTo(-2, 2);
    g.lineTo(2, -2);
    g.moveTo(6, 10);
    g.lineTo(10, 6);
    g.stroke();
    this.hatch = ctx.createPattern(c, "repeat");
    return this.hatch;
  }

  /** Text that fits the cell width, cached per token id. */
  private fit(ctx: CanvasRenderingContext2D, id: number, max: number): string {
    let s = this.fitCache.get(id);
    if (s !== undefined) return s;
    s = this.lens!.display(id);
    if (ctx.measureText(s).width > max) {
      let lo = 0;
      let hi = s.length;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (ctx.measureText(s.slice(0, mid) + "…").width <= max) lo = mid;
        else hi = mid - 1;
      }
      s = s.slice(0, lo) + "…";
    }
    this.fitCache.set(id, s);
    return s;
  }

  draw(): void {
    const ctx = this.ctx;
    const lens = this.lens;
    const view = this.view;
    if (!ctx || this.cssW === 0 || this.cssH === 0) return;
    const t0 = performance.now();
    const th = this.getTheme();
    const { cssW: W, cssH: H, cellW: cw, cellH: ch, headW: hw, headH: hh } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = th.bg;
    ctx.fillRect(0, 0, W, H);
    if (!lens || !view) return;
    const st = this.viewport.scrollTop;
    const sl = this.viewport.scrollLeft;
    const fr = this.frozenRows;
    const fc = this.frozenCols;
    const r0 = Math.max(fr, Math.floor(st / ch));
    const r1 = Math.min(this.nRows - 1, Math.floor((st + H - hh) / ch));
    const c0 = Math.max(fc, Math.floor(sl / cw));
    const c1 = Math.min(this.nCols - 1, Math.floor((sl + W - hw) / cw));
    const showText = cw >= 24 && ch >= 12;
    ctx.font = `11px ${th.font}`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "center";
    const hatch = this.getHatch(ctx);
    const { values, scale } = view;
    const P = lens.P;
    const k = lens.k;

    const drawCell = (r: number, c: number, x: number, y: number) => {
      const cell = this.cellOf(r, c);
      const i = cell.site * P + cell.col;
      const bad = lens.nonfinite[i] !== 0;
      const ci = bad ? -1 : scale.index(values[i]);
      if (bad) ctx.fillStyle = hatch ?? "#999";
      else ctx.fillStyle = ci < 0 ? th.head : scale.colors[ci];
      ctx.fillRect(x, y, cw - 1, ch - 1);
      if (bad) return;
      const top = lens.topkIds[i * k];
      if (showText) {
        ctx.fillStyle = ci < 0 ? th.fg : scale.text[ci];
        ctx.fillText(this.fit(ctx, top, cw - 6), x + cw / 2, y + ch / 2);
      }
      const nxt = lens.nextIds[cell.col];
      if (nxt >= 0 && top === nxt) {
        // mark: top-1 is the actual next token
        ctx.fillStyle = th.accent;
        ctx.beginPath();
        ctx.moveTo(x + cw - 8, y);
        ctx.lineTo(x + cw - 1, y);
        ctx.lineTo(x + cw - 1, y + 7);
        ctx.closePath();
        ctx.fill();
      }
    };
    const clip = (x: number, y: number, w: number, h: number) => {
      ctx.save();
      ctx.beginPath();
      ctx.rect(x, y, w, h);
      ctx.clip();
    };
    const rowY = (r: number) => hh + r * ch - (r < fr ? 0 : st);
    const colX = (c: number) => hw + c * cw - (c < fc ? 0 : sl);
    const bodyX = hw + fc * cw;
    const bodyY = hh + fr * ch;

    // scrolled body
    clip(bodyX, bodyY, W - bodyX, H - bodyY);
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) drawCell(r, c, colX(c), rowY(r));
    ctx.restore();
    // frozen rows (the final layer when not transposed)
    if (fr) {
      clip(bodyX, hh, W - bodyX, fr * ch);
      for (let r = 0; r < fr; r++) for (let c = c0; c <= c1; c++) drawCell(r, c, colX(c), rowY(r));
      ctx.restore();
    }
    // frozen columns (the final layer when transposed)
    if (fc) {
      clip(hw, bodyY, fc * cw, H - bodyY);
      for (let r = r0; r <= r1; r++) for (let c = 0; c < fc; c++) drawCell(r, c, colX(c), rowY(r));
      ctx.restore();
    }
    // outlines: pinned, selected, hover
    const outline = (cell: Cell, color: string, width: number, dash: number[]) => {
      const [r, c] = this.rcOf(cell);
      const x = colX(c);
      const y = rowY(r);
      clip(c < fc ? hw : bodyX, r < fr ? hh : bodyY, W, H);
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.setLineDash(dash);
      ctx.strokeRect(x + width / 2, y + width / 2, cw - 1 - width, ch - 1 - width);
      ctx.setLineDash([]);
      ctx.restore();
    };
    for (const key of this.pinned) {
      const cell = { site: Math.floor(key / P), col: key % P };
      if (cell.site < lens.S) outline(cell, th.fg, 2, []);
    }
    if (this.selected && this.selected.site < lens.S && this.selected.col < P) outline(this.selected, th.accent, 2, [3, 2]);
    if (this.hover) outline(this.hover, th.fg, 1, []);

    // headers
    ctx.fillStyle = th.head;
    ctx.fillRect(0, 0, W, hh);
    ctx.fillRect(0, 0, hw, H);
    ctx.fillStyle = th.fg;
    ctx.font = `11px ${th.font}`;
    const colLabel = (c: number) => (this.transpose ? lens.siteLabels[lens.S - 1 - c] : lens.display(lens.tokenAt(c)));
    const rowLabel = (r: number) =>
      this.transpose ? `${lens.positions[r]} ${lens.display(lens.tokenAt(r))}` : lens.siteLabels[lens.S - 1 - r];
    // column headers
    clip(hw, 0, W - hw, hh);
    ctx.textAlign = "center";
    const headCols: number[] = [];
    for (let c = 0; c < fc; c++) headCols.push(c);
    for (let c = c0; c <= c1; c++) headCols.push(c);
    for (const c of headCols) {
      const x = colX(c);
      if (c >= fc && x < bodyX - cw) continue;
      if (c >= fc && x < bodyX) continue;
      ctx.fillText(clipText(ctx, colLabel(c), cw - 4), x + cw / 2, hh / 2);
    }
    ctx.restore();
    // row headers
    clip(0, hh, hw, H - hh);
    ctx.textAlign = "left";
    const headRows: number[] = [];
    for (let r = 0; r < fr; r++) headRows.push(r);
    for (let r = r0; r <= r1; r++) headRows.push(r);
    for (const r of headRows) {
      const y = rowY(r);
      if (r >= fr && y < bodyY) continue;
      ctx.fillText(clipText(ctx, rowLabel(r), hw - 8), 4, y + ch / 2);
    }
    ctx.restore();
    // separators under headers and frozen band
    ctx.fillStyle = th.line;
    ctx.fillRect(0, hh - 1, W, 1);
    ctx.fillRect(hw - 1, 0, 1, H);
    if (fr) ctx.fillRect(hw, bodyY - 1, W - hw, 1);
    if (fc) ctx.fillRect(bodyX - 1, hh, 1, H - hh);
    // corner
    ctx.fillStyle = th.head;
    ctx.fillRect(0, 0, hw - 1, hh - 1);
    ctx.fillStyle = th.fg;
    ctx.textAlign = "left";
    ctx.fillText(this.transpose ? "pos \\ layer" : "layer", 4, hh / 2);

    this.lastDrawMs = performance.now() - t0;
    this.draws++;
    if (this.onDrawn) this.onDrawn();
  }

  destroy(): void {
    if (this.raf && typeof cancelAnimationFrame !== "undefined") cancelAnimationFrame(this.raf);
    this.raf = 0;
    this.ro?.disconnect();
    this.ro = null;
    for (const d of this.disposers.splice(0)) d();
    this.onDrawn = null;
    this.viewport.remove();
  }
}

const labelCache = new Map<string, string>();
function clipText(ctx: CanvasRenderingContext2D, s: string, max: number): string {
  const key = `${max}\u0000${s}`;
  let out = labelCache.get(key);
  if (out !== undefined) return out;
  out = s;
  if (ctx.measureText(s).width > max) {
    let n = s.length;
    while (n > 0 && ctx.measureText(s.slice(0, n) + "…").width > max) n--;
    out = s.slice(0, n) + "…";
  }
  if (labelCache.size > 20000) labelCache.clear();
  labelCache.set(key, out);
  return out;
}

export function sameCell(a: Cell | null, b: Cell | null): boolean {
  return a === b || (!!a && !!b && a.site === b.site && a.col === b.col);
}
