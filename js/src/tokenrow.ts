// One row of a token table (tooltip and panel): [lead cells], token, probability bar, probability, id.
import { h } from "./dom";
import { idLabel } from "./format";

export interface TokenRowSpec {
  id: number;
  prob: number;
  /** display form of the token (textContent only) */
  display: string;
  /** class of the <tr> */
  rowClass: string;
  /** cells before the token (e.g. a chart toggle) */
  lead?: HTMLElement[];
  /** element shown in the token cell instead of plain text (e.g. a track button) */
  token?: HTMLElement;
}

export function tokenRow(spec: TokenRowSpec): HTMLTableRowElement {
  const { id, prob } = spec;
  const tr = h("tr", spec.rowClass, undefined, { "data-id": String(id), "data-prob": String(prob) });
  const bar = h("span", "lw-bar");
  bar.style.width = `${Math.max(0, Math.min(1, prob)) * 100}%`;
  const barTd = h("td", "lw-barcell");
  barTd.appendChild(bar);
  let tokTd: HTMLTableCellElement;
  if (spec.token) {
    tokTd = h("td");
    tokTd.appendChild(spec.token);
  } else tokTd = h("td", "lw-tok", spec.display);
  for (const cell of spec.lead ?? []) {
    const td = h("td");
    td.appendChild(cell);
    tr.appendChild(td);
  }
  tr.append(tokTd, barTd, h("td", "lw-prob", prob.toFixed(4)), h("td", "lw-id", idLabel(id)));
  return tr;
}
