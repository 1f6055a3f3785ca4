// Hover tooltip: top-k with probability bars, ids, entropy, next-token prob and rank.
import type { LensData } from "./data";
import type { Cell } from "./grid";
import { TOKEN_METRICS, type MetricView } from "./metrics";
import { fmt } from "./format";
import { h } from "./dom";
import { tokenRow } from "./tokenrow";

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
    if (view && TOKEN_METRICS.includes(view.metric)) line(`${view.label} `, fmt(view.values[i]), "lw-metric");
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
  if (view && TOKEN_METRICS.includes(view.metric)) line(`${view.label} `, fmt(view.values[i]), "lw-metric");
  return div;
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
      this.el.replaceChildren(...cellSummary(lens, cell), topkTable(lens, cell), cellStats(lens, cell, view));
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
