"""Everything written to ``--out`` at the end of a run, and re-creatable from it with ``loadgen report DIR``.

``results.json`` is the source of truth (the coordinator judged the profile's thresholds into
``results["thresholds"]`` and ``results["passed"]`` before writing it); ``summary.md``, ``stats.csv`` and
``report.html`` are derived from it.
``report.html`` also draws the percentile distribution from ``latency.hlog`` when the run wrote one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.atomic import write_text
from loadgen.errors import LoadgenError
from loadgen.reports.hlog import HlogContents, read_hlog
from loadgen.reports.html import render_html
from loadgen.reports.markdown import render_summary_md
from loadgen.reports.stats_csv import render_stats_csv
from loadgen.reports.warnings import warning_lines
from loadgen.thresholds import Verdict

HLOG_NAME = "latency.hlog"


def verdicts_from(results: Mapping[str, Any]) -> list[Verdict]:
    return [
        Verdict(t["expr"], bool(t["passed"]), t.get("observed"), str(t.get("detail", "")))
        for t in results.get("thresholds", [])
    ]


def write_reports(out: Path, results: Mapping[str, Any]) -> list[Path]:
    """Write the derived reports next to ``results.json``; return their paths."""
    verdicts = verdicts_from(results)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("summary.md", render_summary_md(results, verdicts)),
        ("stats.csv", render_stats_csv(results)),
        ("report.html", report_html(out, results)),
    ):
        write_text(out / name, text)
        written.append(out / name)
    return written


def report_html(out: Path | None, results: Mapping[str, Any]) -> str:
    """``report.html`` of ``results``, its percentile chart drawn from the interval log in ``out`` when there
    is one (the live page serves this text at the end of a run, whether or not it was written)."""
    hlog, problem = read_hlog_if_any(out / HLOG_NAME) if out is not None else (None, None)
    html_results = (
        results
        if problem is None
        else {**results, "warnings": [*warning_lines(results), problem], "warning_codes": None}
    )
    return render_html(html_results, hlog)


def read_hlog_if_any(path: Path) -> tuple[HlogContents | None, str | None]:
    """The interval log at ``path``, or None when there is none; an unreadable one is reported, not raised
    (the other reports must still be written), as the second value."""
    try:
        with path.open(encoding="ascii") as stream:
            return read_hlog(stream), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, LoadgenError) as exc:
        return None, f"{path.name} unreadable, percentile chart drawn from results.json instead: {exc}"


def read_results(out: Path) -> dict[str, Any]:
    path = out / "results.json" if out.is_dir() else out
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LoadgenError(f"{path}: no results here") from exc
    except (OSError, ValueError) as exc:
        raise LoadgenError(f"{path}: unreadable results: {exc}") from exc
    if doc.get("schema") != 1:
        raise LoadgenError(f"{path}: unknown results schema {doc.get('schema')!r}")
    return doc
