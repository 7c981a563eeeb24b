"""What the agent's phases share: one run as the agent serves it (:class:`Run`), why the control channel
ended it early (:class:`Ending`), and the tables that dispatch the coordinator's messages by type."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agents.arrivals import ArrivalLoop
from agents.engine import Engine
from agents.recorder import Recorder
from loadgen.curve import RateCurve
from loadgen.profile import Profile
from loadgen.wire import Message, Start

log = logging.getLogger("loadgen.agent")


@dataclass(frozen=True)
class Ending:
    """Why the control channel ended the run early: the coordinator's Stop, or its silence (``lost``)."""

    reason: str
    lost: bool


@dataclass
class Run:
    """One run, prepared from its Start."""

    start: Start
    profile: Profile
    curve: RateCurve
    recorder: Recorder
    engine: Engine
    arrivals: ArrivalLoop
    timeout: float  # the dead-man's switch: the coordinator counts as lost after this many silent seconds
    protocol: str = "http/1.1"  # what the engine speaks ("h2": HTTP/2), told in every interval
    first: int = 0  # the index of this agent's first interval
    next_index: int = 0  # the interval the reporter cuts next
    opened_reported: int = 0  # the engine's connections opened, as of the last interval cut
    open_failed_reported: dict[str, int] = field(default_factory=dict)  # ... and its failed attempts
    stop_reporting: asyncio.Event = field(default_factory=asyncio.Event)
    final_ack: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def begin_at(self) -> float:
        """When this agent's arrivals begin, on its clock."""
        return self.start.start_at + self.start.begin


T = TypeVar("T")
Handlers = dict[type[Message], Callable[[Any], Awaitable[T]]]


async def dispatch(handlers: Handlers[T], msg: Message) -> T | None:
    """The handler of ``msg``'s type, awaited; an unexpected message is dropped and logged."""
    handler = handlers.get(type(msg))
    if handler is None:
        log.warning("dropped an unexpected %s message from the coordinator", msg.TYPE)
        return None
    return await handler(msg)
