#!/usr/bin/env bash
# Installs the test dependencies (Python packages, this checkout editable, Debian's Chromium and
# the demo stamps) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install chromium tuxpaint-stamps-default
make_venv requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
