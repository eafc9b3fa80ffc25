#!/usr/bin/env bash
# Side-by-side run of Tessera's stream benchmark and the peer engines of ../shared/bench, in one
# go on the same machine, so the ratios in docs/PERFORMANCE.md compare like with like:
#   (a) Tessera's window + z-score stage (one thread, in-memory Arrow batches) vs DuckDB batch
#       over the Parquet file with THREADS=1, on the 1000x10000 set (10 M rows);
#   (b, c) Tessera end to end from Kafka (embedded mock cluster) vs Flink SQL streaming over the
#       CSV (THREADS=2), on the 100x10000 set (1 M rows; the mock cluster keeps only a few MB per
#       partition, so 10 M readings do not fit), plus Tessera's alert latency.
# Needs: ../shared/bench/run.sh setup, and run.sh data for both sets (see its README).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_WORK=${BENCH_WORK:-/tmp/tessera-peer-bench}
peer=../shared/bench/run.sh
big=$BENCH_WORK/data-1000x10000
small=$BENCH_WORK/data-100x10000
cargo bench --bench stream_zscore --no-run
bench() { cargo bench -q --bench stream_zscore -- "$@"; }

echo "== (a) stage, 10 M rows: DuckDB parquet zscore (1 thread) then Tessera (1 thread)"
THREADS=1 REPS=${REPS:-2} "$peer" peers duckdb --motors 1000 --steps 10000 | grep -E 'zscore|^#'
bench --mode stage --data "$big" --rounds "${REPS:-2}"

echo "== (b, c) end to end, 1 M rows: Flink SQL streaming zscore (2 threads) then Tessera from Kafka"
FLINK_MODES=streaming THREADS=2 REPS=1 "$peer" peers flink --motors 100 --steps 10000 | grep -E 'zscore|^#'
bench --mode kafka --data "$small" --rounds 2 --partitions 128
