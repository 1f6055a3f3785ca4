// "Does it matter?" over the whole residual stream: the activation-patching sweep (docs/wire.md
// "Sweep"). The pure parts: the `sweep` trait decoded, the sweep as a LensData and a colour view a
// Grid draws (sites × positions, a diverging scale of the recovery centred on 0), the readout of a
// cell. The SweepTool: the bar that asks the kernel for a sweep (clean and corrupted prompt, the
// pair; progress and stop) and the sweep's own grid with its hover readout. Token strings reach
// the page through textContent and the grid's fillText only.
import { decodeArray, displayFor, emptyCells, isWireArray, WIRE_VERSION, type LensData, type WireArray } from "./data";
import { diverging } from "./color";
import { fmt } from "./format";
import type { Cell, Grid } from "./grid";
import { subGrid } from "./subgrid";
import type { MetricView } from "./metrics";
import type { LensModel } from "./model";
import type { Requester } from "./requests";
import type { ProgressMessage } from "./tasks";
import { displayToken } from "./tokens";
import { h, type Disposers } from "./dom";

/** A sweep runs one forward per batch of patches: allow it as long as a generation. */
const SWEEP_TIMEOUT_MS = 3600000;
/** What the sweep button does. */
const SWEEP_TITLE = "patch the clean prompt's residual at every (layer, position) into the corrupted run; record how much of logit(a) − logit(b) at the last token it recovers";
/** The sweep grid's viewport height (px): it scrolls beyond. */
const SWEEP_HEIGHT = 300;

/** The decoded `sweep` trait. Cell (site s, position t) is index s * T + t. */
export interface SweepData {
  S: number;
  T: number;
  /** (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt); NaN where undefined */
  recovery: Float32Array;
  /** the logit difference of the corrupted run with that one residual patched */
  patchedLd: Float32Array;
  cleanLd: number;
  corruptLd: number;
  sites: string[];
  siteLabels: string[];
  /** decoded token text (untrusted) */
  cleanTokens: string[];
  corruptTokens: string[];
  pair: [number, number];
  pairTokens: [string, string];
  /** which prompts of the batch (-1: a text given from Python) */
  cleanPrompt: number;
  corruptPrompt: number;
  forwards: number;
  seconds: number;
}

const num = (v: unknown): number => (typeof v === "number" ? v : NaN);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);

/** Decode the `sweep` trait; null when it holds none; throws on another wire version or a bad layout. */
export function decodeSweep(raw: unknown): SweepData | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  if (!isWireArray(r.recovery)) return null;
  if (r.version !== WIRE_VERSION) throw new Error(`sweep has wire version ${JSON.stringify(r.version ?? null)}; this front end reads ${WIRE_VERSION}`);
  const S = Number(r.n_sites);
  const T = Number(r.n_positions);
  const recovery = decodeArray(r.recovery as WireArray) as Float32Array;
  const patchedLd = isWireArray(r.patched_ld) ? (decodeArray(r.patched_ld as WireArray) as Float32Array) : new Float32Array(S * T).fill(NaN);
  if (recovery.length !== S * T || patchedLd.length !== S * T) throw new RangeError(`sweep arrays do not match ${S} sites × ${T} positions`);
  const sites = strings(r.sites);
  const siteLabels = strings(r.site_labels);
  while (sites.length < S) sites.push(String(sites.length));
  while (siteLabels.length < S) siteLabels.push(sites[siteLabels.length]);
  const cleanTokens = strings(r.clean_tokens);
  const corruptTokens = strings(r.corrupt_tokens);
  const pair = (Array.isArray(r.pair) ? r.pair.map(Number) : [-1, -1]) as [number, number];
  const pt = strings(r.pair_tokens);
  const meta = (r.meta ?? {}) as Record<string, unknown>;
  return {
    S,
    T,
    recovery,
    patchedLd,
    cleanLd: num(r.clean_ld),
    corruptLd: num(r.corrupt_ld),
    sites,
    siteLabels,
    cleanTokens,
    corruptTokens,
    pair,
    pairTokens: [pt[0] ?? `#${pair[0]}`, pt[1] ?? `#${pair[1]}`],
    cleanPrompt: typeof r.clean_prompt_index === "number" ? r.clean_prompt_index : -1,
    corruptPrompt: typeof r.corrupt_prompt_index === "number" ? r.corrupt_prompt_index : -1,
    forwards: num(meta.forwards),
    seconds: num(meta.seconds),
  };
}

/** What the sweep measures: "logit(a) − logit(b)" (display forms). */
export function pairLabel(sw: SweepData): string {
  return `logit(${displayToken(sw.pairTokens[0])}) − logit(${displayToken(sw.pairTokens[1])})`;
}

/** Header of position t: the clean token, or "clean│corrupt" where the two prompts differ. */
export function sweepColumnLabel(sw: SweepData, t: number): string {
  const c = displayToken(sw.cleanTokens[t] ?? "");
  const x = displayToken(sw.corruptTokens[t] ?? "");
  return c === x ? c : `${c}│${x}`;
}

/** The sweep as a LensData the Grid draws: its sites as rows, its positions as columns (headers:
 * the tokens), no token text in the cells (the colour is the recovery). */
export function sweepLens(sw: SweepData): LensData {
  const { S, T } = sw;
  const vocab = new Map<number, string>();
  return {
    S,
    P: T,
    k: 1,
    M: 0,
    modelName: "",
    lensName: "activation-patching sweep",
    prompt: "",
    sites: sw.sites.slice(),
    siteLabels: sw.siteLabels.slice(),
    positions: Int32Array.from({ length: T }, (_, t) => t),
    inputIds: new Int32Array(0),
    nextIds: new Int32Array(T).fill(-1),
    ...emptyCells(S * T, 1, 0),
    trackedIds: new Int32Array(0),
    vocab,
    columnLabels: Array.from({ length: T }, (_, t) => sweepColumnLabel(sw, t)),
    generatedFrom: -1,
    display: displayFor(vocab),
    tokenAt: () => -1,
  };
}

/** Largest |recovery| over the finite cells, at least 1 (full recovery is always a strong colour). */
export function recoveryRange(v: Float32Array): number {
  let m = 1;
  for (let i = 0; i < v.length; i++) if (Number.isFinite(v[i]) && Math.abs(v[i]) > m) m = Math.abs(v[i]);
  return m;
}

/** The colours of the sweep grid: the recovery on a diverging scale centred on 0 (red +, blue −).
 * (`metric` names the closest compare metric: a recovery is a normalised Δ logit difference.) */
export function sweepView(sw: SweepData): MetricView {
  return { metric: "d_logit_diff", values: sw.recovery, scale: diverging(recoveryRange(sw.recovery)), label: `recovery of ${pairLabel(sw)}`, note: "" };
}

/** The readout of one cell: where, the recovery, the patched logit difference. */
export function sweepReadout(sw: SweepData, cell: Cell): string {
  const i = cell.site * sw.T + cell.col;
  return `${sw.sites[cell.site]} · pos ${cell.col} ${sweepColumnLabel(sw, cell.col)}: recovery ${fmt(sw.recovery[i])} · ${pairLabel(sw)} patched ${fmt(sw.patchedLd[i])} (clean ${fmt(sw.cleanLd)}, corrupted ${fmt(sw.corruptLd)})`;
}

// -- the bar and the grid ---------------------------------------------------------------------------

export interface SweepHost {
  model: LensModel;
  req: Requester;
  /** true: a kernel answers; false: none (the reason says why); null: not known yet */
  kernel(): { ok: boolean | null; reason: string };
  /** display form of a token id of the grids shown (the tracked pair's placeholders) */
  display(id: number): string;
  /** the task bar: a long request runs, ends */
  taskStarted(text: string): void;
  taskEnded(text: string, isError: boolean): void;
}

export class SweepTool {
  readonly el: HTMLDivElement;
  readonly grid: Grid;
  private clean = h("select", "lw-sweep-clean", undefined, { "aria-label": "clean prompt", "data-kernel-only": "" });
  private corrupt = h("select", "lw-sweep-corrupt", undefined, { "aria-label": "corrupted prompt", "data-kernel-only": "" });
  private tokA = h("input", "lw-sweep-a", undefined, { type: "text", size: "8", "aria-label": "token a", "data-kernel-only": "" });
  private tokB = h("input", "lw-sweep-b", undefined, { type: "text", size: "8", "aria-label": "token b", "data-kernel-only": "" });
  readonly go = h("button", "lw-sweep-go", "sweep", { type: "button", "data-kernel-only": "" });
  private stopButton = h("button", "lw-sweep-stop", "stop", { type: "button", title: "stop the sweep: the last one stays" });
  private bar = h("progress", "lw-sweep-progress", undefined, { max: "1", value: "0" });
  private status = h("span", "lw-sweep-status lw-note", "", { role: "status" });
  private noKernel = h("div", "lw-sweep-nokernel lw-note", "");
  private legend = h("div", "lw-sweep-legend lw-note", "");
  private readout = h("div", "lw-sweep-readout", "hover a cell", { role: "status" });
  private box = h("div", "lw-sweep-grid");
  private data: SweepData | null = null;
  private decodedFrom: unknown = null;
  private running = false;

  constructor(private host: SweepHost, d: Disposers) {
    this.el = h("div", "lw-sweep");
    const head = h("div", "lw-sweep-bar");
    head.append(
      h("b", "", "patching sweep "),
      h("span", "lw-note", "clean "),
      this.clean,
      h("span", "lw-note", " into corrupted "),
      this.corrupt,
      h("span", "lw-note", " measure logit("),
      this.tokA,
      h("span", "lw-note", ") − logit("),
      this.tokB,
      h("span", "lw-note", ") "),
      this.go,
      this.bar,
      this.status,
      this.stopButton,
    );
    this.el.append(head, this.noKernel, this.legend, this.box, this.readout);
    this.grid = subGrid(
      this.box,
      "lw-sweep",
      {
        onHover: (cell) => this.hover(cell),
        onClick: (cell) => {
          this.grid.setSelected(cell);
          this.hover(cell);
        },
        onKey: () => {},
      },
      SWEEP_HEIGHT,
    );
    d.listen(this.go, "click", () => void this.run());
    d.listen(this.stopButton, "click", () => void this.stop());
    for (const trait of ["sweep", "prompts", "tracked", "diff_tokens"]) d.on(host.model, `change:${trait}`, () => this.sync());
    this.setRunning(false);
    this.sync();
  }

  /** Show the `sweep` trait and fit the bar to the prompts (a sweep needs two). */
  sync(): void {
    const raw = this.host.model.get("sweep");
    if (raw !== this.decodedFrom) {
      this.decodedFrom = raw;
      try {
        this.data = decodeSweep(raw);
      } catch (e) {
        this.data = null;
        this.status.textContent = `cannot read the sweep: ${(e as Error).message}`;
      }
      this.draw();
    }
    const prompts = (this.host.model.get("prompts") ?? []).map(String);
    this.fillPrompts(prompts);
    const [a, b] = this.defaultPair();
    this.tokA.placeholder = a >= 0 ? this.host.display(a) : "token a";
    this.tokB.placeholder = b >= 0 ? this.host.display(b) : "token b";
    this.el.hidden = prompts.length < 2 && !this.data;
    this.syncKernel();
  }

  /** Enable the bar where a kernel answers; else disabled, with a note saying why. */
  syncKernel(): void {
    const k = this.host.kernel();
    const prompts = (this.host.model.get("prompts") ?? []).length;
    this.go.disabled = k.ok !== true || this.running || prompts < 2;
    for (const c of [this.clean, this.corrupt, this.tokA, this.tokB]) c.disabled = k.ok !== true || this.running;
    this.go.title = k.ok === false ? `a sweep needs the kernel: ${k.reason}` : k.ok === null ? "waiting for the kernel…" : SWEEP_TITLE;
    this.noKernel.hidden = k.ok !== false;
    this.noKernel.textContent = k.ok === false ? `a new sweep needs the kernel (${k.reason}); the sweep shown was computed before the page was saved` : "";
    if (k.ok === false && !this.data) this.noKernel.textContent = `a sweep needs the kernel (${k.reason})`;
  }

  private fillPrompts(prompts: string[]): void {
    const n = prompts.length;
    if (this.clean.options.length === n && Array.from(this.clean.options).every((o, i) => o.dataset.text === prompts[i])) return;
    for (const [sel, pick] of [[this.clean, 0], [this.corrupt, 1]] as const) {
      sel.replaceChildren();
      prompts.forEach((p, i) => {
        const o = h("option", "", `${i + 1}: ${p.length > 30 ? `${p.slice(0, 30)}…` : p}`, { value: String(i) });
        o.dataset.text = p;
        sel.appendChild(o);
      });
      sel.value = String(Math.min(pick, Math.max(0, n - 1)));
    }
  }

  /** The kernel's default pair: the logit-difference pair, else the first two tracked tokens. */
  private defaultPair(): [number, number] {
    const d = (this.host.model.get("diff_tokens") ?? []).map(Number);
    const t = (this.host.model.get("tracked") ?? []).map(Number);
    const p = d.length === 2 ? d : t.slice(0, 2);
    return p.length === 2 ? [p[0], p[1]] : [-1, -1];
  }

  private draw(): void {
    const sw = this.data;
    this.el.dataset.state = sw ? "shown" : "none";
    this.box.hidden = this.readout.hidden = !sw;
    if (!sw) {
      this.legend.textContent = "";
      this.grid.setData(null, null);
      return;
    }
    const view = sweepView(sw);
    this.grid.setData(sweepLens(sw), view);
    const from = (i: number) => (i >= 0 ? `prompt ${i + 1}` : "a text");
    const cost = Number.isFinite(sw.forwards) ? ` · ${sw.forwards} forwards${Number.isFinite(sw.seconds) ? `, ${sw.seconds.toFixed(2)} s` : ""}` : "";
    this.legend.textContent =
      `recovery of ${pairLabel(sw)} at the last token when one residual of ${from(sw.cleanPrompt)} (clean, ${fmt(sw.cleanLd)}) is patched into ` +
      `${from(sw.corruptPrompt)} (corrupted, ${fmt(sw.corruptLd)}): 1 = the clean run's, 0 = the corrupted run's; red +, blue −, scale ±${fmt(view.scale.hi)}${cost}`;
    this.readout.textContent = "hover a cell";
  }

  private hover(cell: Cell | null): void {
    const sw = this.data;
    if (!sw || !cell || cell.site >= sw.S || cell.col >= sw.T) return;
    const i = cell.site * sw.T + cell.col;
    this.readout.textContent = sweepReadout(sw, cell);
    this.readout.dataset.site = String(cell.site);
    this.readout.dataset.col = String(cell.col);
    this.readout.dataset.recovery = String(sw.recovery[i]);
    this.readout.dataset.patchedLd = String(sw.patchedLd[i]);
  }

  /** A `progress` message: the sweep's own line shows it. */
  onProgress(p: ProgressMessage): void {
    if (p.task !== "sweep") return;
    if (p.state === "running") {
      this.bar.max = Math.max(1, p.total);
      this.bar.value = Math.min(p.done, p.total);
      this.status.textContent = `sweeping: ${p.done} / ${p.total} patches`;
      this.el.dataset.progress = `${p.done}/${p.total}`;
    }
  }

  private setRunning(running: boolean): void {
    this.running = running;
    this.stopButton.hidden = this.bar.hidden = !running;
    this.stopButton.disabled = !running;
    this.el.dataset.task = running ? "running" : "";
    this.syncKernel();
  }

  /** Ask the kernel for a sweep of the prompts and pair chosen; the grid comes as the `sweep` trait. */
  async run(): Promise<void> {
    if (this.running) return;
    const fields: Record<string, unknown> = { clean: Number(this.clean.value), corrupt: Number(this.corrupt.value) };
    const a = this.tokA.value;
    const b = this.tokB.value;
    if (a || b) fields.tokens = [a || this.defaultPair()[0], b || this.defaultPair()[1]];
    this.setRunning(true);
    this.el.dataset.progress = "";
    this.status.textContent = "sweeping…";
    this.host.taskStarted(`sweeping prompt ${Number(fields.clean) + 1} into prompt ${Number(fields.corrupt) + 1}`);
    try {
      const r = await this.host.req.request<{ patches?: number; forwards?: number; seconds?: number }>("sweep", fields, SWEEP_TIMEOUT_MS);
      const text = `sweep done: ${r.patches} patches in ${r.forwards} forwards, ${Number(r.seconds).toFixed(2)} s`;
      this.status.textContent = text;
      this.host.taskEnded(text, false);
    } catch (e) {
      const m = (e as Error).message;
      const text = m === "stopped" ? "sweep stopped; the last sweep stays" : `sweep failed: ${m}`;
      this.status.textContent = text;
      this.host.taskEnded(text, m !== "stopped");
    } finally {
      this.setRunning(false);
    }
  }

  private async stop(): Promise<void> {
    try {
      await this.host.req.request("stop", {});
    } catch (e) {
      this.status.textContent = (e as Error).message;
    }
  }

  destroy(): void {
    this.grid.destroy();
  }
}
