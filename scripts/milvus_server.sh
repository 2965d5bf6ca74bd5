#!/usr/bin/env bash
# Runs a Milvus Lite server for imgsim on this machine only (127.0.0.1), in the foreground.
# Point imgsim at it with the URI it prints. Stop it with Ctrl-C (SIGTERM also stops it cleanly).
# For a real Milvus standalone or cluster, use its own deployment and pass its http://host:19530.
# Usage: bash scripts/milvus_server.sh [DATA_DIR] [PORT]   (defaults: $IMGSIM_DATA_DIR/milvus, 19530)
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-${IMGSIM_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/imgsim}/milvus}"
port="${2:-19530}"
[ -x .venv/bin/python ] || { echo "no .venv: run bash scripts/start.sh (or scripts/test.sh) first" >&2; exit 1; }
.venv/bin/python -c "import milvus_lite" 2>/dev/null \
  || { echo "milvus-lite is not installed: .venv/bin/python -m pip install -r requirements.txt" >&2; exit 1; }
mkdir -p "$data_dir"
echo "== Milvus Lite server on http://127.0.0.1:$port, data in $data_dir"
# FAISS uses OpenMP: one thread keeps the server from taking every core from the app.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" exec .venv/bin/python -m milvus_lite server \
  --data-dir "$data_dir" --host 127.0.0.1 --port "$port"
