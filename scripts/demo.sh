#!/usr/bin/env bash
# Runs `tessera demo`: embedded Kafka (librdkafka mock cluster), 3 sites as full nodes in one
# Raft group, 1,000 simulated motors with injected faults, continuous queries and alerts,
# federated Flight SQL on 127.0.0.1:50051-50053, /metrics on 9464-9466. Ctrl-C stops it.
# Extra arguments go to the demo (`scripts/demo.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --locked -q -p tessera-cli --bin tessera -- demo "$@"
