"""Unique test data across the fleet: the coordinator's leases (pure) and the agent's side of them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.flow_runner import _Data
from coordinator.data_leases import RESERVE, DataLeases
from loadgen.errors import LoadgenError
from loadgen.flows import DataSource


def source(rows: int, on_exhausted: str = "drop", mode: str = "unique") -> DataSource:
    return DataSource("u.csv", ("user",), tuple((f"u{i}",) for i in range(rows)), mode, on_exhausted)


@given(
    rows=st.integers(1, 500),
    asks=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 8)), min_size=1, max_size=60),
)
def test_grants_never_overlap_and_end_with_the_rows(rows: int, asks: list[tuple[int, int]]) -> None:
    leases = DataLeases((source(rows),))
    used: list[int] = []
    ends = 0
    for count, agents in asks:
        grant = leases.grant(0, count, agents)
        assert grant is not None and 0 <= grant.count <= count
        used += range(grant.start, grant.start + grant.count)
        ends += grant.exhausted
    assert len(used) == len(set(used))  # never a row twice
    assert all(0 <= i < rows for i in used)
    assert ends == (1 if len(used) == rows else 0)  # the end is reported once, when it is reached


def test_a_small_file_is_spread_over_the_fleet() -> None:
    leases = DataLeases((source(100),))
    first = leases.grant(0, 256, agents=2)
    second = leases.grant(0, 256, agents=2)
    assert first is not None and second is not None
    assert first.count == 25 and second.count == 19  # half a share of what is left, each time


def test_wrap_starts_a_new_pass_and_never_ends() -> None:
    leases = DataLeases((source(10, "wrap"),))
    grants = [leases.grant(0, 4) for _ in range(4)]
    assert [(g.start, g.count, g.exhausted) for g in grants if g] == [
        (0, 4, False),
        (4, 4, False),
        (8, 4, False),  # rows 8, 9, then 0, 1 of the next pass
        (2, 4, False),
    ]


def test_a_wrap_grant_never_holds_a_row_twice_and_the_next_goes_on_round() -> None:
    """A block of a wrapping source is at most one pass of the file (no row twice in one agent's block); the
    next block goes on round the file (what docs/profiles.md says of "wrap": unique within a pass)."""
    leases = DataLeases((source(100, "wrap"),))
    first = leases.grant(0, 256, agents=2)  # the initial lease of each agent
    second = leases.grant(0, 256, agents=2)
    assert first is not None and second is not None
    assert (first.start, first.count) == (0, 100)
    assert (second.start, second.count) == (0, 100)  # the next pass: the same rows, by another agent


def test_only_unique_sources_are_leased() -> None:
    leases = DataLeases((source(10, mode="sequential", on_exhausted="wrap"), source(10)))
    assert leases.grant(0, 5) is None
    assert leases.grant(2, 5) is None
    assert leases.grant(1, 0) is None
    assert leases.grant(1, 5) is not None


@given(counts=st.lists(st.integers(1, 3000), min_size=1, max_size=40), crash_at=st.integers(0, 40))
def test_a_resumed_coordinator_never_grants_a_row_twice(counts: list[int], crash_at: int) -> None:
    """The checkpoint keeps the marks as they were at the last grant that asked for one; after a crash the
    leases go on from there."""
    rows = 50_000
    leases = DataLeases((source(rows, "drop"),))
    durable = leases.to_state()
    granted: list[range] = []
    for i, count in enumerate(counts):
        if i == crash_at:
            leases = DataLeases((source(rows, "drop"),))
            leases.restore(durable)
        grant = leases.grant(0, count)
        assert grant is not None
        if grant.checkpoint:
            durable = leases.to_state()
        granted.append(range(grant.start, grant.start + grant.count))
    used = [i for r in granted for i in r]
    assert len(used) == len(set(used))


def test_checkpoints_are_needed_only_every_so_many_rows() -> None:
    leases = DataLeases((source(10**6),))
    needed = sum(bool(g and g.checkpoint) for g in (leases.grant(0, 100) for _ in range(1000)))
    assert needed == -(-100_000 // RESERVE)


def test_a_resumed_coordinator_goes_on_with_most_of_a_small_file() -> None:
    """A file of a few thousand test accounts (common) must not be spent whole by a restart: the mark a
    checkpoint keeps is ahead of the grants by a share of the file, not by RESERVE rows beyond its end."""
    rows = 5_000
    leases = DataLeases((source(rows),))
    durable = leases.to_state()
    before = 0
    for _ in range(2):
        grant = leases.grant(0, 256, agents=2)
        assert grant is not None
        before += grant.count
        if grant.checkpoint:
            durable = leases.to_state()
    resumed = DataLeases((source(rows),))
    resumed.restore(durable)
    after = 0
    for _ in range(10_000):  # bounded: every grant is at least a row until none is left
        grant = resumed.grant(0, 256, agents=2)
        assert grant is not None
        if grant.count == 0:
            break
        after += grant.count
    assert after >= 0.8 * (rows - before)  # a few rows lost to the restart, not all of them


# --- the agent's side


def test_an_agent_uses_its_blocks_and_asks_again_before_they_run_out() -> None:
    asked: list[tuple[int, int]] = []
    data = _Data(source(1000), 3, random.Random(1))
    data.request(lambda s, n: asked.append((s, n)), 8)
    assert asked == [(3, 8)]
    assert data.draw(lambda s, n: asked.append((s, n))) is None  # nothing granted yet: no row
    assert asked == [(3, 8)]  # and no second request while one is on its way
    data.granted(10, 8)
    rows = [data.draw(lambda s, n: asked.append((s, n))) for _ in range(8)]
    assert rows == [(f"u{i}",) for i in range(10, 18)]
    assert len(asked) == 2  # asked again while rows were left
    data.granted(500, 0)
    assert data.exhausted
    assert data.draw(lambda s, n: asked.append((s, n))) is None
    assert len(asked) == 2  # never again once the coordinator said there are none


def test_the_checkpoint_keeps_the_rows_apart_and_gives_them_back(tmp_path: Path) -> None:
    from coordinator.state import DATA_FILE, read_state, write_data, write_state
    from loadgen.flows import data_to_wire

    rows = data_to_wire((source(3),))
    write_data(tmp_path, rows)
    write_state(tmp_path, {"profile": {"data": []}, "data_file": True})
    assert (tmp_path / DATA_FILE).exists()
    assert read_state(tmp_path)["profile"]["data"] == rows
    (tmp_path / DATA_FILE).unlink()
    with pytest.raises(LoadgenError, match="test data cannot be read"):
        read_state(tmp_path)
