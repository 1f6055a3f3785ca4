import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { displayToken } from "../../src/tokens";

// [input, expected display] pairs, written with lens_widget.tokens.display_token; a Python test checks
// display_token on the same file, so both languages answer to one table. Read with JSON.parse (not a
// JSON import): the file holds a lone surrogate, which Vite's JSON loader rejects.
const FIXTURE = resolve(__dirname, "../fixtures/display_cases.json");
const CASES: [string, string][] = JSON.parse(readFileSync(FIXTURE, "utf8"));

describe("displayToken", () => {
  it("the table covers every rule of the wire's display form", () => {
    const inputs = new Set(CASES.map(([s]) => s));
    // empty, space, newline, tab, CR, byte token, zero-width, bidi, control, astral private use, lone surrogate, emoji
    for (const s of ["", " ", "\n", "\t", "\r", "<0x0a>", "\u200b", "\u202eevil", "\u0000", "\u{F0000}", "\ud800", "😀"])
      expect(inputs.has(s), JSON.stringify(s)).toBe(true);
    expect(inputs.size).toBe(CASES.length);
  });
  it.each(CASES)("%j -> %j", (input, want) => {
    expect(displayToken(input)).toBe(want);
  });
});
