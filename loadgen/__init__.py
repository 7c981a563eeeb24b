"""loadgen: a distributed open-model HTTP load generator with exact merged HDR percentiles.

The library, for scripted load tests (docs/python-api.md)::

    import loadgen

    profile = loadgen.Profile(
        target="http://127.0.0.1:8080",
        load=loadgen.spike(base=50, peak=400, before="10s", spike="10s", after="20s"),
        requests=[loadgen.Request("/")],
        thresholds=["p99 < 250ms"],
    )
    results = loadgen.run(profile, agents=2)
    assert results.latency.p99 < 0.25

Names are imported when first used, so ``import loadgen`` stays cheap for the agent and the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # profiles
    "Profile": "loadgen.profile",
    "Request": "loadgen.profile",
    "Load": "loadgen.profile",
    "Stage": "loadgen.profile",
    "Duration": "loadgen.profile",
    "Tls": "loadgen.endpoint",
    "Auth": "loadgen.endpoint",
    "load_profile": "loadgen.profile_file",
    "ramp": "loadgen.loads",
    "soak": "loadgen.loads",
    "spike": "loadgen.loads",
    "step": "loadgen.loads",
    "stages": "loadgen.loads",
    # running
    "run": "loadgen.runner",
    "arun": "loadgen.runner",
    "start": "loadgen.runner",
    "Run": "loadgen.runner",
    "Snapshot": "loadgen.runner",
    "Action": "loadgen.actions",
    "StopRun": "loadgen.actions",
    # flows written in Python
    "Session": "loadgen.session",
    "Response": "loadgen.session",
    "StepFailed": "loadgen.session",
    # results
    "Results": "loadgen.run_results",
    "Percentiles": "loadgen.run_results",
    "Window": "loadgen.run_results",
    "Totals": "loadgen.run_results",
    "RequestResults": "loadgen.run_results",
    "ThresholdResult": "loadgen.run_results",
    "Event": "loadgen.run_results",
    # errors
    "LoadgenError": "loadgen.errors",
    "ProfileError": "loadgen.errors",
    "RunError": "loadgen.errors",
    "JoinTimeout": "loadgen.errors",
    "BindError": "loadgen.errors",
}

__all__ = [
    "Action",
    "Auth",
    "BindError",
    "Duration",
    "Event",
    "JoinTimeout",
    "Load",
    "LoadgenError",
    "Percentiles",
    "Profile",
    "ProfileError",
    "Request",
    "RequestResults",
    "Response",
    "Results",
    "Run",
    "RunError",
    "Session",
    "Snapshot",
    "Stage",
    "StepFailed",
    "StopRun",
    "ThresholdResult",
    "Tls",
    "Totals",
    "Window",
    "__version__",
    "arun",
    "load_profile",
    "ramp",
    "run",
    "soak",
    "spike",
    "stages",
    "start",
    "step",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loadgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from loadgen.actions import Action, StopRun
    from loadgen.endpoint import Auth, Tls
    from loadgen.errors import BindError, JoinTimeout, LoadgenError, ProfileError, RunError
    from loadgen.loads import ramp, soak, spike, stages, step
    from loadgen.profile import Duration, Load, Profile, Request, Stage
    from loadgen.profile_file import load_profile
    from loadgen.run_results import (
        Event,
        Percentiles,
        RequestResults,
        Results,
        ThresholdResult,
        Totals,
        Window,
    )
    from loadgen.runner import Run, Snapshot, arun, run, start
    from loadgen.session import Response, Session, StepFailed
