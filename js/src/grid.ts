// Virtualised canvas grid: draws only the visible cells, sticky headers, frozen final-layer row.
import type { LensData } from "./data";
import type { MetricView } from "./metrics";
import { Disposers } from "./dom";
import { NO_OVERLAY, type Overlay } from "./patch";
import { NEXT_MARK_COLOR } from "./color";
import { BASE, clampZoom, colRange, fitWidths, indexAt, naturalWidths, offsets, rowHeight, scaled } from "./layout";

export interface Cell {
  site: number;
  col: number;
}

export interface GridCallbacks {
  onHover(cell: Cell | null, ev: PointerEvent | null): void;
  onClick(cell: Cell, ev: MouseEvent): void;
  onKey(ev: KeyboardEvent): void;
  /** a press on one cell released on another; true: handled (the click that follows is dropped) */
  onDrag?(from: Cell, to: Cell): boolean;
}

interface Theme {
  bg: string;
  fg: string;
  head: string;
  line: string;
  accent: string;
  font: string;
  cone: string;
}

/** opacity of the cone's shade over a cell's colour */
export const CONE_ALPHA = 0.35;

/** How the grid is sized (the `compact`, `zoom`, `fit_width`, `col_range` and `height` traits). */
export interface GridView {
  /** colour-only cells: narrow columns, no text */
  compact: boolean;
  /** cell size factor (layout.ts ZOOM_MIN..ZOOM_MAX) */
  zoom: number;
  /** columns shrink so that the grid fits its box's width */
  fitWidth: boolean;
  /** `[first, last]` columns shown (layout.ts colRange); `[]` all */
  range: unknown;
  /** > 0: the box is this many pixels high at most and scrolls; 0: as high as the rows */
  height: number;
}

export const DEFAULT_VIEW: GridView = { compact: false, zoom: 1, fitWidth: false, range: [], height: 0 };

/** entries of the text-fitting cache before it starts over */
const FIT_CACHE_MAX = 20000;

/** One draw's context: what is visible, where the frozen bands end. */
interface Frame {
  ctx: CanvasRenderingContext2D;
  lens: LensData;
  view: MetricView;
  th: Theme;
  W: number;
  H: number;
  /** scroll offsets */
  st: number;
  sl: number;
  /** visible scrolled rows r0..r1 and columns c0..c1 */
  r0: number;
  r1: number;
  c0: number;
  c1: number;
  /** where the scrolled body starts (right of / below the frozen bands) */
  bodyX: number;
  bodyY: number;
  showText: boolean;
  hatch: CanvasPattern | null;
}

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
  private overlay: Overlay = NO_OVERLAY;
  /** the cell a press started on (a drag), and whether the next click is a drag's end */
  private pressed: Cell | null = null;
  private dropClick = false;
  private raf = 0;
  private ro: ResizeObserver | null = null;
  private theme: Theme | null = null;
  /** fitted text by max width and string */
  private fitCache = new Map<string, string>();
  private hatch: CanvasPattern | null = null;
  private cssW = 0;
  private cssH = 0;
  private dpr = 1;
  private disposers = new Disposers();
  /** performance hook: duration of the last draw (ms) */
  lastDrawMs = 0;
  onDrawn: (() => void) | null = null;
  /** called after the rows and columns were laid out again (new data, view or orientation) */
  onLayout: (() => void) | null = null;

  // geometry
  private gv: GridView = { ...DEFAULT_VIEW };
  /** left edges of the display columns (from the first column's), and the total width last */
  private colOff: Float64Array = new Float64Array(1);
  /** the first data column shown (the column range's start) */
  private lo = 0;
  /** text size (px) at the current zoom */
  private fontPx: number = BASE.font;
  /** measured text widths by font and string */
  private textW = new Map<string, number>();
  /** the box width the columns were last fitted to */
  private fittedFor = -1;
  cellH: number = BASE.rowH;
  headW: number = BASE.headW;
  headH: number = BASE.headH;
  nRows = 0;
  nCols = 0;
  frozenRows = 1;
  frozenCols = 0;

  constructor(parent: HTMLElement, private cb: GridCallbacks) {
    this.viewport = document.createElement("div");
    this.viewport.className = "lw-viewport";
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute("role", "grid");
    this.viewport.setAttribute("aria-label", "logit lens grid: arrows move, Enter pins, Esc clears pins; patching: s marks the source, t patches into this column, p next prompt, Esc cancels");
    this.sizer = document.createElement("div");
    this.sizer.className = "lw-sizer";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "lw-canvas";
    this.sizer.appendChild(this.canvas);
    this.viewport.appendChild(this.sizer);
    parent.appendChild(this.viewport);
    this.ctx = this.canvas.getContext ? (this.canvas.getContext("2d") as CanvasRenderingContext2D | null) : null;

    this.listenPointer();
    if (typeof ResizeObserver !== "undefined") {
      this.ro = new ResizeObserver(() => this.boxResized());
      this.ro.observe(this.viewport);
    }
  }

  /** One delegated listener per event type on the canvas (never one per cell). */
  private listenPointer(): void {
    const listen = this.disposers.listen.bind(this.disposers);
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
    listen(this.canvas, "pointerdown", (ev) => {
      this.pressed = this.cellAt(ev.offsetX, ev.offsetY);
      this.dropClick = false;
    });
    listen(this.canvas, "pointerup", (ev) => {
      const from = this.pressed;
      this.pressed = null;
      const to = this.cellAt(ev.offsetX, ev.offsetY);
      if (from && to && !sameCell(from, to) && this.cb.onDrag?.(from, to)) this.dropClick = true;
    });
    listen(this.canvas, "click", (ev) => {
      if (this.dropClick) {
        this.dropClick = false;
        return;
      }
      const cell = this.cellAt(ev.offsetX, ev.offsetY);
      if (cell) this.cb.onClick(cell, ev);
    });
    listen(this.viewport, "scroll", () => this.requestDraw(), { passive: true });
    listen(this.viewport, "keydown", (ev) => this.cb.onKey(ev));
  }

  /** > 0: a box of at most `px` pixels that scrolls; anything else: as high as the rows (no inner scroll). */
  setHeight(px: number): void {
    this.setView({ height: Number.isFinite(px) && px > 0 ? px : 0 });
  }

  /** Change how the grid is sized (compact, zoom, fit-to-width, column range, height). */
  setView(v: Partial<GridView>): void {
    const next = { ...this.gv, ...v, zoom: clampZoom(v.zoom ?? this.gv.zoom) };
    this.gv = next;
    this.viewport.style.maxHeight = next.height > 0 ? `${next.height}px` : "none";
    this.viewport.classList.toggle("lw-fixed-height", next.height > 0);
    this.layout();
  }

  /** Columns of the data (the range shown is a part of them). */
  columnCount(): number {
    return this.lens?.P ?? 0;
  }

  /** The view the grid is sized by. */
  getView(): GridView {
    return { ...this.gv };
  }

  setData(lens: LensData | null, view: MetricView | null): void {
    const same = lens === this.lens;
    if (!same) this.fitCache.clear();
    this.lens = lens;
    this.view = view;
    if (same) this.requestDraw(); // a new colouring: the sizes stay
    else this.layout();
  }

  setTranspose(t: boolean): void {
    if (t === this.transpose) return;
    this.transpose = t;
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

  /** The patch overlay: cells shaded (the causal cone) and marked (the patched cell, a source). */
  setOverlay(o: Overlay | null): void {
    this.overlay = o ?? NO_OVERLAY;
    this.requestDraw();
  }

  getSelected(): Cell | null {
    return this.selected;
  }

  refreshTheme(): void {
    this.theme = null;
    this.fitCache.clear(); // the font may have changed
    this.requestDraw();
  }

  /** (row, column) in display space -> (site, col) */
  cellOf(r: number, c: number): Cell {
    const S = this.lens!.S;
    return this.transpose ? { site: S - 1 - c, col: this.lo + r } : { site: S - 1 - r, col: this.lo + c };
  }

  /** (row, column) in display space of a cell (outside 0..nRows-1 / 0..nCols-1 when its column is
   * not in the range shown). */
  rcOf(cell: Cell): [number, number] {
    const S = this.lens!.S;
    const c = cell.col - this.lo;
    return this.transpose ? [c, S - 1 - cell.site] : [S - 1 - cell.site, c];
  }

  /** Whether a cell is in the rows and columns shown. */
  shows(cell: Cell): boolean {
    if (!this.lens) return false;
    const [r, c] = this.rcOf(cell);
    return r >= 0 && c >= 0 && r < this.nRows && c < this.nCols;
  }

  /** Left edge of display column `c` from the first column's, and its width. */
  colLeft(c: number): number {
    return this.colOff[Math.max(0, Math.min(c, this.nCols))];
  }

  colWidth(c: number): number {
    return c >= 0 && c < this.nCols ? this.colOff[c + 1] - this.colOff[c] : 0;
  }

  /** Rows, columns and their sizes from the data, the orientation and the view. */
  private layout(): void {
    const lens = this.lens;
    const z = this.gv.zoom;
    this.fontPx = Math.max(6, Math.round(BASE.font * z * 10) / 10);
    this.headH = scaled(BASE.headH, z);
    if (!lens) {
      this.nRows = this.nCols = 0;
      this.lo = 0;
    } else {
      const [lo, hi] = colRange(this.gv.range, lens.P);
      this.lo = lo;
      const nShown = hi - lo + 1;
      if (this.transpose) {
        this.nRows = nShown;
        this.nCols = lens.S;
        this.frozenRows = 0;
        this.frozenCols = Math.min(1, lens.S);
        this.headW = scaled(BASE.headWTransposed, z);
      } else {
        this.nRows = lens.S;
        this.nCols = nShown;
        this.frozenRows = Math.min(1, lens.S);
        this.frozenCols = 0;
        this.headW = scaled(BASE.headW, z);
      }
    }
    this.cellH = rowHeight(this.nRows, z, this.gv.height);
    this.layoutColumns();
    this.resize();
    this.onLayout?.();
  }

  /** Column widths: measured text (or compact), then fitted to the box's width if asked. */
  private layoutColumns(): void {
    let widths = naturalWidths(this.columnTextWidths(), this.gv.zoom, this.gv.compact);
    if (this.gv.fitWidth) {
      this.fittedFor = this.viewport.clientWidth;
      widths = fitWidths(widths, this.availableWidth());
    }
    this.colOff = offsets(widths);
    this.sizer.style.width = `${this.headW + this.colOff[this.nCols]}px`;
    this.sizer.style.height = `${this.headH + this.nRows * this.cellH}px`;
    this.publishGeometry();
  }

  /** Width left for the columns in the box (its inner width less the row headers). */
  private availableWidth(): number {
    const box = this.viewport.clientWidth || (this.viewport.parentElement?.clientWidth ?? 0);
    return Math.max(0, box - this.headW);
  }

  /** The widest text each display column holds: its header and the top-1 token of each cell. */
  private columnTextWidths(): number[] {
    const lens = this.lens;
    if (!lens || this.gv.compact) return new Array(this.nCols).fill(0);
    const byId = new Map<number, number>();
    const out: number[] = [];
    for (let c = 0; c < this.nCols; c++) {
      let w = this.measure(this.colLabel(lens, c));
      for (let r = 0; r < this.nRows; r++) {
        const cell = this.cellOf(r, c);
        const id = lens.topkIds[(cell.site * lens.P + cell.col) * lens.k];
        let t = byId.get(id);
        if (t === undefined) byId.set(id, (t = this.measure(lens.display(id))));
        w = Math.max(w, t);
      }
      out.push(w);
    }
    return out;
  }

  /** Width of `s` in the grid's font at the current size (cached). */
  private measure(s: string): number {
    const font = `${this.fontPx}px ${this.getTheme().font}`;
    const key = `${font}\u0000${s}`;
    let w = this.textW.get(key);
    if (w !== undefined) return w;
    const ctx = this.ctx;
    if (ctx) {
      ctx.font = font;
      w = ctx.measureText(s).width;
    } else w = s.length * this.fontPx * 0.6; // no canvas (a DOM without one): an estimate
    if (this.textW.size > FIT_CACHE_MAX) this.textW.clear();
    this.textW.set(key, w);
    return w;
  }

  /** Geometry for tests and hosts: `data-geometry` on the viewport (row height, headers, column edges). */
  private publishGeometry(): void {
    this.viewport.dataset.geometry = JSON.stringify({
      headW: this.headW,
      headH: this.headH,
      rowH: this.cellH,
      font: this.fontPx,
      first: this.lo,
      transpose: this.transpose,
      ...this.gv,
      colX: Array.from(this.colOff),
    });
  }

  /** The box changed size: fit the columns again (fit-to-width), or just the canvas. */
  private boxResized(): void {
    if (this.gv.fitWidth && this.viewport.clientWidth !== this.fittedFor) this.layout();
    else this.resize();
  }

  private resize(): void {
    const contentW = this.headW + this.colOff[this.nCols];
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
    const frozenW = this.colOff[this.frozenCols];
    const r = y < this.headH + fr * this.cellH ? Math.floor((y - this.headH) / this.cellH) : Math.floor((y - this.headH + st) / this.cellH);
    const c = indexAt(this.colOff, x < this.headW + frozenW ? x - this.headW : x - this.headW + sl);
    if (r < 0 || c < 0 || r >= this.nRows || c >= this.nCols) return null;
    return this.cellOf(r, c);
  }

  /** Rectangle of a cell in canvas CSS coordinates (may lie outside the visible area). */
  cellRect(cell: Cell): { x: number; y: number; w: number; h: number } {
    const [r, c] = this.rcOf(cell);
    const st = this.viewport.scrollTop;
    const sl = this.viewport.scrollLeft;
    const y = this.headH + r * this.cellH - (r < this.frozenRows ? 0 : st);
    const x = this.headW + this.colLeft(c) - (c < this.frozenCols ? 0 : sl);
    return { x, y, w: this.colWidth(c), h: this.cellH };
  }

  /** Scroll so that a cell is fully visible (a cell outside the range shown: nothing). */
  scrollIntoView(cell: Cell): void {
    if (!this.shows(cell)) return;
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
      const left = this.headW + this.colOff[c] - vp.scrollLeft;
      const minLeft = this.headW + this.colOff[this.frozenCols];
      if (left < minLeft) vp.scrollLeft = this.headW + this.colOff[c] - minLeft;
      else if (left + this.colWidth(c) > vw) vp.scrollLeft = this.headW + this.colOff[c + 1] - vw;
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
      cone: v("--lw-cone", "#ff9800"),
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

  /** `s`, cut with "…" to fit `max` pixels in the current font (cached; cleared with the theme). */
  private fit(ctx: CanvasRenderingContext2D, s: string, max: number): string {
    const key = `${max}\u0000${s}`;
    let out = this.fitCache.get(key);
    if (out !== undefined) return out;
    out = s;
    if (ctx.measureText(s).width > max) {
      // longest prefix that fits with the ellipsis (binary search)
      let lo = 0;
      let hi = s.length;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (ctx.measureText(s.slice(0, mid) + "…").width <= max) lo = mid;
        else hi = mid - 1;
      }
      out = s.slice(0, lo) + "…";
    }
    if (this.fitCache.size > FIT_CACHE_MAX) this.fitCache.clear();
    this.fitCache.set(key, out);
    return out;
  }

  /** Everything one draw needs: the visible rows and columns and where the bands start. */
  private frame(ctx: CanvasRenderingContext2D, lens: LensData, view: MetricView): Frame {
    const { cssW: W, cssH: H, cellH: ch, headW: hw, headH: hh, colOff: off, nCols } = this;
    const st = this.viewport.scrollTop;
    const sl = this.viewport.scrollLeft;
    const fr = this.frozenRows;
    const fc = this.frozenCols;
    const at = (x: number) => (x >= off[nCols] ? nCols - 1 : Math.max(0, indexAt(off, x)));
    return {
      ctx, lens, view, th: this.getTheme(), W, H, st, sl,
      r0: Math.max(fr, Math.floor(st / ch)),
      r1: Math.min(this.nRows - 1, Math.floor((st + H - hh) / ch)),
      c0: Math.max(fc, at(sl + off[fc])),
      c1: Math.min(nCols - 1, at(sl + W - hw)),
      bodyX: hw + off[fc],
      bodyY: hh + fr * ch,
      showText: !this.gv.compact && ch >= 10 && this.fontPx >= 6,
      hatch: this.getHatch(ctx),
    };
  }

  private rowY(f: Frame, r: number): number {
    return this.headH + r * this.cellH - (r < this.frozenRows ? 0 : f.st);
  }

  private colX(f: Frame, c: number): number {
    return this.headW + this.colOff[c] - (c < this.frozenCols ? 0 : f.sl);
  }

  private clip(f: Frame, x: number, y: number, w: number, h: number): void {
    f.ctx.save();
    f.ctx.beginPath();
    f.ctx.rect(x, y, w, h);
    f.ctx.clip();
  }

  draw(): void {
    const ctx = this.ctx;
    if (!ctx || this.cssW === 0 || this.cssH === 0) return;
    const t0 = performance.now();
    const th = this.getTheme();
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = th.bg;
    ctx.fillRect(0, 0, this.cssW, this.cssH);
    if (!this.lens || !this.view) return;
    const f = this.frame(ctx, this.lens, this.view);
    this.drawCells(f);
    this.drawShade(f);
    this.drawOutlines(f);
    this.drawHeaders(f);
    this.drawSeparators(f);
    this.drawBoundary(f);
    this.drawCorner(f);
    this.lastDrawMs = performance.now() - t0;
    if (this.onDrawn) this.onDrawn();
  }

  /** The scrolled body, then the frozen rows (final layer) or frozen columns (final layer, transposed). */
  private drawCells(f: Frame): void {
    const { ctx, th, W, H, r0, r1, c0, c1, bodyX, bodyY } = f;
    const { headW: hw, headH: hh, cellH: ch, frozenRows: fr, frozenCols: fc } = this;
    const frozenW = this.colOff[fc];
    ctx.font = `${this.fontPx}px ${th.font}`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "center";
    const band = (rows: [number, number], cols: [number, number], clip: [number, number, number, number]) => {
      this.clip(f, ...clip);
      for (let r = rows[0]; r <= rows[1]; r++) for (let c = cols[0]; c <= cols[1]; c++) this.drawCell(f, r, c);
      ctx.restore();
    };
    band([r0, r1], [c0, c1], [bodyX, bodyY, W - bodyX, H - bodyY]);
    if (fr) band([0, fr - 1], [c0, c1], [bodyX, hh, W - bodyX, fr * ch]);
    if (fc) band([r0, r1], [0, fc - 1], [hw, bodyY, frozenW, H - bodyY]);
  }

  /** One cell: its colour (hatched when non-finite), its top-1 token, a mark when top-1 is the next token. */
  private drawCell(f: Frame, r: number, c: number): void {
    const { ctx, lens, th } = f;
    const { colors, text } = f.view.scale;
    const ch = this.cellH;
    const cw = this.colWidth(c);
    const x = this.colX(f, c);
    const y = this.rowY(f, r);
    const cell = this.cellOf(r, c);
    const i = cell.site * lens.P + cell.col;
    if (lens.nonfinite[i] !== 0) {
      ctx.fillStyle = f.hatch ?? "#999";
      ctx.fillRect(x, y, cw - 1, ch - 1);
      return;
    }
    const ci = f.view.scale.index(f.view.values[i]);
    ctx.fillStyle = ci < 0 ? th.head : colors[ci];
    ctx.fillRect(x, y, cw - 1, ch - 1);
    const top = lens.topkIds[i * lens.k];
    if (f.showText && cw >= 14) {
      ctx.fillStyle = ci < 0 ? th.fg : text[ci];
      ctx.fillText(this.fit(ctx, lens.display(top), cw - 6), x + cw / 2, y + ch / 2);
    }
    const nxt = lens.nextIds[cell.col];
    if (nxt >= 0 && top === nxt) {
      // mark: top-1 is the actual next token (one colour everywhere: color.ts)
      ctx.fillStyle = NEXT_MARK_COLOR;
      ctx.beginPath();
      const m = Math.min(7, cw - 2, ch - 2);
      ctx.moveTo(x + cw - 1 - m, y);
      ctx.lineTo(x + cw - 1, y);
      ctx.lineTo(x + cw - 1, y + m);
      ctx.closePath();
      ctx.fill();
    }
  }

  /** The cone: a translucent shade over each of its visible cells (same bands as the cells). */
  private drawShade(f: Frame): void {
    const shade = this.overlay.shade;
    const { ctx, lens, th, W, H, r0, r1, c0, c1, bodyX, bodyY } = f;
    if (!shade || shade.length !== lens.S * lens.P) return;
    const { headW: hw, headH: hh, cellH: ch, frozenRows: fr, frozenCols: fc } = this;
    const frozenW = this.colOff[fc];
    ctx.fillStyle = th.cone;
    ctx.globalAlpha = CONE_ALPHA;
    const band = (rows: [number, number], cols: [number, number], clip: [number, number, number, number]) => {
      this.clip(f, ...clip);
      for (let r = rows[0]; r <= rows[1]; r++)
        for (let c = cols[0]; c <= cols[1]; c++) {
          const cell = this.cellOf(r, c);
          if (shade[cell.site * lens.P + cell.col]) ctx.fillRect(this.colX(f, c), this.rowY(f, r), this.colWidth(c) - 1, ch - 1);
        }
      ctx.restore();
    };
    band([r0, r1], [c0, c1], [bodyX, bodyY, W - bodyX, H - bodyY]);
    if (fr) band([0, fr - 1], [c0, c1], [bodyX, hh, W - bodyX, fr * ch]);
    if (fc) band([r0, r1], [0, fc - 1], [hw, bodyY, frozenW, H - bodyY]);
    ctx.globalAlpha = 1;
  }

  /** Outlines: the patch's marks, pinned, selected, hover. */
  private drawOutlines(f: Frame): void {
    const { lens, th } = f;
    const P = lens.P;
    for (const m of this.overlay.marks)
      if (m.cell.site < lens.S && m.cell.col < P) this.outline(f, m.cell, m.kind === "patched" ? th.fg : th.cone, m.kind === "target" ? 2 : 3, m.kind === "source" ? [4, 2] : []);
    for (const key of this.pinned) {
      const cell = { site: Math.floor(key / P), col: key % P };
      if (cell.site < lens.S) this.outline(f, cell, th.fg, 2, []);
    }
    const sel = this.selected;
    if (sel && sel.site < lens.S && sel.col < P) this.outline(f, sel, th.accent, 2, [3, 2]);
    if (this.hover) this.outline(f, this.hover, th.fg, 1, []);
  }

  private outline(f: Frame, cell: Cell, color: string, width: number, dash: number[]): void {
    const { ctx, W, H } = f;
    if (!this.shows(cell)) return;
    const [r, c] = this.rcOf(cell);
    this.clip(f, c < this.frozenCols ? this.headW : f.bodyX, r < this.frozenRows ? this.headH : f.bodyY, W, H);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.setLineDash(dash);
    ctx.strokeRect(this.colX(f, c) + width / 2, this.rowY(f, r) + width / 2, this.colWidth(c) - 1 - width, this.cellH - 1 - width);
    ctx.setLineDash([]);
    ctx.restore();
  }

  /** Frozen indices first, then the visible range. */
  private static visible(frozen: number, from: number, to: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < frozen; i++) out.push(i);
    for (let i = from; i <= to; i++) out.push(i);
    return out;
  }

  /** Column headers (tokens, or layers when transposed), row headers, and the corner. */
  private drawHeaders(f: Frame): void {
    const { ctx, lens, th, W, H } = f;
    const { headW: hw, headH: hh, cellH: ch } = this;
    ctx.fillStyle = th.head;
    ctx.fillRect(0, 0, W, hh);
    ctx.fillRect(0, 0, hw, H);
    ctx.fillStyle = th.fg;
    ctx.font = `${this.fontPx}px ${th.font}`;

    // tokens the model wrote (a generation) are labelled in the accent colour
    const g = lens.generatedFrom;
    const written = (shown: number) => g >= 0 && this.lo + shown >= g;

    this.clip(f, hw, 0, W - hw, hh);
    ctx.textAlign = "center";
    for (const c of Grid.visible(this.frozenCols, f.c0, f.c1)) {
      const x = this.colX(f, c);
      if (c >= this.frozenCols && x < f.bodyX) continue; // partly under the frozen band
      const cw = this.colWidth(c);
      if (cw < 14) continue; // compact: the tooltip names the token
      ctx.fillStyle = !this.transpose && written(c) ? th.accent : th.fg;
      ctx.fillText(this.fit(ctx, this.colLabel(lens, c), cw - 4), x + cw / 2, hh / 2);
    }
    ctx.restore();

    this.clip(f, 0, hh, hw, H - hh);
    ctx.textAlign = "left";
    for (const r of Grid.visible(this.frozenRows, f.r0, f.r1)) {
      const y = this.rowY(f, r);
      if (r >= this.frozenRows && y < f.bodyY) continue;
      ctx.fillStyle = this.transpose && written(r) ? th.accent : th.fg;
      ctx.fillText(this.fit(ctx, this.rowLabel(lens, r), hw - 8), 4, y + ch / 2);
    }
    ctx.restore();
    ctx.fillStyle = th.fg;
  }

  /** The input token of data column `col` (or the column's own label). */
  private static tokenLabel(lens: LensData, col: number): string {
    return lens.columnLabels?.[col] ?? lens.display(lens.tokenAt(col));
  }

  /** Label of display column `c`: its token, or its layer when transposed. */
  private colLabel(lens: LensData, c: number): string {
    return this.transpose ? lens.siteLabels[lens.S - 1 - c] : Grid.tokenLabel(lens, this.lo + c);
  }

  /** Label of display row `r`: its layer, or its position and token when transposed. */
  private rowLabel(lens: LensData, r: number): string {
    if (!this.transpose) return lens.siteLabels[lens.S - 1 - r];
    const col = this.lo + r;
    return lens.columnLabels ? Grid.tokenLabel(lens, col) : `${lens.positions[col]} ${Grid.tokenLabel(lens, col)}`;
  }

  /** Lines under the headers and along the frozen band. */
  private drawSeparators(f: Frame): void {
    const { ctx, th, W, H, bodyX, bodyY } = f;
    const { headW: hw, headH: hh } = this;
    ctx.fillStyle = th.line;
    ctx.fillRect(0, hh - 1, W, 1);
    ctx.fillRect(hw - 1, 0, 1, H);
    if (this.frozenRows) ctx.fillRect(hw, bodyY - 1, W - hw, 1);
    if (this.frozenCols) ctx.fillRect(bodyX - 1, hh, 1, H - hh);
  }

  /** The prompt / generation boundary: a line before the first token the model wrote. */
  private drawBoundary(f: Frame): void {
    const g = f.lens.generatedFrom - this.lo; // display column of the first written token
    if (!(f.lens.generatedFrom > 0) || g <= 0 || g > this.nCols) return;
    const { ctx, th, W, H } = f;
    ctx.fillStyle = th.accent;
    if (!this.transpose) {
      const x = this.colX(f, g) - 1;
      if (x >= f.bodyX - 1 && x <= W) ctx.fillRect(x - 1, 0, 2, H);
    } else {
      const y = this.rowY(f, g) - 1;
      if (y >= f.bodyY - 1 && y <= H) ctx.fillRect(0, y - 1, W, 2);
    }
  }

  /** The top-left corner, over the separators. */
  private drawCorner(f: Frame): void {
    const { ctx, th } = f;
    const { headW: hw, headH: hh } = this;
    ctx.fillStyle = th.head;
    ctx.fillRect(0, 0, hw - 1, hh - 1);
    ctx.fillStyle = th.fg;
    ctx.textAlign = "left";
    ctx.fillText(this.transpose ? "pos \\ layer" : "layer", 4, hh / 2);
  }

  destroy(): void {
    if (this.raf && typeof cancelAnimationFrame !== "undefined") cancelAnimationFrame(this.raf);
    this.raf = 0;
    this.ro?.disconnect();
    this.ro = null;
    this.disposers.dispose();
    this.onDrawn = null;
    this.viewport.remove();
  }
}

export function sameCell(a: Cell | null, b: Cell | null): boolean {
  return a === b || (!!a && !!b && a.site === b.site && a.col === b.col);
}
