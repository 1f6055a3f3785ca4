// The cell schema: the one table of the per-cell arrays the front end receives. Each
// (site, column) cell of a grid carries one value of each (`axis` "") or a row of them: the
// top-k tokens ("k") or the M tracked tokens ("M"). It mirrors the rows of
// lens_widget/schema.py CELL_FIELDS with wire=True, in their order; tests/test_structure.py reads
// the table below line by line and holds the two equal, so keep it plain data, one row a line.
//
// `wire` is the key in `data` and in column messages, `field` the LensData field it fills,
// `dtype` its wire dtype (lens_widget/wire.py: bool -> uint8, int -> int32, float -> float32),
// `fill` the value of a cell that holds no data.
export const CELL_ARRAYS = [
  { wire: "topk_ids", field: "topkIds", dtype: "int32", fill: -1, axis: "k" },
  { wire: "topk_probs", field: "topkProbs", dtype: "float32", fill: NaN, axis: "k" },
  { wire: "entropy", field: "entropy", dtype: "float32", fill: NaN, axis: "" },
  { wire: "next_prob", field: "nextProb", dtype: "float32", fill: NaN, axis: "" },
  { wire: "next_rank", field: "nextRank", dtype: "int32", fill: 0, axis: "" },
  { wire: "kl", field: "kl", dtype: "float32", fill: NaN, axis: "" },
  { wire: "tracked_prob", field: "trackedProb", dtype: "float32", fill: NaN, axis: "M" },
  { wire: "tracked_logit", field: "trackedLogit", dtype: "float32", fill: NaN, axis: "M" },
  { wire: "tracked_rank", field: "trackedRank", dtype: "int32", fill: 0, axis: "M" },
  { wire: "nonfinite", field: "nonfinite", dtype: "uint8", fill: 0, axis: "" },
] as const;

/** One row of the table. */
export type CellArray = (typeof CELL_ARRAYS)[number];
/** The LensData field of a cell array (`topkIds`, …). */
export type CellField = CellArray["field"];

interface ArrayOf {
  int32: Int32Array;
  float32: Float32Array;
  uint8: Uint8Array;
}

/** Every cell array, typed as the wire sends it: `topkIds: Int32Array`, `entropy: Float32Array`, … */
export type WireCells = { [F in CellArray as F["field"]]: ArrayOf[F["dtype"]] };
