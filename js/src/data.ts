// Decoding of wire arrays ({dtype, shape, buffer | b64 | buffer_index}) and of the `data` trait.
import { displayToken } from "./tokens";
import type { CompareData } from "./compare";

export type DType = "int32" | "uint32" | "float32" | "uint8";
export type TypedArray = Int32Array | Uint32Array | Float32Array | Uint8Array;
export type Bytes = DataView | ArrayBuffer | ArrayBufferView;

export interface WireArray {
  dtype: DType;
  shape: number[];
  buffer?: Bytes;
  b64?: string;
  buffer_index?: number;
}

const CTORS = {
  int32: Int32Array,
  uint32: Uint32Array,
  float32: Float32Array,
  uint8: Uint8Array,
} as const;

/** A byte view of whatever a host hands us (DataView, ArrayBuffer, any typed array). */
export function asBytes(buf: Bytes): Uint8Array {
  if (buf instanceof Uint8Array) return buf;
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  // Some hosts hand over an ArrayBuffer from another realm (instanceof fails): duck-type it.
  const anyBuf = buf as unknown as { byteLength?: number; buffer?: ArrayBuffer; byteOffset?: number };
  if (anyBuf && typeof anyBuf.byteLength === "number") {
    if (anyBuf.buffer) return new Uint8Array(anyBuf.buffer, anyBuf.byteOffset ?? 0, anyBuf.byteLength);
    return new Uint8Array(buf as ArrayBuffer);
  }
  throw new TypeError("array buffer is not binary data");
}

export function b64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Typed array over the bytes, honouring byteOffset; copies only when the offset is unaligned. */
export function typedFromBytes(bytes: Uint8Array, dtype: DType): TypedArray {
  const C = CTORS[dtype];
  if (!C) throw new TypeError(`unknown dtype ${String(dtype)}`);
  const size = C.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype}`);
  if (bytes.byteOffset % size !== 0) bytes = bytes.slice();
  return new C(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / size);
}

export function isWireArray(x: unknown): x is WireArray {
  return !!x && typeof x === "object" && typeof (x as WireArray).dtype === "string" && Array.isArray((x as WireArray).shape);
}

/** Decode one wire array; `buffers` are a custom message's buffers (for `buffer_index`). */
export function decodeArray(w: WireArray, buffers?: Bytes[]): TypedArray {
  if (!isWireArray(w)) throw new TypeError("not a wire array");
  let bytes: Uint8Array;
  if (typeof w.b64 === "string") bytes = b64ToBytes(w.b64);
  else if (typeof w.buffer_index === "number") {
    const b = buffers?.[w.buffer_index];
    if (!b) throw new RangeError(`missing buffer ${w.buffer_index}`);
    bytes = asBytes(b);
  } else if (w.buffer != null) bytes = asBytes(w.buffer);
  else throw new TypeError("wire array has no buffer");
  const arr = typedFromBytes(bytes, w.dtype);
  const n = w.shape.reduce((a, b) => a * b, 1);
  if (n !== arr.length) throw new RangeError(`shape [${w.shape}] needs ${n} elements, got ${arr.length}`);
  return arr;
}

/** Decode every wire array found (recursively) in a reply's result. */
export function decodeResult<T = unknown>(x: unknown, buffers?: Bytes[]): T {
  if (isWireArray(x) && (x.buffer_index !== undefined || x.b64 !== undefined || x.buffer !== undefined))
    return decodeArray(x, buffers) as unknown as T;
  if (Array.isArray(x)) return x.map((v) => decodeResult(v, buffers)) as unknown as T;
  if (x && typeof x === "object" && !ArrayBuffer.isView(x) && !(x instanceof ArrayBuffer)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) out[k] = decodeResult(v, buffers);
    return out as T;
  }
  return x as T;
}

/** The decoded `data` trait. Cell (site s, column c) is index s * P + c. */
export interface LensData {
  S: number;
  P: number;
  k: number;
  M: number;
  modelName: string;
  /** the lens that produced it: the switch's label, else the wire's `lens_name` */
  lensName: string;
  prompt: string;
  sites: string[];
  siteLabels: string[];
  positions: Int32Array;
  inputIds: Int32Array;
  nextIds: Int32Array;
  topkIds: Int32Array;
  topkProbs: Float32Array;
  entropy: Float32Array;
  nextProb: Float32Array;
  /** int32 from the wire; a mean view holds geometric means (float32) */
  nextRank: Int32Array | Float32Array;
  kl: Float32Array;
  nonfinite: Uint8Array;
  trackedIds: Int32Array;
  trackedProb: Float32Array;
  trackedLogit: Float32Array;
  trackedRank: Int32Array | Float32Array;
  vocab: Map<number, string>;
  /** set on the mean view of a batch (aggregate.ts): how many prompts, and each one's column count */
  aggregate?: { count: number; lengths: number[] };
  /** set on the diff grid of a comparison (compare.ts): both sides and the aligned Δ arrays */
  compare?: CompareData;
  /** column headers that replace the tokens (the mean view: "last", "last−1", …) */
  columnLabels?: string[];
  /** index of the first token the model wrote (a generation), -1 when every token was given */
  generatedFrom: number;
  /** display form of an id (cached) */
  display(id: number): string;
  /** token id at column c */
  tokenAt(c: number): number;
}

function arr<T extends TypedArray>(raw: Record<string, unknown>, key: string, dtype: DType, n: number): T {
  const w = raw[key];
  if (!isWireArray(w)) {
    // Missing optional arrays: empty of the right size.
    const C = CTORS[dtype];
    const out = new C(n);
    if (dtype === "float32") (out as Float32Array).fill(NaN);
    return out as T;
  }
  return decodeArray(w) as T;
}

/** The `data` layout this front end reads (docs/wire.md). */
export const WIRE_VERSION = 1;

/** Decode the `data` trait; null when it holds no lens yet; throws on another wire version. */
/** Display form of ids from a vocabulary table (cached; `""` for -1, `#id` for an id not in it). */
export function displayFor(vocab: Map<number, string>): (id: number) => string {
  const cache = new Map<number, string>();
  return (id: number) => {
    let d = cache.get(id);
    if (d === undefined) {
      d = vocab.has(id) ? displayToken(vocab.get(id)!) : id < 0 ? "" : `#${id}`;
      cache.set(id, d);
    }
    return d;
  };
}

export function decodeLens(raw: unknown, lensLabel?: string): LensData | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  if (!isWireArray(r.topk_ids)) return null;
  if (r.version !== WIRE_VERSION)
    throw new Error(`data has wire version ${JSON.stringify(r.version ?? null)}; this front end reads version ${WIRE_VERSION} (rebuild the widget bundle or upgrade lens_widget)`);
  const S = Number(r.n_sites ?? (r.topk_ids as WireArray).shape[0]);
  const P = Number(r.n_positions ?? (r.topk_ids as WireArray).shape[1]);
  const k = Number(r.k ?? (r.topk_ids as WireArray).shape[2]);
  const trackedIds = arr<Int32Array>(r, "tracked_ids", "int32", 0);
  const M = trackedIds.length;
  const SP = S * P;
  const vocabIds = arr<Int32Array>(r, "vocab_ids", "int32", 0);
  const strings = Array.isArray(r.vocab_strings) ? (r.vocab_strings as unknown[]) : [];
  const vocab = new Map<number, string>();
  for (let i = 0; i < vocabIds.length; i++) vocab.set(vocabIds[i], String(strings[i] ?? ""));
  const sites = Array.isArray(r.sites) ? (r.sites as unknown[]).map(String) : [];
  const siteLabels = Array.isArray(r.site_labels) ? (r.site_labels as unknown[]).map(String) : sites.slice();
  while (sites.length < S) sites.push(String(sites.length));
  while (siteLabels.length < S) siteLabels.push(String(siteLabels.length));
  const positions = arr<Int32Array>(r, "positions", "int32", P);
  const inputIds = arr<Int32Array>(r, "input_ids", "int32", 0);
  const lens: LensData = {
    S,
    P,
    k,
    M,
    modelName: String(r.model_name ?? ""),
    lensName: lensLabel || String(r.lens_name ?? "") || "logit lens",
    prompt: String(r.prompt ?? ""),
    sites,
    siteLabels,
    positions,
    inputIds,
    nextIds: arr(r, "next_ids", "int32", P),
    topkIds: arr(r, "topk_ids", "int32", SP * k),
    topkProbs: arr(r, "topk_probs", "float32", SP * k),
    entropy: arr(r, "entropy", "float32", SP),
    nextProb: arr(r, "next_prob", "float32", SP),
    nextRank: arr(r, "next_rank", "int32", SP),
    kl: arr(r, "kl", "float32", SP),
    nonfinite: arr(r, "nonfinite", "uint8", SP),
    trackedIds,
    trackedProb: arr(r, "tracked_prob", "float32", SP * M),
    trackedLogit: arr(r, "tracked_logit", "float32", SP * M),
    trackedRank: arr(r, "tracked_rank", "int32", SP * M),
    vocab,
    generatedFrom: typeof r.generated_from === "number" ? r.generated_from : -1,
    display: displayFor(vocab),
    tokenAt: (c: number) => {
      const p = positions[c];
      return p >= 0 && p < inputIds.length ? inputIds[p] : -1;
    },
  };
  if (lens.topkIds.length !== SP * k) throw new RangeError("topk_ids does not match n_sites x n_positions x k");
  return lens;
}

// -- generation: one column at a time (docs/wire.md, "column" messages) -------------------------

/** A decoded `column` message: one column of every per-cell array, `[S, 1, ...]` each. */
export interface ColumnUpdate {
  /** the column it sets: `P` appends, less replaces */
  col: number;
  tokenId: number;
  nextId: number;
  /** the lens label it belongs to ("" when the message names none) */
  lens: string;
  generatedFrom: number;
  done: number;
  total: number;
  etaS: number | null;
  topkIds: Int32Array;
  topkProbs: Float32Array;
  entropy: Float32Array;
  nextProb: Float32Array;
  nextRank: Int32Array;
  kl: Float32Array;
  nonfinite: Uint8Array;
  trackedProb: Float32Array;
  trackedLogit: Float32Array;
  trackedRank: Int32Array;
  vocab: Map<number, string>;
}

/** Decode a `column` message (its arrays in `buffers`); null when it is not one. */
export function decodeColumn(msg: unknown, buffers?: Bytes[]): ColumnUpdate | null {
  if (!msg || typeof msg !== "object") return null;
  const m = msg as Record<string, unknown>;
  if (m.type !== "column" || !m.cells || typeof m.cells !== "object") return null;
  const cells = m.cells as Record<string, WireArray>;
  const get = <T extends TypedArray>(key: string) => {
    const w = cells[key];
    if (!isWireArray(w)) throw new TypeError(`column message has no ${key}`);
    return decodeArray(w, buffers) as T;
  };
  const vocab = new Map<number, string>();
  if (isWireArray(m.vocab_ids)) {
    const ids = decodeArray(m.vocab_ids as WireArray, buffers);
    const strings = Array.isArray(m.vocab_strings) ? (m.vocab_strings as unknown[]) : [];
    for (let i = 0; i < ids.length; i++) vocab.set(ids[i], String(strings[i] ?? ""));
  }
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  return {
    col: num(m.col, -1),
    tokenId: num(m.token_id, -1),
    nextId: num(m.next_id, -1),
    lens: typeof m.lens === "string" ? m.lens : "",
    generatedFrom: num(m.generated_from, -1),
    done: num(m.done, 0),
    total: num(m.total, 0),
    etaS: typeof m.eta_s === "number" ? m.eta_s : null,
    topkIds: get<Int32Array>("topk_ids"),
    topkProbs: get<Float32Array>("topk_probs"),
    entropy: get<Float32Array>("entropy"),
    nextProb: get<Float32Array>("next_prob"),
    nextRank: get<Int32Array>("next_rank"),
    kl: get<Float32Array>("kl"),
    nonfinite: get<Uint8Array>("nonfinite"),
    trackedProb: get<Float32Array>("tracked_prob"),
    trackedLogit: get<Float32Array>("tracked_logit"),
    trackedRank: get<Int32Array>("tracked_rank"),
    vocab,
  };
}

/** `[S, P, w]` laid out site-major, with column `col` set from `[S, 1, w]` (appended when col = P). */
function spliceColumn<T extends TypedArray>(old: T, S: number, P: number, w: number, col: number, add: TypedArray): T {
  const P2 = col === P ? P + 1 : P;
  const C = old.constructor as { new (n: number): T };
  const out = P2 === P ? (old.slice() as T) : new C(S * P2 * w);
  for (let s = 0; s < S; s++) {
    if (P2 !== P) out.set(old.subarray(s * P * w, (s + 1) * P * w), s * P2 * w);
    out.set(add.subarray(s * w, (s + 1) * w), (s * P2 + col) * w);
  }
  return out;
}

/** The grid with one column set (replaced, or appended at the end): a new `LensData`, the old
 * one unchanged. Returns `lens` itself when the update does not fit (a gap, other sites). */
export function withColumn(lens: LensData, u: ColumnUpdate): LensData {
  const { S, P, k, M } = lens;
  if (u.col < 0 || u.col > P || u.topkIds.length !== S * k || u.entropy.length !== S || u.trackedProb.length !== S * M) return lens;
  const append = u.col === P;
  const P2 = append ? P + 1 : P;
  const vocab = new Map(lens.vocab);
  for (const [id, text] of u.vocab) vocab.set(id, text);
  const positions = new Int32Array(P2);
  positions.set(lens.positions.subarray(0, P));
  const nextIds = new Int32Array(P2);
  nextIds.set(lens.nextIds.subarray(0, P));
  let inputIds = lens.inputIds;
  if (append) {
    const pos = (P > 0 ? lens.positions[P - 1] : -1) + 1;
    positions[P] = pos;
    if (pos >= inputIds.length) {
      inputIds = new Int32Array(pos + 1);
      inputIds.set(lens.inputIds.subarray(0, Math.min(lens.inputIds.length, pos)));
      inputIds[pos] = u.tokenId;
    }
  }
  nextIds[u.col] = u.nextId;
  const col = u.col;
  const next: LensData = {
    ...lens,
    P: P2,
    positions,
    inputIds,
    nextIds,
    topkIds: spliceColumn(lens.topkIds, S, P, k, col, u.topkIds),
    topkProbs: spliceColumn(lens.topkProbs, S, P, k, col, u.topkProbs),
    entropy: spliceColumn(lens.entropy, S, P, 1, col, u.entropy),
    nextProb: spliceColumn(lens.nextProb, S, P, 1, col, u.nextProb),
    nextRank: spliceColumn(lens.nextRank as Int32Array, S, P, 1, col, u.nextRank),
    kl: spliceColumn(lens.kl, S, P, 1, col, u.kl),
    nonfinite: spliceColumn(lens.nonfinite, S, P, 1, col, u.nonfinite),
    trackedProb: spliceColumn(lens.trackedProb, S, P, M, col, u.trackedProb),
    trackedLogit: spliceColumn(lens.trackedLogit, S, P, M, col, u.trackedLogit),
    trackedRank: spliceColumn(lens.trackedRank as Int32Array, S, P, M, col, u.trackedRank),
    vocab,
    generatedFrom: u.generatedFrom >= 0 ? u.generatedFrom : lens.generatedFrom,
    display: displayFor(vocab),
    tokenAt: (c: number) => {
      const p = positions[c];
      return p >= 0 && p < inputIds.length ? inputIds[p] : -1;
    },
  };
  return next;
}
