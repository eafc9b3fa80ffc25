#!/usr/bin/env bash
# The venv of benches/plot/scaling.py (matplotlib from PyPI at a pinned version), outside the
# clone; nothing when it is already there. Prints the venv's python.
#   benches/plot/setup.sh
set -euo pipefail
venv="${TESSERA_PLOT_VENV:-$HOME/.cache/tessera/venv-plot}"
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib==3.10.7 >&2
fi
echo "$venv/bin/python"
