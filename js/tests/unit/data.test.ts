import { describe, expect, it } from "vitest";
import { decodeArray, decodeLens, decodeResult, typedFromBytes } from "../../src/data";
import { makeData, wire } from "../fixture";

describe("decodeArray", () => {
  it("honours a non-zero aligned byteOffset without copying", () => {
    const w = wire("float32", [2, 2], [1.5, 2.5, 3.5, 4.5], 8);
    const a = decodeArray(w as never) as Float32Array;
    expect(Array.from(a)).toEqual([1.5, 2.5, 3.5, 4.5]);
    expect(a.byteOffset).toBe(8);
    expect(a.buffer).toBe((w.buffer as DataView).buffer);
  });
  it("copies when the offset is not aligned to the element size", () => {
    const w = wire("int32", [3], [7, -8, 9], 3);
    const a = decodeArray(w as never) as Int32Array;
    expect(Array.from(a)).toEqual([7, -8, 9]);
    expect(a.byteOffset % 4).toBe(0);
  });
  it("accepts ArrayBuffer, typed arrays and base64", () => {
    const f = new Float32Array([0.25, -1]);
    expect(Array.from(decodeArray({ dtype: "float32", shape: [2], buffer: f.buffer }) as Float32Array)).toEqual([0.25, -1]);
    const u = new Uint8Array(new Int32Array([5, 6]).buffer);
    expect(Array.from(decodeArray({ dtype: "int32", shape: [2], buffer: u }) as Int32Array)).toEqual([5, 6]);
    // base64 of int32 LE [1, 258] = 01 00 00 00 02 01 00 00
    expect(Array.from(decodeArray({ dtype: "int32", shape: [2], b64: "AQAAAAIBAAA=" }))).toEqual([1, 258]);
    expect(Array.from(decodeArray({ dtype: "uint8", shape: [3], b64: "AQID" }))).toEqual([1, 2, 3]);
  });
  it("reads buffer_index from a message's buffers (DataView with offset)", () => {
    const bytes = new Uint8Array(12);
    new Float32Array(bytes.buffer, 4, 2).set([0.5, 0.25]);
    const res = decodeResult<{ probs: Float32Array; n: number }>(
      { probs: { dtype: "float32", shape: [2], buffer_index: 1 }, n: 3 },
      [new DataView(new ArrayBuffer(1)), new DataView(bytes.buffer, 4, 8)],
    );
    expect(Array.from(res.probs)).toEqual([0.5, 0.25]);
    expect(res.n).toBe(3);
  });
  it("rejects shape mismatches and bad dtypes", () => {
    expect(() => decodeArray({ dtype: "int32", shape: [3], buffer: new Int32Array(2) })).toThrow(/shape/);
    expect(() => typedFromBytes(new Uint8Array(4), "float64" as never)).toThrow(/dtype/);
    expect(() => decodeArray({ dtype: "int32", shape: [1], buffer: new Uint8Array(3) })).toThrow(/whole number/);
  });
});

describe("decodeLens", () => {
  it("decodes every array of the data trait at a non-zero offset", () => {
    const lens = decodeLens(makeData(4, 6, 3, 4))!;
    expect(lens.S).toBe(4);
    expect(lens.P).toBe(6);
    expect(lens.k).toBe(3);
    expect(lens.M).toBe(2);
    expect(lens.topkIds.length).toBe(4 * 6 * 3);
    expect(lens.topkIds[(2 * 6 + 3) * 3 + 1]).toBe((2 + 3 + 1) % 8);
    expect(lens.nonfinite[1]).toBe(1);
    expect(Number.isNaN(lens.nextProb[5])).toBe(true);
    expect(lens.display(1)).toBe("␣Paris");
    expect(lens.display(4)).toBe("∅");
    expect(lens.vocab.get(0)).toBe("<img src=x onerror=alert(1)>");
    expect(lens.display(999)).toBe("#999");
  });
  it("reads wire version 1 and refuses any other with a clear error", () => {
    expect(decodeLens({ ...makeData(), version: 1 })).not.toBeNull();
    expect(() => decodeLens({ ...makeData(), version: 2 })).toThrow(/wire version 2; this front end reads version 1/);
    expect(() => decodeLens({ ...makeData(), version: undefined })).toThrow(/wire version null/);
    expect(() => decodeLens({ ...makeData(), version: "1" })).toThrow(/wire version "1"/);
  });
  it("returns null for empty data", () => {
    expect(decodeLens({})).toBeNull();
    expect(decodeLens(undefined)).toBeNull();
  });
});
