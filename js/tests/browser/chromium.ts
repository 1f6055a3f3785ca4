// How the browser tests launch Chromium: Debian's binary and its flags. A copy of CHROMIUM and
// CHROMIUM_ARGS in tests/browser_support.py (the Python browser tests' list): change both together.
// Without the networking flags Chromium keeps trying (and failing) to reach Google's hosts.
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
