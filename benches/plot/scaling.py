#!/usr/bin/env python3
"""Draws issue 25's scaling curves from the bench history into a PNG (docs/scaling.png).

    "$(benches/plot/setup.sh)" benches/plot/scaling.py [--history benches/history.jsonl] [--out docs/scaling.png]

Left: node_scaling's readings/s against the nodes in one consumer group: every run with the
newest run's arguments as a dot, their median as the line (this machine is noisy). Right:
motor_memory's resident bytes per motor against the motors held, per detection config, the
newest result of each. The title names the commits and the CPU they came from.
"""

import argparse
import json
import re
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def newest(history):
    """The newest result of each (bench, figure)."""
    latest = {}
    with open(history, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                latest[(r["bench"], r["figure"])] = r
    return latest


def node_runs(history):
    """node_scaling's results with the newest result's arguments and CPU: {nodes: [result]}."""
    results = []
    with open(history, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                m = re.fullmatch(r"readings/s, (\d+) nodes", r["figure"]) if r["bench"] == "node_scaling" else None
                if m:
                    results.append((int(m.group(1)), r))
    if not results:
        return {}
    newest = results[-1][1]
    runs = {}
    for nodes, r in results:
        if (r["args"], r["cpu"]) == (newest["args"], newest["cpu"]):
            runs.setdefault(nodes, []).append(r)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", default="benches/history.jsonl")
    parser.add_argument("--out", default="docs/scaling.png")
    args = parser.parse_args()
    latest = newest(args.history)

    nodes = node_runs(args.history)
    memory = {}
    for (bench, figure), r in latest.items():
        m = re.fullmatch(r"resident per motor, (\w+), (\d+) motors", figure)
        if bench == "motor_memory" and m:
            memory.setdefault(m.group(1), []).append((int(m.group(2)), r))
    if not nodes and not memory:
        raise SystemExit(f"{args.history}: no node_scaling or motor_memory results")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sources = set()
    if nodes:
        counts = sorted(nodes)
        for n in counts:
            left.scatter([n] * len(nodes[n]), [r["value"] / 1e6 for r in nodes[n]], color="tab:blue", alpha=0.4)
            sources.update((r["commit"], r["cpu"], r["cores"]) for r in nodes[n])
        medians = [statistics.median(r["value"] for r in nodes[n]) / 1e6 for n in counts]
        left.plot(counts, medians, marker="o", color="tab:blue", label="median")
        left.set_xticks(counts)
        left.legend()
    left.set_xlabel("nodes in one consumer group (same machine)")
    left.set_ylabel("M readings/s (gateway batches, mock cluster)")
    left.set_title("node_scaling")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    for config, points in sorted(memory.items()):
        points.sort()
        right.plot([n for n, _ in points], [r["value"] / 1e3 for _, r in points], marker="o", label=config)
        sources.update((r["commit"], r["cpu"], r["cores"]) for _, r in points)
    right.axhline(2.0, color="grey", linestyle="--", label="goal: 2 KB")
    right.set_xscale("log")
    right.set_xlabel("motors held (30 days of history each)")
    right.set_ylabel("KB resident per motor (incl. fixed buffers)")
    right.set_title("motor_memory")
    right.set_ylim(bottom=0)
    right.grid(alpha=0.3)
    right.legend()
    fig.suptitle("; ".join(f"{c} on {cpu}, {cores} cores" for c, cpu, cores in sorted(sources)), fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
