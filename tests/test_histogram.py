"""Building histograms from counts: the same counters and encoding as hdrhistogram's record_value."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.recorder import PendingInterval
from loadgen import histogram
from loadgen.percentiles import summary_ms

VALUES = st.one_of(
    st.integers(min_value=-10, max_value=5_000),  # the first bucket, where the index is the value
    st.integers(min_value=0, max_value=histogram.HIGHEST_US * 2),  # every bucket, and beyond the range
)


def _by_record_value(counts: Counter[int]) -> HdrHistogram:
    h = histogram.new_histogram()
    for value, count in counts.items():
        h.record_value(min(max(value, histogram.LOWEST_US), histogram.HIGHEST_US), count)
    return h


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, max_size=300))
def test_histogram_of_counts_equals_record_value(values: list[int]) -> None:
    counts = Counter(values)
    ours = histogram.histogram_of_counts(counts)
    reference = _by_record_value(counts)
    assert ours.counts[:] == reference.counts[:]
    assert ours.get_total_count() == reference.get_total_count() == len(values)
    assert histogram.encode(ours) == histogram.encode(reference)
    if values:
        # Every figure a summary gives is a function of the counters, the total, min and max: equal here.
        assert ours.get_min_value() == reference.get_min_value()
        assert ours.get_max_value() == reference.get_max_value()


def test_the_summary_of_a_histogram_of_counts_is_the_summary_of_record_value() -> None:
    values = [1, 5, 17, 250, 999, 1000, 1001, 65_000, 3_000_000, 3_000_000]
    counts = Counter(values)
    ours, reference = histogram.histogram_of_counts(counts), _by_record_value(counts)
    assert summary_ms(ours) == summary_ms(reference)


@settings(max_examples=50, deadline=None)
@given(st.lists(VALUES, max_size=100), st.lists(VALUES, max_size=100))
def test_add_counts_accumulates(first: list[int], second: list[int]) -> None:
    h = histogram.new_histogram()
    histogram.add_counts(h, Counter(first).items())
    histogram.add_counts(h, Counter(second).items())
    assert histogram.encode(h) == histogram.encode(_by_record_value(Counter(first + second)))
    assert h.get_total_count() == len(first) + len(second)


def test_async_build_equals_sync_build_across_chunks() -> None:
    values = [(i * 7919) % 50_000 for i in range(10_000)]  # several chunks of distinct values
    pending = PendingInterval(0, 0, 3, 0, 0, {"a": (3, 2, 1, {}, values, values[:5])}, values[:100], 0.5)
    assert asyncio.run(pending.build_async()) == pending.build()


def test_async_build_lets_the_event_loop_run_meanwhile() -> None:
    values = [(i * 7919) % 200_000 for i in range(200_000)]  # tens of milliseconds of folding
    pending = PendingInterval(0, 0, 1, 0, 0, {"a": (1, 1, 0, {}, values, values)}, values, 0.5)
    ticks = 0

    async def ticker(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> None:
        done = asyncio.Event()
        task = asyncio.ensure_future(ticker(done))
        await asyncio.sleep(0)
        await pending.build_async()
        done.set()
        await task

    asyncio.run(main())
    assert ticks >= 5  # the loop ran between slices of the fold, not only before and after it


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=histogram.LOWEST_US, max_value=histogram.HIGHEST_US),
            st.integers(min_value=1, max_value=2**56),  # 40 of them stay within a signed 64-bit counter
        ),
        max_size=40,
    )
)
def test_encode_blob_is_hdrhistograms_encoding(items: list[tuple[int, int]]) -> None:
    """Byte for byte what ``HdrHistogram.encode`` makes, from empty to counts near the word's limit."""
    h = histogram.new_histogram()
    for value, count in items:
        h.record_value(value, count)
    assert histogram.encode_blob(h) == h.encode()
    assert histogram.encode(h) == (h.encode() if items else b"")


def test_encoding_makes_no_garbage_for_the_cycle_collector() -> None:
    """hdrhistogram's encoder makes a ctypes array type per buffer size (a cycle only a full collection
    frees); ours reuses one buffer, so histograms of many different highest values leave nothing behind."""
    import gc
    import sys

    histogram.encode_blob(histogram.histogram_of_counts({histogram.HIGHEST_US: 1}))  # the buffer, once
    gc.collect()
    gc.disable()
    try:
        before = sys.getallocatedblocks()
        for top in range(1_000, 2_000_000, 4_000):  # 500 different highest values, so as many sizes
            h = histogram.histogram_of_counts({top: 1, 7: 2})
            assert histogram.decode(histogram.encode(h)) is not None
            del h
        grown = sys.getallocatedblocks() - before
    finally:
        gc.enable()
    assert grown < 500  # hdrhistogram's own encoder: about 20 blocks per size, 10,000 here


def test_histograms_are_freed_without_the_cycle_collector() -> None:
    """hdrhistogram's histogram and its encoder point at each other; ours break that cycle, so the ~180 KiB
    of counters go as soon as the last reference does (agents and the coordinator make many a second)."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        made = histogram.new_histogram()
        made.record_value(1234, 3)
        decoded = histogram.decode(histogram.encode(made))
        assert decoded is not None and decoded.get_total_count() == 3
        again = histogram.decode(histogram.encode(decoded))  # a decoded histogram still encodes
        assert again is not None and again.get_value_at_percentile(50) == made.get_value_at_percentile(50)
        folded = histogram.histogram_of_counts({5: 2})
        refs = [weakref.ref(h) for h in (made, decoded, again, folded)]
        del made, decoded, again, folded
        assert [r() for r in refs] == [None] * 4
    finally:
        gc.enable()


def test_the_fold_yields_in_short_slices_that_grow_with_the_loop_s_iterations() -> None:
    """A quick loop gets the loop back after SLICE of folding; a loop whose iterations are long gets it back
    after SLICE_SHARE of an iteration, so that a busy second's fold still ends in a bounded number of
    iterations (a fake clock: each step of the fold is 0.1 ms of work, each loop iteration ``wait``)."""
    from agents.recorder import SLICE, SLICE_SHARE, _Pauser

    def steps_per_yield(wait: float) -> list[int]:
        now = 0.0
        runs: list[int] = []

        async def other_work() -> None:  # the rest of the loop: each iteration takes ``wait``
            nonlocal now
            while True:
                now += wait
                runs.append(steps)
                await asyncio.sleep(0)

        async def main() -> None:
            nonlocal now, steps
            other = asyncio.ensure_future(other_work())
            await asyncio.sleep(0)
            runs.clear()
            pause = _Pauser(clock=lambda: now)
            for _ in range(200):
                now += 0.0001
                steps += 1
                await pause()
            other.cancel()

        steps = 0
        asyncio.run(main())
        return [b - a for a, b in itertools.pairwise(runs)]

    def about(seconds: float) -> set[int]:  # the steps of 0.1 ms it takes to reach a slice (float sums)
        return {math.ceil(seconds / 0.0001 - 1e-6), math.ceil(seconds / 0.0001 - 1e-6) + 1}

    quick = steps_per_yield(0.0005)  # 0.5 ms iterations: slices of SLICE (0.25 ms)
    assert SLICE_SHARE * 0.0005 < SLICE
    assert set(quick[1:-1]) <= about(SLICE) and len(quick) > 50
    slow = steps_per_yield(0.02)  # 20 ms iterations: slices of a quarter of that, 5 ms
    assert set(slow[1:-1]) <= about(SLICE_SHARE * 0.02) and len(slow) < 6
