"""Writing a file so that a reader sees the old one or the new one, never half of one: the only way loadgen
writes a file a person or a restarted coordinator will read (results.json, the reports, the checkpoint)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def replacing(path: Path, *, durable: bool = False) -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content into; it takes ``path``'s place when the block ends
    without an exception (and is removed when one is raised). ``durable``: flushed to the disk first, so a
    crash right after leaves the new file, not an empty one (what a checkpoint needs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, *, durable: bool = False) -> None:
    with replacing(path, durable=durable) as f:
        f.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
