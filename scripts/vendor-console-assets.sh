#!/usr/bin/env bash
# Fetches the web console's vendored scripts again from the npm registry at their pinned
# versions and checks them against crates/node/assets/vendor/SHA256SUMS (run when updating a
# version: change it here, run, review the diff, update SHA256SUMS and the README table).
set -euo pipefail
cd "$(dirname "$0")/../crates/node/assets/vendor"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent htmx.org@2.0.11 htmx-ext-sse@2.2.4 uplot@1.6.32 >/dev/null)
for tgz in "$scratch"/*.tgz; do
  mkdir -p "${tgz%.tgz}" && tar -xzf "$tgz" -C "${tgz%.tgz}"
done
cp "$scratch"/htmx.org-2.0.11/package/dist/htmx.min.js htmx.min.js
cp "$scratch"/htmx-ext-sse-2.2.4/package/sse.js htmx-ext-sse.js
cp "$scratch"/uplot-1.6.32/package/dist/uPlot.iife.min.js uPlot.iife.min.js
cp "$scratch"/uplot-1.6.32/package/dist/uPlot.min.css uPlot.min.css
sha256sum -c SHA256SUMS
