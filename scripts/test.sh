#!/usr/bin/env bash
# Runs every test: formatting (cargo fmt --check), lints (clippy, warnings are errors), the
# dependency policy (cargo deny: licences, bans and duplicates, sources, and advisories when
# the advisory database can be had), then unit tests and the integration suite (embedded
# Kafka and a real Tansu broker process), golden and tidy checks. Installs what it needs
# first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-broker
export PATH="$HOME/.cargo/bin:$PATH"
# The SQL tests run third-party clients with this Python (the venv setup.sh made).
export TESSERA_PYTHON="${TESSERA_VENV:-$HOME/.cache/tessera/venv}/bin/python"
# helm for the chart tests (setup.sh puts it here; kubernetes-validate is in the venv).
export TESSERA_TOOLS="${TESSERA_TOOLS:-$HOME/.cache/tessera/tools}"

# Brokers (and moto's S3 server) started by tests are killed when their test ends; this catches a
# crashed run: the harness records each such process id in TESSERA_PID_DIR until it is reaped, and what is
# still recorded at the end is stopped by that id (if it is still that kind of process).
TESSERA_PID_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tessera-pids.XXXXXX")"
export TESSERA_PID_DIR
cleanup() {
  for file in "$TESSERA_PID_DIR"/tansu-* "$TESSERA_PID_DIR"/moto-* "$TESSERA_PID_DIR"/chromedriver-* "$TESSERA_PID_DIR"/chromium-*; do
    [[ -f "$file" ]] || continue
    pid="$(cat "$file")"
    kind="$(basename "$file")"; kind="${kind%-*}"
    if grep -q "$kind" "/proc/$pid/cmdline" 2>/dev/null; then
      # A chromedriver's children (Chromium) go first: their ids, from each process's parent id.
      if [[ "$kind" == chromedriver ]]; then
        for child in $(cat /proc/[0-9]*/stat 2>/dev/null | sed -n "s/^\([0-9]*\) (.*) . $pid .*/\1/p"); do
          kill -KILL "$child" 2>/dev/null || true
        done
      fi
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$TESSERA_PID_DIR"
}
trap cleanup EXIT

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo deny --locked check licenses bans sources
# The advisory database is a git repository on GitHub: fetched when reachable, else the copy
# already on this machine (cargo-deny keeps it under $CARGO_HOME/advisory-dbs) is used.
advisory_dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if timeout 120 cargo deny --locked fetch db >/dev/null 2>&1 || compgen -G "$advisory_dbs/*/crates" >/dev/null; then
  cargo deny --locked --offline check advisories
else
  echo "test: WARNING: advisories NOT checked: no copy of github.com/rustsec/advisory-db here and it cannot be fetched" >&2
fi
cargo test --workspace --locked "$@"
