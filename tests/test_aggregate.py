"""Merging intervals: exact against one histogram of all samples, and robust to bad content."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.recorder import Recorder
from coordinator.aggregate import RunAggregate
from coordinator.clock_sync import ClockSample, estimate
from loadgen import histogram
from loadgen.curve import RateCurve
from loadgen.errors import WireError
from loadgen.percentiles import PERCENTILES, mean_value, summary_ms, values_at_percentiles
from loadgen.profile import Stage
from loadgen.wire import Interval

CURVE = RateCurve(10, [Stage(10, 10)])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(min_value=1, max_value=10_000_000), min_size=0, max_size=200),
        min_size=1,
        max_size=5,
    )
)
def test_merge_equals_one_histogram_of_all_samples(per_agent: list[list[int]]) -> None:
    agg = RunAggregate(["a"], CURVE)
    everything = histogram.new_histogram()
    for i, samples in enumerate(per_agent):
        rec = Recorder(["a"])
        for us in samples:
            rec.scheduled(0, 0.0)
            rec.response(0, 0.0, 0.0, us / 1e6, 200)
            everything.record_value(histogram.clamp_us(us / 1e6))
        rec.seal_arrivals()
        agg.add(f"agent{i}", rec.take_interval(0, 0))
    closed = agg.close_all()
    assert agg.latency.get_total_count() == everything.get_total_count()
    assert summary_ms(closed[0].latency) == summary_ms(everything)
    assert summary_ms(agg.latency) == summary_ms(everything)
    assert agg.totals.ok == sum(len(s) for s in per_agent)
    has = everything.get_total_count() > 0
    for key, p in (("p50", 50), ("p99", 99)):  # the per-second figures, from the fast percentile pass
        assert closed[0].summary[key] == (everything.get_value_at_percentile(p) / 1000.0 if has else None)


def test_counts_add_up_and_intervals_close_when_all_agents_reported() -> None:
    agg = RunAggregate(["a", "b"], CURVE)
    recs = {x: Recorder(["a", "b"]) for x in ("x", "y")}
    for second in range(3):
        for agent, rec in recs.items():
            for _ in range(5):
                rec.scheduled(0, 0.001)
                rec.response(0, 0.0, 0.001, 0.002, 200)
            rec.scheduled(1, 0.0)
            rec.response(1, 0.0, 0.0, 0.5, 503)
            rec.dropped(1)
            rec.seal_arrivals()
            agg.add(agent, rec.take_interval(second, 0))
        if second == 0:
            assert agg.close(["x", "y"], now_index=0) and agg.closed_through == 0
    closed = agg.close(["x", "y"], now_index=2)
    assert [c.index for c in closed] == [1, 2]
    s = closed[-1].summary
    assert (s["scheduled"], s["ok"], s["failed"], s["dropped"]) == (14, 10, 2, 2)
    assert s["errors"] == {"http_503": 2}
    assert agg.totals.scheduled == 42
    assert agg.totals.ok + agg.totals.failed + agg.totals.dropped == agg.totals.scheduled
    assert agg.names["b"].counts.failed == 6


def test_slow_agent_does_not_hold_intervals_forever() -> None:
    agg = RunAggregate(["a"], CURVE)
    rec = Recorder(["a"])
    rec.seal_arrivals()
    agg.add("fast", rec.take_interval(5, 0))
    assert agg.close(["fast", "slow"], now_index=5, grace=3)[-1].index == 2
    # data for a closed second still counts in the totals
    rec.scheduled(0, 0.0)
    rec.response(0, 0.0, 0.0, 0.001, 200)
    rec.seal_arrivals()
    agg.add("slow", rec.take_interval(1, 0))
    assert agg.totals.ok == 1
    assert agg.late_intervals == 1


@pytest.mark.parametrize(
    "names",
    [
        {"a": [1, 2]},
        {"a": [1, 1, 0, {}, b"garbage", b""]},
        {"a": [-1, 0, 0, {}, b"", b""]},
        {"zzz": [1, 1, 0, {}, b"", b""]},
        {"a": [1, 1, 0, {"x": "y"}, b"", b""]},
    ],
)
def test_bad_interval_content_is_refused_and_changes_nothing(names: dict[str, list[object]]) -> None:
    agg = RunAggregate(["a"], CURVE)
    with pytest.raises(WireError):
        agg.add("x", Interval(0, 0, 1, 0, 0, names, b"", 0.0))  # type: ignore[arg-type]
    assert agg.totals.scheduled == 0


def test_clock_estimate_takes_the_tightest_round_trip() -> None:
    rnd = random.Random(3)
    true_offset = 123.456
    samples = []
    for _ in range(20):
        send = rnd.uniform(0, 100)
        there = rnd.uniform(0.0001, 0.01)
        back = rnd.uniform(0.0001, 0.01)
        samples.append(ClockSample(send, send + there + true_offset, send + there + back))
    est = estimate(samples)
    assert abs(est.offset - true_offset) <= est.error + 1e-12
    assert est.error < 0.01


def test_checkpoint_round_trip_keeps_every_count_and_histogram(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from coordinator.state import aggregate_state, read_state, restore_aggregate, write_state

    agg = RunAggregate(["a", "b"], CURVE)
    rec = Recorder(["a", "b"])
    for second in range(4):
        for i in range(20):
            rec.scheduled(i % 2, 0.0)
            rec.response(i % 2, 0.0, 0.001, 0.001 * (i + 1), 200 if i % 7 else 500)
        rec.seal_arrivals()
        agg.add("x", rec.cut(second, 0, 0.5, 0, 10 + second, stolen=0.1 * second).build())
        if second == 1:
            agg.close(["x"], now_index=1)
    write_state(tmp_path, {"aggregate": aggregate_state(agg)})
    back = restore_aggregate(read_state(tmp_path)["aggregate"], ["a", "b"], CURVE)
    # a re-sent interval is recognised after the restore
    assert back.add("x", Interval(3, 0, 0, 0, 0, {}, b"", 0.0)) is False
    for a in (agg, back):
        a.close_all()
    assert back.totals == agg.totals
    assert summary_ms(back.latency) == summary_ms(agg.latency)
    assert summary_ms(back.names["b"].service) == summary_ms(agg.names["b"].service)
    assert back.agent("x").contiguous == 3
    assert back.agent("x").connections_max == agg.agent("x").connections_max == 13
    assert back.agent("x").stolen_max == agg.agent("x").stolen_max == pytest.approx(0.3)
    assert back.agent("x").stolen_sum == agg.agent("x").stolen_sum == pytest.approx(0.6)


def test_hours_are_exact_from_merged_histograms() -> None:
    from coordinator.hours import HourTable

    table = HourTable()
    truth = [histogram.new_histogram() for _ in range(3)]
    rnd = random.Random(2)
    for second in range(0, 3 * 3600, 60):  # a second every minute over three hours
        h = histogram.new_histogram()
        for _ in range(50):
            v = int(rnd.lognormvariate(9, 1)) + 1
            h.record_value(v)
            truth[second // 3600].record_value(v)
        table.add(second, {"scheduled": 50, "ok": 49, "failed": 1}, h)
    back = HourTable.restore(table.state())
    rows = back.rows()
    assert [r["hour"] for r in rows] == [0, 1, 2]
    for row, h in zip(rows, truth, strict=True):
        assert row["p95"] == summary_ms(h)["p95"]
        assert row["p99"] == summary_ms(h)["p99"]
        assert (row["scheduled"], row["ok"], row["failed"]) == (3000, 2940, 60)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(min_value=1, max_value=3_600_000_000), max_size=300), min_size=1, max_size=6
    )
)
def test_fast_merge_equals_hdrhistogram_add(batches: list[list[int]]) -> None:
    """Every form a histogram travels in (the agents' binary forms, the standard base64 text) merges into
    the counters hdrhistogram's own decode and add make."""
    slow = histogram.new_histogram()
    merged = {form: histogram.new_histogram() for form in ("text", "wire")}
    merger = histogram.Merger()
    for values in batches:
        h = histogram.new_histogram()
        for v in values:
            h.record_value(v)
        data = histogram.encode(h)
        for form, encoded in (("text", data), ("wire", histogram.encode_wire(h))):
            handle = merger.stage(encoded)
            if handle >= 0:
                merger.commit(handle, merged[form])
            merger.clear()
        if data:
            slow.add(histogram.decode(data))
    for fast in merged.values():
        assert fast.get_total_count() == slow.get_total_count()
        assert summary_ms(fast) == summary_ms(slow)
        assert all(
            fast.get_count_at_index(i) == slow.get_count_at_index(i) for i in range(0, fast.counts_len, 7)
        )


def test_agents_send_small_histograms_uncompressed_and_large_ones_compressed() -> None:
    from hdrh.codec import V2_COMPRESSION_COOKIE_BASE, V2_ENCODING_COOKIE_BASE

    assert histogram.encode_wire(histogram.new_histogram()) == b""
    small = histogram.histogram_of_counts({120: 3, 4_000: 1})
    large = histogram.histogram_of_counts(dict.fromkeys(range(1_000, 400_000, 97), 1))
    cookie = {
        name: int.from_bytes(histogram.encode_wire(h)[:4], "big") & ~0xF0
        for name, h in (("small", small), ("large", large))
    }
    assert cookie == {"small": V2_ENCODING_COOKIE_BASE, "large": V2_COMPRESSION_COOKIE_BASE}
    assert len(histogram.encode_wire(large)) < len(histogram.encode(large))
    for h in (small, large):  # decoded, the same histogram (its standard form byte for byte)
        decoded = histogram.decode(histogram.encode_wire(h))
        assert decoded is not None and decoded.encode() == h.encode()


def test_fast_merge_refuses_corrupt_and_foreign_histograms() -> None:
    from hdrh.histogram import HdrHistogram

    merger = histogram.Merger()
    foreign = HdrHistogram(1, 60_000_000, 2)
    foreign.record_value(5)
    good = histogram.encode_wire(histogram.histogram_of_counts({120: 3, 4_000: 1}))
    for bad in (
        b"garbage",
        b"SElTVEZBQUFBQUFBQUFBQUE=",
        foreign.encode(),
        good[:30],  # cut inside the payload's header
        good[:-1],  # cut inside the counters: the header's length disagrees
        good + b"\x00",
        b"\x1c\x84\x93\x99" + good[4:],  # an unknown cookie
    ):
        with pytest.raises(histogram.EncodedHistogramError):
            merger.stage(bad)
    assert merger.stage(good) == 0  # the good one still stages after all that


_GOOD = histogram.encode_wire(histogram.histogram_of_counts({120: 3, 4_000: 1, 90_000: 2}))
_GOOD_COMPRESSED = histogram.encode_wire(
    histogram.histogram_of_counts(dict.fromkeys(range(1_000, 400_000, 97), 1))
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([_GOOD, _GOOD_COMPRESSED]),
    st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(0, 255)), max_size=6),
    st.integers(min_value=0, max_value=10_000),
)
def test_a_damaged_binary_histogram_is_refused_or_merged_never_a_crash(
    good: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    """Whatever an agent (or an attacker past authentication) puts in a binary histogram, staging it
    either refuses it with EncodedHistogramError or merges a valid histogram."""
    data = bytearray(good[: max(1, len(good) - cut % len(good))])
    for at, value in flips:
        data[at % len(data)] = value
    merger = histogram.Merger()
    into = histogram.new_histogram()
    try:
        handle = merger.stage(bytes(data))
    except histogram.EncodedHistogramError:
        return
    if handle >= 0:
        merger.commit(handle, into)
    counts = np.frombuffer(into.counts, dtype=np.int64)
    assert int(counts.sum()) == into.get_total_count()  # what it merged is a consistent histogram
    assert (counts >= 0).all()


def _encoded_with_payload(payload: bytes) -> bytes:
    """An encoded histogram (hdrh's wire form) around an arbitrary decompressed payload."""
    import base64
    import struct
    import zlib

    from hdrh.codec import V2_COMPRESSION_COOKIE_BASE

    compressed = zlib.compress(payload)
    return base64.b64encode(
        struct.pack(">II", V2_COMPRESSION_COOKIE_BASE | 0x10, len(compressed)) + compressed
    )


def test_fast_merge_refuses_a_payload_that_inflates_beyond_any_histogram() -> None:
    import struct

    from hdrh.codec import V2_ENCODING_COOKIE_BASE

    header = struct.pack(
        ">IIIIQQd",
        V2_ENCODING_COOKIE_BASE | 0x10,
        0,
        0,
        histogram.SIGNIFICANT_DIGITS,
        histogram.LOWEST_US,
        histogram.HIGHEST_US,
        1.0,
    )
    merger = histogram.Merger()
    bomb = _encoded_with_payload(header + bytes(50_000_000))  # 50 MB of zeros, about 50 KB on the wire
    assert len(bomb) < 100_000
    with pytest.raises(histogram.EncodedHistogramError, match="too large"):
        merger.stage(bomb)
    truncated = _encoded_with_payload(header[:20])
    with pytest.raises(histogram.EncodedHistogramError, match="too short"):
        merger.stage(truncated)
    assert merger.stage(_encoded_with_payload(header)) == 0  # a valid empty payload still stages
    with pytest.raises(histogram.EncodedHistogramError, match="too large"):
        merger.stage(header + bytes(300_000))  # uncompressed, bigger than any histogram's payload


def test_fast_merge_into_an_empty_histogram_keeps_hdrhistogram_min_and_max() -> None:
    merger = histogram.Merger()
    for values in ([1], [2047, 2048, 2049], [12_345, 3_600_000_000], [999_999]):
        h = histogram.new_histogram()
        for v in values:
            h.record_value(v)
        fast = histogram.new_histogram()
        merger.commit(merger.stage(histogram.encode(h)), fast)
        merger.clear()
        assert (fast.get_min_value(), fast.get_max_value()) == (h.get_min_value(), h.get_max_value())
        assert fast.get_total_count() == h.get_total_count()


def hdrhistogram_summary_ms(h: HdrHistogram) -> dict[str, float | None]:
    """:func:`loadgen.percentiles.summary_ms` as hdrhistogram's own methods give it, the reference."""
    keys = ["min", "mean", *(k for k, _ in PERCENTILES), "max"]
    if h.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {"min": h.get_min_value() / 1000.0, "mean": h.get_mean_value() / 1000.0}
    values = h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
    for key, p in PERCENTILES:
        out[key] = values[p] / 1000.0
    out["max"] = h.get_max_value() / 1000.0
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=3_600_000_000), st.integers(min_value=1, max_value=10**6)
        ),
        max_size=120,
    ),
    st.lists(st.floats(min_value=0.001, max_value=100.0), min_size=1, max_size=6),
)
def test_fast_figures_equal_hdrhistogram_figures(samples: list[tuple[int, int]], extra: list[float]) -> None:
    h = histogram.new_histogram()
    for value, count in samples:
        h.record_value(value, count)
    assert summary_ms(h) == hdrhistogram_summary_ms(h)
    assert mean_value(h) == h.get_mean_value()
    got = values_at_percentiles(h, extra)
    assert got == {p: h.get_value_at_percentile(p) for p in extra}


def test_closed_seconds_free_their_histograms_without_the_cycle_collector() -> None:
    """hdrhistogram's histograms point at themselves through their encoder; the coordinator makes a couple
    of dozen a second, which piled up (+3.3 MiB/s at 1,000 agents) until a full collection."""
    import gc
    import weakref

    agg = RunAggregate(["a", "b"], CURVE)
    rec = Recorder(["a", "b"])
    gc.collect()
    gc.disable()
    try:
        refs = []
        for second in range(3):
            for k in range(20):
                rec.scheduled(k % 2, 0.0)
                rec.response(k % 2, 0.0, 0.0, 0.001 * (k + 1), 200)
            rec.seal_arrivals()
            agg.add("x", rec.take_interval(second, 0))
            for c in agg.close(["x"], now_index=second):
                refs += [weakref.ref(c.latency), *(weakref.ref(h) for h in c.by_name.values())]
                refs += [weakref.ref(h) for h in c.service_by_name.values()]
            del c
        assert len(refs) == 3 * 5
        assert all(r() is None for r in refs)
        assert agg.totals.ok == 60
        assert histogram.decode(histogram.encode(agg.latency)).get_total_count() == 60  # still encodes
    finally:
        gc.enable()


def test_index_tables_match_hdrhistogram() -> None:
    h = histogram.new_histogram()
    lowest, highest = histogram.index_values()
    assert len(lowest) == len(highest) == h.counts_len
    for i in range(h.counts_len):
        v = h.get_value_from_index(i)
        assert (lowest[i], highest[i]) == (v, h.get_highest_equivalent_value(v))


def test_connections_add_up_across_agents_per_second_and_each_agent_keeps_its_most() -> None:
    agg = RunAggregate(["a"], CURVE)
    for second, (x, y) in enumerate([(3, 40), (7, 20)]):
        agg.add("x", Interval(second, 0, 0, 0, 0, {}, b"", 0.1, x))
        agg.add("y", Interval(second, 0, 0, 0, 0, {}, b"", 0.1, y))
    closed = agg.close(["x", "y"], now_index=1)
    assert [c.summary["connections"] for c in closed] == [43, 27]
    assert (agg.agent("x").connections_max, agg.agent("y").connections_max) == (7, 40)


def test_a_negative_connection_count_is_refused() -> None:
    agg = RunAggregate(["a"], CURVE)
    with pytest.raises(WireError):
        agg.add("x", Interval(0, 0, 0, 0, 0, {}, b"", 0.0, -1))
    assert agg.agent("x").intervals == 0


def test_stolen_time_is_the_most_of_any_agent_per_second_and_kept_per_agent() -> None:
    agg = RunAggregate(["a"], CURVE)
    for second, (x, y) in enumerate([(0.0, 0.3), (0.1, 0.05)]):
        agg.add("x", Interval(second, 0, 0, 0, 0, {}, b"", 0.1, 1, stolen=x))
        agg.add("y", Interval(second, 0, 0, 0, 0, {}, b"", 0.1, 1, stolen=y))
    closed = agg.close(["x", "y"], now_index=1)
    assert [c.summary["stolen"] for c in closed] == [0.3, 0.1]
    assert (agg.agent("x").stolen_max, agg.agent("y").stolen_max) == (0.1, 0.3)
    assert agg.agent("y").stolen_sum == pytest.approx(0.35)


@pytest.mark.parametrize("stolen", [-0.1, 1.5, float("nan")])
def test_a_stolen_share_out_of_range_is_refused(stolen: float) -> None:
    agg = RunAggregate(["a"], CURVE)
    with pytest.raises(WireError):
        agg.add("x", Interval(0, 0, 0, 0, 0, {}, b"", 0.0, 1, stolen=stolen))
    assert agg.agent("x").intervals == 0
