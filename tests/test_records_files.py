"""records.files.atomic_write: a file or folder appears whole, or the old one stays."""
from __future__ import annotations

import os

import pytest

from records.files import atomic_write


class Boom(RuntimeError):
    pass


def test_a_file_is_written_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    assert atomic_write(target, lambda tmp: tmp.write_bytes(b"first")) == target
    atomic_write(target, lambda tmp: tmp.write_bytes(b"second"))
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["out.bin"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # an ordinary file, not mkstemp's 0600


def test_an_error_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half of the new")
        raise Boom("disk full")

    with pytest.raises(Boom):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_an_interrupt_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    def interrupted(tmp):
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.bin", interrupted)
    assert os.listdir(tmp_path) == []


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    out.mkdir()  # an empty folder may be replaced

    def two_files(tmp):
        (tmp / "a.onnx").write_text("a")
        (tmp / "index.json").write_text("{}")

    atomic_write(out, two_files, directory=True)
    assert sorted(os.listdir(out)) == ["a.onnx", "index.json"]

    def fail_after_one(tmp):
        (tmp / "b.onnx").write_text("b")
        raise Boom("export check failed")

    with pytest.raises(Boom):
        atomic_write(tmp_path / "other", fail_after_one, directory=True)
    assert sorted(os.listdir(tmp_path)) == ["export"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
