// Tiny DOM helper: text only ever goes in through textContent.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = "",
  text?: string | number,
  attrs?: Record<string, string>,
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}
