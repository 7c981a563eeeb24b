"""One atomic writer: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.atomic import replacing, write_bytes, write_text


def test_the_new_content_takes_the_place_of_the_old(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "results.json"
    write_text(path, "old ✓")
    write_bytes(path, b"new", durable=True)
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    write_text(path, "old")
    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write(b"half of the n")
        raise RuntimeError("the disk is full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
