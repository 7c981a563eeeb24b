"""The agent's reports: every second of the run, the interval the recorder cut goes into the outbox (kept
until the coordinator acknowledges it) and to the coordinator, with the CPU the agent used and the share its
hypervisor stole; at the end, the last interval and Finished with the run's totals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agents.outbox import Outbox
from agents.session import Run
from agents.steal import StealMeter
from loadgen.wire import Finished, encode

log = logging.getLogger("loadgen.agent")

SEAL_WAIT = 1.0
"""Seconds the reporter waits, at most, for the arrival loop to seal a second before cutting its interval:
arrivals counted after the cut land in the next interval. 0.25 s was too short for a machine that stalls: a
loaded test machine once put an agent's last 100 arrivals of a 4 s run into a fifth second. The reporter
stops waiting as soon as the second is sealed, so this only delays the reports of a loop already that far
behind (well inside the coordinator's three seconds of grace)."""


class Reporter:
    """Cuts and sends the run's intervals, then Finished; how to send, the clocks and the outbox are given."""

    def __init__(
        self,
        outbox: Outbox,
        steal: StealMeter,
        send_bytes: Callable[[bytes], Awaitable[None]],
        clock: Callable[[], float],
        cpu_clock: Callable[[], float],
        say: Callable[[str], None],
    ) -> None:
        self._outbox = outbox
        self._steal = steal
        self._send_bytes = send_bytes
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._say = say

    async def send_interval(self, run: Run, index: int, cpu: float) -> None:
        stolen = self._steal.share()
        engine = run.engine
        opened, failures = engine.opened, dict(engine.open_failures)
        before = run.open_failed_reported
        failed = {k: n - before.get(k, 0) for k, n in failures.items() if n > before.get(k, 0)}
        pending = run.recorder.cut(
            index,
            engine.in_flight,
            cpu,
            run.first,
            engine.connections,
            stolen,
            opened - run.opened_reported,
            failed,
            protocol=run.protocol,
            peak_streams=engine.peak_streams,
        )
        run.opened_reported, run.open_failed_reported = opened, failures
        data = encode(await pending.build_async())
        for lost in self._outbox.add(index, data):
            log.warning(
                "dropped unacknowledged interval %d: the coordinator has not confirmed data for an hour", lost
            )
        await self._send_bytes(data)

    async def report(self, run: Run) -> None:
        """Every second of the run: hand the finished interval to the coordinator.

        Waits a little (at most ``SEAL_WAIT``) for the arrival loop to seal the second, so a busy loop's
        arrivals are still counted in the second they were intended for."""
        k = run.first
        cpu_at, cpu_used = self._clock(), self._cpu_clock()
        while True:
            due = run.start.start_at + k + 1
            try:
                await asyncio.wait_for(run.stop_reporting.wait(), max(0.0, due - self._clock()))
            except TimeoutError:
                pass
            else:
                if self._clock() < due:
                    return
                # The run ended after this second did, but before this task had its turn (a busy machine):
                # the second is still cut as itself, not left for the last interval to carry.
            give_up = self._clock() + SEAL_WAIT
            while run.arrivals.sealed_until < k + 1 and self._clock() < give_up:
                await asyncio.sleep(0.002)
            now, used = self._clock(), self._cpu_clock()
            cpu = (used - cpu_used) / (now - cpu_at) if now > cpu_at else 0.0
            cpu_at, cpu_used = now, used
            run.next_index = k + 1
            await self.send_interval(run, k, cpu)
            k += 1

    async def finish(self, run: Run) -> None:
        """The last interval, then Finished with the run's totals."""
        rec, engine = run.recorder, run.engine
        # What is left belongs to the second the reporter stopped in (every second before it was cut as
        # itself), however late this runs.
        index = max(run.next_index, run.first)
        await self.send_interval(run, index, 0.0)
        data = encode(
            Finished(
                scheduled=rec.total_scheduled,
                ok=rec.total_ok,
                failed=rec.total_failed,
                dropped=rec.total_dropped,
                in_flight=engine.in_flight,
                last_index=index,
            )
        )
        self._outbox.finish(data)
        await self._send_bytes(data)
        self._say(
            f"finished: scheduled {rec.total_scheduled}, ok {rec.total_ok}, failed {rec.total_failed}, "
            f"dropped {rec.total_dropped}, in flight {engine.in_flight}"
        )
