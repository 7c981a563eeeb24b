"""Simulated agents for the coordinator benchmark: real ZeroMQ DEALER sockets speaking the real protocol.

    python bench/coord_sim.py --connect tcp://127.0.0.1:5555 --agents 250 --first 0 --duration 60

Each simulated agent says Hello, answers the clock probes, waits for Start, then every second of the run
sends one Interval (10 request names, each with encoded latency and service histograms of ``--rate``/10
samples drawn from a log-normal distribution, as a real agent at that rate would) and a Heartbeat, and at the
end a Finished. Histograms are encoded once, in a few dozen variants, and reused: what is measured is the
coordinator, not this process. Messages are built from :mod:`loadgen.wire`'s dataclasses, filling any field
this script does not know with a zero value, so it keeps speaking the protocol as it grows.

Prints JSON lines: ``{"event": "started", "start_at": T}`` (monotonic clock) and ``{"event": "done", ...}``.
Bounded: gives up ``--duration`` + 120 s after it starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import socket
import sys
import time
from typing import Any

import zmq

from loadgen import histogram, wire

_ZERO = {"int": 0, "float": 0.0, "str": "", "bytes": b""}


def message(cls: type[wire.Message], **values: Any) -> bytes:
    """Encode ``cls`` with ``values``; fields not given get a zero value of their type."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            fields[f.name] = values[f.name]
        else:
            fields[f.name] = _ZERO.get(str(f.type), {})
    data: bytes = wire.encode(cls(**fields))
    return data


def histogram_variants(samples: int, count: int, rng: random.Random, median_s: float) -> list[bytes]:
    """``count`` encoded histograms of ``samples`` log-normal durations around ``median_s`` (long tail)."""
    mu = math.log(median_s)
    out = []
    for _ in range(count):
        h = histogram.new_histogram()
        for _ in range(samples):
            h.record_value(histogram.clamp_us(rng.lognormvariate(mu, 0.6)))
        out.append(histogram.encode_wire(h))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connect", required=True)
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="number of the first simulated agent")
    parser.add_argument("--duration", type=int, required=True, help="the profile's duration in seconds")
    parser.add_argument("--names", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="requests per second per simulated agent")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.agents + 256)), hard))
    rng = random.Random(args.first)
    per_name = max(1, args.rate // args.names)
    variants = histogram_variants(per_name, 24, rng, 0.020)  # response and service times, ~20 ms
    lag_variants = histogram_variants(args.rate, 4, rng, 0.00005)  # send lag, ~50 µs
    names = [f"r{i}" for i in range(args.names)]

    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, args.agents + 64)
    socks: list[zmq.Socket[bytes]] = []
    ids: list[str] = []
    poller = zmq.Poller()
    for k in range(args.first, args.first + args.agents):
        agent_id = f"sim-{k:05d}"
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, agent_id.encode())
        s.setsockopt(zmq.LINGER, 2000)
        s.connect(args.connect)
        socks.append(s)
        ids.append(agent_id)
        poller.register(s, zmq.POLLIN)
    index_of = {s: i for i, s in enumerate(socks)}
    host = socket.gethostname()
    for s, agent_id in zip(socks, ids, strict=True):
        s.send(message(wire.Hello, agent_id=agent_id, host=host, pid=os.getpid(), software="loadgen sim"))

    give_up = time.monotonic() + args.duration + 120
    start_at: float | None = None
    started = 0
    next_k = 0
    sent_intervals = 0
    finished = False
    received = 0
    while time.monotonic() < give_up and not finished:
        for s, _ in poller.poll(10):
            sock = s if isinstance(s, zmq.Socket) else None
            if sock is None:
                continue
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += 1
                msg = wire.decode(data, peer="coordinator")
                if isinstance(msg, wire.Ping):
                    sock.send(message(wire.Pong, seq=msg.seq, t_coord=msg.t_coord, t_agent=time.monotonic()))
                elif isinstance(msg, wire.Start):
                    started += 1
                    start_at = msg.start_at if start_at is None else start_at
                    if started == len(socks):
                        print(json.dumps({"event": "started", "start_at": start_at}), flush=True)
                elif isinstance(msg, wire.Stop):
                    print(json.dumps({"event": "stopped", "agent": ids[index_of[sock]]}), flush=True)
        if start_at is None:
            continue
        now = time.monotonic()
        while next_k < args.duration and now >= start_at + next_k + 1.0:
            k = next_k
            for i, s in enumerate(socks):
                entries = {
                    name: [
                        per_name,
                        per_name,
                        0,
                        {},
                        variants[(i + j + k) % len(variants)],
                        variants[(i + j + k + 7) % len(variants)],
                    ]
                    for j, name in enumerate(names)
                }
                s.send(
                    message(
                        wire.Interval,
                        index=k,
                        first=0,
                        scheduled=per_name * len(names),
                        dropped=0,
                        in_flight=3,
                        names=entries,
                        lag=lag_variants[(i + k) % len(lag_variants)],
                        cpu=0.4,
                    )
                )
                s.send(message(wire.Heartbeat, t=now))
                sent_intervals += 1
            next_k += 1
        if next_k >= args.duration:
            total = per_name * len(names) * args.duration
            for s in socks:
                s.send(
                    message(
                        wire.Finished,
                        scheduled=total,
                        ok=total,
                        failed=0,
                        dropped=0,
                        in_flight=0,
                        last_index=args.duration - 1,
                    )
                )
            finished = True
    print(
        json.dumps(
            {"event": "done", "finished": finished, "intervals": sent_intervals, "received": received}
        ),
        flush=True,
    )
    for s in socks:
        s.close(linger=2000)
    ctx.term()
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
