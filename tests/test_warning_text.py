"""A run's warnings are coded values (a code and its figures) decided by the coordinator; their English lives
in one renderer, which every code the coordinator can emit has words in."""

from __future__ import annotations

import re
from pathlib import Path

from loadgen.reports.warnings import CODES, render, warning_lines

ROOT = Path(__file__).resolve().parent.parent

EXAMPLES = {
    "dropped": {
        "dropped": 12, "max_in_flight": 100, "behind": False, "send_lag_p99_ms": 1.0, "cpu_max": 0.5,
        "service_p99_ms": 300.0,
    },
    "send_lag": {"send_lag_p99_ms": 8.2, "limit_ms": 5.0},
    "agent_full_core": {"agent": "a1", "seconds": 9, "of": 60, "cpu_max": 1.0},
    "saturated_seconds": {"seconds": 3, "of": 60, "first": 12},
    "stolen": {"agent": "a1", "stolen_max": 0.26, "stolen_mean": 0.04},
    "many_connections": {"connections_max": 2000},
    "tls_unverified": {},
    "late_intervals": {"count": 2},
    "agents_lost": {"agents": ["a1", "a2"], "unreported": 40, "lost_in_flight": 3},
    "unsent": {"count": 57},
    "no_data": {"count": 9},
    "incomplete": {"reason": "no agent was left to carry the load"},
    "nothing_sent": {},
    "no_success": {"completed": 500, "top_errors": [["connect", 400], ["timeout", 100]]},
    "totals_mismatch": {"agent": "a1", "reported": {"ok": 5}, "merged": {"ok": 4}},
}  # fmt: skip


def test_every_code_the_coordinator_emits_has_words() -> None:
    source = (ROOT / "coordinator" / "results.py").read_text()
    emitted = set(re.findall(r'"code": "([a-z_]+)"', source))
    assert emitted == CODES == set(EXAMPLES)


def test_each_code_renders_its_figures() -> None:
    for code, figures in EXAMPLES.items():
        text = render({"code": code, **figures})
        assert text and "{" not in text.replace("{'ok'", ""), (code, text)
    assert render({"code": "unsent", "count": 57}).startswith(
        "about 57 arrivals of the profile were never sent"
    )
    assert (
        render({"code": "no_success", **EXAMPLES["no_success"]})
        == "NO REQUEST SUCCEEDED: all 500 completed requests failed (connect 400, timeout 100)"
    )


def test_a_code_from_a_newer_version_is_shown_as_its_figures() -> None:
    assert render({"code": "future_thing", "n": 3}) == "code=future_thing, n=3"


def test_results_are_rendered_from_their_codes_and_old_files_from_their_words() -> None:
    assert warning_lines(
        {"warning_codes": [{"code": "late_intervals", "count": 2}], "warnings": ["stale"]}
    ) == ["2 agent intervals arrived after their second was closed"]
    assert warning_lines({"warnings": ["written before codes existed"]}) == ["written before codes existed"]
    assert warning_lines({}) == []
