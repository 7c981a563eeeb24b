"""The agent as a real process and its ZeroMQ end of the control channel, on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq

from agents.zmq_transport import LINGER, ZmqClientTransport
from loadgen.errors import RunError
from tests.conftest import Watched, free_port

pytestmark = pytest.mark.integration

EXIT_RUN = 3


def test_an_agent_with_no_coordinator_says_it_waits_then_gives_up() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    began = time.monotonic()
    agent = Watched("agent", "--connect", endpoint, "--wait", "2")
    try:
        agent.wait_for(f"waiting for the coordinator at {endpoint}", timeout=15)
        code = agent.wait(timeout=20)
    finally:
        agent.kill()
    took = time.monotonic() - began
    assert code == EXIT_RUN, agent.stderr()
    assert f"no coordinator answered at {endpoint} within 2 s" in agent.stderr()
    assert took < 2 + LINGER + 6  # the wait, the socket's linger at most, and the interpreter's start


def test_the_dealer_talks_to_a_router() -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    async def talk() -> bytes | None:
        link = ZmqClientTransport(f"tcp://127.0.0.1:{port}", "agent-7").open()
        try:
            await link.send(b"hello")
            assert router.poll(5000)
            identity, data = router.recv_multipart()
            assert (identity, data) == (b"agent-7", b"hello")
            router.send_multipart([identity, b"welcome"])
            return await link.recv(5.0)
        finally:
            link.close()
            link.close()  # idempotent

    try:
        assert asyncio.run(talk()) == b"welcome"
    finally:
        router.close()
        ctx.term()


def test_closing_is_bounded_with_messages_nobody_takes() -> None:
    async def queue_and_close() -> float:
        link = ZmqClientTransport(f"tcp://127.0.0.1:{free_port()}", "agent-8").open()
        for _ in range(3):
            await asyncio.wait_for(link.send(b"hello"), 1.0)
        assert await link.recv(0.05) is None
        began = time.monotonic()
        link.close()
        return time.monotonic() - began

    assert asyncio.run(queue_and_close()) < LINGER + 1.0


def test_an_unusable_endpoint_is_a_run_error() -> None:
    with pytest.raises(RunError, match="cannot connect to tcp://no-port"):
        ZmqClientTransport("tcp://no-port", "agent-9").open()
