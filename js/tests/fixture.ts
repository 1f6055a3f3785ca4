// A small synthetic `data` trait, built in JS the way LensResult.to_wire lays it out.
export function wire(dtype: "int32" | "float32" | "uint8", shape: number[], values: ArrayLike<number>, offset = 0) {
  const C = dtype === "int32" ? Int32Array : dtype === "float32" ? Float32Array : Uint8Array;
  const typed = C.from(values as ArrayLike<number>);
  // place the bytes at a non-zero byteOffset inside a bigger buffer, as ipywidgets may
  const big = new Uint8Array(typed.byteLength + offset + 8);
  big.set(new Uint8Array(typed.buffer), offset);
  return { dtype, shape, buffer: new DataView(big.buffer, offset, typed.byteLength) };
}

export function makeData(S = 4, P = 6, k = 3, offset = 4) {
  const n = S * P;
  const topkIds: number[] = [];
  const topkProbs: number[] = [];
  for (let s = 0; s < S; s++)
    for (let c = 0; c < P; c++) {
      for (let j = 0; j < k; j++) {
        topkIds.push((s + c + j) % 8);
        topkProbs.push(0.5 / (j + 1));
      }
    }
  const inputIds = Array.from({ length: P }, (_, i) => (i * 3) % 8);
  const nextIds = inputIds.slice(1).concat([-1]);
  const vocab = [0, 1, 2, 3, 4, 5, 6, 7];
  return {
    version: 1,
    model_name: "fixture",
    prompt: "p",
    sites: ["embed", ...Array.from({ length: S - 1 }, (_, i) => `resid_out_${i}`)],
    site_labels: ["emb", ...Array.from({ length: S - 1 }, (_, i) => String(i))],
    k,
    n_sites: S,
    n_positions: P,
    positions: wire("int32", [P], Array.from({ length: P }, (_, i) => i), offset),
    input_ids: wire("int32", [P], inputIds, offset),
    next_ids: wire("int32", [P], nextIds, offset),
    topk_ids: wire("int32", [S, P, k], topkIds, offset),
    topk_probs: wire("float32", [S, P, k], topkProbs, offset),
    entropy: wire("float32", [S, P], Array.from({ length: n }, (_, i) => i / n), offset),
    next_prob: wire("float32", [S, P], Array.from({ length: n }, (_, i) => ((i % P) === P - 1 ? NaN : 0.1)), offset),
    next_rank: wire("int32", [S, P], Array.from({ length: n }, (_, i) => ((i % P) === P - 1 ? 0 : 1 + (i % 50))), offset),
    kl: wire("float32", [S, P], Array.from({ length: n }, (_, i) => i), offset),
    nonfinite: wire("uint8", [S, P], Array.from({ length: n }, (_, i) => (i === 1 ? 1 : 0)), offset),
    tracked_ids: wire("int32", [2], [3, 7], offset),
    tracked_prob: wire("float32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => (i % 2 ? 0.2 : 0.7)), offset),
    tracked_logit: wire("float32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => (i % 2 ? -1 : 2)), offset),
    tracked_rank: wire("int32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => 1 + (i % 2)), offset),
    vocab_ids: wire("int32", [8], vocab, offset),
    vocab_strings: ["<img src=x onerror=alert(1)>", " Paris", "\n", "a\u200bb", "", "<0x0a>", "x", "y"],
  };
}

type Cb = (...args: unknown[]) => void;
/** A minimal anywidget model that records listeners, sets and sends. */
export class FakeModel {
  state: Record<string, unknown>;
  handlers = new Map<string, Set<Cb>>();
  sent: Record<string, unknown>[] = [];
  saves = 0;
  constructor(state: Record<string, unknown>) {
    this.state = { metric: "top1_prob", metric_token: -1, diff_tokens: [3, 7], pinned: [], selected: {}, transpose: false, busy: false, error: "", height: 300, ...state };
  }
  get(k: string) {
    return this.state[k];
  }
  set(k: string, v: unknown) {
    this.state[k] = v;
    this.emit(`change:${k}`);
  }
  on(ev: string, cb: Cb) {
    if (!this.handlers.has(ev)) this.handlers.set(ev, new Set());
    this.handlers.get(ev)!.add(cb);
  }
  off(ev: string, cb: Cb) {
    this.handlers.get(ev)?.delete(cb);
  }
  emit(ev: string, ...args: unknown[]) {
    for (const cb of [...(this.handlers.get(ev) ?? [])]) cb(...args);
  }
  save_changes() {
    this.saves++;
  }
  send(msg: Record<string, unknown>) {
    this.sent.push(msg);
  }
  listenerCount() {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }
  widget_manager = {} as never;
}

/** Render the widget on a FakeModel; `attach` puts it in the document (focus, layout). */
export async function mount(state: Record<string, unknown>, attach = false) {
  const { default: widget } = await import("../src/widget");
  const model = new FakeModel(state);
  const el = document.createElement("div");
  if (attach) document.body.appendChild(el);
  const cleanup = widget.render({ model: model as never, el });
  return { model, el, cleanup };
}

/** Type `value` into a form's input and submit the form (as pressing its button does). */
export function submit(el: HTMLElement, form: "prompt" | "search", value: string): void {
  el.querySelector<HTMLInputElement>(`.lw-${form}-input`)!.value = value;
  el.querySelector(`form.lw-${form}`)!.dispatchEvent(new Event("submit", { cancelable: true }));
}

/** The kernel's reply to one sent request: a result, or an error (ok:false). */
export function answer(model: FakeModel, msg: Record<string, unknown>, outcome: { result: unknown } | { error: string }, buffers: DataView[] = []): void {
  const body = "error" in outcome ? { ok: false, error: outcome.error } : { ok: true, result: outcome.result };
  model.emit("msg:custom", { type: "reply", request_id: msg.request_id, ...body }, buffers);
}
