import { describe, expect, it } from "vitest";
import widget from "../../src/widget";
import { Grid } from "../../src/grid";
import { decodeLens } from "../../src/data";
import { metricView } from "../../src/metrics";
import { FakeModel, makeData, wire } from "../fixture";

const { render } = widget;

const tick = () => new Promise((r) => setTimeout(r, 0));

function reply(model: FakeModel, type: string, result: unknown, buffers: DataView[] = []) {
  const msg = [...model.sent].reverse().find((m) => m.type === type);
  if (!msg) throw new Error(`no ${type} request sent`);
  model.emit("msg:custom", { type: "reply", request_id: msg.request_id, ok: true, result }, buffers);
  return msg;
}

describe("detail panel", () => {
  it("clicking a token tracks it, the trajectory asks the kernel for tokens it lacks, full detail uses cell_detail", async () => {
    const model = new FakeModel({ data: makeData(4, 6, 3), selected: { site: 1, col: 2, position: 2 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    const rows = el.querySelectorAll<HTMLElement>(".lw-detail-row");
    expect(rows).toHaveLength(3);
    // the trajectory of the final top-1 / next token: id 5 is at rank 0 of the final layer (3+2+0)%8 = 5
    // and next token at col 2 is input_ids[3] = 9 % 8 = 1; id 1 is not tracked and not always in top-k
    const traj = model.sent.find((m) => m.type === "trajectory")!;
    expect(traj.col).toBe(2);
    expect(traj.token_ids).toEqual(expect.arrayContaining([1]));
    expect((traj.token_ids as number[]).includes(3)).toBe(false);
    const n = (traj.token_ids as number[]).length;
    const probs = new Float32Array(4 * n).fill(0.3);
    reply(model, "trajectory", { probs: { dtype: "float32", shape: [4, n], buffer_index: 0 } }, [new DataView(probs.buffer)]);
    await tick();
    expect(el.querySelector(".lw-traj .lw-note")!.textContent).toBe("");

    rows[0].querySelector<HTMLButtonElement>(".lw-track")!.click();
    const tr = model.sent.find((m) => m.type === "track")!;
    expect(tr.token).toBe(Number(rows[0].dataset.id));
    reply(model, "track", { token_id: tr.token, text: "x" });
    await tick();
    expect(el.querySelector(".lw-status")!.textContent).toContain(`tracking token id ${tr.token}`);

    el.querySelector<HTMLButtonElement>(".lw-more")!.click();
    const cd = model.sent.find((m) => m.type === "cell_detail")!;
    expect(cd).toMatchObject({ site: 1, col: 2, k: 50 });
    const ids = new Int32Array([6, 7]);
    const ps = new Float32Array([0.6, 0.1]);
    reply(model, "cell_detail", {
      top_ids: { dtype: "int32", shape: [2], buffer_index: 0 },
      top_probs: { dtype: "float32", shape: [2], buffer_index: 1 },
      tokens: { "6": "<script>x</script>", "7": " y" },
    }, [new DataView(ids.buffer), new DataView(ps.buffer)]);
    await tick();
    const full = el.querySelectorAll<HTMLElement>(".lw-full .lw-detail-row");
    expect(Array.from(full).map((r) => r.dataset.id)).toEqual(["6", "7"]);
    expect(full[0].querySelector(".lw-tok")!.textContent).toBe("<script>x</script>");
    expect(el.querySelector(".lw-full script")).toBeNull();
    cleanup();
  });
});

type Series = { id: number; partial: boolean; values: (number | null)[] };
const seriesOf = (el: HTMLElement): Series[] => JSON.parse(el.querySelector<HTMLCanvasElement>("canvas.lw-chart")!.dataset.series!);
function setTrajMetric(el: HTMLElement, value: string) {
  const sel = el.querySelector<HTMLSelectElement>("select.lw-traj-metric")!;
  sel.value = value;
  sel.dispatchEvent(new Event("change"));
}

describe("trajectory metric", () => {
  it("plots the tracked tokens' probability, logit and rank from data without asking the kernel", async () => {
    const data = makeData(4, 6, 3);
    const S = 4, P = 6, n = S * P;
    // distinct values per cell and token, so the test can tell which array was read
    data.tracked_logit = wire("float32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => i * 0.25 - 3));
    data.tracked_rank = wire("int32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => 1 + i * 7));
    data.tracked_prob = wire("float32", [S, P, 2], Array.from({ length: n * 2 }, (_, i) => (i + 1) / (n * 2 + 1)));
    const lens = decodeLens(data)!;
    // column 0: the final top-1 (3) and the next token (input_ids[1] = 3) are the tracked token 3 (m = 0)
    const model = new FakeModel({ data, selected: { site: 1, col: 0, position: 0 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    const chart = el.querySelector<HTMLCanvasElement>("canvas.lw-chart")!;
    const sel = el.querySelector<HTMLSelectElement>("select.lw-traj-metric")!;
    expect(Array.from(sel.options).map((o) => o.value)).toEqual(["prob", "logit", "rank"]);
    expect(sel.value).toBe("prob");
    expect(chart.dataset.metric).toBe("prob");
    expect(el.querySelector(".lw-traj-title")!.textContent).toBe("probability across layers");
    const col = (a: ArrayLike<number>) => Array.from({ length: S }, (_, s) => a[(s * P + 0) * lens.M + 0]);
    expect(seriesOf(el)).toEqual([{ id: 3, partial: false, values: col(lens.trackedProb) }]);

    setTrajMetric(el, "logit");
    expect(chart.dataset.metric).toBe("logit");
    expect(el.querySelector(".lw-traj-title")!.textContent).toBe("logit across layers");
    expect(seriesOf(el)).toEqual([{ id: 3, partial: false, values: col(lens.trackedLogit) }]);

    setTrajMetric(el, "rank");
    expect(chart.dataset.metric).toBe("rank");
    expect(seriesOf(el)).toEqual([{ id: 3, partial: false, values: col(lens.trackedRank) }]);

    setTrajMetric(el, "prob");
    expect(seriesOf(el)[0].values).toEqual(col(lens.trackedProb));
    await tick();
    expect(model.sent.filter((m) => m.type === "trajectory")).toHaveLength(0);
    expect(el.querySelector(".lw-traj .lw-note")!.textContent).toBe("");
    cleanup();
  });

  it("asks the kernel for the logits and ranks of untracked tokens, and says so when there is none", async () => {
    const model = new FakeModel({ data: makeData(4, 6, 3), selected: { site: 1, col: 2, position: 2 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    // column 2: final top-1 is 5 and the next token is 1, neither tracked nor always in the top-k
    const first = model.sent.filter((m) => m.type === "trajectory");
    expect(first).toHaveLength(1);
    expect(first[0].token_ids).toEqual([5, 1]);

    setTrajMetric(el, "logit");
    const asks = model.sent.filter((m) => m.type === "trajectory");
    expect(asks).toHaveLength(2);
    expect(asks[1]).toMatchObject({ col: 2, token_ids: [5, 1] });
    // until the kernel answers, untracked logits are unknown (the data has only top-k probabilities)
    expect(seriesOf(el)).toEqual([
      { id: 5, partial: true, values: [null, null, null, null] },
      { id: 1, partial: true, values: [null, null, null, null] },
    ]);
    const probs = new Float32Array(8).fill(0.3);
    const logits = new Float32Array([1, -1, 2, -2, 3, -3, 4, -4]);
    const ranks = new Int32Array([9, 40, 5, 30, 2, 20, 1, 10]);
    reply(model, "trajectory", {
      token_ids: [5, 1],
      probs: { dtype: "float32", shape: [4, 2], buffer_index: 0 },
      logits: { dtype: "float32", shape: [4, 2], buffer_index: 1 },
      ranks: { dtype: "int32", shape: [4, 2], buffer_index: 2 },
    }, [new DataView(probs.buffer), new DataView(logits.buffer), new DataView(ranks.buffer)]);
    await tick();
    expect(el.querySelector<HTMLCanvasElement>("canvas.lw-chart")!.dataset.metric).toBe("logit");
    expect(seriesOf(el)).toEqual([
      { id: 5, partial: false, values: [1, 2, 3, 4] },
      { id: 1, partial: false, values: [-1, -2, -3, -4] },
    ]);
    expect(el.querySelector(".lw-traj .lw-note")!.textContent).toBe("");

    // the reply carried every metric: rank needs no second request for this column
    setTrajMetric(el, "rank");
    expect(model.sent.filter((m) => m.type === "trajectory")).toHaveLength(2);
    expect(seriesOf(el).map((s) => s.values)).toEqual([[9, 5, 2, 1], [40, 30, 20, 10]]);
    cleanup();
  });

  it("labels the y axis per metric: 1/0, logit min/max, rank 1 at the top and the largest rank (log scale)", () => {
    const texts: [string, number][] = []; // [text, x]
    const points: [number, number][] = [];
    const ctx = new Proxy({}, {
      get: (_t, k) => {
        if (k === "fillText") return (t: string, x: number) => texts.push([t, x]);
        if (k === "measureText") return (t: string) => ({ width: t.length * 6 });
        if (k === "moveTo" || k === "lineTo") return (x: number, y: number) => points.push([x, y]);
        return () => {};
      },
      set: () => true,
    });
    const orig = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function () { return ctx; } as never;
    try {
      const model = new FakeModel({ data: makeData(4, 6, 3), selected: { site: 1, col: 0, position: 0 } });
      const el = document.createElement("div");
      const cleanup = render({ model: model as never, el });
      const labels = () => texts.filter(([, x]) => x === 4).map(([t]) => t); // the y-axis labels sit at x = 4
      expect(labels()).toEqual(["1", "0"]);
      texts.length = 0;
      setTrajMetric(el, "logit"); // token 3's tracked logit is 2 everywhere: a flat line in the middle
      expect(labels()).toEqual(["2.5", "1.5"]);
      texts.length = 0;
      points.length = 0;
      setTrajMetric(el, "rank"); // rank 1 everywhere: on the top edge (y = 4)
      expect(labels()).toEqual(["1", "2"]);
      expect(points.every(([, y]) => y === 4)).toBe(true);
      cleanup();
    } finally {
      HTMLCanvasElement.prototype.getContext = orig;
    }
  });

  it("an exported page (no kernel) explains what is missing for each metric", async () => {
    const model = new FakeModel({ data: makeData(4, 6, 3), selected: { site: 1, col: 2, position: 2 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    const fail = () => {
      const msg = [...model.sent].reverse().find((m) => m.type === "trajectory")!;
      model.emit("msg:custom", { type: "reply", request_id: msg.request_id, ok: false, error: "no kernel (exported page)" }, []);
    };
    const note = () => el.querySelector(".lw-traj .lw-note")!.textContent;
    fail();
    await tick();
    expect(note()).toBe("dotted: known only where in the top-3 (no kernel (exported page))");
    expect(seriesOf(el).every((s) => s.partial)).toBe(true);
    setTrajMetric(el, "rank");
    expect(note()).toBe("");
    fail();
    await tick();
    expect(note()).toContain("rank of an untracked token needs the kernel");
    expect(note()).toContain("track the token");
    expect(seriesOf(el).every((s) => s.partial && s.values.every((v) => v === null))).toBe(true);
    cleanup();
  });
});

describe("grid geometry", () => {
  it("maps canvas coordinates to cells with the frozen final layer, both orientations", () => {
    const parent = document.createElement("div");
    const lens = decodeLens(makeData(4, 6, 3))!;
    const grid = new Grid(parent, { onHover() {}, onClick() {}, onKey() {} });
    grid.setData(lens, metricView(lens, "top1_prob"));
    // columns are as wide as their text: x from the grid's column edges
    const x = (c: number) => 52 + grid.colLeft(c);
    expect(grid.cellAt(10, 10)).toBeNull(); // header
    expect(grid.cellAt(52 + 1, 22 + 1)).toEqual({ site: 3, col: 0 });
    expect(grid.cellAt(x(2) + 5, 22 + 20 * 3 + 5)).toEqual({ site: 0, col: 2 });
    expect(grid.cellAt(x(2) - 1, 22 + 20 * 3 + 5)).toEqual({ site: 0, col: 1 });
    expect(grid.cellAt(x(6) + 5, 30)).toBeNull(); // past the last column
    expect(grid.cellRect({ site: 0, col: 2 })).toEqual({ x: x(2), y: 22 + 60, w: grid.colWidth(2), h: 20 });
    grid.setTranspose(true);
    expect(grid.cellAt(120 + 1, 22 + 1)).toEqual({ site: 3, col: 0 });
    expect(grid.cellAt(120 + grid.colLeft(3) + 1, 22 + 20 * 5 + 1)).toEqual({ site: 0, col: 5 });
    for (const cell of [{ site: 2, col: 4 }, { site: 0, col: 0 }]) {
      const r = grid.cellRect(cell);
      expect(grid.cellAt(r.x + 1, r.y + 1)).toEqual(cell);
    }
    grid.destroy();
    expect(parent.children).toHaveLength(0);
  });
});
