// "Who wrote this cell?": the `attribution` request of a cell (docs/wire.md "Attribution") and its
// view in the detail panel: the top contributors as bars (positive / negative distinct), the rest
// and the remainder rows shown apart, the sum against the cell's logit, and a layer × head heatmap
// (canvas) with a hover readout. Token strings go in through textContent only.
import { decodeResult, isWireArray, type LensData } from "./data";
import type { Cell } from "./grid";
import type { Requester } from "./requests";
import { diverging } from "./color";
import { fmt } from "./format";
import { displayToken } from "./tokens";
import { h } from "./dom";

/** An attribution runs the model: allow it as long as a recompute. */
const ATTRIBUTION_TIMEOUT_MS = 600000;
/** how many rows the bars show */
export const ATTRIBUTION_TOP = 20;

export interface AttributionRow {
  name: string;
  kind: string;
  value: number;
}

/** The `attribution` reply, checked and with every number a number (NaN where the wire had null). */
export interface Attribution {
  site: number;
  col: number;
  /** the lens label and prompt index it was computed for (the kernel's reply says; -1 / "" unknown) */
  lens: string;
  promptIndex: number;
  siteName: string;
  position: number;
  kind: "logit" | "logit_diff";
  tokenIds: number[];
  /** decoded text by id (untrusted) */
  tokens: Map<number, string>;
  logit: number;
  sum: number;
  error: number;
  /** every component row, in depth order */
  rows: AttributionRow[];
  /** the `top` rows by |value| */
  bars: AttributionRow[];
  /** the components not among the bars: how many, and their sum */
  rest: { count: number; sum: number };
  remainder: { name: string; layer: number; value: number }[];
  heads: { values: Float32Array; layers: number[]; nHeads: number };
}

const num = (v: unknown): number => (typeof v === "number" ? v : v === null || v === undefined ? NaN : Number(v));
const list = (v: unknown): unknown[] =>
  Array.isArray(v) ? v : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : isWireArray(v) ? list(decodeResult(v)) : [];

function rowsOf(names: unknown, kinds: unknown, values: unknown): AttributionRow[] {
  const n = list(names);
  const k = list(kinds);
  const v = list(values);
  if (n.length !== v.length) throw new RangeError("attribution rows: names and values differ in length");
  return n.map((name, i) => ({ name: String(name), kind: String(k[i] ?? ""), value: num(v[i]) }));
}

/** Decode an `attribution` reply (arrays already decoded by the Requester, or plain lists). */
export function decodeAttribution(raw: unknown): Attribution {
  if (!raw || typeof raw !== "object") throw new TypeError("attribution reply is not an object");
  const r = raw as Record<string, unknown>;
  const rows = rowsOf(r.names, r.kinds, r.values);
  const b = (r.bars ?? {}) as Record<string, unknown>;
  const bars = rowsOf(b.names, b.kinds, b.values);
  const inBars = new Set(bars.map((x) => x.name));
  let restSum = 0;
  let restCount = 0;
  for (const x of rows)
    if (!inBars.has(x.name)) {
      restCount++;
      if (Number.isFinite(x.value)) restSum += x.value;
    }
  const hd = (r.heads ?? {}) as Record<string, unknown>;
  const layers = list(hd.layers).map((x) => Number(x));
  const nHeads = Number(hd.n_heads ?? 0);
  const flat = list(hd.values).flatMap((x) => (Array.isArray(x) ? x : [x]));
  const values = Float32Array.from(flat, num);
  if (values.length !== layers.length * nHeads) throw new RangeError(`attribution heads: ${values.length} values for ${layers.length} layers × ${nHeads} heads`);
  const tokens = new Map<number, string>();
  for (const [id, text] of Object.entries((r.tokens ?? {}) as Record<string, unknown>)) tokens.set(Number(id), String(text));
  const kind = r.kind === "logit_diff" ? "logit_diff" : "logit";
  return {
    site: num(r.site),
    col: num(r.col),
    lens: String(r.lens ?? ""),
    promptIndex: typeof r.prompt_index === "number" ? r.prompt_index : -1,
    siteName: String(r.site_name ?? ""),
    position: num(r.position),
    kind,
    tokenIds: list(r.token_ids).map((x) => Number(x)),
    tokens,
    logit: num(r.logit),
    sum: num(r.sum),
    error: num(r.error),
    rows,
    bars,
    rest: { count: restCount, sum: restSum },
    remainder: list(r.remainder).map((x) => {
      const o = (x ?? {}) as Record<string, unknown>;
      return { name: String(o.name ?? ""), layer: num(o.layer), value: num(o.value) };
    }),
    heads: { values, layers, nHeads },
  };
}

/** What the attribution explains: "logit(tok)" or "logit(a) − logit(b)" (display forms). */
export function targetLabel(a: Pick<Attribution, "kind" | "tokenIds" | "tokens">): string {
  const tok = (id: number) => displayToken(a.tokens.get(id) ?? `#${id}`);
  return a.kind === "logit_diff" ? `logit(${tok(a.tokenIds[0])}) − logit(${tok(a.tokenIds[1])})` : `logit(${tok(a.tokenIds[0])})`;
}

// -- the heatmap's geometry -------------------------------------------------------------------------

export const HEAT_CELL = 14;
export const HEAT_HEAD_W = 30;
export const HEAT_HEAD_H = 14;
/** the heatmap's cells fit in about this many pixels each way (big models get smaller cells) */
const HEAT_MAX = 448;

/** A heatmap cell's side in pixels: 14, less for many layers or heads (never under 4). */
export function heatCell(nLayers: number, nHeads: number): number {
  return Math.max(4, Math.min(HEAT_CELL, Math.floor(HEAT_MAX / Math.max(1, nHeads, nLayers))));
}

/** The (row = layer index into `layers`, head) under canvas CSS coordinates, or null. */
export function heatCellAt(x: number, y: number, nLayers: number, nHeads: number): { row: number; head: number } | null {
  const size = heatCell(nLayers, nHeads);
  const c = Math.floor((x - HEAT_HEAD_W) / size);
  const r = Math.floor((y - HEAT_HEAD_H) / size);
  if (x < HEAT_HEAD_W || y < HEAT_HEAD_H || c >= nHeads || r >= nLayers) return null;
  return { row: r, head: c };
}

/** Largest |v| of the finite values (1 when none). */
function maxAbs(v: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) if (Number.isFinite(v[i]) && Math.abs(v[i]) > m) m = Math.abs(v[i]);
  return m > 0 ? m : 1;
}

// -- the view ---------------------------------------------------------------------------------------

export interface AttributionHost {
  req: Requester;
  /** true: a kernel answers; false: none (the reason says why); null: not known yet */
  kernel(): { ok: boolean | null; reason: string };
  /** the tracked pair of the logit-difference metric */
  diffTokens(): number[];
  /** the last attribution the kernel computed (the `last_attribution` trait: an exported page carries it) */
  carried(): unknown;
  /** the prompt shown */
  promptIndex(): number;
}

/** Whether attribution `a` is of cell `cell` of grid `lens` (its lens label) and prompt `pi`. */
export function isOfCell(a: Pick<Attribution, "lens" | "promptIndex" | "site" | "col">, lens: LensData, pi: number, cell: Cell): boolean {
  return a.lens === lens.lensName && a.promptIndex === pi && a.site === cell.site && a.col === cell.col;
}

/** A choice of the token select: its value on the wire (`null` = the cell's top-1). */
type TokenChoice = number | [number, number] | null;

export class AttributionView {
  readonly el: HTMLDivElement;
  private go: HTMLButtonElement;
  private pick: HTMLSelectElement;
  private body: HTMLDivElement;
  private note: HTMLDivElement;
  /** the carried attribution, decoded once per trait value */
  private carried: { raw: unknown; a: Attribution | null } = { raw: null, a: null };
  private choices: TokenChoice[] = [];
  private lens: LensData | null = null;
  private cell: Cell | null = null;
  private seq = 0;
  private alive = true;

  constructor(private host: AttributionHost) {
    this.el = h("div", "lw-attr");
    const head = h("div", "lw-attr-head");
    this.go = h("button", "lw-attr-go", "who wrote this?", { type: "button" });
    this.pick = h("select", "lw-attr-token", undefined, { "aria-label": "attribution token", title: "which token's logit to split" });
    this.body = h("div", "lw-attr-body");
    this.note = h("div", "lw-note lw-attr-nokernel");
    head.append(this.go, this.pick);
    this.el.append(head, this.note, this.body);
    this.go.onclick = () => void this.run();
  }

  /** The cell whose attribution the button asks for (a new cell clears the last answer). */
  setCell(lens: LensData | null, cell: Cell | null): void {
    const same = lens === this.lens && !!cell && !!this.cell && cell.site === this.cell.site && cell.col === this.cell.col;
    this.lens = lens;
    this.cell = cell;
    if (!same) {
      this.seq++;
      this.body.replaceChildren();
      delete this.el.dataset.state;
      this.showCarried();
    }
    this.fillChoices();
    this.syncKernel();
  }

  /** Show the kept attribution (`last_attribution`) when it is of the cell shown. */
  showCarried(): void {
    const raw = this.host.carried();
    if (raw !== this.carried.raw) {
      let a: Attribution | null = null;
      try {
        a = raw && typeof raw === "object" && "values" in raw ? decodeAttribution(raw) : null;
      } catch {
        a = null; // a malformed trait shows nothing; a new request still works
      }
      this.carried = { raw, a };
    }
    const { lens, cell } = this;
    const a = this.carried.a;
    if (a && lens && cell && this.el.dataset.state !== "running" && isOfCell(a, lens, this.host.promptIndex(), cell)) this.show(a);
  }

  /** Enable the button where a kernel answers; else disabled, its title saying why. */
  syncKernel(): void {
    const k = this.host.kernel();
    const usable = !!this.lens && !!this.cell && !this.lens.aggregate && !this.lens.compare;
    this.go.disabled = !usable || k.ok !== true;
    this.pick.disabled = this.go.disabled;
    this.note.hidden = k.ok !== false || !usable;
    this.note.textContent = k.ok === false ? `a new attribution needs the kernel (${k.reason})${this.el.dataset.state === "done" ? "; the one shown was computed before the page was saved" : ""}` : "";
    this.go.title = k.ok === false ? `attribution needs the kernel: ${k.reason}` : k.ok === null ? "waiting for the kernel…" : "split this cell's logit into the embedding, every head, attention bias and MLP (runs the model once)";
  }

  private fillChoices(): void {
    const { lens, cell } = this;
    this.pick.replaceChildren();
    this.choices = [];
    if (!lens || !cell) return;
    const add = (text: string, c: TokenChoice) => {
      this.choices.push(c);
      this.pick.appendChild(h("option", "", text, { value: String(this.choices.length - 1) }));
    };
    const i = cell.site * lens.P + cell.col;
    const top = lens.topkIds[i * lens.k];
    add(`top-1: ${lens.display(top)}`, null);
    const nxt = lens.nextIds[cell.col];
    if (nxt >= 0 && nxt !== top) add(`next: ${lens.display(nxt)}`, nxt);
    for (const id of lens.trackedIds) if (id !== top && id !== nxt) add(`tracked: ${lens.display(id)}`, id);
    const d = this.host.diffTokens();
    const [a, b] = d.length === 2 && lens.trackedIds.includes(d[0]) && lens.trackedIds.includes(d[1]) ? d : [lens.trackedIds[0], lens.trackedIds[1]];
    if (lens.M >= 2 && a !== b) add(`logit(${lens.display(a)}) − logit(${lens.display(b)})`, [a, b]);
  }

  /** Ask the kernel for the chosen cell and token, and show the reply. */
  async run(): Promise<void> {
    const { lens, cell } = this;
    if (!lens || !cell) return;
    const mine = ++this.seq;
    const choice = this.choices[Number(this.pick.value)] ?? null;
    const fields: Record<string, unknown> = { site: cell.site, col: cell.col, top: ATTRIBUTION_TOP };
    if (choice !== null) fields.token = choice;
    this.body.replaceChildren(h("div", "lw-note lw-attr-wait", "running the model for the attribution…"));
    this.el.dataset.state = "running";
    try {
      const r = await this.host.req.request("attribution", fields, ATTRIBUTION_TIMEOUT_MS);
      if (!this.alive || mine !== this.seq) return;
      this.show(decodeAttribution(r));
    } catch (e) {
      if (!this.alive || mine !== this.seq) return;
      this.el.dataset.state = "error";
      this.body.replaceChildren(h("div", "lw-status-error lw-attr-error", (e as Error).message));
    }
  }

  /** Draw a decoded reply (also the way tests show one without a kernel). */
  show(a: Attribution): void {
    this.el.dataset.state = "done";
    this.body.replaceChildren(this.summary(a), this.barTable(a), this.remainderTable(a), this.heatmap(a));
  }

  private summary(a: Attribution): HTMLElement {
    const box = h("div", "lw-attr-summary");
    const title = h("div", "lw-attr-title");
    title.append(h("b", "", `${a.siteName} · pos ${a.position} · `), h("span", "lw-tok lw-attr-target", targetLabel(a)));
    const line = (cls: string, k: string, v: string) => {
      const d = h("div", cls);
      d.append(h("span", "lw-k", k), h("span", "lw-v", v));
      return d;
    };
    box.append(
      title,
      line("lw-attr-logit", "cell's value ", fmt(a.logit)),
      line("lw-attr-sum", "sum of every row ", fmt(a.sum)),
      line("lw-attr-err", "error (sum − value) ", Number.isFinite(a.error) ? a.error.toExponential(1) : "–"),
    );
    return box;
  }

  private barTable(a: Attribution): HTMLElement {
    const table = h("table", "lw-attr-bars");
    const m = maxAbs(a.bars.map((b) => b.value));
    for (const b of a.bars) {
      const tr = h("tr", `lw-attr-row ${b.value < 0 ? "lw-neg" : "lw-pos"}`, undefined, { "data-name": b.name, "data-value": String(b.value) });
      const barTd = h("td", "lw-attr-barcell");
      const bar = h("span", "lw-attr-bar");
      const w = Number.isFinite(b.value) ? (Math.abs(b.value) / m) * 50 : 0;
      bar.style.width = `${w}%`;
      bar.style.left = b.value < 0 ? `${50 - w}%` : "50%";
      barTd.appendChild(bar);
      tr.append(h("td", "lw-attr-name", b.name), barTd, h("td", "lw-attr-val", fmt(b.value)));
      table.appendChild(tr);
    }
    if (a.rest.count > 0) {
      const tr = h("tr", "lw-attr-rest", undefined, { "data-value": String(a.rest.sum) });
      tr.append(h("td", "lw-attr-name", `${a.rest.count} other components`), h("td", ""), h("td", "lw-attr-val", fmt(a.rest.sum)));
      table.appendChild(tr);
    }
    return table;
  }

  /** The rows that are no component: shown apart and labelled, never dropped. */
  private remainderTable(a: Attribution): HTMLElement {
    const box = h("div", "lw-attr-remainder");
    box.append(h("div", "lw-note", "remainder (not a component; part of the sum)"));
    const table = h("table", "");
    if (a.remainder.length === 0) {
      const tr = h("tr", "lw-attr-rem-row lw-attr-rem-none");
      tr.append(h("td", "lw-attr-name", "none for this model and lens"), h("td", "lw-attr-val", fmt(0)));
      table.appendChild(tr);
    }
    for (const x of a.remainder) {
      const tr = h("tr", "lw-attr-rem-row", undefined, { "data-name": x.name, "data-value": String(x.value) });
      tr.append(h("td", "lw-attr-name", x.name), h("td", "lw-attr-val", fmt(x.value)));
      table.appendChild(tr);
    }
    box.appendChild(table);
    return box;
  }

  /** The layer × head grid of head contributions, diverging about 0, with a hover readout. */
  private heatmap(a: Attribution): HTMLElement {
    const box = h("div", "lw-attr-heat");
    const { values, layers, nHeads } = a.heads;
    if (!layers.length || !nHeads) {
      box.append(h("div", "lw-note", "no attention heads up to this site"));
      return box;
    }
    box.append(h("div", "lw-note", `head contributions to ${targetLabel(a)} (layer × head; red +, blue −)`));
    const canvas = h("canvas", "lw-attr-canvas", undefined, { role: "img", "aria-label": "layer by head contributions" });
    const cell = heatCell(layers.length, nHeads);
    const W = HEAT_HEAD_W + nHeads * cell;
    const H = HEAT_HEAD_H + layers.length * cell;
    const dpr = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = `${W}px`;
    canvas.style.height = `${H}px`;
    const readout = h("div", "lw-attr-readout", "hover a head", { role: "status" });
    const scale = diverging(maxAbs(values));
    const ctx = canvas.getContext ? canvas.getContext("2d") : null;
    if (ctx) {
      const cs = getComputedStyle(this.el);
      const fg = cs.getPropertyValue("--lw-fg").trim() || "#111";
      const none = cs.getPropertyValue("--lw-head").trim() || "#eee";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.font = "9px sans-serif";
      ctx.fillStyle = fg;
      ctx.textBaseline = "middle";
      ctx.textAlign = "center";
      const every = Math.ceil(16 / cell); // head labels with room for them
      for (let hd = 0; hd < nHeads; hd += every) ctx.fillText(String(hd), HEAT_HEAD_W + hd * cell + cell / 2, HEAT_HEAD_H / 2);
      ctx.textAlign = "right";
      layers.forEach((l, r) => {
        // the last layer at the top, as in the grid
        const y = HEAT_HEAD_H + (layers.length - 1 - r) * cell;
        ctx.fillStyle = fg;
        if ((layers.length - 1 - r) % Math.ceil(12 / cell) === 0) ctx.fillText(`L${l}`, HEAT_HEAD_W - 3, y + cell / 2);
        for (let hd = 0; hd < nHeads; hd++) {
          const ci = scale.index(values[r * nHeads + hd]);
          ctx.fillStyle = ci < 0 ? none : scale.colors[ci];
          ctx.fillRect(HEAT_HEAD_W + hd * cell, y, cell - 1, cell - 1);
        }
      });
    }
    const target = targetLabel(a);
    canvas.addEventListener("pointermove", (ev) => {
      const c = heatCellAt(ev.offsetX, ev.offsetY, layers.length, nHeads);
      if (!c) return void (readout.textContent = "hover a head");
      const r = layers.length - 1 - c.row;
      const v = values[r * nHeads + c.head];
      readout.textContent = `L${layers[r]}.H${c.head} → ${target}: ${Number.isFinite(v) ? fmt(v) : "no head here"}`;
      canvas.dataset.head = `${layers[r]}.${c.head}`;
    });
    box.append(canvas, readout);
    return box;
  }

  destroy(): void {
    this.alive = false;
  }
}
