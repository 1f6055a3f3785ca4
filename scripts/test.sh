#!/usr/bin/env bash
# Every test: the front end's unit and browser tests (vitest), then Python's (pytest), which
# include the exported-page, JupyterLab, Notebook 7 and marimo end-to-end tests and the notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd js && npx vitest run)
python3 -m pytest "$@"
