// The control bar: metric, tracked token, logit-diff tokens, transpose, legend. Reads and writes traits.
import type { LensData } from "./data";
import { setTrait, type LensModel } from "./model";
import { DEFAULT_METRIC, METRIC_LABELS, METRIC_NAMES, type MetricView } from "./metrics";
import { renderLegend } from "./legend";
import { h, type Disposers } from "./dom";

/** Fill a select with the tracked tokens, choosing `value` (or the first). */
function fillTokenSelect(sel: HTMLSelectElement, lens: LensData | null, value: number): void {
  sel.replaceChildren();
  if (!lens || lens.M === 0) {
    sel.appendChild(h("option", "", "(none tracked)", { value: "-1" }));
    sel.disabled = true;
    return;
  }
  sel.disabled = false;
  for (const id of lens.trackedIds) sel.appendChild(h("option", "", `${lens.display(id)} #${id}`, { value: String(id) }));
  sel.value = String(value);
  if (sel.value !== String(value)) sel.selectedIndex = 0;
}

export class Controls {
  readonly el: HTMLDivElement;
  private metric = h("select", "lw-metric", undefined, { "aria-label": "metric" });
  private token = h("select", "lw-metric-token", undefined, { "aria-label": "tracked token" });
  private diffA = h("select", "lw-diff-a", undefined, { "aria-label": "logit diff token a" });
  private diffB = h("select", "lw-diff-b", undefined, { "aria-label": "logit diff token b" });
  private diffBox = h("span", "lw-diff");
  private transpose = h("input", "", undefined, { type: "checkbox" });
  private legend = h("div", "lw-legend");

  constructor(private model: LensModel, d: Disposers) {
    for (const m of METRIC_NAMES) this.metric.appendChild(h("option", "", METRIC_LABELS[m], { value: m }));
    this.diffBox.append(this.diffA, h("span", "", " − "), this.diffB);
    const transposeLbl = h("label", "lw-transpose");
    transposeLbl.append(this.transpose, h("span", "", " transpose"));
    this.el = h("div", "lw-controls");
    this.el.append(this.metric, this.token, this.diffBox, transposeLbl, this.legend);

    d.listen(this.metric, "change", () => setTrait(model, "metric", this.metric.value));
    d.listen(this.token, "change", () => setTrait(model, "metric_token", Number(this.token.value)));
    const setDiff = () => setTrait(model, "diff_tokens", [Number(this.diffA.value), Number(this.diffB.value)]);
    d.listen(this.diffA, "change", setDiff);
    d.listen(this.diffB, "change", setDiff);
    d.listen(this.transpose, "change", () => setTrait(model, "transpose", this.transpose.checked));
  }

  /** Show the traits' values (the token selects list `lens`'s tracked tokens). */
  sync(lens: LensData | null): void {
    const model = this.model;
    const metric = model.get("metric") ?? DEFAULT_METRIC;
    this.metric.value = metric;
    fillTokenSelect(this.token, lens, model.get("metric_token") ?? -1);
    const diff = model.get("diff_tokens") ?? [];
    fillTokenSelect(this.diffA, lens, diff[0] ?? lens?.trackedIds[0] ?? -1);
    fillTokenSelect(this.diffB, lens, diff[1] ?? lens?.trackedIds[1] ?? -1);
    this.token.hidden = metric !== "tracked_prob";
    this.diffBox.hidden = metric !== "logit_diff";
    this.transpose.checked = !!model.get("transpose");
  }

  showLegend(view: MetricView | null): void {
    renderLegend(this.legend, view);
  }
}
