// Decoding of wire arrays ({dtype, shape, buffer | b64 | buffer_index}) and of the `data` trait.
import { displayToken } from "./tokens";
import type { CompareData } from "./compare";
import { CELL_ARRAYS, type CellArray, type WireCells } from "./schema";

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

/** The cell arrays of a LensData (schema.ts): as the wire sends them, except the ranks, which
 * the mean view of a batch holds as geometric means (float32). */
export type LensCells = Omit<WireCells, "nextRank" | "trackedRank"> & { nextRank: Int32Array | Float32Array; trackedRank: Int32Array | Float32Array };

/** The decoded `data` trait. Cell (site s, column c) is index s * P + c; the cell arrays
 * (`topkIds` `[S, P, k]`, `entropy` `[S, P]`, `trackedProb` `[S, P, M]`, …) are in LensCells. */
export interface LensData extends LensCells {
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
  trackedIds: Int32Array;
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

/** How many values one cell of `f` holds, with top-`k` and `M` tracked tokens. */
export function cellWidth(f: CellArray, k: number, M: number): number {
  return f.axis === "k" ? k : f.axis === "M" ? M : 1;
}

/** Every cell array, each made by `make` from its row of the schema. */
export function mapCells(make: (f: CellArray) => TypedArray): WireCells {
  const out: Record<string, TypedArray> = {};
  for (const f of CELL_ARRAYS) out[f.field] = make(f);
  return out as WireCells;
}

/** `n` values of `dtype`, every one `fill`. */
export function filled(dtype: DType, n: number, fill: number): TypedArray {
  return new CTORS[dtype](n).fill(fill);
}

/** Every cell array for `n` cells with top-`k` and `M` tracked tokens, each at its fill (no data). */
export function emptyCells(n: number, k: number, M: number): WireCells {
  return mapCells((f) => filled(f.dtype, n * cellWidth(f, k, M), f.fill));
}

function arr<T extends TypedArray>(raw: Record<string, unknown>, key: string, dtype: DType, n: number, fill = dtype === "float32" ? NaN : 0): T {
  const w = raw[key];
  // Missing optional arrays: `n` values of `fill`.
  return (isWireArray(w) ? decodeArray(w) : filled(dtype, n, fill)) as T;
}

/** The `data` layout this front end reads (docs/wire.md). */
export const WIRE_VERSION = 1;

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

/** Decode the `data` trait; null when it holds no lens yet; throws on another wire version. */
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
  const cells = mapCells((f) => arr(r, f.wire, f.dtype, SP * cellWidth(f, k, M), f.fill));
  if (cells.topkIds.length !== SP * k) throw new RangeError("topk_ids does not match n_sites x n_positions x k");
  return {
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
    ...cells,
    trackedIds,
    vocab,
    generatedFrom: typeof r.generated_from === "number" ? r.generated_from : -1,
    display: displayFor(vocab),
    tokenAt: (c: number) => {
      const p = positions[c];
      return p >= 0 && p < inputIds.length ? inputIds[p] : -1;
    },
  };
}

// -- generation: one column at a time (docs/wire.md, "column" messages) -------------------------

/** A decoded `column` message: one column of every cell array (schema.ts), `[S, 1, ...]` each. */
export interface ColumnUpdate extends WireCells {
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
  vocab: Map<number, string>;
}

/** Decode a `column` message (its arrays in `buffers`); null when it is not one. */
export function decodeColumn(msg: unknown, buffers?: Bytes[]): ColumnUpdate | null {
  if (!msg || typeof msg !== "object") return null;
  const m = msg as Record<string, unknown>;
  if (m.type !== "column" || !m.cells || typeof m.cells !== "object") return null;
  const cells = m.cells as Record<string, WireArray>;
  const get = (key: string) => {
    const w = cells[key];
    if (!isWireArray(w)) throw new TypeError(`column message has no ${key}`);
    return decodeArray(w, buffers);
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
    ...mapCells((f) => get(f.wire)),
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
  const fits = CELL_ARRAYS.every((f) => u[f.field].length === S * cellWidth(f, k, M));
  if (u.col < 0 || u.col > P || !fits) return lens;
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
  return {
    ...lens,
    P: P2,
    positions,
    inputIds,
    nextIds,
    ...mapCells((f) => spliceColumn(lens[f.field], S, P, cellWidth(f, k, M), u.col, u[f.field])),
    vocab,
    generatedFrom: u.generatedFrom >= 0 ? u.generatedFrom : lens.generatedFrom,
    display: displayFor(vocab),
    tokenAt: (c: number) => {
      const p = positions[c];
      return p >= 0 && p < inputIds.length ? inputIds[p] : -1;
    },
  };
}
