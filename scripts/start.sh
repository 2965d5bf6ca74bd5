#!/usr/bin/env bash
# Installs imgsim (its pinned requirements, then this checkout, editable: `imgsim` works from any
# directory) and starts the app on the demo catalogue (built on first run).
# Usage: bash scripts/start.sh [extra `streamlit run` options]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install tuxpaint-stamps-default   # the demo catalogue's pictures (optional: the app says what to do without)
make_venv requirements.txt
if [ -d /usr/share/tuxpaint/stamps ]; then
  echo "== building the demo catalogue (first run only; skips what is up to date)"
  .venv/bin/python -m imgsim build demo
fi
echo "== starting the app (the demo's models load at once) on http://localhost:${IMGSIM_PORT:-8501}"
exec .venv/bin/python scripts/serve.py --server.port "${IMGSIM_PORT:-8501}" \
  --browser.gatherUsageStats false "$@"
