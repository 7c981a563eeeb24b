"""The event types the product writes into results.json are the ones docs/results-schema.md documents."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for d in ("coordinator", "agents", "loadgen") for p in sorted((ROOT / d).glob("*.py"))]

_EMITTED = [
    re.compile(r'_event\(\s*"([a-z_]+)"'),  # self._event("agent_lost", ...)
    re.compile(r'"type":\s*"([a-z_]+)"'),  # events.append({"t": ..., "type": "run_started"})
    re.compile(r'_abort\(.*,\s*"([a-z_]+)"\)\s*$', re.MULTILINE),  # self._abort(reason, "aborted")
    re.compile(r'\bEvent\(\s*"([a-z_]+)"'),
    re.compile(r'_post\([^,]+,\s*"([a-z_]+)"'),  # actions: self._post(t, "action_started", ...)
    re.compile(
        r'\bAbort\(.*,\s*"([a-z_]+)"\)\s*$', re.MULTILINE
    ),  # early_stop: Abort(reason, "aborted")  # membership's actions: Event("agent_lost", {...})
]


def emitted_events() -> dict[str, str]:
    """Every event type written in the source, with the first file that writes it."""
    found: dict[str, str] = {}
    for path in SOURCES:
        text = path.read_text()
        if path.name == "wire.py":  # wire messages have a "type" too; they are not events
            continue
        for pattern in _EMITTED:
            for name in pattern.findall(text):
                found.setdefault(name, path.name)
    return found


def documented_events() -> set[str]:
    """The types in the schema's "Events" table (its first column)."""
    doc = (ROOT / "docs" / "results-schema.md").read_text()
    section = doc.split("## Events", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))


def test_the_search_finds_the_events_it_should() -> None:
    """A pattern that stopped matching would make the next test pass on nothing."""
    found = emitted_events()
    assert {"run_started", "run_finished", "agent_lost", "aborted", "interrupted", "agent_rejected"} <= set(
        found
    )


def test_every_event_written_is_documented_and_every_documented_event_is_written() -> None:
    emitted = emitted_events()
    documented = documented_events()
    undocumented = {name: where for name, where in emitted.items() if name not in documented}
    assert not undocumented, f"events missing from docs/results-schema.md: {undocumented}"
    assert documented <= set(emitted), f"documented but never written: {documented - set(emitted)}"


def test_refused_and_rejected_are_told_apart() -> None:
    """An agent that refused the run and an agent the authenticator turned away are different events."""
    doc = (ROOT / "docs" / "results-schema.md").read_text()
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `(agent_re[a-z]+)` \| ([^|]+)\|", doc, re.MULTILINE)
    }
    assert set(rows) == {"agent_refused", "agent_rejected"}
    assert "refused the run" in rows["agent_refused"]
    assert "authenticator" in rows["agent_rejected"] and "key" in rows["agent_rejected"]
