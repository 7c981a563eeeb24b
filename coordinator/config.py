"""How a coordinator runs: its settings, and how a checkpoint keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CoordinatorConfig:
    bind: str = "tcp://127.0.0.1:5555"
    expect_agents: int = 1
    out_dir: Path | None = None
    join_timeout: float = 60.0
    coordinator_timeout: float = 10.0  # agents stop if the coordinator is silent this long
    agent_timeout: float = 3.0  # an agent silent this long is declared lost
    lead: float = 0.5  # seconds between the Start message and the aligned start
    seed: int | None = None
    progress_every: float = 1.0
    engine: str = "fast"

    def state(self, endpoint: str) -> dict[str, Any]:
        """What a checkpoint keeps (``endpoint``: the address actually bound)."""
        return {
            "bind": endpoint,
            "expect_agents": self.expect_agents,
            "coordinator_timeout": self.coordinator_timeout,
            "agent_timeout": self.agent_timeout,
            "engine": self.engine,
        }

    @classmethod
    def restore(cls, cfg: dict[str, Any], *, seed: int, out: Path, bind: str | None) -> CoordinatorConfig:
        return cls(
            bind=bind or cfg["bind"],
            expect_agents=cfg["expect_agents"],
            out_dir=out,
            coordinator_timeout=cfg["coordinator_timeout"],
            agent_timeout=cfg["agent_timeout"],
            seed=seed,
            engine=cfg["engine"],
        )
