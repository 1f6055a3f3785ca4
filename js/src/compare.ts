// The diff grid of a comparison (the `comparison` trait, docs/wire.md "Compare"): both sides' grids
// decoded as LensData, the aligned Δ arrays, and the diff grid itself as a LensData whose `compare`
// field carries them (so the grid, legend and selection read it as they read one prompt).
//
// Every difference is b − a (computed in Python, lens_widget.compare); the JS divergence is exact
// when `js_exact`, else a top-k approximation (the label says which). Δ metrics use diverging
// scales centred on zero, symmetric about the largest |Δ| of the cells with data.
import { decodeArray, decodeLens, displayFor, emptyCells, isWireArray, WIRE_VERSION, type LensData, type WireArray } from "./data";
import { diverging, sequential } from "./color";
import { CELL_ARRAYS, type WireCells } from "./schema";
import { decodePatch, type PatchInfo } from "./patch";
import { COMPARE_LABELS, DEFAULT_COMPARE_METRIC, isCompareMetric, type CompareMetric, type MetricView } from "./metrics";

/** Δ arrays read straight off the cells (no token to choose), keyed by their metric name. */
export const CELL_DELTAS = ["d_top1_prob", "d_next_prob", "next_rank_log_ratio", "d_entropy", "d_kl"] as const;

export interface CompareData {
  S: number;
  /** aligned columns */
  P: number;
  labelA: string;
  labelB: string;
  align: string;
  jsExact: boolean;
  jsLabel: string;
  /** each side's own grid (every column of its prompt) */
  a: LensData;
  b: LensData;
  /** column of side a / b's grid at aligned column c */
  colsA: Int32Array;
  colsB: Int32Array;
  deltas: Record<(typeof CELL_DELTAS)[number], Float32Array>;
  js: Float32Array;
  top1Agree: Uint8Array;
  nonfinite: Uint8Array;
  trackedIds: Int32Array;
  M: number;
  dTrackedProb: Float32Array;
  dTrackedLogit: Float32Array;
  /** set when the comparison is a patch's (clean target a, patched target b): the cone, the cell */
  patch?: PatchInfo;
}

function need<T>(r: Record<string, unknown>, key: string): T {
  const w = r[key];
  if (!isWireArray(w)) throw new TypeError(`comparison has no array ${key}`);
  return decodeArray(w as WireArray) as unknown as T;
}

/** Decode the `comparison` trait; null when it holds none; throws on another wire version or a bad layout. */
export function decodeComparison(raw: unknown): CompareData | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  if (!isWireArray(r.js)) return null;
  if (r.version !== WIRE_VERSION) throw new Error(`comparison has wire version ${JSON.stringify(r.version ?? null)}; this front end reads ${WIRE_VERSION}`);
  const labelA = String(r.label_a ?? "a");
  const labelB = String(r.label_b ?? "b");
  const a = decodeLens(r.a, labelA);
  const b = decodeLens(r.b, labelB);
  if (!a || !b) throw new TypeError("comparison lacks a side's grid");
  const S = Number(r.n_sites);
  const P = Number(r.n_positions);
  const js = need<Float32Array>(r, "js");
  if (js.length !== S * P || a.S !== S || b.S !== S) throw new RangeError("comparison arrays do not match n_sites x n_positions");
  const trackedIds = need<Int32Array>(r, "tracked_ids");
  const deltas = {} as CompareData["deltas"];
  for (const name of CELL_DELTAS) deltas[name] = need<Float32Array>(r, name);
  return {
    S,
    P,
    labelA,
    labelB,
    align: String(r.align ?? ""),
    jsExact: r.js_exact === true,
    jsLabel: String(r.js_label ?? (r.js_exact === true ? "JS divergence (exact)" : "JS divergence (top-k approximation)")),
    a,
    b,
    colsA: need<Int32Array>(r, "cols_a"),
    colsB: need<Int32Array>(r, "cols_b"),
    deltas,
    js,
    top1Agree: need<Uint8Array>(r, "top1_agree"),
    nonfinite: need<Uint8Array>(r, "nonfinite"),
    trackedIds,
    M: trackedIds.length,
    dTrackedProb: need<Float32Array>(r, "d_tracked_prob"),
    dTrackedLogit: need<Float32Array>(r, "d_tracked_logit"),
    patch: decodePatch(r.patch, S, P) ?? undefined,
  };
}

/** Header of aligned column c: the token, or "a-token│b-token" when the two differ. */
export function columnLabel(cmp: CompareData, c: number): string {
  const ta = cmp.a.display(cmp.a.tokenAt(cmp.colsA[c]));
  const tb = cmp.b.display(cmp.b.tokenAt(cmp.colsB[c]));
  return ta === tb ? ta : `${ta}│${tb}`;
}

/** The diff grid as a LensData: cells show b's top-1, columns both sides' tokens, `compare` the rest. */
export function diffLens(cmp: CompareData): LensData {
  const { S, P, a, b } = cmp;
  // every cell array at its fill (no data) but the top-k (b's top-1), the non-finite flag and the tracked Δs
  const cells: WireCells = { ...emptyCells(S * P, 1, cmp.M), nonfinite: cmp.nonfinite, trackedProb: cmp.dTrackedProb, trackedLogit: cmp.dTrackedLogit };
  for (const f of CELL_ARRAYS)
    if (f.axis === "k")
      for (let s = 0; s < S; s++) for (let c = 0; c < P; c++) cells[f.field][s * P + c] = b[f.field][(s * b.P + cmp.colsB[c]) * b.k];
  const vocab = new Map<number, string>(a.vocab);
  for (const [id, text] of b.vocab) vocab.set(id, text);
  return {
    S,
    P,
    k: 1,
    M: cmp.M,
    modelName: b.modelName,
    lensName: `${cmp.labelA} vs ${cmp.labelB}`,
    prompt: b.prompt,
    sites: b.sites.slice(),
    siteLabels: b.siteLabels.slice(),
    positions: Int32Array.from(cmp.colsB, (c) => b.positions[c]),
    inputIds: b.inputIds,
    nextIds: Int32Array.from(cmp.colsB, (c) => b.nextIds[c]),
    ...cells,
    trackedIds: cmp.trackedIds,
    vocab,
    columnLabels: Array.from({ length: P }, (_, c) => columnLabel(cmp, c)),
    generatedFrom: -1, // a diff grid marks no generation boundary
    compare: cmp,
    display: displayFor(vocab),
    tokenAt: (c: number) => b.tokenAt(cmp.colsB[c]),
  };
}

/** Largest |v| over the cells with data (1 when there is none). */
function maxAbs(v: Float32Array, skip: Uint8Array): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) if (!skip[i] && Number.isFinite(v[i]) && Math.abs(v[i]) > m) m = Math.abs(v[i]);
  return m;
}

/** Values and colour scale of a compare metric on the diff grid (an unknown metric shows JS). */
export function compareView(cmp: CompareData, metric: string, metricToken = -1, diffTokens: number[] = []): MetricView {
  const m: CompareMetric = isCompareMetric(metric) ? metric : DEFAULT_COMPARE_METRIC;
  const n = cmp.S * cmp.P;
  const values = new Float32Array(n);
  const label = COMPARE_LABELS[m];
  const tok = (id: number) => cmp.b.display(id);
  switch (m) {
    case "js": {
      values.set(cmp.js);
      return { metric: m, values, scale: sequential(0, Math.max(maxAbs(values, cmp.nonfinite), 1e-12)), label: cmp.jsLabel, note: "" };
    }
    case "top1_agree":
      for (let i = 0; i < n; i++) values[i] = cmp.top1Agree[i];
      return { metric: m, values, scale: sequential(0, 1), label, note: "" };
    case "d_tracked_prob": {
      const j = cmp.M === 0 ? -1 : metricToken >= 0 ? cmp.trackedIds.indexOf(metricToken) : 0;
      if (j < 0) {
        values.fill(NaN);
        return { metric: m, values, scale: diverging(1), label, note: cmp.M === 0 ? "no token tracked on both sides" : `token ${metricToken} is not tracked on both sides` };
      }
      for (let i = 0; i < n; i++) values[i] = cmp.dTrackedProb[i * cmp.M + j];
      return { metric: m, values, scale: diverging(maxAbs(values, cmp.nonfinite)), label: `Δ p(${tok(cmp.trackedIds[j])})`, note: "" };
    }
    case "d_logit_diff": {
      const M = cmp.M;
      const a = M ? cmp.trackedIds.indexOf(diffTokens[0] ?? cmp.trackedIds[0]) : -1;
      const b = M ? cmp.trackedIds.indexOf(diffTokens[1] ?? cmp.trackedIds[1]) : -1;
      if (a < 0 || b < 0) {
        values.fill(NaN);
        return { metric: m, values, scale: diverging(1), label, note: "Δ logit diff needs two tokens tracked on both sides" };
      }
      for (let i = 0; i < n; i++) values[i] = cmp.dTrackedLogit[i * M + a] - cmp.dTrackedLogit[i * M + b];
      const name = `Δ [logit(${tok(cmp.trackedIds[a])}) − logit(${tok(cmp.trackedIds[b])})]`;
      return { metric: m, values, scale: diverging(maxAbs(values, cmp.nonfinite)), label: name, note: "" };
    }
    default:
      values.set(cmp.deltas[m]);
      return { metric: m, values, scale: diverging(maxAbs(values, cmp.nonfinite)), label, note: "" };
  }
}
