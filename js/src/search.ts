// Vocabulary search: the query box and its results (buttons that track a token). Text via textContent.
import type { Requester } from "./requests";
import type { SearchResult } from "./model";
import type { Track } from "./track";
import { h, type Disposers } from "./dom";
import { idLabel } from "./format";
import { displayToken } from "./tokens";

const SEARCH_LIMIT = 20;

export class SearchBox {
  readonly form: HTMLFormElement;
  readonly out: HTMLDivElement;
  private input = h("input", "lw-search-input", undefined, { type: "search", placeholder: "search vocabulary…", "aria-label": "search vocabulary" });

  constructor(private req: Requester, private track: Track, d: Disposers) {
    this.form = h("form", "lw-search");
    this.form.append(this.input, h("button", "", "search", { type: "submit" }));
    this.out = h("div", "lw-search-out");
    d.onSubmit(this.form, () => void this.run());
    d.onEnter(this.input, () => void this.run());
  }

  async run(): Promise<void> {
    const query = this.input.value;
    if (!query.trim()) return;
    this.out.replaceChildren(h("span", "lw-note", "searching…"));
    try {
      const r = await this.req.request<SearchResult>("search", { query, limit: SEARCH_LIMIT });
      this.out.replaceChildren();
      if (r.pieces && r.pieces.length > 1) this.out.appendChild(this.pieces(query, r.pieces));
      if (!r.matches.length) this.out.appendChild(h("span", "lw-note", "no matches"));
      for (const m of r.matches) this.out.appendChild(this.match(m));
    } catch (e) {
      this.out.replaceChildren(h("span", "lw-warn", (e as Error).message));
    }
  }

  /** The warning that the query is several tokens, with each piece. */
  private pieces(query: string, pieces: [number, string][]): HTMLElement {
    const warn = h("div", "lw-warn lw-multi", `“${query}” is ${pieces.length} tokens: `);
    pieces.forEach(([id, text], n) => {
      if (n) warn.append(h("span", "", " | "));
      warn.append(h("span", "lw-tok", displayToken(String(text))), h("span", "lw-id", ` ${idLabel(id)}`));
    });
    return warn;
  }

  private match(m: SearchResult["matches"][number]): HTMLButtonElement {
    const b = h("button", "lw-match" + (m.exact ? " lw-exact" : ""), undefined, { title: `track #${m.id}`, "data-id": String(m.id) });
    b.append(h("span", "lw-tok", m.display), h("span", "lw-id", ` ${idLabel(m.id)}`));
    b.onclick = () => void this.track(m.id);
    return b;
  }
}
