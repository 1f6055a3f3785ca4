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
import { displayFor, type LensData } from "./data";

/** The header of mean column `j` of `P`: "last", "last−1", … */
export function alignedLabel(j: number, P: number): string {
  const back = P - 1 - j;
  return back === 0 ? "last" : `last−${back}`;
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
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
  const top1 = new Float32Array(SP);
  const entropy = new Float32Array(SP);
  const kl = new Float32Array(SP);
  const nextProb = new Float32Array(SP);
  const nextRank = new Float32Array(SP);
  const nonfinite = new Uint8Array(SP);
  const trackedProb = new Float32Array(SP * M);
  const trackedLogit = new Float32Array(SP * M);
  const trackedRank = new Float32Array(SP * M);

  // the mean of one value over the prompts, at mean cell (s, j)
  const mean = (get: (l: LensData, i: number) => number, s: number, j: number, geometric = false): number => {
    let sum = 0;
    let n = 0;
    for (const l of lenses) {
      const i = s * l.P + (l.P - P + j);
      if (l.nonfinite[i]) continue;
      const v = get(l, i);
      if (geometric ? !(v >= 1) : !Number.isFinite(v)) continue;
      sum += geometric ? Math.log(v) : v;
      n++;
    }
    return n === 0 ? NaN : geometric ? Math.exp(sum / n) : sum / n;
  };

  for (let s = 0; s < S; s++)
    for (let j = 0; j < P; j++) {
      const c = s * P + j;
      nonfinite[c] = lenses.every((l) => l.nonfinite[s * l.P + (l.P - P + j)]) ? 1 : 0;
      top1[c] = mean((l, i) => l.topkProbs[i * l.k], s, j);
      entropy[c] = mean((l, i) => l.entropy[i], s, j);
      kl[c] = mean((l, i) => l.kl[i], s, j);
      nextProb[c] = mean((l, i) => l.nextProb[i], s, j);
      const r = mean((l, i) => l.nextRank[i], s, j, true);
      nextRank[c] = Number.isNaN(r) ? 0 : r;
      for (let m = 0; m < M; m++) {
        trackedProb[c * M + m] = mean((l, i) => l.trackedProb[i * l.M + m], s, j);
        trackedLogit[c * M + m] = mean((l, i) => l.trackedLogit[i * l.M + m], s, j);
        const tr = mean((l, i) => l.trackedRank[i * l.M + m], s, j, true);
        trackedRank[c * M + m] = Number.isNaN(tr) ? 0 : tr;
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
    topkIds: new Int32Array(SP).fill(-1),
    topkProbs: top1,
    entropy,
    nextProb,
    nextRank,
    kl,
    nonfinite,
    trackedIds: M ? first.trackedIds.slice() : new Int32Array(0),
    trackedProb,
    trackedLogit,
    trackedRank,
    vocab,
    aggregate: { count: lenses.length, lengths: lenses.map((l) => l.P) },
    columnLabels,
    generatedFrom: -1,
    display: displayFor(vocab),
    tokenAt: () => -1,
  };
}
