// anywidget entry: builds the parts and wires the model's traits and messages to them.
import type { RenderProps } from "@anywidget/types";
import css from "./style.css";
import type { LensTraits } from "./model";
import { Grid } from "./grid";
import { Tooltip } from "./tooltip";
import { Panel } from "./panel";
import { Requester } from "./requests";
import { Controls } from "./controls";
import { PromptBox } from "./prompt";
import { SearchBox } from "./search";
import { Selection } from "./selection";
import { Notices } from "./status";
import { TraitSync } from "./sync";
import { TaskBar, isProgress } from "./tasks";
import { decodeColumn, type Bytes } from "./data";
import { tracker } from "./track";
import { timeTooltip, watchPaint } from "./perf";
import { Disposers, h } from "./dom";
import { disableKernelControls, hasKernel } from "./kernelless";
import { PatchTool, promptOf } from "./patch";
import { SweepTool } from "./sweep";
import { PromptPair } from "./patchpair";
import { DEFAULT_METRIC, isMetric } from "./metrics";
import { setTraits } from "./model";
import { FigureButtons } from "./figure";
import { ViewBar } from "./viewbar";
import { MoreMenu } from "./menu";

export const ROOT_CLASS = "lens-widget";

function makeRoot(): HTMLDivElement {
  // data-lm-suppress-shortcuts: JupyterLab (lumino) must not treat keys typed in the widget as
  // notebook shortcuts (arrows would move between cells, Enter would enter edit mode).
  const root = h("div", ROOT_CLASS, undefined, { "data-lm-suppress-shortcuts": "true", "data-jp-suppress-context-menu": "" });
  root.appendChild(h("style", "", css));
  return root;
}

function render({ model, el }: Pick<RenderProps<LensTraits>, "model" | "el">): () => void {
  const t0 = performance.now();
  const d = new Disposers();
  const root = makeRoot();
  el.appendChild(root);
  const req = new Requester(model);
  const notices = new Notices();
  const track = tracker(req, notices);

  const controls = new Controls(model, d);
  const prompt = new PromptBox(model, req, notices, d);
  const search = new SearchBox(req, track, d);
  const tasks = new TaskBar(model, req, notices, root, d);
  // the other prompt's grid beside the main one while a patch is picked (set once the grid exists)
  let pair: PromptPair | null = null;
  // whether a kernel answers requests: view_ready's reply says (an exported page answers no)
  const kernel: { ok: boolean | null; reason: string } = { ok: null, reason: "" };
  const patch = new PatchTool(
    {
      req,
      promptShown: () => promptOf(sync.lens, Number(model.get("prompt_index") ?? 0)),
      prompts: () => (model.get("prompts") ?? []).map(String),
      showPrompt: (i) => {
        const metric = String(model.get("metric") ?? "");
        setTraits(model, { compare_view: false, aggregate: false, prompt_index: i, ...(isMetric(metric) ? {} : { metric: DEFAULT_METRIC }) });
      },
      targetPrompt: () => sync.patchInfo()?.targetPromptIndex ?? Number(model.get("prompt_index") ?? 0),
      kernel: () => kernel,
      taskStarted: (text) => tasks.startWork(text),
      taskEnded: (text, isError) => {
        tasks.endWork(text);
        if (isError) notices.setError(text);
      },
      changed: () => (sync.syncOverlay(), pair?.sync()),
      sideChanged: () => sync.loadData(),
    },
    d,
  );
  // the toolbar, two lines: what is shown (lens, prompt, compare, metric), then the prompt, the
  // kernel's tasks, search and the view; the title's line carries the colour scale; the column
  // range, transpose and the figure buttons are in the "more" menu (two lines at 1000 px)
  const bar2 = h("div", "lw-controls lw-controls2");
  const figure = new FigureButtons(() => ({ lens: sync.lens, view: sync.view, status: (text, isError) => notices.setStatus(text, isError) }), d);
  const more = new MoreMenu("more ▾", d);
  bar2.append(prompt.el, tasks.el, patch.el, search.form);
  const title = h("div", "lw-title");
  const head = h("div", "lw-head");
  head.append(title, controls.legend);
  // the grid and the detail panel: side by side when the widget is wide enough (style.css)
  const main = h("div", "lw-main");
  const gridBox = h("div", "lw-gridbox");
  main.appendChild(gridBox);
  root.append(head, controls.el, bar2, search.out, notices.errorBox, notices.status, main);

  // the grid's callbacks run only after every part below exists
  const grid = new Grid(gridBox, {
    onHover(cell, ev) {
      sync.setPatchHover(cell);
      const lens = sync.lens;
      if (!cell || !lens || !ev) return tooltip.hide();
      timeTooltip(root, () => tooltip.show(lens, sync.view, cell, ev.clientX, ev.clientY));
    },
    onClick: (cell) => {
      if (!patch.click(cell)) return selection.click(cell);
      selection.select(cell); // in patch mode a click picks, and moves the cursor, without pinning
      grid.viewport.focus({ preventScroll: true });
    },
    onKey: (ev) => {
      if (sync.lens && patch.key(ev, grid.getSelected() ?? grid.cellOf(0, 0))) return;
      selection.key(ev);
    },
    onDrag: (from, to) => patch.drag(from, to),
  });
  const tooltip = new Tooltip(root);
  const panel = new Panel(main, {
    req,
    track: (id) => void track(id),
    unpin: (cell) => selection.unpin(cell),
    select: (cell) => selection.select(cell, true),
    status: (text, isError) => notices.setStatus(text, isError),
    kernel: () => kernel,
    diffTokens: () => (model.get("diff_tokens") ?? []).map(Number),
    carried: () => model.get("last_attribution"),
    promptIndex: () => Number(model.get("prompt_index") ?? 0),
  });
  d.on(model, "change:last_attribution", () => panel.attribution.showCarried());
  const view = new ViewBar(model, grid, d);
  bar2.append(view.el, more.el);
  more.add(view.rangeEl, controls.transposeEl, figure.el);
  const selection = new Selection(model, grid, panel, () => sync.lens);
  const sync = new TraitSync(model, { root, title, notices, controls, prompt, grid, panel, tooltip, selection, patch });
  sync.start(d);
  pair = new PromptPair({ model, patch, tooltip, main: grid, promptShown: () => promptOf(sync.lens, Number(model.get("prompt_index") ?? 0)) }, d);
  grid.viewport.after(pair.el);
  for (const trait of ["prompt_index", "prompts", "grids", "lens", "metric", "metric_token", "diff_tokens", "compare_view", "aggregate"])
    d.on(model, `change:${trait}`, () => pair?.sync());
  const sweep = new SweepTool(
    {
      model,
      req,
      kernel: () => kernel,
      display: (id) => sync.lens?.display(id) ?? `#${id}`,
      taskStarted: (text) => tasks.startWork(text),
      taskEnded: (text, isError) => {
        tasks.endWork(text);
        if (isError) notices.setError(text);
      },
    },
    d,
  );
  root.appendChild(sweep.el);

  // the kernel's unrequested messages: progress of long work, and new columns of a generation
  const onMsg = (msg: unknown, buffers?: Bytes[]) => {
    if (isProgress(msg)) (tasks.onProgress(msg), sweep.onProgress(msg));
    else {
      const column = decodeColumn(msg, buffers);
      if (column) sync.applyColumn(column);
    }
  };
  model.on("msg:custom", onMsg);
  d.add(() => model.off("msg:custom", onMsg));
  tasks.sync();
  d.on(model, "change:prompts", () => (tasks.sync(), patch.sync(!!sync.patchInfo())));
  d.on(model, "change:lenses", () => tasks.sync());
  // a view listens now: a widget built with generate=N starts writing (an exported page says no)
  const kernelKnown = () => {
    root.dataset.kernel = kernel.ok ? "yes" : "no";
    patch.sync(!!sync.patchInfo());
    panel.attribution.syncKernel();
    sweep.syncKernel();
  };
  req
    .request("view_ready", {})
    .then(() => {
      kernel.ok = true;
      kernelKnown();
    })
    .catch((e: Error) => {
      tasks.el.hidden = true; // no kernel to write with
      kernel.ok = false;
      kernel.reason = e.message;
      kernelKnown();
    });

  // an exported page: no kernel to answer, so its controls are disabled (saying why)
  if (!hasKernel(model)) d.add(disableKernelControls(root));

  // keys typed inside the widget stay inside it (hosts listen for shortcuts on the document)
  d.listen(root, "keydown", (ev) => ev.stopPropagation());
  watchPaint(root, grid, t0);
  grid.requestDraw();

  return () => {
    d.dispose();
    req.dispose();
    grid.destroy();
    panel.destroy();
    sweep.destroy();
    pair?.destroy();
    root.remove();
  };
}

// Only the default export: anywidget deprecates a module-level `render` export.
export default { render };
