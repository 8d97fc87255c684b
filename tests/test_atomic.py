"""Tests of vdt_jax.atomic: a failed write never leaves a half-written file or loses the previous one."""

import os

import pytest

from vdt_jax.atomic import atomic_write, write_text_atomic


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), crash)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["keep.txt"]


def test_text_appears_whole_and_the_temporary_keeps_the_extension(tmp_path):
    seen = []
    path = tmp_path / "sub" / "table.csv"
    atomic_write(str(path), lambda tmp: (seen.append(tmp), open(tmp, "w").close()))
    assert seen[0].endswith("-table.csv") and os.path.dirname(seen[0]) == str(tmp_path / "sub")
    write_text_atomic(str(path), "a,b\n")
    assert path.read_text() == "a,b\n" and os.listdir(tmp_path / "sub") == ["table.csv"]
