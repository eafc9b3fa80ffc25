#!/usr/bin/env bash
# Runs the same benchmark commands on two revisions' release builds, one after the other for
# each command, so that their figures compare within one run (this machine is noisy: read
# the ratios).
#
#   benches/compare_revisions.sh OLD_REV 'BENCH ARGS...' ['BENCH ARGS...' ...]
#
# OLD_REV is checked out into a temporary worktree; the new side is this working tree. Each
# command is a bench name and its arguments, e.g. 'observe_cost --readings 600000 --rounds 3'
# (benches/*.rs) or 'decode_batch --bench' (crates/ingest/benches). Both sides build into
# $BENCH_TARGET (default: a cache directory outside the clone); each side's bench executables
# are copied out before the other side builds, and every source is touched first, since the
# two checkouts share relative paths and so artifact names. Only bench targets are built
# (`--bench '*'`), not every library's unit tests in the bench profile.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
old_rev="$1"
shift
target="${BENCH_TARGET:-$HOME/.cache/tessera/bench-target}"
work="$(mktemp -d "${TMPDIR:-/tmp}/tessera-compare.XXXXXX")"
old_tree="$work/old"
git -C "$repo" worktree add -q --detach "$old_tree" "$old_rev"
# The copied executables take gigabytes: they go with the worktree.
trap 'git -C "$repo" worktree remove --force "$old_tree"; rm -rf "$work"' EXIT

build() { # build SIDE TREE: the bench executables of TREE into $work/bin-SIDE
  local side="$1" tree="$2"
  mkdir -p "$work/bin-$side"
  find "$tree/crates" "$tree/src" "$tree/benches" -name '*.rs' -exec touch {} +
  (cd "$tree" && CARGO_TARGET_DIR="$target" cargo bench --workspace --locked --no-run --bench '*' --message-format=json 2>/dev/null) |
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        shutil.copy(m["executable"], sys.argv[1] + "/" + m["target"]["name"])
 ' "$work/bin-$side"
  echo "compare: $side ($(git -C "$tree" rev-parse --short HEAD)) built: $(ls "$work/bin-$side" | tr '\n' ' ')"
}
build old "$old_tree"
build new "$repo"

for command in "$@"; do
  read -r bench args <<<"$command"
  for side in old new; do
    tree="$repo"; [[ $side == old ]] && tree="$old_tree"
    dir="$tree"; [[ -f "$tree/crates/ingest/benches/$bench.rs" ]] && dir="$tree/crates/ingest"
    echo "=== $side: $bench $args"
    # shellcheck disable=SC2086
    (cd "$dir" && CARGO_TARGET_DIR="$target" "$work/bin-$side/$bench" $args) # criterion writes its reports there
  done
done
