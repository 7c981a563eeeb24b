"""Interval logs: exact round trips through our reader, and the reference Java tools reading our files."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.histogram import HIGHEST_US, LOWEST_US, new_histogram
from loadgen.reports.hlog import (
    LEGEND,
    HlogContents,
    HlogError,
    HlogWriter,
    format_seconds,
    merge_histograms,
    read_hlog,
    sanitize_tag,
)

START = 1_763_790_792.2105  # 2025-11-22T05:53:12.2105Z
INSTALL_HINT = "install it with: apt-get install -y default-jdk-headless libhdrhistogram-java"


def recorded(h: HdrHistogram) -> dict[int, int]:
    """value -> count for every value with a non-zero count (values as the histogram reports them)."""
    return {item.value_iterated_to: item.count_at_value_iterated_to for item in h.get_recorded_iterator()}


def assert_same_histogram(a: HdrHistogram, b: HdrHistogram) -> None:
    """Same layout, same total, and the same count in every bucket (so at every recorded value)."""
    layout = ("lowest_trackable_value", "highest_trackable_value", "significant_figures", "counts_len")
    assert [getattr(a, k) for k in layout] == [getattr(b, k) for k in layout]
    assert a.get_total_count() == b.get_total_count()
    assert list(a.counts) == list(b.counts)
    assert a.get_max_value() == b.get_max_value()


def random_histogram(rng: random.Random, n: int) -> HdrHistogram:
    h = new_histogram()
    for _ in range(n):
        h.record_value(min(HIGHEST_US, max(LOWEST_US, int(rng.lognormvariate(8, 1.5)))))
    return h


def write_log(
    intervals: Sequence[tuple[float, float, HdrHistogram, str | None]], start_time: float = START
) -> str:
    out = io.StringIO()
    writer = HlogWriter(out, start_time)
    writer.write_header()
    for start, length, h, tag in intervals:
        writer.write_interval(start, length, h, tag)
    return out.getvalue()


# -- format ------------------------------------------------------------------------------------------------


def test_constructor_writes_nothing_and_header_is_the_reference_one() -> None:
    out = io.StringIO()
    writer = HlogWriter(out, START)
    assert out.getvalue() == ""
    writer.write_header()
    assert out.getvalue().splitlines() == [
        "#[Histogram log format version 1.3]",
        "#[StartTime: 1763790792.211 (seconds since epoch), Sat Nov 22 05:53:12 UTC 2025]",
        "#[BaseTime: 1763790792.211 (seconds since epoch)]",
        LEGEND,
    ]


def test_interval_line_numbers_follow_java_percent_3f() -> None:
    h = new_histogram()
    h.record_value(1500)  # 1.5 ms
    h.record_value(250_000)  # 250 ms: max, printed in seconds (value / 1,000,000)
    text = write_log([(12.0, 1.0, h, None), (12.0625, 0.5, h, "home")])
    lines = text.splitlines()[4:]
    start, length, max_s, payload = lines[0].split(",")
    assert (start, length, max_s) == ("12.000", "1.000", "0.250")
    assert payload == h.encode().decode()
    # 12.0625 is exact in binary: Java's %.3f rounds half up (12.063), Python's format would give 12.062
    assert lines[1].startswith("Tag=home,12.063,0.500,0.250,HISTF")


def test_format_seconds_matches_java() -> None:
    assert format_seconds(0.0) == "0.000"
    assert format_seconds(0.0005) == "0.001"  # binary 0.0005 is slightly above: up either way
    assert format_seconds(2.0625) == "2.063"
    assert format_seconds(1_763_790_792.2105) == "1763790792.211"
    assert format_seconds(3600.8099830) == "3600.810"


def test_tags_are_sanitized() -> None:
    assert sanitize_tag("GET /api/items,list") == "GET_/api/items_list"
    assert sanitize_tag("a\tb\nc") == "a_b_c"
    assert sanitize_tag("") == "_"
    h = new_histogram()
    h.record_value(10)
    contents = read_hlog(io.StringIO(write_log([(0.0, 1.0, h, "GET /x, y")])))
    assert contents.intervals[0].tag == "GET_/x__y"


# -- round trip --------------------------------------------------------------------------------------------


def test_round_trip_is_exact_with_tags_and_empty_intervals() -> None:
    rng = random.Random(7)
    written: list[tuple[float, float, HdrHistogram, str | None]] = []
    for second in range(20):
        written.append((float(second), 1.0, random_histogram(rng, rng.choice([0, 1, 50, 2000])), None))
        for name in ("home", "checkout"):
            written.append((float(second), 1.0, random_histogram(rng, rng.choice([0, 3, 400])), name))
    contents = read_hlog(io.StringIO(write_log(written)))
    assert contents.start_time == pytest.approx(1_763_790_792.211)
    assert len(contents.intervals) == len(written)
    for (start, length, h, tag), got in zip(written, contents.intervals, strict=True):
        assert (got.tag, got.start, got.length) == (tag, start, length)
        assert got.max_value == pytest.approx(h.get_max_value() / 1e6, abs=0.0005)
        assert_same_histogram(h, got.histogram)
    assert contents.tags() == ["home", "checkout"]


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.integers(LOWEST_US, HIGHEST_US), st.integers(1, 1_000_000)), min_size=0, max_size=50
    ),
    start=st.integers(0, 8 * 3600 * 1000).map(lambda ms: ms / 1000),
)
def test_round_trip_property(values: list[tuple[int, int]], start: float) -> None:
    h = new_histogram()
    for value, count in values:
        h.record_value(value, count)
    [got] = read_hlog(io.StringIO(write_log([(start, 1.0, h, None)]))).intervals
    assert got.start == start
    assert_same_histogram(h, got.histogram)
    for value, _ in values:
        assert got.histogram.get_count_at_value(value) == h.get_count_at_value(value) > 0


def test_merged_is_the_exact_sum_per_tag() -> None:
    rng = random.Random(3)
    parts = [random_histogram(rng, 300) for _ in range(6)]
    text = write_log([(float(i // 2), 1.0, h, None if i % 2 == 0 else "b") for i, h in enumerate(parts)])
    contents = read_hlog(io.StringIO(text))
    untagged = contents.merged()
    tagged = contents.merged("b")
    assert untagged is not None
    assert tagged is not None
    expected_untagged = merge_histograms(parts[0::2])
    expected_tagged = merge_histograms(parts[1::2])
    assert expected_untagged is not None
    assert expected_tagged is not None
    assert_same_histogram(expected_untagged, untagged)
    assert_same_histogram(expected_tagged, tagged)
    assert contents.merged("nope") is None
    assert merge_histograms([]) is None


# -- reading other writers' logs ---------------------------------------------------------------------------


def test_header_parsing_and_time_rules() -> None:
    h = new_histogram()
    h.record_value(100)
    payload = h.encode().decode()
    relative_without_base = (
        f"#[StartTime: 1000000000.500 (seconds since epoch), x]\n1.500,1.000,0.000,{payload}\n"
    )
    got = read_hlog(io.StringIO(relative_without_base))
    assert got.start_time == 1_000_000_000.5
    assert got.intervals[0].start == 1.5
    absolute = (
        f"#[StartTime: 1000000000.000 (seconds since epoch), x]\n1000000002.000,1.000,0.000,{payload}\n"
    )
    assert read_hlog(io.StringIO(absolute)).intervals[0].start == pytest.approx(2.0)
    explicit_base = (
        f"#[StartTime: 1000000010.000 (seconds since epoch), x]\n"
        f"#[BaseTime: 1000000000.000 (seconds since epoch)]\n"
        f"15.000,1.000,0.000,{payload}\n"
    )
    assert read_hlog(io.StringIO(explicit_base)).intervals[0].start == pytest.approx(5.0)
    no_header = f"#a comment\n\n{LEGEND}\n7.000,1.000,0.000,{payload}\n8.000,1.000,0.000,{payload}\n"
    got = read_hlog(io.StringIO(no_header))
    assert got.start_time is None
    assert [iv.start for iv in got.intervals] == [0.0, 1.0]
    assert read_hlog(io.StringIO("")) == HlogContents(None, [])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0.000,1.000,0.000", "expected 4"),
        ("zero,1.000,0.000,HISTFAAAAA", "StartTimestamp is not a number"),
        ("0.000,1.000,0.000,not-a-histogram", "undecodable histogram"),
    ],
)
def test_malformed_lines_say_where(line: str, message: str) -> None:
    with pytest.raises(HlogError, match=f"line 2: {message}"):
        read_hlog(io.StringIO(f"{LEGEND}\n{line}\n"))


# -- the reference Java implementation ---------------------------------------------------------------------

JAVA_DUMP = """
import org.HdrHistogram.*;

public class DumpLog {
    public static void main(String[] args) throws Exception {
        HistogramLogReader reader = new HistogramLogReader(args[0]);
        EncodableHistogram e;
        while ((e = reader.nextIntervalHistogram()) != null) {
            Histogram h = (Histogram) e;
            System.out.println(h.getTag() + " " + h.getStartTimeStamp() + " " + h.getEndTimeStamp() + " "
                + h.getTotalCount() + " " + h.getValueAtPercentile(99.0) + " " + h.getMaxValue());
        }
        System.out.println("start " + reader.getStartTimeSec());
    }
}
"""


@dataclass(frozen=True)
class JavaTools:
    java: str
    classpath: str  # the HdrHistogram jar plus the compiled DumpLog class


def _find_jar() -> Path | None:
    for candidate in ("/usr/share/java/hdrhistogram.jar", "/usr/share/java/HdrHistogram.jar"):
        if Path(candidate).is_file():
            return Path(candidate)
    if shutil.which("dpkg") is None:
        return None
    listed = subprocess.run(
        ["dpkg", "-L", "libhdrhistogram-java"], capture_output=True, text=True, timeout=30, check=False
    )
    jars = [Path(p) for p in listed.stdout.split() if p.endswith(".jar") and Path(p).is_file()]
    return jars[0] if jars else None


@pytest.fixture(scope="module")
def java_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JavaTools]:
    java, javac = shutil.which("java"), shutil.which("javac")
    if java is None or javac is None:
        pytest.skip(f"java/javac not found; {INSTALL_HINT}")
    jar = _find_jar()
    if jar is None:
        pytest.skip(f"the HdrHistogram jar is missing; {INSTALL_HINT}")
    build = tmp_path_factory.mktemp("java")
    (build / "DumpLog.java").write_text(JAVA_DUMP)
    subprocess.run(
        [javac, "-cp", str(jar), "-d", str(build), str(build / "DumpLog.java")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield JavaTools(java, f"{jar}:{build}")


def run_java(tools: JavaTools, *args: str) -> str:
    done = subprocess.run(
        [tools.java, "-cp", tools.classpath, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def sample_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[tuple[float, float, HdrHistogram, str | None]]]:
    rng = random.Random(11)
    written: list[tuple[float, float, HdrHistogram, str | None]] = []
    for second in range(10):
        written.append((float(second), 1.0, random_histogram(rng, 0 if second == 4 else 1000), None))
        written.append((float(second), 1.0, random_histogram(rng, 300), "GET /home"))
        written.append((float(second), 1.0, random_histogram(rng, 30), "checkout"))
    path = tmp_path_factory.mktemp("hlog") / "latency.hlog"
    path.write_text(write_log(written))
    return path, written


@pytest.mark.integration
def test_java_reader_reads_every_interval_as_we_wrote_it(
    java_tools: JavaTools, sample_log: tuple[Path, list[tuple[float, float, HdrHistogram, str | None]]]
) -> None:
    path, written = sample_log
    lines = run_java(java_tools, "DumpLog", str(path)).splitlines()
    assert lines[-1] == "start 1.763790792211E9"
    rows = [line.split() for line in lines[:-1]]
    assert len(rows) == len(written)
    for (start, length, h, tag), (jtag, jstart, jend, count, p99, jmax) in zip(written, rows, strict=True):
        assert jtag == ("null" if tag is None else sanitize_tag(tag))
        assert int(jstart) == int((1_763_790_792.211 + start) * 1000)  # absolute ms, as the reader stamps
        assert int(jend) - int(jstart) == pytest.approx(length * 1000, abs=1)
        assert int(count) == h.get_total_count()
        assert int(p99) == (h.get_value_at_percentile(99.0) if h.get_total_count() else 0)
        assert int(jmax) == h.get_max_value()


@pytest.mark.integration
def test_java_log_processor_accumulates_our_log(
    java_tools: JavaTools, sample_log: tuple[Path, list[tuple[float, float, HdrHistogram, str | None]]]
) -> None:
    path, written = sample_log
    processor = "org.HdrHistogram.HistogramLogProcessor"
    tags = run_java(java_tools, processor, "-i", str(path), "-listtags")
    assert tags.split("\n", 1)[1].splitlines() == ["[NO TAG (default)]", "GET_/home", "checkout"]
    for tag in (None, "GET /home", "checkout"):
        merged = merge_histograms(h for _, _, h, t in written if t == tag)
        assert merged is not None
        args = ["-i", str(path), "-outputValueUnitRatio", "1000"]  # µs in the log, ms in the output
        if tag is not None:
            args += ["-tag", sanitize_tag(tag)]
        out = run_java(java_tools, processor, *args)
        assert "#[StartTime: 1763790792.211 (seconds since epoch)" in out
        footer = next(line for line in out.splitlines() if line.startswith("#[Max"))
        max_ms, total = (part.split("=")[1].strip() for part in footer.strip("#[]").split(","))
        assert int(total) == merged.get_total_count()
        assert float(max_ms) == pytest.approx(merged.get_max_value() / 1000, abs=0.0005)
        # every row of the percentile distribution: "value(ms) percentile total_count_at_or_below ..."
        counts = recorded(merged)
        rows = [
            line.split()
            for line in out.splitlines()
            if line[:1] == " " and len(line.split()) >= 3 and "Value" not in line
        ]
        assert rows
        for value_ms, _, total_below, *_ in rows:
            value_us = round(float(value_ms) * 1000)
            assert int(total_below) == sum(c for v, c in counts.items() if v <= value_us)
