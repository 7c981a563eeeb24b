"""Micro-benchmarks behind the hot-path notes in docs/benchmarks.md. Prints one JSON object (microseconds).

- ``record_value``: one ``HdrHistogram.record_value`` as the recorder calls it (3 per request: send lag,
  response time, service time), against two cheaper ways to count the same samples: a per-interval dict of
  raw microsecond values (folded into the histogram with one ``record_value(v, count)`` per distinct value
  at the end of the second), and an inline bucket-index computation into a plain list of counts.
- ``task_per_request`` vs ``worker_wake``: what the httpx engine's structure costs per request: a task per
  request, or a long-lived worker coroutine woken through a future.
- ``arrivals_*``: the real :class:`agents.arrivals.ArrivalLoop` and :class:`agents.recorder.Recorder` with an
  engine that does nothing, for 2 s at a constant rate on uvloop: CPU microseconds per arrival, the share of
  a core, wake-ups per arrival and the p99 send lag. (A loop that sleeps less than uvloop's 1 ms timer tick
  spins: it used a whole core at any rate above ~2,000/s until it was changed to sleep at least a tick.)
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import timeit
from typing import Any

import uvloop

from loadgen import histogram

N = 100_000


def recorder_costs() -> dict[str, float]:
    rng = random.Random(1)
    values = [int(rng.lognormvariate(7, 1)) + 1 for _ in range(N)]
    h = histogram.new_histogram()
    record = h.record_value

    def hdr() -> None:
        for v in values:
            record(v)

    counts: dict[int, int] = {}

    def raw_dict() -> None:
        get = counts.get
        for v in values:
            counts[v] = get(v, 0) + 1

    def fold() -> None:
        for v, c in counts.items():
            record(v, c)
        counts.clear()

    table = [0] * h.counts_len
    mask, unit, half_mag, half = (
        h.sub_bucket_mask,
        h.unit_magnitude,
        h.sub_bucket_half_count_magnitude,
        h.sub_bucket_half_count,
    )

    def inline_index() -> None:
        for v in values:
            bucket = (v | mask).bit_length() - half_mag - 1 - unit
            table[((bucket + 1) << half_mag) + (v >> (bucket + unit)) - half] += 1

    per = {
        name: min(timeit.repeat(fn, number=1, repeat=5)) / N * 1e6
        for name, fn in (("record_value", hdr), ("dict_count", raw_dict), ("inline_index", inline_index))
    }
    raw_dict()
    distinct = len(counts)
    per["fold_per_distinct_value"] = timeit.timeit(fold, number=1) / max(1, distinct) * 1e6
    per["distinct_values_in_100k"] = float(distinct)
    return per


async def structure_costs() -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done = 0

    async def one() -> None:
        nonlocal done
        done += 1

    began = time.perf_counter()
    for _ in range(N // 1000):
        batch = [loop.create_task(one()) for _ in range(1000)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del batch
    task_cost = (time.perf_counter() - began) / N * 1e6

    idle: list[asyncio.Future[int]] = []

    async def worker() -> None:
        nonlocal done
        while True:
            future: asyncio.Future[int] = loop.create_future()
            idle.append(future)
            await future
            done += 1

    workers = [loop.create_task(worker()) for _ in range(1000)]
    await asyncio.sleep(0)
    began = time.perf_counter()
    for _ in range(N // 1000):
        for _ in range(1000):
            idle.pop().set_result(1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    wake_cost = (time.perf_counter() - began) / N * 1e6
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return {"task_per_request": task_cost, "worker_wake": wake_cost}


class _NullEngine:
    in_flight = 0
    connections = 0
    opened = 0
    peak_streams = 0
    open_failures: dict[str, int] = {}  # noqa: RUF012  (read only)

    def __init__(self) -> None:
        from agents.engine import Due

        self.due = Due()  # never released from here: the loop's timer does it all

    async def start(self) -> None:
        pass

    def submit(self, req: int, intended: float) -> None:
        pass

    async def drain(self, deadline: float) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _p99_ms(lag: Any) -> float:
    """p99 of the recorder's send lag, whether it keeps raw microseconds or an HDR histogram."""
    if isinstance(lag, list):
        values = sorted(lag)
        return values[int(0.99 * (len(values) - 1))] / 1000.0 if values else 0.0
    return float(lag.get_value_at_percentile(99.0)) / 1000.0


async def arrival_loop_cost(rate: float) -> dict[str, float]:
    from agents.arrivals import ArrivalLoop
    from agents.recorder import Recorder
    from loadgen.curve import RateCurve
    from loadgen.profile import Stage
    from loadgen.schedule import ArrivalSchedule

    seconds = 2.0
    wakes = 0

    async def sleep(delay: float) -> None:
        nonlocal wakes
        wakes += 1
        await asyncio.sleep(delay)

    schedule = ArrivalSchedule(
        RateCurve(rate, [Stage(seconds, rate)]), "constant", 1.0, 1.0, random.Random(1)
    )
    recorder = Recorder(["home"])
    loop = ArrivalLoop(
        schedule,
        _NullEngine(),
        recorder,
        lambda: 0,
        start=time.monotonic(),
        max_in_flight=10_000,
        clock=time.monotonic,
        sleep=sleep,
    )
    cpu = time.process_time()
    await loop.run()
    cpu = time.process_time() - cpu
    arrivals = rate * seconds
    return {
        "cpu_us_per_arrival": cpu / arrivals * 1e6,
        "core_share": cpu / seconds,
        "wakes_per_arrival": wakes / arrivals,
        "lag_p99_ms": _p99_ms(recorder._lag),
    }


async def arrival_costs() -> dict[str, float]:
    out: dict[str, float] = {}
    for rate in (2_000, 20_000, 100_000):
        for key, value in (await arrival_loop_cost(rate)).items():
            out[f"arrivals_{rate}_{key}"] = value
    return out


def main() -> None:
    out = recorder_costs()
    out.update(uvloop.run(structure_costs()))
    out.update(uvloop.run(arrival_costs()))
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))


if __name__ == "__main__":
    main()
