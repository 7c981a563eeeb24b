"""Every error loadgen raises on purpose.

    LoadgenError
    ├── ProfileError   a profile file is missing, unreadable or invalid (the user's input)
    ├── WireError      a message from a peer is malformed, oversized or of another version (the peer's fault)
    │   └── VersionMismatch   the peer speaks another protocol version
    ├── RunError       the run could not complete (no agent arrived, the coordinator vanished, ...)
    │   └── JoinTimeout   fewer agents than expected joined within the join timeout
    ├── BindError      the control socket cannot listen where it was told to (the operator's address)
    └── StepFailed     a step of a flow written in Python failed (loadgen.session; raised inside the flow)

Library code raises these; only the CLI turns them into messages and exit statuses.
"""

from __future__ import annotations


class LoadgenError(Exception):
    """Root of every error loadgen raises on purpose."""


class ProfileError(LoadgenError):
    """A profile is refused. Carries the file, the field and what is wrong with it."""

    def __init__(self, file: str, field: str, reason: str, line: int | None = None) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.reason}"
        return f"{where}: {self.reason}"


class WireError(LoadgenError):
    """A message from a peer cannot be accepted. Carries the peer's identity when known."""

    def __init__(self, reason: str, peer: str | None = None) -> None:
        self.reason = reason
        self.peer = peer
        super().__init__(reason if peer is None else f"{peer}: {reason}")


class VersionMismatch(WireError):
    """The peer speaks another version of the wire protocol; the two must not work together."""

    def __init__(self, reason: str, peer: str | None, theirs: object, ours: int) -> None:
        super().__init__(reason, peer)
        self.theirs = theirs
        self.ours = ours


class RunError(LoadgenError):
    """The run could not complete."""


class JoinTimeout(RunError):
    """Fewer agents than the run expects joined within the join timeout. Carries both counts."""

    def __init__(self, joined: int, expected: int, timeout: float) -> None:
        self.joined = joined
        self.expected = expected
        self.timeout = timeout
        super().__init__(f"only {joined} of {expected} agents joined within {timeout:g} s")


class BindError(LoadgenError):
    """The coordinator's control socket cannot bind. Carries the address and the reason."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"cannot bind {address}: {reason}")
