"""Ctrl-C and SIGTERM during a run: a flag for the coordinator's run loop, not an exception anywhere."""

from __future__ import annotations

import os
import signal

import pytest

from loadgen.cli import _interrupts_stop

pytestmark = pytest.mark.integration  # sends itself signals


class FakeCoordinator:
    """Coordinator.interrupt's contract: taken once, inside the run loop."""

    def __init__(self, interruptible: bool) -> None:
        self.interruptible = interruptible
        self.asked = 0

    def interrupt(self) -> bool:
        if not self.interruptible or self.asked:
            return False
        self.asked += 1
        return True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_the_run_to_stop_and_the_second_leaves(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    coord = FakeCoordinator(interruptible=True)
    with _interrupts_stop(coord):
        os.kill(os.getpid(), sig)  # its Python handler runs at the next bytecode instruction
        assert coord.asked == 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
    assert coord.asked == 1
    assert signal.getsignal(sig) is before  # put back on the way out


def test_a_signal_outside_the_run_loop_leaves_at_once() -> None:
    coord = FakeCoordinator(interruptible=False)  # joining, syncing clocks, or writing the reports
    with _interrupts_stop(coord), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert coord.asked == 0
