"""The agent's decisions, as pure functions: whether it may run what it was given, when the coordinator counts
as lost, and what it tells its operator. No I/O here; :mod:`agents.agent` acts on what these return."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from urllib.parse import urlsplit

from agents.http_request import split_target
from loadgen.curve import RateCurve
from loadgen.endpoint import connect_address
from loadgen.profile import Profile

WAITING_LINE_EVERY = 10.0
"""Seconds between the agent's "waiting for the coordinator" lines while no coordinator has answered."""


def target_allowed(target: str, patterns: Sequence[str]) -> bool:
    """Whether ``target`` (a base URL) matches one of ``patterns`` (``host`` or ``host:port``, with ``*``).
    No patterns: everything is allowed."""
    if not patterns:
        return True
    parts = urlsplit(target)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for pattern in patterns:
        p = pattern.lower().strip()
        if p.startswith("["):  # [v6] or [v6]:port
            phost, _, rest = p[1:].partition("]")
            pport = rest[1:] if rest.startswith(":") else "*"
        elif p.count(":") == 1:  # host:port
            phost, pport = p.split(":")
        else:  # a host name, a v4 address or a bare v6 address
            phost, pport = p, "*"
        if fnmatch.fnmatchcase(host, phost) and fnmatch.fnmatchcase(str(port), pport):
            return True
    return False


def refusal(profile: Profile, share: float, allow_targets: Sequence[str], max_rate: float) -> str | None:
    """Why an agent limited to ``allow_targets`` and ``max_rate`` (0: no limit) must refuse ``share`` of
    ``profile``; None when it may run it."""
    allowed = " ".join(allow_targets)
    if not target_allowed(profile.target, allow_targets):
        return f"target {profile.target} is not allowed on this agent (--allow-target {allowed})"
    scheme, host, port, _ = split_target(profile.target)
    to = connect_address(profile.resolve, host, port)
    if to is not None:  # the connections go there: it must be allowed too
        address = f"[{to[0]}]:{to[1]}" if ":" in to[0] else f"{to[0]}:{to[1]}"
        if not target_allowed(f"{scheme}://{address}", allow_targets):
            return (
                f"target {profile.target} is resolved to {address} (resolve), which is not allowed on this "
                f"agent (--allow-target {allowed})"
            )
    peak = share * RateCurve(profile.load.start_rate, profile.load.stages).peak_rate
    if max_rate > 0 and peak > max_rate * (1 + 1e-9):
        return f"share of the peak rate {peak:g}/s exceeds this agent's --max-rate {max_rate:g}"
    return None


def coordinator_lost(now: float, last_heard: float, timeout: float) -> bool:
    """The dead-man's switch: a coordinator silent for longer than ``timeout`` seconds is lost, and the agent
    stops sending load (a fleet must never keep hammering a target that no one controls)."""
    return now - last_heard > timeout


def waiting_line(address: str, waited: float, hellos: int) -> str:
    """What a waiting agent says: at first (in its first second) where it waits, later also for how long and
    with how many hellos."""
    line = f"waiting for the coordinator at {address}"
    if waited < 1.0:
        return line
    plural = "" if hellos == 1 else "s"
    return f"{line} ({waited:.0f} s, {hellos} hello{plural} sent)"


def no_answer(address: str, waited: float, secured: bool) -> str:
    """Why the agent gave up waiting. Over CURVE a key that does not fit looks the same as no coordinator at
    all (the handshake fails in silence), so a secured agent names the likely causes."""
    if secured:
        return f"no reply from {address}: wrong coordinator key, or this agent's key is not authorized there?"
    return f"no coordinator answered at {address} within {waited:g} s"
