#!/usr/bin/env python3
"""The reference query in Pathway, consuming Tessera's telemetry topic (JSON readings).

Per motor and 10 s tumbling event-time window: count, mean and sample stddev of
vibration_x_rms and current_a, max temperature_c (Pathway's engine: windowby + reducers,
updated as readings arrive); then each window's vibration mean against the same motor's
previous 30 windows, z > 3 (in Python over the final windows, each motor's in order of their
start, as the other peers compute it in Python too). With `exactly_once_behavior` (each window
emitted once, when event time passes its end) Pathway dropped the readings of partitions read
behind the others as late: 1,664 of 5,979 windows came out on Tansu. Run by
benches/kafka_peers.rs, which produced the topic; prints one JSON line with what it measured:

    pathway_zscore.py --brokers HOST:PORT --topic T --expect-readings N

It stops once it has counted N readings and its windows have caught up with them: every window
is then final, each motor's last included (as Bytewax's end of input closes it). Pathway's
static mode (read to the end, then stop) was tried first: on Tansu it stopped ~900 readings
short of the end. Time and CPU (getrusage of this process, Pathway's engine threads and
librdkafka's included) run from the first readings Pathway counted (its first batch of input,
within its 100 ms commit interval of the first message) to the result. One Pathway process
with its default workers, without persistence (Tessera's side runs without checkpoints).
"""

import argparse
import json
import os
import sys
import uuid
from time import monotonic
from collections import defaultdict, deque

import reference  # benches/peers/reference.py


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect-readings", type=int, required=True)
    args = parser.parse_args()

    import pathway as pw  # imported here: its start-up is not the engine's time

    class Reading(pw.Schema):
        motor_id: str
        event_time_ms: int
        vibration_x_rms: float | None = pw.column_definition(default_value=None)
        current_a: float | None = pw.column_definition(default_value=None)
        temperature_c: float | None = pw.column_definition(default_value=None)

    readings = pw.io.kafka.read(
        rdkafka_settings={
            "bootstrap.servers": args.brokers,
            "group.id": f"pathway-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        },
        topic=args.topic,
        format="json",
        schema=Reading,
        autocommit_duration_ms=100,
    )
    # SQL's NULLs: an absent channel counts as a row but not as a value of its column.
    has = lambda c: pw.if_else(c.is_none(), 0, 1)
    value = lambda c: pw.coalesce(c, 0.0)
    rows = readings.select(
        motor_id=pw.this.motor_id,
        t=pw.this.event_time_ms,
        nv=has(pw.this.vibration_x_rms),
        v=value(pw.this.vibration_x_rms),
        v2=value(pw.this.vibration_x_rms) * value(pw.this.vibration_x_rms),
        nc=has(pw.this.current_a),
        c=value(pw.this.current_a),
        c2=value(pw.this.current_a) * value(pw.this.current_a),
        temp=pw.coalesce(pw.this.temperature_c, float("-inf")),
    )
    windows = rows.windowby(
        pw.this.t,
        window=pw.temporal.tumbling(duration=10_000),
        instance=pw.this.motor_id,
    ).reduce(
        motor_id=pw.this._pw_instance,
        start=pw.this._pw_window_start,
        n=pw.reducers.count(),
        nv=pw.reducers.sum(pw.this.nv),
        sv=pw.reducers.sum(pw.this.v),
        sv2=pw.reducers.sum(pw.this.v2),
        nc=pw.reducers.sum(pw.this.nc),
        sc=pw.reducers.sum(pw.this.c),
        sc2=pw.reducers.sum(pw.this.c2),
        tmax=pw.reducers.max(pw.this.temp),
    )

    m = {"readings": 0, "first": None, "cpu0": 0.0, "count_time": -1, "window_time": -1}
    # The windows as they stand: Pathway updates a window as its readings arrive (a removal
    # of its old row, then an addition of its new one).
    current = {}

    def on_change(key, row, time, is_addition):
        if is_addition:
            current[key] = row
        elif current.get(key) == row:
            del current[key]

    def on_count(key, row, time, is_addition):
        if is_addition:
            if m["first"] is None:
                m["first"], m["cpu0"] = monotonic(), reference.cpu_seconds()
            m["readings"], m["count_time"] = row["readings"], time

    def on_window_time_end(time):
        m["window_time"] = time
        finish_when_done()

    def finish_when_done():
        """Once every reading is counted and the windows have caught up with it: the result."""
        if m["readings"] < args.expect_readings or m["window_time"] < m["count_time"]:
            return
        windows_closed, hits = score_windows()
        secs, cpu = monotonic() - m["first"], reference.cpu_seconds() - m["cpu0"]
        print(json.dumps({"peer": "pathway", "readings": m["readings"], "secs": secs, "cpu_secs": cpu,
                          "windows": windows_closed, "hits": hits}), flush=True)
        os._exit(0)  # the streaming Kafka reader never ends by itself

    def score_windows():
        """The z-scores of the final windows, each motor's in order of their start."""
        history = defaultdict(lambda: deque(maxlen=reference.HISTORY))
        hits = 0
        for r in sorted(current.values(), key=lambda r: (r["motor_id"], r["start"])):
            tmax = None if r["tmax"] == float("-inf") else r["tmax"]
            row = reference.window_row([r["n"], r["nv"], r["sv"], r["sv2"], r["nc"], r["sc"], r["sc2"], tmax])
            z = reference.score(history[r["motor_id"]], row["vib_avg"])
            if z is not None and z > 3:
                hits += 1
        return len(current), hits

    # The readings read: Pathway's own count of its input rows.
    pw.io.subscribe(readings.reduce(readings=pw.reducers.count()), on_change=on_count)
    pw.io.subscribe(windows, on_change=on_change, on_time_end=on_window_time_end)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    print(json.dumps({"error": f"the dataflow ended after {m['readings']} of {args.expect_readings} readings"}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
