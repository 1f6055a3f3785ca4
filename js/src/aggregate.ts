// The mean view of a batch: one grid whose every cell is the mean over the prompts, aligned on
// the last token. It is a LensData, so the metric views, grid, tooltip and legend read it as they
// read one prompt's data (docs/wire.md, "A batch").
//
// Alignment: with P = the shortest prompt's column count, mean column j (0..P-1) is column
// P_b - P + j of prompt b, so the last column is every prompt's last token ("last"), the one
// before it every prompt's last-but-one ("last−1"), and so on. Earlier tokens of longer prompts
// are not in the mean.
//
// Per cell: the arithmetic mean over the prompts whose value is finite (cells with non-finite
// activations are left out) of the top-1 probability, entropy, KL to final, next-token
// probability and the tracked tokens' probability and logit (so the logit diff is the mean
// difference); ranks (next token, tracked tokens) are geometric means. A cell is "no data" only
// when no prompt has a value there.
import { cellWidth, displayFor, filled, mapCells, type LensCells, type LensData } from "./data";
import { CELL_ARRAYS, type CellArray } from "./schema";

/** The header of mean column `j` of `P`: "last", "last−1", … */
export function alignedLabel(j: number, P: number): string {
  const back = P - 1 - j;
  return back === 0 ? "last" : `last−${back}`;
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** How the mean view folds one cell array over the prompts: ids have no mean (the view has no
 * top-k, its ids stay at their fill), the non-finite flag is set where every prompt's is, ranks
 * (the other integers) take geometric means, everything else arithmetic means. */
function fold(f: CellArray): "none" | "every" | "geometric" | "arithmetic" {
  if (f.field === "topkIds") return "none";
  if (f.dtype === "uint8") return "every";
  return f.dtype === "int32" ? "geometric" : "arithmetic";
}

/** The mean over `lenses` (one lens, every prompt of a batch); null when they do not line up. */
export function meanLens(lenses: LensData[]): LensData | null {
  if (lenses.length === 0) return null;
  const first = lenses[0];
  const S = first.S;
  if (lenses.some((l) => l.S !== S)) return null;
  const P = Math.min(...lenses.map((l) => l.P));
  const M = lenses.every((l) => sameIds(l.trackedIds, first.trackedIds)) ? first.M : 0;
  const SP = S * P;
  // top-k arrays keep the top-1 only (k = 1); geometric means are fractional, so float32
  const cells: LensCells = mapCells((f) => filled(fold(f) === "geometric" ? "float32" : f.dtype, SP * cellWidth(f, 1, M), f.fill));

  // the mean of value m of array f over the prompts, at mean cell (s, j); NaN where none has one
  const mean = (f: CellArray, m: number, s: number, j: number, geometric: boolean): number => {
    let sum = 0;
    let n = 0;
    for (const l of lenses) {
      const i = s * l.P + (l.P - P + j);
      if (l.nonfinite[i]) continue;
      const v = l[f.field][i * cellWidth(f, l.k, l.M) + m];
      if (geometric ? !(v >= 1) : !Number.isFinite(v)) continue;
      sum += geometric ? Math.log(v) : v;
      n++;
    }
    return n === 0 ? NaN : geometric ? Math.exp(sum / n) : sum / n;
  };

  for (const f of CELL_ARRAYS) {
    const how = fold(f);
    const out = cells[f.field];
    const w = cellWidth(f, 1, M);
    for (let s = 0; s < S; s++)
      for (let j = 0; j < P; j++) {
        const c = s * P + j;
        if (how === "every") out[c] = lenses.every((l) => l.nonfinite[s * l.P + (l.P - P + j)]) ? 1 : 0;
        else if (how !== "none")
          for (let m = 0; m < w; m++) {
            const v = mean(f, m, s, j, how === "geometric");
            out[c * w + m] = Number.isNaN(v) ? f.fill : v;
          }
      }
  }

  const vocab = new Map<number, string>();
  for (const l of lenses) for (const [id, text] of l.vocab) vocab.set(id, text);
  const columnLabels = Array.from({ length: P }, (_, j) => alignedLabel(j, P));
  return {
    S,
    P,
    k: 1,
    M,
    modelName: first.modelName,
    lensName: first.lensName,
    prompt: `mean of ${lenses.length} prompts`,
    sites: first.sites.slice(),
    siteLabels: first.siteLabels.slice(),
    // offsets from the last token: -P .. -1
    positions: Int32Array.from({ length: P }, (_, j) => j - P),
    inputIds: new Int32Array(0),
    nextIds: new Int32Array(P).fill(-1),
    ...cells,
    trackedIds: M ? first.trackedIds.slice() : new Int32Array(0),
    vocab,
    aggregate: { count: lenses.length, lengths: lenses.map((l) => l.P) },
    columnLabels,
    generatedFrom: -1,
    display: displayFor(vocab),
    tokenAt: () => -1,
  };
}
