// Display form of a token string: must match lens_widget.tokens.display_token exactly.

// Python's `$` also matches before a final "\n", so "<0x0a>\n" counts as a byte token there.
const BYTE_TOKEN = /^<0x[0-9A-Fa-f]{2}>\n?$/;
const VISIBLE: Record<string, string> = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "⏎" };
// Cc control, Cf format (zero-width, bidi), Zl/Zp separators, Cs surrogates, Co private use, Cn unassigned
const HIDDEN = /^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]$/u;

export function displayToken(text: string): string {
  if (text === "") return "∅";
  if (BYTE_TOKEN.test(text)) return text.toUpperCase().replace("0X", "0x");
  let out = "";
  for (const ch of text) {
    const v = VISIBLE[ch];
    if (v !== undefined) {
      out += v;
      continue;
    }
    if (HIDDEN.test(ch)) {
      const cp = ch.codePointAt(0)!;
      out += cp <= 0xffff ? "\\u" + cp.toString(16).padStart(4, "0") : "\\U" + cp.toString(16).padStart(8, "0");
    } else {
      out += ch;
    }
  }
  return out;
}
