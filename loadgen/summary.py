"""Placeholder until report_md lands: a compact terminal summary."""

from __future__ import annotations

import json
from typing import Any


def render_terminal_summary(results: dict[str, Any]) -> str:
    return json.dumps({k: results[k] for k in ("totals", "errors", "latency_ms", "rps")}, indent=1)
