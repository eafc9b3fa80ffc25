"""The reference query's arithmetic, shared by the Kafka-consuming peers (quix_zscore.py,
bytewax_zscore.py): a window's running numbers and its row, and the z-score against a
motor's previous 30 window means. An absent channel is NULL, as in SQL: it counts as a row
but not as a value of its column."""

import math
import resource

HISTORY = 30


def cpu_seconds():
    """CPU time of this process so far (user + system, librdkafka's threads included)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def new_window():
    """Rows; vibration count, sum, sum of squares; current the same; max temperature."""
    return [0, 0, 0.0, 0.0, 0, 0.0, 0.0, None]


def fold(a, r):
    a[0] += 1
    v, c, t = r.get("vibration_x_rms"), r.get("current_a"), r.get("temperature_c")
    if v is not None:
        a[1] += 1
        a[2] += v
        a[3] += v * v
    if c is not None:
        a[4] += 1
        a[5] += c
        a[6] += c * c
    if t is not None:
        a[7] = t if a[7] is None else max(a[7], t)
    return a


def merge(a, b):
    tmax = max((t for t in (a[7], b[7]) if t is not None), default=None)
    return [x + y for x, y in zip(a[:7], b[:7])] + [tmax]


def window_row(a):
    rows, nv, sv, sv2, nc, sc, sc2, tmax = a
    avg = lambda n, s: s / n if n else None
    std = lambda n, s, s2: math.sqrt(max(s2 - s * s / n, 0.0) / (n - 1)) if n > 1 else None
    return {"n": rows, "vib_avg": avg(nv, sv), "vib_std": std(nv, sv, sv2), "cur_avg": avg(nc, sc),
            "cur_std": std(nc, sc, sc2), "temp_max": tmax}


def score(history, vib_avg):
    """The z-score of `vib_avg` against `history` (a deque of up to 30 means, updated), or None
    while it holds fewer than 30 or they do not vary; a window without vibration is skipped."""
    if vib_avg is None:
        return None
    z = None
    if len(history) == HISTORY:
        mean = sum(history) / HISTORY
        sd = math.sqrt(sum((x - mean) ** 2 for x in history) / (HISTORY - 1))
        z = (vib_avg - mean) / sd if sd > 0 else None
    history.append(vib_avg)
    return z
