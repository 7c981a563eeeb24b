from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.reports.markdown import render_summary_md, render_summary_text
from loadgen.reports.stats_csv import HEADER, render_stats_csv
from loadgen.reports.tables import display_width, format_ms, format_pct, render_markdown_table, render_table
from loadgen.thresholds import evaluate_all
from tests.results_fixtures import RequestFixture, make_results

CSV_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)

# -- tables.py -----------------------------------------------------------------------------------------------


def test_text_table_aligns_columns() -> None:
    out = render_table(["Name", "Count"], [["home", 9000], ["checkout", 12]])
    assert out.splitlines() == [
        "Name      Count",
        "--------  -----",
        "home       9000",
        "checkout     12",
    ]


def test_text_table_explicit_alignment_and_wide_characters() -> None:
    out = render_table(["", "x"], [["✅", "a"], ["ok", "bbb"]], align="cc")
    lines = out.splitlines()
    assert lines[2] == "✅   a"
    assert lines[3] == "ok  bbb"
    assert display_width("⚠️ FAIL") == 7
    assert display_width("é") == 1


def test_markdown_table_alignment_rule_and_escaping() -> None:
    out = render_markdown_table(["Name", "p99 ms"], [["a|b", 1.5], ["two\nlines", None]])
    lines = out.splitlines()
    assert lines[0] == "| Name      | p99 ms |"
    assert lines[1] == "| --------- | -----: |"
    assert lines[2] == "| a\\|b      |    1.5 |"
    assert lines[3] == "| two lines |        |"


def test_tables_refuse_ragged_rows_and_bad_alignment() -> None:
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        render_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align must be 2 letters"):
        render_markdown_table(["a", "b"], [], align="lx")


@given(
    st.lists(st.lists(st.text(alphabet="ab|✅", min_size=1, max_size=6), min_size=3, max_size=3), max_size=5)
)
def test_right_aligned_text_table_lines_have_equal_width(rows: list[list[str]]) -> None:
    out = render_table(["h1", "h2", "h3"], rows, align="rrr")
    widths = {display_width(line) for line in out.splitlines()}
    assert len(widths) == 1


def test_number_formats() -> None:
    assert [format_ms(v) for v in (0.1234, 4.567, 78.91, 1234.5, None)] == [
        "0.123",
        "4.57",
        "78.9",
        "1,234",
        "-",
    ]
    assert [format_pct(v) for v in (0, 0.0042, 0.000042, 1)] == ["0%", "0.42%", "0.0042%", "100.00%"]


# -- Markdown and text summaries -------------------------------------------------------------------------

THRESHOLDS = ["p99 < 100ms", "checkout: p99 < 300ms", "error_rate < 1%"]


def test_markdown_summary_has_title_totals_and_request_table() -> None:
    r = make_results()
    md = render_summary_md(r, None)
    assert md.startswith("# loadgen: checkout-spike\n")
    assert "`http://127.0.0.1:8080`" in md
    assert "2026-11-22T05:30:00.000Z" in md
    assert "duration 60 s" in md
    for part in ("scheduled 12,000", "ok 11,979", "failed 21", "dropped 0", "in flight at end 0"):
        assert part in md
    assert "**200.0 req/s**" in md
    assert "**error rate 0.18%**" in md
    assert "## Requests" in md
    header = next(line for line in md.splitlines() if line.startswith("| Name"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Name", "Count", "OK", "Failed", "RPS",
        "min ms", "mean ms", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "p99.9 ms", "max ms",
    ]  # fmt: skip
    rows = _md_rows(md, "Name")
    assert [row[0] for row in rows] == ["home", "GET /api/items:list", "checkout", "All"]
    assert rows[-1][1:5] == ["12,000", "11,979", "21", "200.0"]
    assert rows[2][10] == "320"  # checkout p99
    assert "## Thresholds" not in md  # no verdicts given


def test_markdown_summary_errors_by_category() -> None:
    md = render_summary_md(make_results(), None)
    rows = _md_rows(md, "Category")
    assert rows == [["timeout", "12", "0.10%", "checkout 12"], ["http_503", "9", "0.07%", "home 9"]]
    assert "No errors." in render_summary_md(make_results(requests=(RequestFixture("home"),)), None)


def test_markdown_thresholds_table_and_verdict() -> None:
    r = make_results()
    md = render_summary_md(r, evaluate_all(THRESHOLDS, r))
    assert "## Thresholds" in md
    assert "**Thresholds: ❌ FAIL** (2 of 3 passed)" in md
    rows = _md_rows(md, "")
    assert [row[:2] for row in rows] == [
        ["✅", "p99 < 100ms"],
        ["❌", "checkout: p99 < 300ms"],
        ["✅", "error_rate < 1%"],
    ]
    assert rows[1][2] == "320 ms"
    passing = render_summary_md(r, evaluate_all(THRESHOLDS[:1], r))
    assert "**Thresholds: ✅ PASS** (1 of 1 passed)" in passing
    assert "No thresholds defined." in render_summary_md(r, [])


def test_missing_data_shows_the_reason_as_observed() -> None:
    r = make_results()
    md = render_summary_md(r, evaluate_all(["search: p99 < 1s"], r))
    assert "no request named 'search'" in md
    assert "FAIL" in md


def test_saturation_and_warnings_are_loud() -> None:
    r = make_results(generator_saturated=True, dropped=30, warnings=["agent host-2 joined late"])
    md = render_summary_md(r, None)
    assert "## Warnings" in md
    assert "**⚠️ GENERATOR SATURATED:" in md
    assert "30 requests were dropped" in md
    assert "⚠️ agent host-2 joined late" in md
    text = render_summary_text(r, None)
    assert "!! GENERATOR SATURATED:" in text
    assert "## Warnings" not in render_summary_md(make_results(), None)


def test_drops_behind_a_slow_target_are_not_called_generator_lateness() -> None:
    r = make_results(generator_saturated=True, dropped=30)
    r["saturation_cause"] = "in_flight_limit"
    text = render_summary_text(r, None)
    assert "!! IN-FLIGHT LIMIT REACHED: the target answered slower than requests arrived" in text
    assert "fell behind its own schedule" not in text
    r["saturation_cause"] = "generator"
    assert "fell behind its own schedule" in render_summary_text(r, None)


def test_counts_that_do_not_add_up_are_reported() -> None:
    r = make_results()
    r["totals"]["scheduled"] += 5
    assert "counts do not add up" in render_summary_md(r, None)


def test_per_hour_table_only_for_runs_longer_than_an_hour() -> None:
    assert "Per hour" not in render_summary_md(make_results(duration_s=3600, rate=1), None)
    assert "Per hour" not in render_summary_text(make_results(duration_s=3600, rate=1), None)
    long = make_results(duration_s=2.5 * 3600, rate=2)
    md = render_summary_md(long, None)
    assert "## Per hour" in md
    assert "p99 ms (max of 1 s p99)" in md
    assert "no hourly p95 is shown" in md
    rows = _md_rows(md, "Hour")
    assert [row[:3] for row in rows] == [
        ["1", "0:00–1:00", "2026-11-22 05:30"],
        ["2", "1:00–2:00", "2026-11-22 06:30"],
        ["3", "2:00–2:30", "2026-11-22 07:30"],
    ]
    assert sum(int(row[3].replace(",", "")) for row in rows) == long["totals"]["scheduled"]
    assert "Per hour" in render_summary_text(long, None)


def test_per_hour_p99_is_the_max_of_the_interval_p99s() -> None:
    long = make_results(duration_s=2 * 3600, rate=1)
    long["intervals"][4000]["p99"] = 987.0  # a bad second in hour 2
    long["intervals"][4001].update(ok=0, failed=0, p50=None, p99=None, max=None)  # an idle second
    rows = _md_rows(render_summary_md(long, None), "Hour")
    first_hour = [iv["p99"] for iv in long["intervals"][:3600] if iv["p99"] is not None]
    assert rows[0][7] == format_ms(max(first_hour))
    assert rows[1][7] == "987"


def test_per_hour_success_rate_never_rounds_failures_away() -> None:
    long = make_results(duration_s=2 * 3600, rate=10)
    for iv in long["intervals"][:3600]:
        iv["failed"] = 0
    long["intervals"][0]["failed"] = 1
    rows = _md_rows(render_summary_md(long, None), "Hour")
    assert rows[0][6] == ">99.99%"


def test_text_summary_has_the_same_content_as_aligned_tables() -> None:
    r = make_results()
    verdicts = evaluate_all(THRESHOLDS, r)
    text = render_summary_text(r, verdicts)
    assert text.startswith("loadgen: checkout-spike\n=======================\n")
    for title in ("Thresholds", "Requests", "Errors"):
        assert f"\n{title}\n{'-' * len(title)}\n" in text
    assert "Thresholds: FAIL (2 of 3 passed)" in text
    assert "|" not in text
    assert "**" not in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Name "))
    table = lines[header : header + 6]
    assert table[1].startswith("----")
    assert len({len(line) for line in table[:6]}) == 1  # right-aligned last column: same width
    assert table[-1].split()[0] == "All"
    fail_line = next(line for line in lines if "checkout: p99 < 300ms" in line)
    assert fail_line.split()[0] == "FAIL"


def test_summaries_tolerate_a_sparse_checkpoint() -> None:
    sparse = {"schema": 1, "name": "early", "totals": {"scheduled": 10, "ok": 0, "failed": 0}}
    md = render_summary_md(sparse, None)
    assert "# loadgen: early" in md
    assert "| All" in md
    assert render_summary_text(sparse, [])


def _md_rows(md: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose first header cell is ``first_header``."""
    lines = md.splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if re.match(rf"\|\s*{re.escape(first_header)}\s*\|", line) is not None
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


# -- CSV ---------------------------------------------------------------------------------------------------


def test_csv_header_is_locusts() -> None:
    out = render_stats_csv(make_results())
    assert out.splitlines()[0] == CSV_HEADER
    assert ",".join(HEADER) == CSV_HEADER


def test_csv_parses_back_with_one_row_per_name_then_aggregated() -> None:
    r = make_results()
    rows = list(csv.DictReader(io.StringIO(render_stats_csv(r))))
    assert [(row["Type"], row["Name"]) for row in rows] == [
        ("GET", "home"),
        ("GET", "GET /api/items:list"),
        ("POST", "checkout"),
        ("", "Aggregated"),
    ]
    checkout, agg = rows[2], rows[3]
    req = r["requests"]["checkout"]
    assert int(checkout["Request Count"]) == req["ok"] + req["failed"]
    assert int(checkout["Failure Count"]) == req["failed"]
    assert float(checkout["99%"]) == req["latency_ms"]["p99"]
    assert float(checkout["100%"]) == req["latency_ms"]["max"]
    assert float(checkout["Median Response Time"]) == req["latency_ms"]["p50"]
    assert float(checkout["Failures/s"]) == pytest.approx(req["failed"] / r["duration_s"])
    assert int(agg["Request Count"]) == r["totals"]["ok"] + r["totals"]["failed"]
    assert float(agg["Requests/s"]) == pytest.approx(r["rps"])
    assert float(agg["99.9%"]) == r["latency_ms"]["p99.9"]
    assert float(agg["Average Response Time"]) == r["latency_ms"]["mean"]
    assert all(row["Average Content Size"] == "0" for row in rows)


def test_csv_quotes_awkward_names_and_marks_empty_requests() -> None:
    r = make_results(requests=(RequestFixture('search "q", page', "POST", share=1.0),))
    r["requests"]["idle"] = {"method": "GET", "path": "/idle", "count": 0, "ok": 0, "failed": 0, "errors": {}}
    rows = list(csv.reader(io.StringIO(render_stats_csv(r))))
    assert rows[1][:2] == ["POST", 'search "q", page']
    idle = dict(zip(HEADER, rows[2], strict=True))
    assert idle["Request Count"] == "0"
    assert idle["Median Response Time"] == "0"
    assert idle["50%"] == "N/A"
    assert idle["100%"] == "N/A"
    assert all(len(row) == len(HEADER) for row in rows)


def test_per_hour_table_uses_exact_hours_when_the_run_has_them() -> None:
    from loadgen.reports.markdown import render_summary_md as render

    results = make_results(duration_s=7200.0)
    results["hours"] = [
        {
            "hour": 0,
            "scheduled": 10,
            "ok": 9,
            "failed": 1,
            "success_rate": 0.9,
            "p50": 1.0,
            "p95": 12.5,
            "p99": 40.25,
            "max": 99.0,
        },
        {
            "hour": 1,
            "scheduled": 10,
            "ok": 10,
            "failed": 0,
            "success_rate": 1.0,
            "p50": 1.0,
            "p95": 13.5,
            "p99": 41.25,
            "max": 98.0,
        },
    ]
    md = render(results, None)
    assert "p95 ms" in md and "12.5" in md and "41.2" in md
    assert "max of 1 s p99" not in md


@pytest.mark.parametrize(
    ("agents", "expected", "text"),
    [
        ([{}, {}], 2, "agents 2"),
        ([{}, {}, {"joined_t": 12.5}], 2, "agents 2 expected, 3 took part (1 joined late)"),
        ([{}, {"state": "lost", "lost": True}], 2, "agents 2 expected, 2 took part (1 lost)"),
        ([{}, {"state": "refused"}], 2, "agents 2 expected, 1 took part (1 refused the run)"),
        ([{}], 3, "agents 3 expected, 1 took part"),
        ([{}, {}], None, "agents 2"),
    ],
)
def test_the_header_counts_agents_as_they_took_part(
    agents: list[dict[str, object]], expected: int | None, text: str
) -> None:
    r = make_results()
    r["agents"] = [{"state": "finished", "joined_t": 0.0, **a} for a in agents]
    r["agents_expected"] = expected
    md = render_summary_md(r, None)
    assert md.splitlines()[2].rstrip().endswith(f" · {text}")
