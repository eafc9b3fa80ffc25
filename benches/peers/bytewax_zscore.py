#!/usr/bin/env python3
"""The reference query in Bytewax, consuming Tessera's telemetry topic (JSON readings).

Per motor (the message key) and 10 s tumbling event-time window: count, mean and sample
stddev of vibration_x_rms and current_a, max temperature_c; then each window's vibration mean
against the same motor's previous 30 windows, z > 3. Run by benches/kafka_peers.rs, which
produced the topic; prints one JSON line with what it measured:

    bytewax_zscore.py --brokers HOST:PORT --topic T

The Kafka source reads to the end of each partition and stops (tail=False); the end of input
closes every window, each motor's last included. Time and CPU (getrusage of this process,
librdkafka's threads included) run from the first message processed to the end of the
dataflow. One worker (run_main), without recovery (Tessera's side runs without checkpoints).
"""

import argparse
import json
import sys
import time
from collections import deque
from datetime import datetime, timedelta, timezone

import reference  # benches/peers/reference.py


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args()

    import bytewax.operators as op  # imported here: its start-up is not the engine's time
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import run_main

    m = {"first": None, "cpu0": 0.0, "readings": 0, "windows": 0, "hits": 0}

    def parse(msg):
        if m["first"] is None:
            m["first"], m["cpu0"] = time.monotonic(), reference.cpu_seconds()
        m["readings"] += 1
        return msg.key.decode(), json.loads(msg.value)

    def event_time(r):
        return datetime.fromtimestamp(int(r["event_time_ms"]) / 1000, tz=timezone.utc)

    def zscore(history, window):
        window_id, numbers = window
        history = history if history is not None else deque(maxlen=reference.HISTORY)
        row = reference.window_row(numbers)
        row["window"], row["z"] = window_id, reference.score(history, row["vib_avg"])
        return history, row

    class Count(StatelessSinkPartition):
        def write_batch(self, items):
            for _motor, row in items:
                m["windows"] += 1
                if row["z"] is not None and row["z"] > 3:
                    m["hits"] += 1

    class CountSink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return Count()

    flow = Dataflow("zscore")
    messages = op.input("kafka", flow, KafkaSource([args.brokers], [args.topic], tail=False))
    readings = op.map("parse", messages, parse)
    clock = EventClock(event_time, wait_for_system_duration=timedelta(seconds=1))
    windower = TumblingWindower(length=timedelta(seconds=10), align_to=datetime(2020, 1, 1, tzinfo=timezone.utc))
    windows = fold_window("window", readings, clock, windower, reference.new_window, reference.fold, reference.merge)
    # Windows of a motor close in order of their start; the z-score keeps the last 30 means.
    scored = op.stateful_map("zscore", windows.down, zscore)
    op.output("count", scored, CountSink())
    run_main(flow)
    if m["first"] is None:
        print(json.dumps({"error": "no message read"}))
        return 1
    secs, cpu = time.monotonic() - m["first"], reference.cpu_seconds() - m["cpu0"]
    print(json.dumps({"peer": "bytewax", "readings": m["readings"], "secs": secs, "cpu_secs": cpu,
                      "windows": m["windows"], "hits": m["hits"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
