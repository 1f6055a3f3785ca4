import { defineConfig } from "vitest/config";
import { playwright } from "@vitest/browser-playwright";
import { readFileSync } from "node:fs";
import { resolve, dirname } from "node:path";
import type { Plugin } from "vite";
import { CHROMIUM_ARGS, CHROMIUM_PATH } from "./tests/browser/chromium.ts";

// esbuild bundles .css as text; do the same under vitest (vite would otherwise treat it as a stylesheet).
const cssAsText: Plugin = {
  name: "css-as-text",
  enforce: "pre",
  resolveId(source, importer) {
    if (source.endsWith(".css") && importer) return "\0css-text:" + resolve(dirname(importer), source) + ".js";
    return null;
  },
  load(id) {
    if (id.startsWith("\0css-text:")) return `export default ${JSON.stringify(readFileSync(id.slice(10, -3), "utf8"))};`;
    return null;
  },
};


export default defineConfig({
  plugins: [cssAsText],
  test: {
    projects: [
      {
        plugins: [cssAsText],
        test: {
          name: "unit",
          environment: "happy-dom",
          include: ["tests/unit/**/*.test.ts"],
        },
      },
      {
        plugins: [cssAsText],
        test: {
          name: "browser",
          include: ["tests/browser/**/*.test.ts"],
          browser: {
            enabled: true,
            headless: true,
            screenshotFailures: false,
            provider: playwright({
              launchOptions: {
                executablePath: CHROMIUM_PATH,
                args: CHROMIUM_ARGS,
              },
            }),
            instances: [{ browser: "chromium" }],
          },
        },
      },
    ],
  },
});
