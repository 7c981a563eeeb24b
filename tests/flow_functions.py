"""Flows written in Python, for the tests (agents import them by name: ``tests.flow_functions:...``)."""

from __future__ import annotations

import asyncio
import contextlib

from loadgen import Session, StepFailed


async def shop(s: Session) -> None:
    """Two steps: the first's response decides the second's path; a pause between them."""
    r = await s.get("/bytes?n=12", name="size")
    await s.pause(0.05)
    await s.get(f"/delay?ms={len(r.body)}&n={s.data.get('n', '-')}", name="wait")


async def tolerant(s: Session) -> None:
    """A failed step the flow catches: counted failed as a step, the flow goes on and ends ok."""
    try:
        await s.get("/status/503", name="maybe")
    except StepFailed as exc:
        assert exc.category == "http_503"
    await s.get("/status/404", name="gone", expect=[404])


async def broken(s: Session) -> None:
    """Raises after one step: the flow fails as python:KeyError."""
    await s.get("/", name="one")
    {}["missing"]


async def undeclared(s: Session) -> None:
    await s.get("/", name="not_a_step")


def not_async(s: Session) -> None:
    pass


async def impatient(s: Session) -> None:
    """Gives up waiting for a step (its own timeout) and goes on with the next one."""
    try:
        async with asyncio.timeout(0.02):
            await s.get("/slow", name="slow")
    except TimeoutError:
        pass
    await s.get("/fast", name="fast")


async def gives_up(s: Session) -> None:
    """Gives up waiting for its only step and returns."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.02):
            await s.get("/slow", name="slow")
