"""A self-contained HTML page of the widget: the bundled front end inline, the trait state as JSON.

The page needs no kernel, no network and no CDN: it inlines ``lens_widget/static/widget.js`` and a
small in-memory model (``get``/``set``/``on``/``off``/``save_changes``/``send``). Arrays travel as
``{"dtype", "shape", "b64"}`` (:func:`lens_widget.wire.json_state`, ``docs/wire.md``). Requests that need the kernel are answered
``ok: false, error: "no kernel (exported page)"``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..wire import json_state

__all__ = ["standalone_html", "bundle_source", "script_json", "BUNDLE_PATH"]

BUNDLE_PATH = Path(__file__).parent.parent / "static" / "widget.js"


def bundle_source() -> str:
    """The bundled front end (``lens_widget/static/widget.js``)."""
    try:
        return BUNDLE_PATH.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(
            f"the front-end bundle {BUNDLE_PATH} is missing. Build it from the repository root with: "
            "cd js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci && npm run build"
        ) from None


def script_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element: no '<', '>', '&' or line separators survive."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_BOOT = r"""
(async () => {
  const read = (id) => JSON.parse(document.getElementById(id).textContent);
  const state = read("lw-state");
  state._kernel = false;  // no kernel here: the front end disables what needs one (js/src/kernelless.ts)
  const src = read("lw-bundle");
  const handlers = new Map();
  const emit = (name, ...args) => { for (const cb of [...(handlers.get(name) || [])]) cb(...args); };
  const model = {
    get: (k) => state[k],
    set: (k, v) => { const old = state[k]; state[k] = v; if (old !== v) emit("change:" + k, v); },
    on: (name, cb) => { if (!handlers.has(name)) handlers.set(name, new Set()); handlers.get(name).add(cb); },
    off: (name, cb) => {
      if (!name) { handlers.clear(); return; }
      if (!cb) { handlers.delete(name); return; }
      handlers.get(name)?.delete(cb);
    },
    save_changes: () => {},
    send: (msg) => {
      const reply = { type: "reply", request_id: msg && msg.request_id, ok: false, error: "no kernel (exported page)" };
      setTimeout(() => emit("msg:custom", reply, []), 0);
    },
    widget_manager: { get_model: async () => { throw new Error("no kernel (exported page)"); } },
  };
  window.__lensModel = model;
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  try {
    const mod = await import(url);
    const widget = mod.default;
    const el = document.getElementById("lw-root");
    const def = typeof widget === "function" ? await widget() : widget;
    if (def.initialize) await def.initialize({ model });
    window.__lensCleanup = await def.render({ model, el });
    document.body.dataset.ready = "1";
  } catch (e) {
    const pre = document.createElement("pre");
    pre.textContent = "lens_widget failed to start: " + (e && e.stack || e);
    document.body.appendChild(pre);
    document.body.dataset.ready = "error";
  } finally {
    URL.revokeObjectURL(url);
  }
})();
"""


def standalone_html(state: dict[str, Any], title: str = "lens_widget") -> str:
    """One self-contained HTML page showing the widget with ``state`` (trait name -> value)."""
    bundle = bundle_source()
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(str(title), quote=True)}</title>\n"
        "<style>body{margin:8px;background:#fff}@media (prefers-color-scheme: dark){body{background:#1e1e1e}}</style>\n"
        "</head>\n<body>\n<div id=\"lw-root\"></div>\n"
        f"<script type=\"application/json\" id=\"lw-state\">{script_json(json_state(state))}</script>\n"
        f"<script type=\"application/json\" id=\"lw-bundle\">{script_json(bundle)}</script>\n"
        f"<script type=\"module\">{_BOOT}</script>\n"
        "</body>\n</html>\n"
    )
