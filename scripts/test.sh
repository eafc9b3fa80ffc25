#!/usr/bin/env bash
# Runs every test: unit tests, the integration suite (embedded Kafka and a real Tansu broker
# process), golden and tidy checks. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-broker
export PATH="$HOME/.cargo/bin:$PATH"
# The SQL tests run third-party clients with this Python (the venv setup.sh made).
export TESSERA_PYTHON="${TESSERA_VENV:-$HOME/.cache/tessera/venv}/bin/python"
# helm for the chart tests (setup.sh puts it here; kubernetes-validate is in the venv).
export TESSERA_TOOLS="${TESSERA_TOOLS:-$HOME/.cache/tessera/tools}"

# Brokers started by tests are killed when their test ends; this catches a crashed run.
cleanup() { pkill -f "tansu broker --listener-url tcp://127.0.0.1:" 2>/dev/null || true; }
trap cleanup EXIT

cargo test --workspace --locked "$@"
