import { describe, expect, it } from "vitest";
import { displayToken } from "../../src/tokens";

// Expected values computed with lens_widget.tokens.display_token (Python).
const CASES: [string, string][] = [
  ["", "∅"],
  [" Paris", "␣Paris"],
  ["\n", "↵"],
  ["\t", "⇥"],
  ["\r\n", "⏎↵"],
  ["<0x0a>", "<0x0A>"],
  ["<0x0a>\n", "<0x0A>\n"],
  ["<0xzz>", "<0xzz>"],
  ["a\u200bb", "a\\u200bb"],
  ["\u202eevil", "\\u202eevil"],
  ["\u0000", "\\u0000"],
  ["\u2028", "\\u2028"],
  ["\u{E000}", "\\ue000"],
  ["\u{F0000}", "\\U000f0000"],
  ["\ud800", "\\ud800"],
  ["héllo wörld", "héllo␣wörld"],
  ["日本", "日本"],
  ["<img src=x onerror=alert(1)>", "<img␣src=x␣onerror=alert(1)>"],
  ["😀", "😀"],
];

describe("displayToken", () => {
  it.each(CASES)("%j -> %j", (input, want) => {
    expect(displayToken(input)).toBe(want);
  });
});
