from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.curve import RateCurve
from loadgen.errors import ProfileError
from loadgen.plan import format_count, format_rate, render_plan
from loadgen.profile import Load, Profile, Request, Stage
from loadgen.profile_file import load_profile
from tests.strategies import profiles

PROFILES = sorted((Path(__file__).parent.parent / "profiles").glob("*.toml"))
DEMO = Path(__file__).parent.parent / "profiles" / "demo.toml"


def chart_lines(plan: str) -> list[str]:
    """The chart: from the ``req/s`` line to the time labels under the axis."""
    sections = plan.split("\n\n")
    return sections[1].splitlines()


def profile(stages: tuple[Stage, ...], start_rate: float = 0.0) -> Profile:
    return Profile(
        name="t",
        target="http://x",
        load=Load(start_rate=start_rate, stages=stages),
        requests=[Request(name="a", weight=1), Request("/b", name="b", weight=3)],
    )


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_renders_every_example_profile(path: Path) -> None:
    prof = load_profile(path)
    plan = render_plan(prof)
    curve = RateCurve(prof.load.start_rate, prof.load.stages)
    assert plan.startswith(f"{prof.name} → http://127.0.0.1:8080\n")
    table = plan.split("\n\n")[2].splitlines()
    assert table[0].split() == ["#", "from/s", "to/s", "duration", "starts", "at", "requests"]
    assert len(table) == 2 + len(prof.load.stages)
    label = "arrivals" if prof.flows else "requests"  # a flow is one arrival, whatever its steps
    assert f"{label:<12}{format_count(curve.total)} expected" in plan
    assert f"peak rate   {format_rate(curve.peak_rate)}/s" in plan
    assert all(len(line) <= 72 for line in chart_lines(plan))
    for request in prof.requests:
        assert request.path in plan


def test_demo_plan() -> None:
    plan = render_plan(load_profile(DEMO))
    lines = plan.splitlines()
    assert lines[2].strip() == "req/s"
    assert lines[3].startswith("800 ┤")
    assert "0s" in lines[16] and "30s" in lines[16]
    table = plan.split("\n\n")[2].splitlines()
    assert table[0].split() == ["#", "from/s", "to/s", "duration", "starts", "at", "requests"]
    assert [row.split() for row in table[2:]] == [
        ["0", "0", "200", "8s", "0s", "800"],
        ["1", "200", "200", "7s", "8s", "1,400"],
        ["2", "200", "800", "0s", "15s", "0"],
        ["3", "800", "800", "5s", "15s", "4,000"],
        ["4", "800", "200", "0s", "20s", "0"],
        ["5", "200", "200", "10s", "20s", "2,000"],
    ]
    assert "duration    30s\n" in plan
    assert "requests    8,200 expected\n" in plan
    assert "peak rate   800/s\n" in plan
    assert "arrival     poisson, timeout 10s\n" in plan
    assert "thresholds  p99 < 500ms, error_rate < 5%\n" in plan
    assert "home        GET     /                   6  60.0%" in plan
    assert "flaky       GET     /flaky?p=0.02       1  10.0%" in plan


def test_chart_draws_the_curve() -> None:
    # 0 -> 100/s over 10 s, a jump to 400/s, 10 s at 400/s; 40 columns of 0.5 s, 4 rows of 100/s.
    plan = render_plan(profile((Stage(10, 100), Stage(0, 400), Stage(10, 400))), width=45, height=4)
    chart = chart_lines(plan)
    assert chart[0] == "req/s"
    assert chart[1:4] == [f"{label} ┤{' ' * 20}{'█' * 20}" for label in ("400", "300", "200")]
    bottom = chart[4].removeprefix("100 ┤")
    # column c peaks at 5 * (c + 1) req/s: round(0.4 * (c + 1)) eighths of the bottom row, at least one
    ramp = "".join(" ▁▂▃▄▅▆▇█"[max(1, round(0.4 * (c + 1)))] for c in range(20))
    assert ramp == "▁▁▁▂▂▂▃▃▄▄▄▅▅▆▆▆▇▇██"
    assert bottom == ramp + "█" * 20
    assert chart[5] == "  0 └┬─────────┬─────────┬─────────┬────────┬"  # the end tick sits on the last column
    assert chart[6] == "     0s        5s        10s       15s    20s"


def test_ramp_uses_partial_blocks() -> None:
    chart = chart_lines(render_plan(profile((Stage(8, 8),)), width=28, height=2))
    top, bottom = chart[1].split("┤")[1], chart[2].split("┤")[1]
    assert bottom[0] == "▁" and bottom[-1] == "█"
    assert set(top[0]) == {" "} and top[-1] == "█"
    assert set("▂▃▄▅▆▇") & set(top + bottom)


def test_a_short_spike_still_reaches_the_top() -> None:
    stages = (Stage(3600, 10), Stage(0, 1000), Stage(1, 1000), Stage(0, 10), Stage(3600, 10))
    chart = chart_lines(render_plan(profile(stages, start_rate=10)))
    assert "1,000 ┤" in chart[1]
    assert chart[1].count("█") == 1


def test_mix_shares() -> None:
    plan = render_plan(profile((Stage(1, 1),)))
    mix = plan.split("\n\n")[4].splitlines()
    assert [row.split() for row in mix[2:]] == [
        ["a", "GET", "/", "1", "25.0%"],
        ["b", "GET", "/b", "3", "75.0%"],
    ]


def test_long_stage_lists_are_elided() -> None:
    stages = tuple(Stage(1, i) for i in range(100))
    plan = render_plan(profile(stages))
    assert "(65 stages not shown)" in plan
    rows = [row.split()[0] for row in plan.split("\n\n")[2].splitlines()[2:-1]]
    assert rows == [*map(str, range(30)), "…", *map(str, range(95, 100))]


def test_a_profile_without_load_is_refused_before_any_plan() -> None:
    # A profile is validated when it is built, in code as from TOML: one that sends nothing never reaches
    # render_plan, whose "(no load" branch stays for profiles rebuilt from the wire (checked less).
    with pytest.raises(ProfileError, match=r"load\.stages: empty; give at least one stage"):
        profile(())
    wire = profile((Stage(1, 1),)).to_wire()
    wire["load"]["stages"] = [[0.0, 5.0]]  # only an instant jump: no time at all
    assert "(no load" in render_plan(Profile.from_wire(wire))


def test_refuses_tiny_charts() -> None:
    with pytest.raises(ValueError, match="width >= 24"):
        render_plan(profile((Stage(1, 1),)), width=10)


@pytest.mark.parametrize(
    ("rate", "text"), [(0, "0"), (2000, "2,000"), (12.5, "12.5"), (1 / 3, "0.33"), (1e6, "1,000,000")]
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0"), (0.375, "0.4"), (9.96, "10.0"), (12.4, "12"), (1e6, "1,000,000")]
)
def test_format_count(n: float, text: str) -> None:
    assert format_count(n) == text


@settings(max_examples=50)
@given(profiles(), st.integers(24, 160), st.integers(2, 30))
def test_any_profile_renders_within_the_width(prof: Profile, width: int, height: int) -> None:
    plan = render_plan(prof, width=width, height=height)
    chart = chart_lines(plan)
    assert len(chart) == height + 3
    assert all(len(line) <= width for line in chart)
    curve = RateCurve(prof.load.start_rate, prof.load.stages)
    assert f"{format_count(curve.total)} expected" in plan


@pytest.mark.parametrize(
    ("load", "protocol", "streams"),
    [
        ({}, None, None),
        ({"http_version": "2"}, "HTTP/2", "as many as the server allows per HTTP/2 connection"),
        (
            {"http_version": "2", "max_streams_per_connection": 50},
            "HTTP/2",
            "at most 50 per HTTP/2 connection",
        ),
        ({"http_version": "auto"}, "HTTP/2 or HTTP/1.1, as the server agrees by ALPN", None),
    ],
)
def test_the_plan_says_which_http_version_and_streams(
    load: dict[str, object], protocol: str | None, streams: str | None
) -> None:
    base = profile((Stage(10.0, 5.0),))
    plan = render_plan(dataclasses.replace(base, load=dataclasses.replace(base.load, **load)))
    assert (protocol is None) == ("protocol" not in plan)
    if protocol is not None:
        assert f"protocol    {protocol}" in plan
    assert (streams is None) == ("streams " not in plan)
    if streams is not None:
        assert f"streams     {streams}" in plan
