// Pins and the selected cell: the `pinned` and `selected` traits, clicks and keyboard navigation.
import type { LensData } from "./data";
import type { Cell, Grid } from "./grid";
import type { Panel } from "./panel";
import { setTrait, type LensModel } from "./model";

/** The `pinned` trait as cells (malformed entries are skipped). */
export function pinnedCells(model: LensModel): Cell[] {
  const raw = model.get("pinned");
  const out: Cell[] = [];
  for (const p of Array.isArray(raw) ? raw : []) {
    if (Array.isArray(p) && p.length >= 2 && Number.isInteger(p[0]) && Number.isInteger(p[1])) out.push({ site: p[0], col: p[1] });
  }
  return out;
}

const sameCell = (a: Cell) => (b: Cell) => a.site === b.site && a.col === b.col;

/** Row / column steps of the arrow keys. */
const STEPS: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };

export class Selection {
  constructor(
    private model: LensModel,
    private grid: Grid,
    private panel: Panel,
    private lens: () => LensData | null,
  ) {}

  setPinned(cells: Cell[]): void {
    setTrait(this.model, "pinned", cells.map((c) => [c.site, c.col]));
  }

  togglePin(cell: Cell): void {
    const cur = pinnedCells(this.model);
    const i = cur.findIndex(sameCell(cell));
    if (i >= 0) cur.splice(i, 1);
    else cur.push(cell);
    this.setPinned(cur);
  }

  unpin(cell: Cell): void {
    this.setPinned(pinnedCells(this.model).filter((c) => !sameCell(cell)(c)));
  }

  /** Show the `pinned` trait on the grid and in the panel. */
  syncPins(): void {
    const cells = pinnedCells(this.model);
    this.grid.setPinned(cells);
    this.panel.renderPins(cells);
  }

  select(cell: Cell, scroll = false): void {
    this.grid.setSelected(cell);
    if (scroll) this.grid.scrollIntoView(cell);
    this.panel.show(cell);
    const lens = this.lens();
    if (lens) setTrait(this.model, "selected", { site: cell.site, col: cell.col, position: lens.positions[cell.col] });
  }

  /** Show the `selected` trait (new data: keep it if it still fits). */
  restore(): void {
    const lens = this.lens();
    const sel = this.model.get("selected") ?? {};
    const { site, col } = sel;
    if (lens && Number.isInteger(site) && Number.isInteger(col) && site! < lens.S && col! < lens.P) {
      const cell = { site: site!, col: col! };
      this.grid.setSelected(cell);
      this.panel.show(cell);
    } else this.panel.show(null);
  }

  click(cell: Cell): void {
    this.select(cell);
    this.togglePin(cell);
    this.grid.viewport.focus({ preventScroll: true });
  }

  /** Arrows move the selection, Enter pins it, Escape clears the pins. */
  key(ev: KeyboardEvent): void {
    if (!this.lens()) return;
    const grid = this.grid;
    const cur = grid.getSelected() ?? grid.cellOf(0, 0);
    if (ev.key === "Enter" || ev.key === "Escape") {
      if (ev.key === "Enter") {
        this.togglePin(cur);
        this.select(cur);
      } else this.setPinned([]);
      ev.preventDefault();
      return;
    }
    const step = STEPS[ev.key];
    if (!step) return;
    ev.preventDefault();
    const [r, c] = grid.rcOf(cur);
    const clamp = (v: number, n: number) => Math.max(0, Math.min(n - 1, v));
    this.select(grid.cellOf(clamp(r + step[0], grid.nRows), clamp(c + step[1], grid.nCols)), true);
  }
}
