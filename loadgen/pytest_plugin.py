"""loadgen's pytest plugin (registered as a ``pytest11`` entry point: installing loadgen is enough).

- The ``loadgen`` fixture runs a profile and returns its :class:`~loadgen.run_results.Results`
  (``results = loadgen(profile, agents=2)``), or starts one (``with loadgen.start(profile) as run:``). Reports
  go under the test's own folder: ``tmp_path``, or ``--loadgen-out DIR`` (one folder per test). A run whose
  thresholds fail fails the test with the threshold table as its message (``check=False`` returns the
  results instead).
- Load tests are skipped unless asked for: a test marked ``@pytest.mark.load``, or using the ``loadgen``
  fixture, runs only when the ``-m`` expression names ``load`` (``pytest -m load``).

This module is imported by every pytest run wherever loadgen is installed, so it imports nothing heavy until
a test uses the fixture.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from loadgen.profile import Profile
    from loadgen.run_results import Results
    from loadgen.runner import Run

MARKER = "load"
_RUNS_KEY = pytest.StashKey[list[tuple[str, "Results"]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loadgen")
    group.addoption(
        "--loadgen-out",
        metavar="DIR",
        help="write each load test's results and reports in DIR/<test name> (default: the test's tmp_path)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: a load test (loadgen); skipped unless selected with -m {MARKER}"
    )
    config.stash[_RUNS_KEY] = []


def _selected(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr", "") or "")
    return re.search(rf"(?<![\w.])(?<!not ){MARKER}\b", expr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "loadgen" in getattr(item, "fixturenames", ()) and item.get_closest_marker(MARKER) is None:
            item.add_marker(MARKER)
    if _selected(config):
        return
    skip = pytest.mark.skip(reason=f"a load test: run it with -m {MARKER}")
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(skip)


def _folder_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "test"


class LoadgenFixture:
    """What the ``loadgen`` fixture gives a test."""

    def __init__(self, root: Path, nodeid: str, node: pytest.Item, runs: list[tuple[str, Results]]) -> None:
        self._root = root
        self._nodeid = nodeid
        self._node = node
        self._runs = runs
        self._count = 0
        self._handles: list[Run] = []

    def out(self) -> Path:
        """The folder for this test's next run."""
        self._count += 1
        return self._root if self._count == 1 else self._root.with_name(f"{self._root.name}-{self._count}")

    def __call__(self, profile: Profile, *, check: bool = True, **options: Any) -> Results:
        """Run ``profile`` (options as for :func:`loadgen.run`; ``out`` defaults to the test's folder) and
        return its results; fail the test when a threshold failed, unless ``check=False``."""
        from loadgen.runner import run

        options.setdefault("out", self.out())
        results = run(profile, **options)
        self._note(results)
        if check and not results.passed:
            pytest.fail(failure_message(results), pytrace=False)
        return results

    run = __call__

    def start(self, profile: Profile, **options: Any) -> Run:
        """Start ``profile`` and return the live handle (see :func:`loadgen.start`); it is stopped, if still
        running, when the test ends."""
        from loadgen.runner import start

        options.setdefault("out", self.out())
        handle = start(profile, **options)
        self._handles.append(handle)
        return handle

    def _note(self, results: Results) -> None:
        self._runs.append((self._nodeid, results))
        if results.out is not None:
            self._node.user_properties.append(("loadgen_results", str(results.out / "results.json")))

    def close(self) -> None:
        for handle in self._handles:
            if not handle.done:
                handle.stop("the test ended")
            try:
                results = handle.wait()
            except Exception:  # the test already saw (or raised) what went wrong
                continue
            if results not in [r for _, r in self._runs]:
                self._note(results)


def failure_message(results: Results) -> str:
    """Why a run failed, for a test report: the verdict, the threshold table, where the reports are."""
    lines = [f"loadgen: {results.name!r} did not pass"]
    if results.aborted:
        lines.append(f"stopped early: {results.aborted}")
    if results.doc.get("incomplete"):
        lines.append(f"incomplete: {results.doc['incomplete']}")
    lines.append(results.threshold_table())
    if results.out is not None:
        lines.append(f"reports: {results.out}")
    return "\n".join(lines)


@pytest.fixture
def loadgen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoadgenFixture]:
    """Run load profiles from a test: ``results = loadgen(profile, agents=2)``. Marks the test a load test."""
    base = request.config.getoption("loadgen_out")
    root = Path(base) / _folder_name(request.node.nodeid) if base else tmp_path / "loadgen"
    fixture = LoadgenFixture(root, request.node.nodeid, request.node, request.config.stash[_RUNS_KEY])
    yield fixture
    fixture.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runs = config.stash.get(_RUNS_KEY, [])
    if not runs:
        return
    terminalreporter.section("loadgen")
    for nodeid, r in runs:
        verdict = "passed" if r.passed else "FAILED"
        where = f"  {r.out}" if r.out is not None else ""
        terminalreporter.write_line(
            f"{nodeid}: {r.name!r} {verdict}; {r.totals.scheduled} scheduled, {r.totals.ok} ok, "
            f"p99 {r.latency.p99 * 1000:.1f} ms{where}"
        )
