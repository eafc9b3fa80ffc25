#!/usr/bin/env python3
"""The reference query in Pathway, consuming Tessera's telemetry topic (JSON readings).

Per motor and 10 s tumbling event-time window: count, mean and sample stddev of
vibration_x_rms and current_a, max temperature_c (Pathway's engine: windowby + reducers, each
window emitted once when event time has passed its end); then each window's vibration mean
against the same motor's previous 30 windows, z > 3 (in the subscriber, windows taken in
order of their start, as the other peers do it in Python too). Run by
benches/kafka_peers.rs, which produced the topic; prints one JSON line with what it measured:

    pathway_zscore.py --brokers HOST:PORT --topic T

The Kafka reader runs in Pathway's static mode: it reads each partition to its end and the
dataflow ends, which closes every window, each motor's last included (as Bytewax's does). In
streaming mode Pathway emits a window only when later input moves event time on, so after the
last message a third of the closable windows never came out (tried: 366 of 500). Time and CPU
(getrusage of this process, Pathway's engine threads and librdkafka's included) run from the
start of the dataflow (the graph built, the engine not yet started: its start-up is included,
as Pathway gives no hook at the first message in static mode) to its end. One Pathway process
with its default workers, without persistence (Tessera's side runs without checkpoints).
"""

import argparse
import json
import sys
import uuid
from time import monotonic
from collections import defaultdict, deque

import reference  # benches/peers/reference.py


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
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
        mode="static",
        format="json",
        schema=Reading,
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
        behavior=pw.temporal.exactly_once_behavior(),
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

    m = {"readings": 0, "windows": 0, "hits": 0}
    history = defaultdict(lambda: deque(maxlen=reference.HISTORY))
    pending = []

    def on_change(key, row, time, is_addition):
        if is_addition:
            pending.append(row)

    def on_count(key, row, time, is_addition):
        if is_addition:
            m["readings"] = row["readings"]

    def on_time_end(time):
        pending.sort(key=lambda r: (r["motor_id"], r["start"]))
        for r in pending:
            tmax = None if r["tmax"] == float("-inf") else r["tmax"]
            numbers = [r["n"], r["nv"], r["sv"], r["sv2"], r["nc"], r["sc"], r["sc2"], tmax]
            row = reference.window_row(numbers)
            z = reference.score(history[r["motor_id"]], row["vib_avg"])
            m["windows"] += 1
            if z is not None and z > 3:
                m["hits"] += 1
        pending.clear()

    # The readings read: Pathway's own count of its input rows.
    pw.io.subscribe(readings.reduce(readings=pw.reducers.count()), on_change=on_count)
    pw.io.subscribe(windows, on_change=on_change, on_time_end=on_time_end)
    first, cpu0 = monotonic(), reference.cpu_seconds()
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    on_time_end(None)
    secs, cpu = monotonic() - first, reference.cpu_seconds() - cpu0
    if m["readings"] == 0:
        print(json.dumps({"error": "no message read"}))
        return 1
    print(json.dumps({"peer": "pathway", "readings": m["readings"], "secs": secs, "cpu_secs": cpu,
                      "windows": m["windows"], "hits": m["hits"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
