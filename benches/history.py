#!/usr/bin/env python3
"""Compares each bench figure's newest result with its earlier ones (benches/history.jsonl).

    benches/history.py [--file FILE] [--tolerance 0.2] [--all]

Figures are compared only with figures of the same bench, arguments and CPU model: a CPU
changes the figures more than most regressions do. The newest result of each is set against
the median of up to five results before it; a result worse than that by more than the
tolerance (a fraction) is a drop. Prints one line per figure and exits 1 if any dropped.
Results are written by the benches when TESSERA_BENCH_HISTORY names the file
(src/bench_history.rs).
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", default="benches/history.jsonl")
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--all", action="store_true", help="also list figures with a single result")
    args = parser.parse_args()

    groups = defaultdict(list)
    with open(args.file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                key = (r["bench"], r["figure"], r["args"], r["cpu"])
                groups[key].append(r)
            except (ValueError, KeyError) as e:
                print(f"{args.file}:{number}: not a bench result ({e})", file=sys.stderr)
                return 2

    drops = 0
    for (bench, figure, bench_args, cpu), results in sorted(groups.items()):
        results.sort(key=lambda r: r["at"])
        newest = results[-1]
        earlier = [r["value"] for r in results[-6:-1]]
        label = f"{bench} [{bench_args}] {figure} on {cpu}"
        if not earlier:
            if args.all:
                print(f"first  {label}: {newest['value']:.6g} {newest['unit']} at {newest['commit']}")
            continue
        base = statistics.median(earlier)
        if base == 0:
            continue
        change = newest["value"] / base
        worse = change < 1 - args.tolerance if newest["better"] == "higher" else change > 1 + args.tolerance
        drops += worse
        verdict = "DROP " if worse else "ok   "
        print(
            f"{verdict} {label}: {newest['value']:.6g} {newest['unit']} at {newest['commit']}"
            f" vs median {base:.6g} of {len(earlier)} earlier ({change:.2f}x, {newest['better']} is better)"
        )
    if drops:
        print(f"{drops} figure(s) dropped by more than {args.tolerance:.0%}", file=sys.stderr)
    return 1 if drops else 0


if __name__ == "__main__":
    sys.exit(main())
