"""Who carries the load, and how much: the fleet's membership and shares as a policy with no I/O.

The coordinator's shell tells :class:`Membership` what happened (an agent said hello, its clock is known, it
refused the run, it fell silent, it finished) and gets back what to do, as values: :class:`Welcome` it,
:class:`Probe` its clock, :class:`StartShare` (a Start message), :class:`ShareChange` (a Reshare),
:class:`StopAgent`, and what to tell the operator (:class:`Event`, :class:`Say`). The shell turns those into
wire messages; this module never sends, reads a clock or touches a socket, so every membership story (a lost
agent, a late joiner, a refusal, the last agent gone) is a plain function call in a test.

Times here are *run time*: seconds since the fleet's aligned start.

Every arrival of the profile is accounted for: when an agent stops carrying its share (lost, or refused) the
arrivals of that share until the survivors take it over are :attr:`Membership.unsent` (no one sent them);
while no agent is left at all, the whole rate is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.split import split
from loadgen.curve import RateCurve

HEARTBEAT_EVERY = 1.0  # agents beat this often; also the coordinator's beat
JOIN_LEAD = 1.0  # a late joiner starts this long after its clock probes
LOST_LEAD = 0.25  # survivors take over a lost agent's share this long after it is declared lost
SEED_STEP = 7919  # agent i's seed is the run's seed + SEED_STEP * i (independent streams)
RESHARE_SEED_STEP = 104729  # and each reshare moves every seed on

AGENT_STATES = ("joining", "active", "finished", "lost", "refused")


@dataclass
class AgentInfo:
    """One agent as the coordinator knows it (checkpointed field by field)."""

    id: str
    host: str
    pid: int
    max_rate: float = 0.0
    state: str = "joining"
    share: float = 0.0
    clock_offset_ms: float = 0.0
    clock_error_ms: float = 0.0
    start_late_ms: float | None = None
    joined_t: float = 0.0
    lost_t: float | None = None
    unreported_estimate: float = 0.0  # arrivals a lost agent scheduled after its last interval (expected)
    unsent: float = 0.0  # arrivals of its share that no agent sent (expected), until the takeover
    unsent_from: float = 0.0  # the run-time window those arrivals fell in
    unsent_to: float = 0.0
    finished_received: bool = False

    @property
    def lost(self) -> bool:
        return self.state == "lost"


# --- what to do --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcome:
    agent: str


@dataclass(frozen=True)
class Probe:
    """Start probing ``agent``'s clock (a mid-run joiner)."""

    agent: str


@dataclass(frozen=True)
class StartShare:
    agent: str
    share: float
    phase: float
    seed: int
    begin: float  # run time its arrivals begin (0 for the first agents)


@dataclass(frozen=True)
class ShareChange:
    agent: str
    share: float
    phase: float
    seed: int
    at: float


@dataclass(frozen=True)
class StopAgent:
    agent: str
    reason: str


@dataclass(frozen=True)
class Event:
    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Say:
    """A line for the operator."""

    line: str


Action = Welcome | Probe | StartShare | ShareChange | StopAgent | Event | Say


class CapacityShort(Exception):
    """The agents' ``--max-rate`` limits cannot carry their shares of the peak rate."""


def capacity_problem(agents: Mapping[str, AgentInfo], shares: Mapping[str, float], peak: float) -> str | None:
    """Why ``shares`` of a curve peaking at ``peak`` exceed an agent's own limit, or None."""
    for agent, share in shares.items():
        limit = agents[agent].max_rate
        if limit > 0 and share * peak > limit * (1 + 1e-9):
            return (
                f"agent {agent} allows at most {limit:g} requests/s, but its share of the peak rate is "
                f"{share * peak:g}/s; add agents or raise its --max-rate"
            )
    return None


def silent_agents(
    busy: Iterable[str], last_heard: Mapping[str, float], now: float, timeout: float
) -> list[str]:
    """The agents among ``busy`` not heard from for more than ``timeout`` seconds (any clock)."""
    return [a for a in busy if now - last_heard.get(a, now) > timeout]


FINISH_GRACE = 5.0  # beyond the request timeout and agent timeout, how long the end waits for stragglers


def finish_overdue(elapsed: float, deadline: float, request_timeout: float, agent_timeout: float) -> bool:
    """Whether agents still busy this long after the end are given up on (declared lost): the requests they
    had in flight had their timeout, and their last reports the agent timeout, and then some."""
    return elapsed > deadline + request_timeout + agent_timeout + FINISH_GRACE


def run_over(*, busy: bool, any_agents: bool, elapsed: float, deadline: float, aborted: bool) -> bool:
    """Whether the run loop is done: nobody is still sending, and the run reached its end (or was stopped,
    or never had anyone)."""
    return not busy and (elapsed >= deadline or not any_agents or aborted)


class Membership:
    """The fleet's state and the policy that changes it. See the module docstring."""

    def __init__(self, expect: int, seed: int, curve: RateCurve, duration: float) -> None:
        self.expect = expect
        self.seed = seed
        self.curve = curve
        self.duration = duration
        self.agents: dict[str, AgentInfo] = {}
        self.phase = "join"  # join → sync → run
        self.reshares = 0
        self.uncovered_since: float | None = None  # run time since which no agent carries the load
        self.unsent_uncovered = 0.0  # arrivals in the stretches no agent carried (expected)
        self.share_refused = False  # an agent refused the run it was given
        self.went_empty = False  # at some point of the run no agent carried the load

    # --- views -------------------------------------------------------------------------------------------

    def active(self) -> list[str]:
        return [a for a, info in self.agents.items() if info.state == "active"]

    def busy(self) -> list[str]:
        """Agents whose data may still come: active or joining."""
        return [a for a, info in self.agents.items() if info.state in ("active", "joining")]

    def reachable(self) -> list[str]:
        """Agents still listening to the coordinator (heartbeats and acknowledgements go to these)."""
        return [a for a, info in self.agents.items() if info.state not in ("lost", "refused")]

    @property
    def unsent(self) -> float:
        """Arrivals of the profile that no agent sent (expected count), so far."""
        return sum(a.unsent for a in self.agents.values()) + self.unsent_uncovered

    # --- checkpoints ---------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the fleet (plain values)."""
        return {
            "reshares": self.reshares,
            "fleet": {
                "uncovered_since": self.uncovered_since,
                "unsent_uncovered": self.unsent_uncovered,
                "share_refused": self.share_refused,
                "went_empty": self.went_empty,
            },
            # A shallow copy: AgentInfo holds plain values (dataclasses.asdict deep-copies, 1,000 agents
            # every 2 s).
            "agents": [dict(vars(a)) for a in self.agents.values()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take up a checkpointed run (:meth:`state`; older checkpoints have no ``fleet``)."""
        self.phase = "run"
        self.reshares = state["reshares"]
        self.agents = {a["id"]: AgentInfo(**a) for a in state["agents"]}
        saved = state.get("fleet", {})
        self.uncovered_since = saved.get("uncovered_since")
        self.unsent_uncovered = saved.get("unsent_uncovered", 0.0)
        self.share_refused = saved.get("share_refused", False)
        self.went_empty = saved.get("went_empty", False)

    # --- events in ---------------------------------------------------------------------------------------

    def hello(self, agent: str, host: str, pid: int, max_rate: float, now: float) -> list[Action]:
        """``agent`` said hello at run time ``now`` (0 before the start)."""
        if agent in self.agents:
            return [Welcome(agent)]  # a repeated hello: the first welcome was lost or late
        if self.phase == "join" and len(self.agents) < self.expect:
            self.agents[agent] = AgentInfo(agent, host, pid, max_rate=max_rate)
            return [
                Welcome(agent),
                Say(f"agent {agent} joined from {host} ({len(self.agents)}/{self.expect})"),
            ]
        if self.phase == "run" and now < self.duration - JOIN_LEAD - 1.0:
            self.agents[agent] = AgentInfo(agent, host, pid, max_rate=max_rate)
            return [
                Welcome(agent),
                Probe(agent),
                Say(f"agent {agent} from {host} asks to join mid-run; probing its clock"),
            ]
        return [StopAgent(agent, "this coordinator's run is not accepting agents now")]

    def start(self) -> list[Action]:
        """Shares for the agents that joined. Raises :class:`CapacityShort` when their limits cannot carry
        the peak rate."""
        self.phase = "run"
        shares = split(list(self.agents))
        problem = capacity_problem(self.agents, {s.agent: s.share for s in shares}, self.curve.peak_rate)
        if problem is not None:
            raise CapacityShort(problem)
        out: list[Action] = []
        for i, sh in enumerate(shares):
            info = self.agents[sh.agent]
            info.share = sh.share
            info.state = "active"
            out.append(StartShare(sh.agent, sh.share, sh.phase, self.seed + SEED_STEP * i, 0.0))
        out.append(Event("run_started", {"agents": len(shares)}))
        return out

    def clock_known(self, agent: str, now: float) -> list[Action]:
        """A mid-run joiner's clock is known: give it a share from shortly after ``now``; the others' shares
        shrink at the same instant."""
        at = now + JOIN_LEAD
        info = self.agents[agent]
        if at >= self.duration:
            info.state = "refused"
            return [StopAgent(agent, "too late to join this run")]
        out = self._reshare(at, joining=agent)
        out.append(Event("agent_joined", {"agent": agent, "share": round(info.share, 6), "at": round(at, 3)}))
        out.append(Say(f"agent {agent} joined mid-run; share {info.share:.3f} from t={at:.1f} s"))
        return out

    def refused(self, agent: str, reason: str, now: float) -> list[Action]:
        """``agent`` refused the run (its limits, an unusable profile)."""
        info = self.agents.get(agent)
        if info is None or info.state in ("refused", "lost"):
            return []
        was_active = info.state == "active"
        info.state = "refused"
        self.share_refused = True
        out: list[Action] = [
            Event("agent_refused", {"agent": agent, "reason": reason}),
            Say(f"agent {agent} refused the run: {reason}"),
        ]
        if was_active and self.phase == "run":
            out += self._give_away(info, since=info.joined_t, now=now)
        return out

    def lost(self, agent: str, reason: str, now: float, last_index: int, last_heard: float) -> list[Action]:
        """``agent`` is gone (silent too long, or never finished). ``last_index`` is the last second it
        reported, ``last_heard`` the run time of its last word."""
        info = self.agents[agent]
        info.state = "lost"
        info.lost_t = now
        # It died somewhere between the last word from it and the next heartbeat it did not send: take the
        # middle of that gap as the end of the arrivals it scheduled but never reported.
        died = max(0.0, last_heard + HEARTBEAT_EVERY / 2, float(last_index + 1))
        info.unreported_estimate = info.share * self.curve.between(last_index + 1, died)
        out: list[Action] = [
            Event("agent_lost", {"agent": agent, "reason": reason}),
            Say(f"agent {agent} lost ({reason}); moving its share to the others"),
        ]
        return out + self._give_away(info, since=died, now=now)

    def finished(self, agent: str) -> list[Action]:
        info = self.agents.get(agent)
        if info is None or info.finished_received:
            return []
        info.finished_received = True
        if info.state in ("active", "joining"):
            info.state = "finished"
        return [Event("agent_finished", {"agent": agent})]

    def end(self, at: float) -> None:
        """The run ends at run time ``at``: a stretch no agent carried counts up to there."""
        if self.uncovered_since is not None:
            self.unsent_uncovered += self.curve.between(self.uncovered_since, max(self.uncovered_since, at))
            self.uncovered_since = at

    # --- the policy --------------------------------------------------------------------------------------

    def _give_away(self, info: AgentInfo, since: float, now: float) -> list[Action]:
        """``info`` stopped carrying its share at ``since``: the survivors take it over shortly after
        ``now``; until then (or the end) no one sends it."""
        at = min(now + LOST_LEAD, self.duration)
        if self.active():
            info.unsent_from, info.unsent_to = since, max(since, at)
            info.unsent = info.share * self.curve.between(info.unsent_from, info.unsent_to)
            return self._reshare(at) if now < self.duration else []
        if self.uncovered_since is None:
            start = self.uncovered_since = min(since, self.duration)
            self.went_empty = True
            # From here the whole rate counts: what an earlier loss counted past this point counts once.
            for other in self.agents.values():
                if other.unsent and other.unsent_to > start:
                    cut = max(other.unsent_from, start)
                    other.unsent -= other.share * self.curve.between(cut, other.unsent_to)
                    other.unsent_to = cut
        return [Say("no agent left to carry the load; waiting for agents to join")]

    def _reshare(self, at: float, joining: str | None = None) -> list[Action]:
        members = self.active() + ([joining] if joining else [])  # never empty: see the callers
        if self.uncovered_since is not None:
            self.unsent_uncovered += self.curve.between(self.uncovered_since, max(self.uncovered_since, at))
            self.uncovered_since = None
        self.reshares += 1
        shares = split(members)
        out: list[Action] = []
        problem = capacity_problem(self.agents, {s.agent: s.share for s in shares}, self.curve.peak_rate)
        if problem is not None:
            out += [Event("capacity_short", {"reason": problem}), Say(f"warning: {problem}")]
        for i, sh in enumerate(shares):
            info = self.agents[sh.agent]
            info.share = sh.share
            seed = self.seed + SEED_STEP * i + RESHARE_SEED_STEP * self.reshares
            if sh.agent == joining:
                info.state = "active"
                info.joined_t = at
                out.append(StartShare(sh.agent, sh.share, sh.phase, seed, at))
            else:
                out.append(ShareChange(sh.agent, sh.share, sh.phase, seed, at))
        out.append(
            Event("reshare", {"at": round(at, 3), "shares": {s.agent: round(s.share, 6) for s in shares}})
        )
        return out
