// anywidget entry: wires the model's traits and messages to the grid, tooltip, panel and controls.
import type { AnyModel, RenderProps } from "@anywidget/types";
import css from "./style.css";
import { decodeLens, type LensData } from "./data";
import { METRIC_LABELS, METRIC_NAMES, metricView, type MetricView } from "./metrics";
import { renderLegend } from "./legend";
import { Grid, type Cell } from "./grid";
import { Tooltip } from "./tooltip";
import { Panel } from "./panel";
import { Requester } from "./requests";
import { h } from "./dom";
import { displayToken } from "./tokens";

export const ROOT_CLASS = "lens-widget";

interface SearchResult {
  matches: { id: number; text: string; display: string; exact: boolean }[];
  pieces: [number, string][] | null;
}

function get<T>(model: AnyModel, key: string, fallback: T): T {
  const v = model.get(key) as T | undefined | null;
  return v === undefined || v === null ? fallback : v;
}

function render({ model, el }: Pick<RenderProps, "model" | "el">): () => void {
  const t0 = performance.now();
  const disposers: (() => void)[] = [];
  const on = (ev: string, cb: () => void) => {
    model.on(ev, cb);
    disposers.push(() => model.off(ev, cb));
  };

  // data-lm-suppress-shortcuts: JupyterLab (lumino) must not treat keys typed in the widget as
  // notebook shortcuts (arrows would move between cells, Enter would enter edit mode).
  const root = h("div", ROOT_CLASS, undefined, { "data-lm-suppress-shortcuts": "true", "data-jp-suppress-context-menu": "" });
  const style = h("style");
  style.textContent = css;
  root.appendChild(style);
  el.appendChild(root);
  const req = new Requester(model);

  // -- controls -------------------------------------------------------------------------
  const bar = h("div", "lw-controls");
  const metricSel = h("select", "lw-metric", undefined, { "aria-label": "metric" });
  for (const m of METRIC_NAMES) metricSel.appendChild(h("option", "", METRIC_LABELS[m], { value: m }));
  const tokenSel = h("select", "lw-metric-token", undefined, { "aria-label": "tracked token" });
  const diffA = h("select", "lw-diff-a", undefined, { "aria-label": "logit diff token a" });
  const diffB = h("select", "lw-diff-b", undefined, { "aria-label": "logit diff token b" });
  const diffBox = h("span", "lw-diff");
  diffBox.append(diffA, h("span", "", " − "), diffB);
  const transposeLbl = h("label", "lw-transpose");
  const transposeChk = h("input", "", undefined, { type: "checkbox" });
  transposeLbl.append(transposeChk, h("span", "", " transpose"));
  const legend = h("div", "lw-legend");
  bar.append(metricSel, tokenSel, diffBox, transposeLbl, legend);

  const bar2 = h("div", "lw-controls lw-controls2");
  const searchForm = h("form", "lw-search");
  const searchIn = h("input", "lw-search-input", undefined, { type: "search", placeholder: "search vocabulary…", "aria-label": "search vocabulary" });
  searchForm.append(searchIn, h("button", "", "search", { type: "submit" }));
  const promptForm = h("form", "lw-prompt");
  const promptIn = h("input", "lw-prompt-input", undefined, { type: "text", "aria-label": "prompt" });
  const busy = h("span", "lw-busy", "computing…");
  busy.hidden = true;
  promptForm.append(promptIn, h("button", "", "run", { type: "submit" }), busy);
  bar2.append(promptForm, searchForm);
  const searchOut = h("div", "lw-search-out");
  const status = h("div", "lw-status", "", { role: "status" });
  const errorBox = h("div", "lw-error", "", { role: "alert" });
  errorBox.hidden = true;
  const title = h("div", "lw-title");
  root.append(title, bar, bar2, searchOut, errorBox, status);

  const setStatus = (text: string, isError = false) => {
    status.textContent = text;
    status.classList.toggle("lw-status-error", isError);
  };

  // -- state ----------------------------------------------------------------------------
  let lens: LensData | null = null;
  let view: MetricView | null = null;
  const tooltip = { current: null as Tooltip | null };

  const pinnedCells = (): Cell[] => {
    const raw = get<unknown[]>(model, "pinned", []);
    const out: Cell[] = [];
    for (const p of Array.isArray(raw) ? raw : []) {
      if (Array.isArray(p) && p.length >= 2 && Number.isInteger(p[0]) && Number.isInteger(p[1])) out.push({ site: p[0], col: p[1] });
    }
    return out;
  };
  const setPinned = (cells: Cell[]) => {
    model.set("pinned", cells.map((c) => [c.site, c.col]));
    model.save_changes();
  };
  const togglePin = (cell: Cell) => {
    const cur = pinnedCells();
    const i = cur.findIndex((c) => c.site === cell.site && c.col === cell.col);
    if (i >= 0) cur.splice(i, 1);
    else cur.push(cell);
    setPinned(cur);
  };
  const select = (cell: Cell, scroll = false) => {
    grid.setSelected(cell);
    if (scroll) grid.scrollIntoView(cell);
    panel.show(cell);
    if (lens) {
      model.set("selected", { site: cell.site, col: cell.col, position: lens.positions[cell.col] });
      model.save_changes();
    }
  };
  const track = async (id: number) => {
    setStatus(`tracking #${id}…`);
    try {
      const r = await req.request<{ token_id: number; text: string }>("track", { token: id });
      setStatus(`tracking #${r.token_id}`);
    } catch (e) {
      setStatus((e as Error).message, true);
    }
  };

  // -- grid, tooltip, panel ---------------------------------------------------------------
  const grid = new Grid(root, {
    onHover(cell, ev) {
      const tip = tooltip.current!;
      if (!cell || !lens || !ev) return tip.hide();
      const t = performance.now();
      tip.show(lens, view, cell, ev.clientX, ev.clientY);
      root.dataset.tooltipMs = (performance.now() - t).toFixed(3);
    },
    onClick(cell, ev) {
      select(cell);
      togglePin(cell);
      grid.viewport.focus({ preventScroll: true });
    },
    onKey(ev) {
      if (!lens) return;
      const cur = grid.getSelected() ?? grid.cellOf(0, 0);
      let [r, c] = grid.rcOf(cur);
      switch (ev.key) {
        case "ArrowUp": r--; break;
        case "ArrowDown": r++; break;
        case "ArrowLeft": c--; break;
        case "ArrowRight": c++; break;
        case "Enter": togglePin(cur); select(cur); ev.preventDefault(); return;
        case "Escape": setPinned([]); ev.preventDefault(); return;
        default: return;
      }
      ev.preventDefault();
      r = Math.max(0, Math.min(grid.nRows - 1, r));
      c = Math.max(0, Math.min(grid.nCols - 1, c));
      select(grid.cellOf(r, c), true);
    },
  });
  tooltip.current = new Tooltip(root);
  const panel = new Panel(root, {
    req,
    track: (id) => void track(id),
    unpin: (cell) => setPinned(pinnedCells().filter((c) => c.site !== cell.site || c.col !== cell.col)),
    select: (cell) => select(cell, true),
    status: setStatus,
  });

  // -- sync from traits ---------------------------------------------------------------------
  const fillTokenSelect = (sel: HTMLSelectElement, value: number) => {
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
  };
  const syncControls = () => {
    const metric: string = get(model, "metric", "top1_prob");
    metricSel.value = metric;
    fillTokenSelect(tokenSel, get(model, "metric_token", -1));
    const diff = get<number[]>(model, "diff_tokens", []);
    fillTokenSelect(diffA, diff[0] ?? lens?.trackedIds[0] ?? -1);
    fillTokenSelect(diffB, diff[1] ?? lens?.trackedIds[1] ?? -1);
    tokenSel.hidden = metric !== "tracked_prob";
    diffBox.hidden = metric !== "logit_diff";
    transposeChk.checked = !!get(model, "transpose", false);
    if (document.activeElement !== promptIn) promptIn.value = get(model, "prompt", lens?.prompt ?? "");
  };
  const recolor = () => {
    view = lens ? metricView(lens, get(model, "metric", "top1_prob"), get(model, "metric_token", -1), get<number[]>(model, "diff_tokens", [])) : null;
    grid.setData(lens, view);
    panel.setData(lens, view);
    renderLegend(legend, view);
    root.dataset.metric = view?.metric ?? "";
    tooltip.current?.hide();
  };
  const loadData = () => {
    try {
      lens = decodeLens(model.get("data"));
      errorBox.hidden = true;
    } catch (e) {
      lens = null;
      errorBox.hidden = false;
      errorBox.textContent = `cannot read data: ${(e as Error).message}`;
    }
    title.textContent = lens ? `${lens.modelName} — ${lens.S} sites × ${lens.P} tokens` : "no lens data";
    syncControls();
    recolor();
    grid.setPinned(pinnedCells());
    panel.renderPins(pinnedCells());
    const sel = get<Record<string, number>>(model, "selected", {});
    if (lens && Number.isInteger(sel.site) && Number.isInteger(sel.col) && sel.site < lens.S && sel.col < lens.P) {
      grid.setSelected({ site: sel.site, col: sel.col });
      panel.show({ site: sel.site, col: sel.col });
    } else panel.show(null);
  };
  const syncBusy = () => {
    busy.hidden = !get(model, "busy", false);
    root.classList.toggle("lw-is-busy", !busy.hidden);
  };
  const syncError = () => {
    const err = get(model, "error", "");
    errorBox.hidden = !err;
    errorBox.textContent = err;
  };

  // Host theme switches (JupyterLab sets data-jp-theme-* on <body>): re-read the colours.
  if (typeof MutationObserver !== "undefined" && document.body) {
    const mo = new MutationObserver(() => {
      grid.refreshTheme();
      recolor();
    });
    mo.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light", "class", "data-vscode-theme-kind"] });
    disposers.push(() => mo.disconnect());
  }
  grid.setHeight(get(model, "height", 420));
  grid.setTranspose(!!get(model, "transpose", false));
  loadData();
  syncBusy();
  syncError();

  on("change:data", loadData);
  on("change:tracked", syncControls);
  on("change:metric", () => { syncControls(); recolor(); });
  on("change:metric_token", () => { syncControls(); recolor(); });
  on("change:diff_tokens", () => { syncControls(); recolor(); });
  on("change:transpose", () => { syncControls(); grid.setTranspose(!!get(model, "transpose", false)); });
  on("change:pinned", () => { grid.setPinned(pinnedCells()); panel.renderPins(pinnedCells()); });
  on("change:height", () => grid.setHeight(get(model, "height", 420)));
  on("change:busy", syncBusy);
  on("change:error", syncError);
  on("change:prompt", syncControls);

  // -- DOM listeners on controls ----------------------------------------------------------
  const listen = (target: EventTarget, type: string, fn: (ev: Event) => void) => {
    target.addEventListener(type, fn);
    disposers.push(() => target.removeEventListener(type, fn));
  };
  const setTrait = (key: string, value: unknown) => {
    model.set(key, value);
    model.save_changes();
  };
  listen(metricSel, "change", () => setTrait("metric", metricSel.value));
  listen(tokenSel, "change", () => setTrait("metric_token", Number(tokenSel.value)));
  const setDiff = () => setTrait("diff_tokens", [Number(diffA.value), Number(diffB.value)]);
  listen(diffA, "change", setDiff);
  listen(diffB, "change", setDiff);
  listen(transposeChk, "change", () => setTrait("transpose", transposeChk.checked));
  // keys typed inside the widget stay inside it (hosts listen for shortcuts on the document)
  listen(root, "keydown", (ev) => ev.stopPropagation());
  const onEnter = (input: HTMLInputElement, run: () => void) =>
    listen(input, "keydown", (ev) => {
      const k = ev as KeyboardEvent;
      if (k.key === "Enter" && !k.isComposing) {
        k.preventDefault();
        run();
      }
    });
  const runSearch = async () => {
    const query = searchIn.value;
    if (!query.trim()) return;
    searchOut.replaceChildren(h("span", "lw-note", "searching…"));
    try {
      const r = await req.request<SearchResult>("search", { query, limit: 20 });
      searchOut.replaceChildren();
      if (r.pieces && r.pieces.length > 1) {
        const warn = h("div", "lw-warn lw-multi", `“${query}” is ${r.pieces.length} tokens: `);
        r.pieces.forEach(([id, text], n) => {
          if (n) warn.append(h("span", "", " | "));
          warn.append(h("span", "lw-tok", displayToken(String(text))), h("span", "lw-id", ` #${id}`));
        });
        searchOut.appendChild(warn);
      }
      if (!r.matches.length) searchOut.appendChild(h("span", "lw-note", "no matches"));
      for (const m of r.matches) {
        const b = h("button", "lw-match" + (m.exact ? " lw-exact" : ""), undefined, { title: `track #${m.id}`, "data-id": String(m.id) });
        b.append(h("span", "lw-tok", m.display), h("span", "lw-id", ` #${m.id}`));
        b.onclick = () => void track(m.id);
        searchOut.appendChild(b);
      }
    } catch (e) {
      searchOut.replaceChildren(h("span", "lw-warn", (e as Error).message));
    }
  };
  let promptSeq = 0;
  const runPrompt = async () => {
    const mine = ++promptSeq;
    setStatus("");
    try {
      await req.request("set_prompt", { prompt: promptIn.value }, 600000);
      if (mine === promptSeq) setStatus("");
    } catch (e) {
      if (mine !== promptSeq) return;
      errorBox.hidden = false;
      errorBox.textContent = (e as Error).message;
    }
  };
  listen(searchForm, "submit", (ev) => {
    ev.preventDefault();
    void runSearch();
  });
  listen(promptForm, "submit", (ev) => {
    ev.preventDefault();
    void runPrompt();
  });
  onEnter(searchIn, () => void runSearch());
  onEnter(promptIn, () => void runPrompt());

  // -- performance hooks: data-first-paint-ms (decode + first draw) ---------------------------
  grid.onDrawn = () => {
    grid.onDrawn = () => {
      root.dataset.drawMs = grid.lastDrawMs.toFixed(3);
    };
    const ms = performance.now() - t0;
    root.dataset.firstPaintMs = ms.toFixed(2);
    root.dataset.drawMs = grid.lastDrawMs.toFixed(3);
    try {
      performance.mark("lens-widget:first-paint");
    } catch {
      /* ignore */
    }
  };
  grid.requestDraw();

  return () => {
    for (const d of disposers.splice(0)) d();
    req.dispose();
    grid.destroy();
    panel.destroy();
    root.remove();
  };
}

// Only the default export: anywidget deprecates a module-level `render` export.
export default { render };
