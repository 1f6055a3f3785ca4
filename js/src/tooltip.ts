// Hover tooltip: top-k with probability bars, ids, entropy, next-token prob and rank, and each
// tracked token's probability and rank.
import type { LensData } from "./data";
import type { Cell } from "./grid";
import { TOKEN_METRICS, type MetricView } from "./metrics";
import { fmt, idLabel } from "./format";
import { h } from "./dom";
import { tokenRow } from "./tokenrow";
import type { CompareData } from "./compare";

/** The head of a cell's tooltip and detail: site, position and token, the lens (and, for the mean
 * view, over how many prompts). */
export function cellSummary(lens: LensData, cell: Cell): HTMLElement[] {
  const i = cell.site * lens.P + cell.col;
  const head = h("div", "lw-tip-head");
  const agg = lens.aggregate;
  if (agg) head.append(h("b", "", `${lens.sites[cell.site]} · ${lens.columnLabels?.[cell.col] ?? lens.positions[cell.col]} `));
  else
    head.append(
      h("b", "", `${lens.sites[cell.site]} · pos ${lens.positions[cell.col]} `),
      h("span", "lw-tok", lens.display(lens.tokenAt(cell.col))),
    );
  const out: HTMLElement[] = [head, h("div", "lw-tip-lens", lens.lensName, { "data-lens": lens.lensName })];
  if (agg) out.push(h("div", "lw-agg-note lw-note", `mean over ${agg.count} prompts, aligned on the last token`));
  if (lens.nonfinite[i]) out.push(h("div", "lw-warn", "no data: non-finite activation or logits"));
  return out;
}

export function topkTable(lens: LensData, cell: Cell, cls = "lw-topk"): HTMLTableElement {
  const i = cell.site * lens.P + cell.col;
  const table = h("table", cls);
  if (lens.aggregate) return table; // a mean has no top-k tokens
  const nxt = lens.nextIds[cell.col];
  for (let j = 0; j < lens.k; j++) {
    const id = lens.topkIds[i * lens.k + j];
    const tr = tokenRow({ id, prob: lens.topkProbs[i * lens.k + j], display: lens.display(id), rowClass: "lw-tip-row" });
    if (id === nxt) tr.classList.add("lw-is-next");
    table.appendChild(tr);
  }
  return table;
}

/** Each tracked token of a cell: token, probability, rank (1 = top) and id; a mean view shows
 * the mean probability and the geometric-mean rank. Empty when nothing is tracked. */
export function trackedTable(lens: LensData, cell: Cell): HTMLTableElement {
  const i = cell.site * lens.P + cell.col;
  const table = h("table", "lw-tracked");
  if (lens.M === 0) return table;
  const mean = lens.aggregate ? "mean " : "";
  const head = h("tr", "lw-tracked-head");
  head.append(h("td", "", "tracked"), h("td", "", `${mean}p`), h("td", "", `${mean}rank`), h("td", "", ""));
  table.appendChild(head);
  for (let j = 0; j < lens.M; j++) {
    const id = lens.trackedIds[j];
    const p = lens.trackedProb[i * lens.M + j];
    const rank = lens.trackedRank[i * lens.M + j];
    const tr = h("tr", "lw-tracked-row", undefined, { "data-id": String(id), "data-prob": String(p), "data-rank": String(rank) });
    tr.append(
      h("td", "lw-tok", lens.display(id)),
      h("td", "lw-tracked-prob", fmt(p)),
      h("td", "lw-tracked-rank", rank > 0 ? (lens.aggregate ? fmt(rank) : String(rank)) : "–"),
      h("td", "lw-id", idLabel(id)),
    );
    table.appendChild(tr);
  }
  return table;
}

export function cellStats(lens: LensData, cell: Cell, view: MetricView | null): HTMLElement {
  const i = cell.site * lens.P + cell.col;
  const nxt = lens.nextIds[cell.col];
  const div = h("div", "lw-tip-stats");
  const line = (label: string, value: string, cls: string) => {
    const d = h("div", cls);
    d.append(h("span", "lw-k", label), h("span", "lw-v", value));
    div.appendChild(d);
  };
  if (lens.aggregate) {
    line("mean top-1 prob ", fmt(lens.topkProbs[i]), "lw-top1");
    line("mean entropy ", `${fmt(lens.entropy[i])} nats`, "lw-entropy");
    line("mean KL to final ", `${fmt(lens.kl[i])} nats`, "lw-kl");
    const r = lens.nextRank[i];
    line("next token ", r > 0 ? `mean p=${fmt(lens.nextProb[i])} · rank ${fmt(r)} (geometric mean)` : "(last token)", "lw-next");
    if (view && TOKEN_METRICS.includes(view.metric)) line(`${view.label} `, view.scale.format(view.values[i]), "lw-metric");
    div.appendChild(trackedTable(lens, cell));
    return div;
  }
  line("entropy ", `${fmt(lens.entropy[i])} nats`, "lw-entropy");
  line("KL to final ", `${fmt(lens.kl[i])} nats`, "lw-kl");
  if (nxt >= 0) {
    const d = h("div", "lw-next");
    d.append(
      h("span", "lw-k", "next "),
      h("span", "lw-tok", lens.display(nxt)),
      h("span", "lw-v", ` p=${fmt(lens.nextProb[i])} rank ${lens.nextRank[i]}`),
    );
    div.appendChild(d);
  } else line("next ", "(last token)", "lw-next");
  if (view && TOKEN_METRICS.includes(view.metric)) line(`${view.label} `, view.scale.format(view.values[i]), "lw-metric");
  div.appendChild(trackedTable(lens, cell));
  return div;
}

/** One side of a compared cell: its label, position and token, top-k, entropy and next token. */
function compareSide(cmp: CompareData, which: "a" | "b", cell: Cell): HTMLElement {
  const side = which === "a" ? cmp.a : cmp.b;
  const col = (which === "a" ? cmp.colsA : cmp.colsB)[cell.col];
  const box = h("div", `lw-cmp-side lw-cmp-side-${which}`, undefined, { "data-side": which });
  const head = h("div", "lw-cmp-side-head");
  head.append(h("b", "lw-cmp-side-label", `${which}: ${which === "a" ? cmp.labelA : cmp.labelB}`));
  const pos = h("div", "lw-cmp-side-pos");
  pos.append(h("span", "", `pos ${side.positions[col]} `), h("span", "lw-tok", side.display(side.tokenAt(col))));
  box.append(head, pos, topkTable(side, { site: cell.site, col }, `lw-topk lw-topk-${which}`), cellStats(side, { site: cell.site, col }, null));
  return box;
}

/** The tooltip / detail of a diff-grid cell: the metric's Δ, the JS divergence (exact or the
 * top-k approximation, labelled), top-1 agreement, then both sides next to each other. */
export function compareCell(lens: LensData, cell: Cell, view: MetricView | null): HTMLElement[] {
  const cmp = lens.compare!;
  const i = cell.site * lens.P + cell.col;
  const head = h("div", "lw-tip-head");
  head.append(h("b", "", `${lens.sites[cell.site]} · column ${cell.col + 1} of ${lens.P} (aligned ${cmp.align})`));
  const out: HTMLElement[] = [head, h("div", "lw-tip-lens", `${cmp.labelA} vs ${cmp.labelB}`, { "data-lens": lens.lensName })];
  if (cmp.nonfinite[i]) out.push(h("div", "lw-warn", "no data: non-finite activation or logits on a side"));
  const stats = h("div", "lw-tip-stats lw-cmp-stats");
  const line = (label: string, value: string, cls: string) => {
    const d = h("div", cls);
    d.append(h("span", "lw-k", label), h("span", "lw-v", value));
    stats.appendChild(d);
  };
  if (view && view.metric !== "js" && view.metric !== "top1_agree") line(`${view.label} (b − a) `, fmt(view.values[i]), "lw-cmp-value");
  line(`${cmp.jsLabel} `, fmt(cmp.js[i]), "lw-cmp-js");
  line("top-1 ", cmp.top1Agree[i] ? "agrees" : "differs", "lw-cmp-agree");
  const sides = h("div", "lw-cmp-sides");
  sides.append(compareSide(cmp, "a", cell), compareSide(cmp, "b", cell));
  out.push(stats, sides);
  return out;
}

export class Tooltip {
  readonly el: HTMLDivElement;
  cell: Cell | null = null;
  constructor(private root: HTMLElement) {
    this.el = h("div", "lw-tooltip", undefined, { role: "tooltip" });
    this.el.hidden = true;
    root.appendChild(this.el);
  }

  show(lens: LensData, view: MetricView | null, cell: Cell, clientX: number, clientY: number): void {
    if (!this.cell || this.cell.site !== cell.site || this.cell.col !== cell.col) {
      this.cell = cell;
      if (lens.compare) this.el.replaceChildren(...compareCell(lens, cell, view));
      else this.el.replaceChildren(...cellSummary(lens, cell), topkTable(lens, cell), cellStats(lens, cell, view));
      this.el.dataset.site = String(cell.site);
      this.el.dataset.col = String(cell.col);
    }
    this.el.hidden = false;
    const rb = this.root.getBoundingClientRect();
    const tw = this.el.offsetWidth || 240;
    let x = clientX - rb.left + 14;
    if (clientX + 14 + tw > window.innerWidth) x = clientX - rb.left - tw - 10;
    this.el.style.left = `${Math.max(0, x)}px`;
    this.el.style.top = `${clientY - rb.top + 14}px`;
  }

  hide(): void {
    this.el.hidden = true;
    this.cell = null;
  }
}
