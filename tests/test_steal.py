"""The agent's reading of its host's stolen CPU time (pure: a fake /proc/stat)."""

from __future__ import annotations

import pytest

from agents.steal import StealMeter, parse_stolen


def _stat(user: int, idle: int, steal: int, guest: int = 0) -> str:
    # cpu user nice system idle iowait irq softirq steal guest guest_nice, then per-core lines
    return f"cpu  {user} 0 10 {idle} 0 0 0 {steal} {guest} 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2 3\n"


def test_parse_reads_steal_and_the_total_without_guest_time() -> None:
    assert parse_stolen(_stat(100, 800, 90, guest=50)) == (90, 100 + 10 + 800 + 90)
    assert parse_stolen("cpu  1 2 3 4 5 6 7\n") is None  # a kernel without the steal column
    assert parse_stolen("") is None
    assert parse_stolen("cpu0 1 2 3 4 5 6 7 8 9\n") is None
    assert parse_stolen("cpu  a b c d e f g h\n") is None


def test_the_share_is_of_the_time_since_the_last_reading() -> None:
    readings = iter([_stat(100, 800, 0), _stat(200, 800, 25), _stat(200, 900, 25), _stat(200, 900, 25)])
    meter = StealMeter(lambda: next(readings))
    assert meter.share() == pytest.approx(25 / 125)  # 100 user + 25 steal since the first reading
    assert meter.share() == 0.0  # 100 idle, none stolen
    assert meter.share() == 0.0  # no time passed


def test_no_proc_stat_means_nothing_stolen() -> None:
    meter = StealMeter(lambda: "")
    assert meter.share() == 0.0
    texts = iter(["", _stat(1, 1, 1), _stat(2, 2, 5)])
    meter = StealMeter(lambda: next(texts))
    assert meter.share() == 0.0  # no earlier reading to compare with
    assert meter.share() == pytest.approx(4 / 6)


@pytest.mark.integration  # reads /proc/stat
def test_this_machine_gives_a_share() -> None:
    meter = StealMeter()
    assert 0.0 <= meter.share() <= 1.0


def test_the_meter_reads_nothing_until_asked() -> None:
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        return _stat(100 + 10 * len(reads), 800, 5 * len(reads))

    meter = StealMeter(read)
    assert reads == []
    meter.begin()
    assert len(reads) == 1
    assert meter.share() == pytest.approx(5 / 15)  # since begin()
    assert len(reads) == 2
