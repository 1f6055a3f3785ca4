// Bundle js/src/widget.ts -> lens_widget/static/widget.js (ESM, self-contained, CSS inlined as text).
import { context } from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outfile = resolve(here, "../lens_widget/static/widget.js");
mkdirSync(dirname(outfile), { recursive: true });
const watch = process.argv.includes("--watch");
const minify = !process.argv.includes("--dev") && !watch;

const ctx = await context({
  entryPoints: [resolve(here, "src/widget.ts")],
  outfile,
  bundle: true,
  format: "esm",
  target: ["es2020"],
  platform: "browser",
  minify,
  sourcemap: false,
  loader: { ".css": "text" },
  define: { "define.amd": "false" },
  logLevel: "info",
});
if (watch) {
  await ctx.watch(); // rebuilds on every change; ANYWIDGET_HMR=1 then reloads the widget live
} else {
  await ctx.rebuild();
  await ctx.dispose();
}
