#!/usr/bin/env python3
"""Draws issue 27's fleet-scale curves from the bench history into a PNG (docs/fleet_scale.png).

    "$(benches/plot/setup.sh)" benches/plot/fleet.py [--history benches/history.jsonl] [--out docs/fleet_scale.png]

Left: the fleet aggregate's median latency against the number of sites, one line per WAN
latency (one way), with the 2 s goal. Middle: resident memory per simulated site. Right: the
control plane's write p99 per WAN latency, with the goal of 4x the one-way latency. Each
point is the newest result of its kind (fleet_scale); the title names the commits and CPUs.
"""

import argparse
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def newest(history):
    """The newest fleet_scale result of each figure."""
    latest = {}
    with open(history, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                if r["bench"] == "fleet_scale":
                    latest[r["figure"]] = r
    return latest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", default="benches/history.jsonl")
    parser.add_argument("--out", default="docs/fleet_scale.png")
    args = parser.parse_args()
    latest = newest(args.history)
    if not latest:
        raise SystemExit(f"{args.history}: no fleet_scale results")

    aggregate, memory, writes = {}, {}, {}
    for figure, r in latest.items():
        m = re.fullmatch(r"fleet aggregate p50, (\d+) sites, (\d+) ms", figure)
        if m:
            aggregate.setdefault(int(m.group(2)), []).append((int(m.group(1)), r))
        m = re.fullmatch(r"resident per site, (\d+) sites", figure)
        if m:
            memory[int(m.group(1))] = r
        m = re.fullmatch(r"control-plane write p99, (\d+) members, (\d+) ms", figure)
        if m:
            writes[(int(m.group(1)), int(m.group(2)))] = r
    # The control plane's newest results, each labelled with where its members kept their data.
    with open(args.history, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line) if line.strip() else None
            m = r and r["bench"] == "fleet_scale" and re.fullmatch(r"control-plane write p99, (\d+) members, (\d+) ms", r["figure"])
            if m:
                disk = "tmpfs" if "/dev/shm" in r["args"] else "disk"
                writes[(int(m.group(1)), int(m.group(2)), disk)] = r
    writes = {k: v for k, v in writes.items() if len(k) == 3}

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4.2))
    sources = set()
    for latency, points in sorted(aggregate.items()):
        points.sort()
        left.plot([s for s, _ in points], [r["value"] for _, r in points], marker="o", label=f"{latency} ms one way")
        sources.update((r["commit"], r["cpu"], r["cores"]) for _, r in points)
    left.axhline(2000, color="grey", linestyle="--", label="goal: 2 s at 100 sites, 50 ms")
    left.set_xlabel("sites")
    left.set_ylabel("fleet aggregate, median ms (request to last row)")
    left.set_title("fleet aggregate")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend()

    sites = sorted(memory)
    middle.plot(sites, [memory[s]["value"] / 1e6 for s in sites], marker="o", color="tab:green")
    sources.update((memory[s]["commit"], memory[s]["cpu"], memory[s]["cores"]) for s in sites)
    middle.set_xlabel("sites (one process)")
    middle.set_ylabel("MB resident per site endpoint")
    middle.set_title("memory per simulated site")
    middle.set_ylim(bottom=0)
    middle.grid(alpha=0.3)

    keys = sorted(writes)
    labels = [f"{members} members\n{latency} ms, {disk}" for members, latency, disk in keys]
    labels = [label.replace("\n", ", ") for label in labels]
    right.barh(labels, [writes[k]["value"] for k in keys], color="tab:purple")
    right.tick_params(axis="y", labelsize=8)
    for i, (members, latency, _) in enumerate(keys):
        if latency:
            right.vlines(4 * latency, i - 0.4, i + 0.4, color="grey", linestyle="--")
    sources.update((writes[k]["commit"], writes[k]["cpu"], writes[k]["cores"]) for k in keys)
    right.set_xlabel("control-plane write p99, ms (dashed: 4x one way)")
    right.set_title("control plane: 5 voters, the rest learners")
    right.grid(alpha=0.3, axis="x")

    fig.suptitle("; ".join(f"{c} on {cpu}, {cores} cores" for c, cpu, cores in sorted(sources)), fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
