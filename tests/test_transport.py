"""The in-memory network's synchronous reader: what a simulated agent without an event loop uses to read what
the coordinator sent it."""

from __future__ import annotations

import asyncio

import pytest

from loadgen.transport import MemoryNetwork


def test_take_pops_a_clients_inbox_in_order_and_leaves_it_empty() -> None:
    net = MemoryNetwork()
    a = net.client("a")
    net.client("b")
    assert net.server.send("a", b"one") and net.server.send("a", b"two") and net.server.send("b", b"x")
    assert net.take("a") == [b"one", b"two"]
    assert net.take("a") == []
    assert net.take("b") == [b"x"]  # each client's inbox is its own
    net.server.send("a", b"three")
    assert net.take("a") == [b"three"]
    assert asyncio.run(a.recv(0)) is None  # taken means read: the async end does not see it again


def test_take_sees_nothing_sent_after_the_client_was_cut_and_refuses_an_unknown_identity() -> None:
    net = MemoryNetwork()
    net.client("a")
    net.cut("a")
    net.server.send("a", b"lost")
    assert net.take("a") == []
    with pytest.raises(KeyError):
        net.take("nobody")
