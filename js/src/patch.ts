// "Does it matter?": patching a cell from the grid (docs/wire.md "Patching"). The pure parts: the
// `patch` key of a comparison, the click-click / drag / keyboard state machine that turns picks into
// a `patch` request, and the cone overlay of the grid shown. The PatchTool: the bar (mode toggle,
// what to pick next, which grid of the patch to show, the cone on/off) and the request.
import { decodeArray, isWireArray, type LensData, type WireArray } from "./data";
import type { Cell } from "./grid";
import type { Requester } from "./requests";
import { h, type Disposers } from "./dom";

/** The `patch` key of a patch's comparison. */
export interface PatchInfo {
  site: number;
  siteName: string;
  targetPosition: number;
  /** the target grid's column (side b's own column) */
  targetCol: number;
  source: string;
  sourcePosition: number;
  sourceCol: number;
  sourcePromptIndex: number;
  targetPromptIndex: number;
  /** [S, P] over the aligned columns: 1 where the patch can change a cell */
  cone: Uint8Array;
}

/** Decode `comparison.patch` (null when the comparison is no patch). */
export function decodePatch(raw: unknown, S: number, P: number): PatchInfo | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  if (!isWireArray(r.cone)) return null;
  const cone = decodeArray(r.cone as WireArray) as Uint8Array;
  if (cone.length !== S * P) throw new RangeError(`patch cone has ${cone.length} cells, the diff grid ${S} × ${P}`);
  const n = (v: unknown, d = -1) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  return {
    site: n(r.site),
    siteName: String(r.site_name ?? ""),
    targetPosition: n(r.target_position),
    targetCol: n(r.target_col),
    source: String(r.source ?? "prompt"),
    sourcePosition: n(r.source_position),
    sourceCol: n(r.source_col),
    sourcePromptIndex: n(r.source_prompt_index),
    targetPromptIndex: n(r.target_prompt_index),
    cone: Uint8Array.from(cone),
  };
}

// -- which grid of a patch is shown, and its overlay ----------------------------------------------

/** "diff": the diff grid (b − a); "b": the patched (intervened) target; "a": the clean target. */
export type PatchSide = "diff" | "b" | "a";
export const PATCH_SIDES: PatchSide[] = ["diff", "b", "a"];
export const PATCH_SIDE_LABELS: Record<PatchSide, string> = { diff: "diff grid (patched − clean)", b: "patched grid", a: "clean grid" };

/** What the grid draws over a patch: the cone's cells shaded, the patched cell marked. */
export interface Overlay {
  /** [S * P] of the grid shown: 1 = in the cone */
  shade: Uint8Array | null;
  marks: { cell: Cell; kind: "patched" | "source" | "target" }[];
}

export const NO_OVERLAY: Overlay = { shade: null, marks: [] };

/** The cone and the patched cell on a grid of `gridP` columns: `cols` maps the diff grid's aligned
 * column c to the grid's own (null: the grid is the diff grid itself); `markCol` is the patched
 * cell's column in the grid shown (-1: not in it). */
export function coneOverlay(info: PatchInfo, S: number, P: number, cols: Int32Array | null, gridP: number, markCol: number): Overlay {
  const shade = new Uint8Array(S * gridP);
  for (let s = 0; s < S; s++)
    for (let c = 0; c < P; c++) {
      if (!info.cone[s * P + c]) continue;
      const g = cols ? cols[c] : c;
      if (g >= 0 && g < gridP) shade[s * gridP + g] = 1;
    }
  const ok = info.site >= 0 && info.site < S && markCol >= 0 && markCol < gridP;
  return { shade, marks: ok ? [{ cell: { site: info.site, col: markCol }, kind: "patched" }] : [] };
}

/** The aligned column of the target's own column `targetCol` (-1 when not aligned). */
export function alignedCol(colsB: Int32Array, targetCol: number): number {
  return colsB.indexOf(targetCol);
}

// -- the flow: click-click, drag, keys ------------------------------------------------------------

export interface PatchSource {
  prompt: number;
  site: number;
  col: number;
}

export type PatchState = { mode: "off" } | { mode: "source" } | { mode: "target"; source: PatchSource };

export interface PatchRequest {
  source: [number, number, number];
  target: [number, number];
}

export type PatchEvent =
  | { type: "toggle" }
  | { type: "cancel" }
  /** a click (or `s` / `t` on the cursor) on `cell` of prompt `prompt` */
  | { type: "pick"; prompt: number; cell: Cell }
  /** `s`: mark the cursor as the source (starts the mode) */
  | { type: "mark"; prompt: number; cell: Cell }
  /** `t`: patch into the cursor's column */
  | { type: "target"; prompt: number; col: number }
  /** a drag from a cell of prompt `prompt` to a cell of prompt `toPrompt` (default: the same) */
  | { type: "drag"; prompt: number; from: Cell; to: Cell; toPrompt?: number };

export interface PatchStep {
  state: PatchState;
  request: PatchRequest | null;
}

const req = (s: PatchSource, prompt: number, col: number): PatchRequest => ({ source: [s.prompt, s.site, s.col], target: [prompt, col] });

/** One step of the patch flow: the next state, and the request to send (if any). After a request
 * the mode stays on, ready for the next source. */
export function patchStep(state: PatchState, ev: PatchEvent): PatchStep {
  switch (ev.type) {
    case "toggle":
      return { state: state.mode === "off" ? { mode: "source" } : { mode: "off" }, request: null };
    case "cancel":
      return { state: state.mode === "target" ? { mode: "source" } : { mode: "off" }, request: null };
    case "mark":
      return { state: { mode: "target", source: { prompt: ev.prompt, site: ev.cell.site, col: ev.cell.col } }, request: null };
    case "pick":
      if (state.mode === "off") return { state, request: null };
      if (state.mode === "source") return { state: { mode: "target", source: { prompt: ev.prompt, site: ev.cell.site, col: ev.cell.col } }, request: null };
      return { state: { mode: "source" }, request: req(state.source, ev.prompt, ev.cell.col) };
    case "target":
      if (state.mode !== "target") return { state, request: null };
      return { state: { mode: "source" }, request: req(state.source, ev.prompt, ev.col) };
    case "drag":
      if (state.mode === "off") return { state, request: null };
      return { state: { mode: "source" }, request: req({ prompt: ev.prompt, site: ev.from.site, col: ev.from.col }, ev.toPrompt ?? ev.prompt, ev.to.col) };
  }
}

/** What a key does in the grid for the patch flow (null: not a patch key). `s` marks the cursor
 * as the source, `t` patches into the cursor's column, `p` shows the next prompt, Escape cancels
 * (only while a patch is being picked: else Escape keeps clearing the pins). */
export function patchKey(key: string, state: PatchState, hasModifier = false): "mark" | "target" | "next-prompt" | "cancel" | null {
  if (hasModifier) return null;
  if (key === "s" || key === "S") return "mark";
  if ((key === "t" || key === "T") && state.mode === "target") return "target";
  if ((key === "p" || key === "P") && state.mode !== "off") return "next-prompt";
  if (key === "Escape" && state.mode !== "off") return "cancel";
  return null;
}

// -- the bar ---------------------------------------------------------------------------------------

export interface PatchHost {
  req: Requester;
  /** the prompt shown (null: the mean view or the diff grid, where no source can be picked) */
  promptShown(): number | null;
  prompts(): string[];
  /** show prompt `i` (its grid, not the diff grid) */
  showPrompt(i: number): void;
  /** the prompt the patch shown went into (-1: none) */
  targetPrompt(): number;
  kernel(): { ok: boolean | null; reason: string };
  /** the task bar: a long request runs, ends */
  taskStarted(text: string): void;
  taskEnded(text: string, isError: boolean): void;
  /** redraw the overlay (the state changed) */
  changed(): void;
  /** the side shown changed */
  sideChanged(side: PatchSide): void;
}

/** A patch runs the model twice: allow it as long as a recompute. */
const PATCH_TIMEOUT_MS = 600000;

export class PatchTool {
  readonly el: HTMLDivElement;
  state: PatchState = { mode: "off" };
  side: PatchSide = "diff";
  cone = true;
  private toggle = h("button", "lw-patch-mode", "patch…", { type: "button", "aria-pressed": "false" });
  private hint = h("span", "lw-patch-hint lw-note", "", { role: "status" });
  private sideSel = h("select", "lw-patch-side", undefined, { "aria-label": "patch grid shown", title: "which grid of the patch to show" });
  private coneBox = h("label", "lw-patch-cone", undefined, { title: "shade the causal cone: the cells the patch can change" });
  private coneChk = h("input", "lw-patch-cone-toggle", undefined, { type: "checkbox" });
  private running = false;
  /** what the patch shown did ("" none) */
  private shown = "";

  constructor(private host: PatchHost, d: Disposers) {
    this.el = h("div", "lw-patch");
    for (const s of PATCH_SIDES) this.sideSel.appendChild(h("option", "", PATCH_SIDE_LABELS[s], { value: s }));
    this.coneChk.checked = true;
    this.coneBox.append(this.coneChk, h("span", "", " cone"));
    this.el.append(this.toggle, this.hint, this.sideSel, this.coneBox);
    d.listen(this.toggle, "click", () => this.apply({ type: "toggle" }));
    d.listen(this.sideSel, "change", () => {
      this.side = (PATCH_SIDES as string[]).includes(this.sideSel.value) ? (this.sideSel.value as PatchSide) : "diff";
      host.sideChanged(this.side);
    });
    d.listen(this.coneChk, "change", () => {
      this.cone = this.coneChk.checked;
      host.changed();
    });
    this.sync(false);
  }

  /** Show the bar: the toggle with two or more prompts, the side select and cone with a patch. */
  sync(hasPatch: boolean, info: PatchInfo | null = null): void {
    if (info) this.shown = describePatch(info);
    else if (!hasPatch) this.shown = "";
    const many = this.host.prompts().length > 1;
    this.toggle.hidden = !many;
    this.sideSel.hidden = this.coneBox.hidden = !hasPatch;
    this.el.hidden = !many && !hasPatch;
    this.sideSel.value = this.side;
    const k = this.host.kernel();
    this.toggle.disabled = k.ok !== true || this.running;
    this.toggle.title =
      k.ok === false
        ? `patching needs the kernel: ${k.reason}`
        : k.ok === null
          ? "waiting for the kernel…"
          : "patch: click a source cell, then (in this or another prompt) a target column; or drag, within a grid or onto the other prompt's grid shown below; keys: s source, t target, p next prompt, Esc cancel";
    if (k.ok !== true && this.state.mode !== "off") this.state = { mode: "off" };
    this.showState();
  }

  /** A new patch arrived: show its diff grid first. */
  resetSide(): void {
    this.side = "diff";
    this.sideSel.value = "diff";
  }

  private showState(): void {
    const s = this.state;
    this.toggle.setAttribute("aria-pressed", String(s.mode !== "off"));
    this.toggle.classList.toggle("lw-on", s.mode !== "off");
    this.el.dataset.patchMode = s.mode;
    if (s.mode === "off") this.hint.textContent = this.sideSel.hidden ? "" : this.shown;
    else if (s.mode === "source") this.hint.textContent = "pick the source cell (click, or s on the cursor)";
    else this.hint.textContent = `source: prompt ${s.source.prompt + 1}, site ${s.source.site}, column ${s.source.col} — pick the target column (switch prompt or stay; click, or t; Esc cancels)`;
  }

  /** Feed one event; sends the request it makes. */
  apply(ev: PatchEvent): void {
    if (ev.type === "toggle" || ev.type === "mark") {
      if (this.host.kernel().ok !== true || this.running) return;
    }
    const step = patchStep(this.state, ev);
    this.state = step.state;
    // sources are picked on a prompt's own grid: leave the diff grid or the mean view for it
    if (ev.type === "toggle" && step.state.mode === "source" && this.host.promptShown() === null) this.host.showPrompt(this.lastPrompt());
    this.showState();
    this.host.changed();
    if (step.request) void this.send(step.request);
  }

  /** A click on the grid: the patch flow's when it is on (true), else the grid's own (false). */
  click(cell: Cell): boolean {
    if (this.state.mode === "off") return false;
    const p = this.host.promptShown();
    if (p === null) {
      this.hint.textContent = "pick cells on one prompt's grid (not the mean or the diff grid)";
      return true;
    }
    this.apply({ type: "pick", prompt: p, cell });
    return true;
  }

  /** A drag from one cell to another (patch mode on, one prompt shown). */
  drag(from: Cell, to: Cell): boolean {
    const p = this.host.promptShown();
    if (this.state.mode === "off" || p === null) return false;
    this.apply({ type: "drag", prompt: p, from, to });
    return true;
  }

  /** A click on a cell of prompt `prompt`'s grid shown beside the main one (patch mode on). */
  pickOn(prompt: number, cell: Cell): void {
    if (this.state.mode !== "off") this.apply({ type: "pick", prompt, cell });
  }

  /** A drag from a cell of prompt `from.prompt` to a cell of prompt `toPrompt` (two grids shown). */
  dragAcross(from: PatchSource, to: Cell, toPrompt: number): boolean {
    if (this.state.mode === "off") return false;
    this.apply({ type: "drag", prompt: from.prompt, from: { site: from.site, col: from.col }, to, toPrompt });
    return true;
  }

  /** A key in the grid with the cursor on `cursor`; true when the patch flow took it. */
  key(ev: KeyboardEvent, cursor: Cell): boolean {
    const what = patchKey(ev.key, this.state, ev.ctrlKey || ev.metaKey || ev.altKey);
    if (!what) return false;
    const p = this.host.promptShown();
    ev.preventDefault();
    if (what === "cancel") this.apply({ type: "cancel" });
    else if (what === "next-prompt") {
      const n = this.host.prompts().length;
      this.host.showPrompt(((p ?? -1) + 1) % Math.max(1, n));
    } else if (p === null) this.hint.textContent = "pick cells on one prompt's grid (not the mean or the diff grid)";
    else if (what === "mark") this.apply({ type: "mark", prompt: p, cell: cursor });
    else this.apply({ type: "target", prompt: p, col: cursor.col });
    return true;
  }

  /** The prompt to go back to from the diff grid (the patch's target, else the first). */
  private lastPrompt(): number {
    return Math.max(0, this.host.targetPrompt());
  }

  /** While a target is picked: the cell the patch would go into under the pointer (the source's
   * site, the hovered column), on a prompt's own grid; else null. */
  targetPreview(hover: Cell | null): Cell | null {
    const s = this.state;
    return s.mode === "target" && hover && this.host.promptShown() !== null ? { site: s.source.site, col: hover.col } : null;
  }

  /** The source cell to mark on the grid of prompt `prompt` (default: the one shown; only on its own prompt). */
  sourceMark(prompt: number | null = this.host.promptShown()): Cell | null {
    const s = this.state;
    return s.mode === "target" && prompt === s.source.prompt ? { site: s.source.site, col: s.source.col } : null;
  }

  private async send(r: PatchRequest): Promise<void> {
    this.running = true;
    this.sync(true);
    this.host.taskStarted(`patching prompt ${r.source[0] + 1} (site ${r.source[1]}, column ${r.source[2]}) into prompt ${r.target[0] + 1}, column ${r.target[1]}…`);
    try {
      const res = await this.host.req.request<{ seconds?: number; max_js?: number }>("patch", { source: r.source, target: r.target }, PATCH_TIMEOUT_MS);
      const secs = typeof res.seconds === "number" ? ` in ${res.seconds.toFixed(2)} s` : "";
      this.host.taskEnded(`patch done${secs}${typeof res.max_js === "number" ? ` · largest JS ${res.max_js.toPrecision(3)} nats` : ""}`, false);
    } catch (e) {
      const m = (e as Error).message;
      this.host.taskEnded(m === "stopped" ? "patch stopped" : `patch failed: ${m}`, m !== "stopped");
    } finally {
      this.running = false;
      this.sync(this.sideSel.hidden === false);
    }
  }
}

/** One line on the patch shown: what went where, and what the shade is. */
export function describePatch(p: PatchInfo): string {
  const from = p.source === "prompt" ? `prompt ${p.sourcePromptIndex + 1} pos ${p.sourcePosition}` : `a ${p.source} value`;
  return `patched ${p.siteName || `site ${p.site}`}: ${from} → prompt ${p.targetPromptIndex + 1} pos ${p.targetPosition}; shaded: the cells it can change`;
}

/** The prompt index of the grid shown, or null on the diff grid or the mean view. */
export function promptOf(lens: LensData | null, promptIndex: number): number | null {
  return !lens || lens.compare || lens.aggregate ? null : promptIndex;
}
