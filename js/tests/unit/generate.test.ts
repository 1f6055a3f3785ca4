import { describe, expect, it } from "vitest";
import { decodeColumn, decodeLens, withColumn, type LensData } from "../../src/data";
import { formatSeconds, progressText, TaskBar } from "../../src/tasks";
import widget from "../../src/widget";
import { FakeModel, makeData } from "../fixture";
import { Requester } from "../../src/requests";
import { Notices } from "../../src/status";
import { Disposers } from "../../src/dom";

const S = 4;
const P = 6;
const k = 3;
const M = 2;

/** A `column` message as lens_widget.wire.column_message lays it out: arrays by buffer_index,
 * each buffer a DataView at a non-zero byteOffset (as hosts hand them over). */
function columnMessage(col: number, tokenId: number, nextId: number, seed: number, vocab: [number, string][] = [], extra: Record<string, unknown> = {}) {
  const buffers: DataView[] = [];
  const put = (dtype: "int32" | "float32" | "uint8", shape: number[], values: number[]) => {
    const C = dtype === "int32" ? Int32Array : dtype === "float32" ? Float32Array : Uint8Array;
    const typed = C.from(values);
    const big = new Uint8Array(typed.byteLength + 12);
    big.set(new Uint8Array(typed.buffer), 4);
    buffers.push(new DataView(big.buffer, 4, typed.byteLength));
    return { dtype, shape, buffer_index: buffers.length - 1 };
  };
  const per = (w: number, f: (s: number, j: number) => number) => Array.from({ length: S * w }, (_, i) => f(Math.floor(i / w), i % w));
  const msg = {
    type: "column",
    col,
    position: col,
    token_id: tokenId,
    next_id: nextId,
    lens: "",
    generated_from: 5,
    done: 1,
    total: 4,
    eta_s: 0.5,
    cells: {
      topk_ids: put("int32", [S, 1, k], per(k, (s, j) => 100 + seed + s * 10 + j)),
      topk_probs: put("float32", [S, 1, k], per(k, (s, j) => 0.5 / (j + 1) + s * 0.01)),
      entropy: put("float32", [S, 1], per(1, (s) => seed + s + 0.5)),
      next_prob: put("float32", [S, 1], per(1, (s) => 0.125 * (s + 1))),
      next_rank: put("int32", [S, 1], per(1, (s) => 40 - s)),
      kl: put("float32", [S, 1], per(1, (s) => 3 - s)),
      nonfinite: put("uint8", [S, 1], per(1, (s) => (s === 2 ? 1 : 0))),
      tracked_prob: put("float32", [S, 1, M], per(M, (s, m) => 0.01 * (s + 1) * (m + 1))),
      tracked_logit: put("float32", [S, 1, M], per(M, (s, m) => s - m)),
      tracked_rank: put("int32", [S, 1, M], per(M, (s, m) => 7 + s + m)),
    },
    vocab_ids: put("int32", [vocab.length], vocab.map(([id]) => id)),
    vocab_strings: vocab.map(([, t]) => t),
    ...extra,
  };
  return { msg, buffers };
}

function base(): LensData {
  return decodeLens(makeData(S, P, k))!;
}

/** Cell (s, c) of a [S, P, w] site-major array, as a plain list. */
const at = (a: ArrayLike<number>, Pn: number, w: number, s: number, c: number) => Array.from({ length: w }, (_, j) => a[(s * Pn + c) * w + j]);

describe("column messages", () => {
  it("an appended column grows every array by one column and leaves the others as they were", () => {
    const lens = base();
    const { msg, buffers } = columnMessage(P, 101, 102, 0, [[101, " new"], [102, "!"], [100, "x"]]);
    const u = decodeColumn(msg, buffers)!;
    expect(u.col).toBe(P);
    const grown = withColumn(lens, u);
    expect(grown.P).toBe(P + 1);
    expect(lens.P).toBe(P); // the old grid is unchanged
    for (let s = 0; s < S; s++) {
      for (let c = 0; c < P; c++) {
        expect(at(grown.topkIds, P + 1, k, s, c)).toEqual(at(lens.topkIds, P, k, s, c));
        expect(at(grown.entropy, P + 1, 1, s, c)).toEqual(at(lens.entropy, P, 1, s, c));
        expect(at(grown.trackedRank, P + 1, M, s, c)).toEqual(at(lens.trackedRank, P, M, s, c));
      }
      // the new column: the message's values, written here from the message's own formulas
      expect(at(grown.topkIds, P + 1, k, s, P)).toEqual([100 + s * 10, 101 + s * 10, 102 + s * 10]);
      expect(at(grown.topkProbs, P + 1, k, s, P)[0]).toBeCloseTo(0.5 + s * 0.01, 6);
      expect(at(grown.entropy, P + 1, 1, s, P)[0]).toBeCloseTo(s + 0.5, 6);
      expect(at(grown.nextProb, P + 1, 1, s, P)[0]).toBeCloseTo(0.125 * (s + 1), 6);
      expect(at(grown.nextRank, P + 1, 1, s, P)).toEqual([40 - s]);
      expect(at(grown.kl, P + 1, 1, s, P)[0]).toBeCloseTo(3 - s, 6);
      expect(at(grown.nonfinite, P + 1, 1, s, P)).toEqual([s === 2 ? 1 : 0]);
      expect(at(grown.trackedProb, P + 1, M, s, P).map((v) => Number(v.toFixed(6)))).toEqual([0.01 * (s + 1), 0.02 * (s + 1)].map((v) => Number(v.toFixed(6))));
      expect(at(grown.trackedLogit, P + 1, M, s, P)).toEqual([s, s - 1]);
    }
    expect(Array.from(grown.positions)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(grown.tokenAt(P)).toBe(101);
    expect(grown.nextIds[P]).toBe(102);
    expect(grown.display(101)).toBe("␣new");
    expect(grown.display(1)).toBe(lens.display(1)); // old strings stay
    expect(grown.generatedFrom).toBe(5);
    expect(lens.generatedFrom).toBe(-1);
  });

  it("a column inside the grid replaces it (the prompt's last column learns its next token)", () => {
    const lens = base();
    const { msg, buffers } = columnMessage(P - 1, lens.tokenAt(P - 1), 9, 3);
    const next = withColumn(lens, decodeColumn(msg, buffers)!);
    expect(next.P).toBe(P);
    expect(next.nextIds[P - 1]).toBe(9);
    expect(lens.nextIds[P - 1]).toBe(-1);
    for (let s = 0; s < S; s++) {
      expect(at(next.nextRank, P, 1, s, P - 1)).toEqual([40 - s]);
      expect(at(next.topkIds, P, k, s, P - 1)).toEqual([103 + s * 10, 104 + s * 10, 105 + s * 10]);
      for (let c = 0; c < P - 1; c++) expect(at(next.kl, P, 1, s, c)).toEqual(at(lens.kl, P, 1, s, c));
    }
    expect(Array.from(next.inputIds)).toEqual(Array.from(lens.inputIds));
  });

  it("a column that leaves a gap or has other sites is ignored; other messages are not columns", () => {
    const lens = base();
    const gap = columnMessage(P + 1, 1, 2, 0);
    expect(withColumn(lens, decodeColumn(gap.msg, gap.buffers)!)).toBe(lens);
    expect(decodeColumn({ type: "progress" })).toBeNull();
    expect(decodeColumn({ type: "reply", request_id: "x" })).toBeNull();
    const bad = columnMessage(P, 1, 2, 0);
    expect(() => decodeColumn(bad.msg, [])).toThrow(/missing buffer/);
  });

  it("columns applied one after another build the grid a token at a time", () => {
    let lens = base();
    for (let i = 0; i < 3; i++) {
      const { msg, buffers } = columnMessage(lens.P, 50 + i, i < 2 ? 51 + i : -1, i, [[50 + i, `t${i}`]]);
      lens = withColumn(lens, decodeColumn(msg, buffers)!);
    }
    expect(lens.P).toBe(P + 3);
    expect([P, P + 1, P + 2].map((c) => lens.tokenAt(c))).toEqual([50, 51, 52]);
    expect(Array.from(lens.nextIds.subarray(P))).toEqual([51, 52, -1]);
    expect(lens.display(52)).toBe("t2");
    expect(at(lens.entropy, P + 3, 1, 1, P + 2)[0]).toBeCloseTo(2 + 1 + 0.5, 6);
  });
});

describe("progress", () => {
  it("says tokens done of total and the time left", () => {
    expect(progressText({ type: "progress", task: "generate", state: "running", done: 3, total: 20, eta_s: 4.2, elapsed_s: 1 })).toBe("generating 3 / 20 tokens · 4 s left");
    expect(progressText({ type: "progress", task: "compute", state: "running", done: 1, total: 9, eta_s: 125, elapsed_s: 1 })).toBe("computing 1 / 9 chunks · 2 min 05 s left");
    expect(formatSeconds(-1)).toBe("");
  });

  it("the stop button shows while work runs, sends stop, and hides when it is stopped", () => {
    const model = new FakeModel({ data: makeData() });
    const root = document.createElement("div");
    const d = new Disposers();
    const req = new Requester(model as never);
    const bar = new TaskBar(model as never, req, new Notices(), root, d);
    expect(bar.stopButton.hidden).toBe(true);
    bar.onProgress({ type: "progress", task: "generate", state: "running", done: 2, total: 5, eta_s: 3, elapsed_s: 2 });
    expect(bar.stopButton.hidden).toBe(false);
    expect(bar.generateButton.disabled).toBe(true);
    expect(root.dataset.progress).toBe("2/5");
    bar.stopButton.click();
    expect(model.sent.at(-1)!.type).toBe("stop");
    bar.onProgress({ type: "progress", task: "generate", state: "stopped", done: -1, total: 5, eta_s: 0, elapsed_s: 2 });
    expect(bar.stopButton.hidden).toBe(true);
    expect(bar.generateButton.disabled).toBe(false);
    expect(bar.text.textContent).toContain("stopped");
    expect(root.dataset.task).toBe("stopped");
    d.dispose();
    req.dispose();
  });
});

describe("the widget grows with column messages", () => {
  it("an appended column redraws the grid one token wider and the generate button asks the kernel", () => {
    const model = new FakeModel({ data: makeData(S, P, k), prompts: ["p"], lenses: ["logit lens"], lens: "logit lens" });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model: model as never, el });
    const root = el.querySelector<HTMLElement>(".lens-widget")!;
    expect(model.sent.some((m) => m.type === "view_ready")).toBe(true);
    expect(root.dataset.nPositions).toBe(String(P));
    const { msg, buffers } = columnMessage(P, 101, -1, 0, [[101, " new"]]);
    model.emit("msg:custom", msg, buffers);
    expect(root.dataset.nPositions).toBe(String(P + 1));
    expect(root.dataset.generatedFrom).toBe("5");
    expect(el.querySelector(".lw-title")!.textContent).toContain(`× ${P + 1} tokens`);
    el.querySelector<HTMLInputElement>(".lw-generate-n")!.value = "7";
    el.querySelector<HTMLButtonElement>(".lw-generate")!.click();
    const gen = model.sent.find((m) => m.type === "generate")!;
    expect(gen.max_new_tokens).toBe(7);
    cleanup();
  });
});
