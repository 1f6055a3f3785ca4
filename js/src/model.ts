// The typed anywidget model: the traits of docs/wire.md ("Other traits"), and the reply types.
import type { AnyModel } from "@anywidget/types";

/** The widget's synced traits, as `lens_widget.widget.LensWidget` declares them. */
export interface LensTraits {
  [key: string]: unknown;
  /** `lens_widget.wire.result_to_wire(result, prompt)` (decoded by data.ts; cell arrays per schema.ts) */
  data: unknown;
  prompt: string;
  /** one of METRIC_NAMES (metrics.ts) */
  metric: string;
  /** tracked token id used by `tracked_prob`; -1 = first tracked */
  metric_token: number;
  /** [a, b] for `logit_diff` */
  diff_tokens: number[];
  tracked: number[];
  /** [site, col] pairs */
  pinned: unknown[];
  selected: { site?: number; col?: number; position?: number };
  transpose: boolean;
  busy: boolean;
  error: string;
  /** > 0: pixel height of the grid's box (it scrolls); 0: as high as its rows */
  height: number;
  /** colour-only cells (layout.ts) */
  compact: boolean;
  /** cell size factor, layout.ts ZOOM_MIN..ZOOM_MAX */
  zoom: number;
  /** columns shrink so the grid fits the widget's width */
  fit_width: boolean;
  /** [first, last] columns shown (inclusive, negative from the end); [] all */
  col_range: number[];
  /** labels of the computed lenses, in switch order */
  lenses: string[];
  /** the label of the lens shown */
  lens: string;
  /** the batch's prompts ([prompt] for one) */
  prompts: string[];
  /** the prompt shown */
  prompt_index: number;
  /** true: the mean over the prompts, aligned on the last token */
  aggregate: boolean;
  /** {lens label: [data of each prompt]}; {} when `data` is the only grid */
  grids: Record<string, unknown[]>;
  /** the comparison the diff grid shows (compare.ts decodes it); {} none */
  comparison: unknown;
  /** true: the grid is the diff grid of `comparison` */
  compare_view: boolean;
  /** [[lens, prompt index], [lens, prompt index]]: sides a and b; the kernel recomputes `comparison` */
  compare_pair: unknown[];
}

export type LensModel = AnyModel<LensTraits>;

/** Set a trait and send it to the kernel. */
export function setTrait<K extends keyof LensTraits & string>(model: LensModel, key: K, value: LensTraits[K]): void {
  model.set(key, value);
  model.save_changes();
}

/** Set several traits, then send them to the kernel together. */
export function setTraits(model: LensModel, values: Partial<LensTraits>): void {
  for (const [k, v] of Object.entries(values)) model.set(k, v);
  model.save_changes();
}

// -- replies (docs/wire.md "Messages"), arrays already decoded ------------------------------------

export interface TrackResult {
  token_id: number;
  text: string;
}

export interface SearchResult {
  matches: { id: number; text: string; display: string; exact: boolean }[];
  pieces: [number, string][] | null;
}

export interface CellDetailResult {
  top_ids: Int32Array;
  top_probs: Float32Array;
  tokens: Record<string, string>;
  entropy: number;
}

export interface CompareDetailResult {
  a: CellDetailResult;
  b: CellDetailResult;
  js: number;
  js_exact: boolean;
}

export interface TrajectoryResult {
  probs: Float32Array;
  logits?: Float32Array;
  ranks?: Int32Array;
}

export interface SetPromptResult {
  n_positions: number;
}
