// Bundle js/src/widget.ts -> lens_widget/static/widget.js (ESM, self-contained, CSS inlined as text).
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outfile = resolve(here, "../lens_widget/static/widget.js");
mkdirSync(dirname(outfile), { recursive: true });
const minify = !process.argv.includes("--dev");

await build({
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
