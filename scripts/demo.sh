#!/usr/bin/env bash
# Runs `tessera demo`: embedded Kafka (librdkafka mock cluster), 3 sites, 1,000 simulated
# motors with injected faults, the ingest, and per-motor batch statistics. Extra arguments
# go to the demo (`scripts/demo.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --locked -q -p tessera-server --bin tessera -- demo "$@"
