// The control bar: lens switch, prompt selector, metric, tracked token, logit-diff tokens, transpose,
// legend. Reads and writes traits.
import type { LensData } from "./data";
import { setTrait, setTraits, type LensModel } from "./model";
import {
  COMPARE_LABELS,
  COMPARE_METRICS,
  DEFAULT_COMPARE_METRIC,
  DEFAULT_METRIC,
  METRIC_LABELS,
  METRIC_NAMES,
  isCompareMetric,
  isMetric,
  ONE_TOKEN_METRICS,
  type MetricView,
} from "./metrics";
import { renderLegend } from "./legend";
import { h, type Disposers } from "./dom";
import { idLabel } from "./format";

/** Fill a select with the tracked tokens, choosing `value` (or the first). */
function fillTokenSelect(sel: HTMLSelectElement, lens: LensData | null, value: number): void {
  sel.replaceChildren();
  if (!lens || lens.M === 0) {
    sel.appendChild(h("option", "", "(none tracked)", { value: "-1" }));
    sel.disabled = true;
    return;
  }
  sel.disabled = false;
  for (const id of lens.trackedIds) sel.appendChild(h("option", "", `${lens.display(id)} (${idLabel(id)})`, { value: String(id) }));
  sel.value = String(value);
  if (sel.value !== String(value)) sel.selectedIndex = 0;
}

/** The prompt selector's value of the mean view. */
export const MEAN_VIEW = "mean";
/** Longest prompt text shown in the selector (the full text is the option's title). */
const PROMPT_CHARS = 40;

/** Replace a select's options with `[value, text, title?]` (text through textContent) and choose `value`. */
function fillSelect(sel: HTMLSelectElement, options: [string, string, string?][], value: string): void {
  sel.replaceChildren(...options.map(([v, text, title]) => h("option", "", text, title ? { value: v, title } : { value: v })));
  sel.value = value;
  if (sel.value !== value && options.length) sel.selectedIndex = 0;
}

/** The sides a comparison can take, `[value, text, title]`, each named by what differs between
 * sides: the lens alone when there is one prompt, the prompt alone when there is one lens. */
export function sideOptions(lenses: string[], prompts: string[]): [string, string, string][] {
  const sides: [string, string, string][] = [];
  for (const l of lenses)
    prompts.forEach((p, i) => {
      const short = p.length > PROMPT_CHARS ? `${p.slice(0, PROMPT_CHARS)}…` : p;
      const prompt = `prompt ${i + 1}: ${short}`;
      const text = prompts.length < 2 ? l : lenses.length < 2 ? prompt : `${l} · ${prompt}`;
      sides.push([JSON.stringify([l, i]), text, lenses.length > 1 ? `${l} · ${p}` : p]);
    });
  return sides;
}

export class Controls {
  readonly el: HTMLDivElement;
  /** which lens is shown (hidden with one lens) */
  private lens = h("select", "lw-lens", undefined, { "aria-label": "lens", title: "which lens decodes the grid" });
  /** which prompt of a batch is shown, or their mean (hidden with one prompt) */
  private promptSel = h("select", "lw-prompt-select", undefined, { "aria-label": "prompt", title: "which prompt of the batch" });
  private metric = h("select", "lw-metric", undefined, { "aria-label": "metric" });
  private token = h("select", "lw-metric-token", undefined, { "aria-label": "tracked token" });
  private diffA = h("select", "lw-diff-a", undefined, { "aria-label": "logit diff token a" });
  private diffB = h("select", "lw-diff-b", undefined, { "aria-label": "logit diff token b" });
  private diffBox = h("span", "lw-diff");
  private transpose = h("input", "", undefined, { type: "checkbox" });
  /** the diff grid on / off, the one compare control: on, it compares the chosen sides (shown
   * with a comparison, or with two sides to choose from) */
  private compareToggle = h("input", "lw-compare-toggle", undefined, { type: "checkbox" });
  private compareBox = h("label", "lw-compare", undefined, { title: "diff grid of two sides: b − a" });
  /** whether the widget holds a comparison (the `comparison` trait) */
  private hasComparison = false;
  /** which two (lens, prompt) sides are compared (shown with two or more to choose from) */
  private cmpA = h("select", "lw-cmp-a", undefined, { "aria-label": "compare side a" });
  private cmpB = h("select", "lw-cmp-b", undefined, { "aria-label": "compare side b" });
  private cmpPair = h("span", "lw-cmp-pair");
  /** which metric family the metric select lists ("grid" or "compare") */
  private family = "";
  /** the colour scale (the widget puts it on the title's line) */
  readonly legend = h("div", "lw-legend");
  /** the transpose switch (the toolbar puts it in its "more" menu) */
  readonly transposeEl = h("label", "lw-transpose");

  constructor(private model: LensModel, d: Disposers) {
    this.fillMetrics(false);
    this.diffBox.append(this.diffA, h("span", "", " − "), this.diffB);
    this.compareBox.append(this.compareToggle, h("span", "", " compare"));
    this.cmpPair.append(this.cmpA, h("span", "", " vs "), this.cmpB);
    this.compareBox.hidden = this.cmpPair.hidden = true;
    this.transposeEl.append(this.transpose, h("span", "", " transpose"));
    this.el = h("div", "lw-controls");
    this.el.append(this.lens, this.promptSel, this.compareBox, this.cmpPair, this.metric, this.token, this.diffBox);
    this.lens.hidden = this.promptSel.hidden = true;

    d.listen(this.lens, "change", () => setTrait(model, "lens", this.lens.value));
    d.listen(this.promptSel, "change", () => {
      const v = this.promptSel.value;
      if (v === MEAN_VIEW) setTraits(model, { aggregate: true });
      else setTraits(model, { aggregate: false, prompt_index: Number(v) });
    });

    d.listen(this.metric, "change", () => setTrait(model, "metric", this.metric.value));
    const setPair = () => setTrait(model, "compare_pair", [JSON.parse(this.cmpA.value), JSON.parse(this.cmpB.value)]);
    d.listen(this.compareToggle, "change", () => {
      const on = this.compareToggle.checked;
      if (on && !this.hasComparison && !this.cmpPair.hidden) {
        this.compareToggle.checked = false; // checked when the kernel's comparison arrives
        return setPair();
      }
      const metric = String(model.get("metric") ?? "");
      const keep = on ? isCompareMetric(metric) : isMetric(metric);
      setTraits(model, keep ? { compare_view: on } : { compare_view: on, metric: on ? DEFAULT_COMPARE_METRIC : DEFAULT_METRIC });
    });
    d.listen(this.cmpA, "change", setPair);
    d.listen(this.cmpB, "change", setPair);
    d.listen(this.token, "change", () => setTrait(model, "metric_token", Number(this.token.value)));
    const setDiff = () => setTrait(model, "diff_tokens", [Number(this.diffA.value), Number(this.diffB.value)]);
    d.listen(this.diffA, "change", setDiff);
    d.listen(this.diffB, "change", setDiff);
    d.listen(this.transpose, "change", () => setTrait(model, "transpose", this.transpose.checked));
  }

  /** List the grid's metrics, or the compare metrics on the diff grid. */
  private fillMetrics(compare: boolean): void {
    const family = compare ? "compare" : "grid";
    if (family === this.family) return;
    this.family = family;
    const opts = compare
      ? COMPARE_METRICS.map((m) => h("option", "", COMPARE_LABELS[m], { value: m }))
      : METRIC_NAMES.map((m) => h("option", "", METRIC_LABELS[m], { value: m }));
    this.metric.replaceChildren(...opts);
  }

  /** Show the traits' values (the token selects list `lens`'s tracked tokens). */
  sync(lens: LensData | null): void {
    const model = this.model;
    this.fillMetrics(!!lens?.compare);
    const metric = model.get("metric") ?? DEFAULT_METRIC;
    this.metric.value = metric;
    if (this.metric.value !== metric) this.metric.selectedIndex = lens?.compare ? COMPARE_METRICS.indexOf(DEFAULT_COMPARE_METRIC) : 0;
    fillTokenSelect(this.token, lens, model.get("metric_token") ?? -1);
    const diff = model.get("diff_tokens") ?? [];
    fillTokenSelect(this.diffA, lens, diff[0] ?? lens?.trackedIds[0] ?? -1);
    fillTokenSelect(this.diffB, lens, diff[1] ?? lens?.trackedIds[1] ?? -1);
    this.token.hidden = !ONE_TOKEN_METRICS.includes(metric);
    this.diffBox.hidden = metric !== "logit_diff" && metric !== "d_logit_diff";
    this.transpose.checked = !!model.get("transpose");
  }

  /** Show the lens switch and the prompt selector (each hidden when there is nothing to choose). */
  syncViews(): void {
    const model = this.model;
    const lenses = (model.get("lenses") ?? []).map(String);
    fillSelect(this.lens, lenses.map((l) => [l, l]), String(model.get("lens") ?? ""));
    this.lens.hidden = lenses.length < 2;
    const prompts = (model.get("prompts") ?? []).map(String);
    const options: [string, string, string?][] = prompts.map((p, i) => {
      const short = p.length > PROMPT_CHARS ? `${p.slice(0, PROMPT_CHARS)}…` : p;
      return [String(i), `${i + 1}: ${short}`, p];
    });
    if (prompts.length > 1) options.push([MEAN_VIEW, `mean of ${prompts.length} prompts (aligned on the last token)`]);
    fillSelect(this.promptSel, options, model.get("aggregate") && prompts.length > 1 ? MEAN_VIEW : String(model.get("prompt_index") ?? 0));
    this.promptSel.hidden = prompts.length < 2;
    this.syncCompare(lenses, prompts);
  }

  /** The compare toggle (with a comparison, or sides to compare) and the side selectors (with
   * two or more sides, each named by what tells the sides apart). */
  private syncCompare(lenses: string[], prompts: string[]): void {
    const model = this.model;
    const cmp = model.get("comparison");
    const has = !!cmp && typeof cmp === "object" && Object.keys(cmp as object).length > 0;
    this.hasComparison = has;
    this.compareToggle.checked = has && !!model.get("compare_view");
    const sides = sideOptions(lenses, prompts);
    const pair = model.get("compare_pair");
    const side = (j: number) => (Array.isArray(pair) && Array.isArray(pair[j]) ? JSON.stringify(pair[j]) : sides[Math.min(j, sides.length - 1)]?.[0] ?? "");
    fillSelect(this.cmpA, sides, side(0));
    fillSelect(this.cmpB, sides, side(1));
    // a patch's comparison is clean vs patched target, not two of these sides
    this.cmpPair.hidden = sides.length < 2 || (has && !!(cmp as { patch?: unknown }).patch);
    this.compareBox.hidden = !has && this.cmpPair.hidden;
  }

  showLegend(view: MetricView | null, lensName = ""): void {
    renderLegend(this.legend, view, lensName);
  }
}
