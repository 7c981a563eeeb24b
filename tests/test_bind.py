"""A coordinator that cannot bind says where and why, exits 2, and leaves nothing hanging (it once waited
forever in ZeroMQ's context teardown for the socket that had failed to bind)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.zmq_transport import ZmqServerTransport
from loadgen.errors import BindError
from tests.conftest import loadgen

pytestmark = pytest.mark.integration

PROFILE = """name = "bind"
target = "http://127.0.0.1:9"
[load]
stages = [{ duration = "0s", rate = 5 }, { duration = "2s", rate = 5 }]
[[requests]]
path = "/"
"""


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    ("bind", "extra", "reason"),
    [
        ("tcp://127.0.0.1:{port}", (), "Address already in use"),
        ("garbage", ("--insecure",), "Invalid argument"),
        ("tcp://[::1]:{port}", (), ""),  # IPv6 is off on ZeroMQ sockets unless asked for
    ],
)
def test_a_coordinator_that_cannot_bind_exits_2_at_once_naming_the_address(
    tmp_path: Path, busy_port: int, bind: str, extra: tuple[str, ...], reason: str
) -> None:
    prof = tmp_path / "p.toml"
    prof.write_text(PROFILE)
    address = bind.format(port=busy_port)
    res = loadgen(
        "coordinator", str(prof), "--bind", address, "--expect-agents", "1", "--join-timeout", "2", *extra,
        timeout=20,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert f"cannot bind {address}: {reason}" in lines[-1]
    assert "Traceback" not in res.stderr


def test_a_failed_bind_leaves_nothing_open(busy_port: int) -> None:
    for _ in range(3):  # each attempt's context is terminated; none is left holding a socket
        with pytest.raises(BindError) as exc:
            ZmqServerTransport.open(f"tcp://127.0.0.1:{busy_port}")
        assert exc.value.address == f"tcp://127.0.0.1:{busy_port}"
    t = ZmqServerTransport.open("tcp://127.0.0.1:0")
    assert t.endpoint.startswith("tcp://127.0.0.1:")
    t.close()
    t.close()  # idempotent
