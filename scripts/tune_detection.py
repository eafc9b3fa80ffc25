#!/usr/bin/env python3
"""Honest tuning of the shift judge on SKAB: leave-files-out validation.

Runs `tessera eval` once per setting of a small grid (SKAB valve1 + anomaly-free, the shift
judge alone, and the SQL rule set alone as a reference), keeps every motor's outcome, then
for each of 4 folds of files picks the setting with the best event F1 on the other folds'
files (with at most 0.5 false-alarm episodes per hour of normal data) and scores it on the
fold's own files. Prints the fitted figures (best setting scored on all files) beside the
held-out ones (each file scored by a setting chosen without it), as docs/DETECTION.md reports.

    scripts/tune_detection.py --tessera target/debug/tessera [--data ../shared/data] [--seed 1]
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

GRID = {
    "open_above": [6.0, 7.0, 8.0],
    "baseline": ["10m", "1h"],
    "min_baseline_windows": [30, 50],
    "t2": [True, False],
    "open_windows": [2, 3],
}
FOLDS = 4
MAX_FA_PER_HOUR = 0.5


def run(tessera, data, seed, rules, shift):
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "node.toml")
        with open(config, "w") as f:
            f.write("[detect.shift]\n")
            for key, value in shift.items():
                if isinstance(value, bool):
                    value = "true" if value else "false"
                elif isinstance(value, str):
                    value = f'"{value}"'
                f.write(f"{key} = {value}\n")
        out = os.path.join(tmp, "report.json")
        subprocess.run(
            [tessera, "eval", "--skab-dir", os.path.join(data, "skab"), "--seed", str(seed),
             "--rules", rules, "--config", config, "--json", out],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            return {m["motor"]: m for m in json.load(f)[0]["motors"]}


def scores(motors):
    events = sum(len(m["events_h"]) for m in motors)
    detected = sum(m["detected"] for m in motors)
    alerts = sum(m["alerts"] for m in motors)
    inside = sum(m["alerts_in_events"] for m in motors)
    hours = sum(m["normal_hours"] for m in motors)
    episodes = sum(m["false_alarm_episodes"] for m in motors)
    p = inside / alerts if alerts else 0.0
    r = detected / events if events else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"f1": f1, "p": p, "r": r, "fa_per_h": episodes / hours if hours else 0.0,
            "episodes": episodes, "hours": hours}


def best(results, names):
    def key(item):
        s = scores([item[1][n] for n in names])
        return (s["fa_per_h"] <= MAX_FA_PER_HOUR, s["f1"], -s["fa_per_h"])
    return max(results.items(), key=key)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--data", default=os.environ.get("TESSERA_DATA", "../shared/data"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    results = {}
    results["queries (SQL rule set)"] = run(args.tessera, args.data, args.seed, "queries", {})
    for values in itertools.product(*GRID.values()):
        shift = dict(zip(GRID.keys(), values))
        name = "shift " + " ".join(f"{k}={v}" for k, v in shift.items())
        results[name] = run(args.tessera, args.data, args.seed, "shift", shift)
        print(f"  {name}: {scores(list(results[name].values()))}", file=sys.stderr)

    names = sorted(next(iter(results.values())).keys())
    folds = [[n for i, n in enumerate(names) if i % FOLDS == k] for k in range(FOLDS)]
    held_out = []
    print("| fold | held-out files | setting chosen on the other folds |\n|---|---|---|")
    for k, fold in enumerate(folds):
        train = [n for n in names if n not in fold]
        chosen = best(results, train)
        held_out += [results[chosen][n] for n in fold]
        print(f"| {k} | {', '.join(n.removeprefix('skab-') for n in fold)} | {chosen} |")
    fitted_name = best(results, names)
    fitted = scores([results[fitted_name][n] for n in names])
    held = scores(held_out)
    print("\n| | setting | event P | event R | event F1 | false alarms / h normal |\n|---|---|---|---|---|---|")
    for label, name, s in [("fitted (all files)", fitted_name, fitted), ("held out (4 folds)", "per fold", held)]:
        print(f"| {label} | {name} | {s['p']:.2f} | {s['r']:.2f} | {s['f1']:.2f} | "
              f"{s['fa_per_h']:.2f} ({s['episodes']} in {s['hours']:.1f} h) |")
    reference = scores(list(results["queries (SQL rule set)"].values()))
    print(f"\nSQL rule set on all files: F1 {reference['f1']:.2f}, {reference['fa_per_h']:.2f} false alarms / h")


if __name__ == "__main__":
    main()
