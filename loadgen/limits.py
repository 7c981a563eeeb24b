"""How many connections a process may open: its open-file limit, raised as far as the system allows.

Every connection is a file descriptor. A process's soft limit is often 1,024 (the hard limit much higher),
and an agent that runs into it gets ``EMFILE`` from ``connect``, which the pool would report as the target
refusing connections: the wrong numbers, blamed on the wrong party. So before a run the agent raises its soft
limit to what the run may need (up to the hard limit), and caps its connections at what the limit leaves;
requests beyond the cap wait for a free connection, and the wait counts in their latency. A coordinator
likewise raises its limit to fit a connection per agent (ZeroMQ holds one descriptor per peer).
"""

from __future__ import annotations

import resource

RESERVE = 64
"""Descriptors kept for everything but connections: ZeroMQ's sockets, the event loop's, files, logs."""


def connection_budget(soft_limit: int, reserve: int = RESERVE) -> int:
    """The most connections a process with this soft open-file limit can open (at least 1)."""
    return max(1, soft_limit - reserve)


def raise_open_files(connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to fit ``connections`` (up to the hard limit; never lowered) and
    return the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVE
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return soft
    return new


def connection_limit(wanted: int) -> int:
    """The connections this process may open for a run that wants ``wanted``: the limit raised to fit them
    if the system allows, else what the open-file limit leaves."""
    return min(wanted, connection_budget(raise_open_files(wanted)))
