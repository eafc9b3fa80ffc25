#!/usr/bin/env python3
"""The reference query in Quix Streams, consuming Tessera's telemetry topic (JSON readings).

Per motor (the message key) and 10 s tumbling event-time window: count, mean and sample
stddev of vibration_x_rms and current_a, max temperature_c; then each window's vibration mean
against the same motor's previous 30 windows, z > 3. Run by benches/kafka_peers.rs, which
produced the topic; prints one JSON line with what it measured:

    quix_zscore.py --brokers HOST:PORT --topic T --expect-windows N

It stops once N windows have closed (every motor's last window stays open, as no later
reading closes it). Time and CPU (getrusage of this process, librdkafka's threads included)
run from the first message processed to the last window counted. State lives in RocksDB
without changelog topics (Tessera's side runs without checkpoints too).
"""

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import deque

import reference  # benches/peers/reference.py


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect-windows", type=int, required=True)
    args = parser.parse_args()

    from quixstreams import Application  # imported here: its start-up is not the engine's time

    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    app = Application(
        broker_address=args.brokers,
        consumer_group=f"quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(
        args.topic,
        value_deserializer="json",
        key_deserializer="str",
        timestamp_extractor=lambda value, headers, ts, ts_type: int(value["event_time_ms"]),
    )
    sdf = app.dataframe(topic)

    m = {"first": None, "cpu0": 0.0, "readings": 0, "windows": 0, "hits": 0, "done": None}

    def count_reading(value):
        if m["first"] is None:
            m["first"], m["cpu0"] = time.monotonic(), reference.cpu_seconds()
        m["readings"] += 1
        return value

    def window(w):
        row = reference.window_row(w["value"])
        row["start"] = w["start"]
        return row

    def zscore(row, state):
        history = deque(state.get("means", []), maxlen=reference.HISTORY)
        row["z"] = reference.score(history, row["vib_avg"])
        state.set("means", list(history))
        return row

    def count_window(row):
        m["windows"] += 1
        if row["z"] is not None and row["z"] > 3:
            m["hits"] += 1
        if m["windows"] >= args.expect_windows and m["done"] is None:
            m["done"], m["cpu1"] = time.monotonic(), reference.cpu_seconds()
            app.stop()
        return row

    sdf = sdf.apply(count_reading)
    initializer = lambda r: reference.fold(reference.new_window(), r)
    sdf = sdf.tumbling_window(duration_ms=10_000).reduce(reference.fold, initializer).final(closing_strategy="key")
    sdf = sdf.apply(window).apply(zscore, stateful=True).apply(count_window)
    app.run()
    if m["done"] is None:
        print(json.dumps({"error": f"stopped after {m['windows']} of {args.expect_windows} windows"}))
        return 1
    secs = m["done"] - m["first"]
    print(
        json.dumps(
            {
                "peer": "quixstreams",
                "readings": m["readings"],
                "secs": secs,
                "cpu_secs": m["cpu1"] - m["cpu0"],
                "windows": m["windows"],
                "hits": m["hits"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
