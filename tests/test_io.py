"""selfsup.io's atomic writes: whole files or nothing, umask permissions, one-line disk errors."""

from __future__ import annotations

import errno
import io
import json
import os
import stat

import pytest
import torch

from selfsup.cli import main
from selfsup.io import (FileWriteError, atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text,
                        atomic_writer, load_torch_file)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda value: os.umask(value)
    os.umask(saved)


def test_every_helper_round_trips(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    text = atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"b": 1, "a": [1.5]} == json.loads(text)
    atomic_torch_save({"w": torch.arange(4)}, tmp_path / "w.pt")
    assert torch.equal(load_torch_file(tmp_path / "w.pt", "weights")["w"], torch.arange(4))
    assert sorted(os.listdir(tmp_path)) == ["a", "r.json", "t.txt", "w.pt"]  # no temporary left


@pytest.mark.parametrize("value", [0o022, 0o027, 0o002, 0o077])
def test_permissions_follow_the_umask_like_a_plain_open(tmp_path, umask, value):
    umask(value)
    with open(tmp_path / "reference", "w"):
        pass
    atomic_write_text(tmp_path / "report.json", "{}")
    atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "last.ckpt")
    assert mode(tmp_path / "report.json") == mode(tmp_path / "last.ckpt") == mode(tmp_path / "reference") == 0o666 & ~value


def test_a_replaced_file_gets_the_umask_permissions_too(tmp_path, umask):
    umask(0o022)
    atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    atomic_torch_save({"step": 2}, tmp_path / "last.ckpt")
    assert mode(tmp_path / "last.ckpt") == 0o644 and load_torch_file(tmp_path / "last.ckpt", "x") == {"step": 2}


def assert_untouched(folder, name, content):
    assert (folder / name).read_bytes() == content
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_output_under_a_regular_file_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("I am a file")
    for target in (tmp_path / "runs" / "x.json", tmp_path / "runs" / "deeper" / "x.json"):
        with pytest.raises(FileWriteError) as error:
            atomic_write_text(target, "{}")
        assert str(error.value) == f"cannot write '{target}': '{tmp_path / 'runs'}' is a file, not a folder"
    assert (tmp_path / "runs").read_text() == "I am a file"


def test_output_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileWriteError, match=r"cannot write '.*out': it is a folder$"):
        atomic_torch_save({"x": 1}, tmp_path / "out")
    assert (tmp_path / "out").is_dir() and os.listdir(tmp_path) == ["out"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"old")
    folder.chmod(0o555)
    try:
        with pytest.raises(FileWriteError, match=r"cannot write '.*last.ckpt': permission denied"):
            atomic_torch_save({"x": 1}, folder / "last.ckpt")
    finally:
        folder.chmod(0o755)
    assert_untouched(folder, "last.ckpt", b"old")


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied")])
def test_refused_creation_is_one_line(tmp_path, monkeypatch, code, cause):
    """What a read-only mount or a forbidden folder answers (simulated: this may run as root)."""
    (tmp_path / "last.ckpt").write_bytes(b"old")
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(FileWriteError) as error:
        atomic_torch_save({"x": 1}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert str(error.value).startswith(f"cannot write '{tmp_path / 'last.ckpt'}': {cause}")
    assert_untouched(tmp_path, "last.ckpt", b"old")


def test_full_disk_at_fsync_is_one_line(tmp_path, monkeypatch):
    atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    before = (tmp_path / "last.ckpt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileWriteError) as error:
        atomic_torch_save({"step": 2}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert str(error.value) == f"cannot write '{tmp_path / 'last.ckpt'}': no space left on device"
    assert_untouched(tmp_path, "last.ckpt", before)


class FillsUp(io.RawIOBase):
    """A file handle on a disk with ``room`` bytes left: later writes fail with ENOSPC."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def fileno(self) -> int:
        return self.handle.fileno()

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
        super().close()


@pytest.mark.parametrize("room", [10, 100, 5000])
def test_full_disk_inside_torch_save_is_one_line_not_unexpected_pos(tmp_path, monkeypatch, room):
    """torch's zip writer reports a failed write as ``RuntimeError: … unexpected pos`` (or the
    OSError, depending on where it fails); both become the same line."""
    atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    before = (tmp_path / "last.ckpt").read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FillsUp(real_fdopen(fd, *a, **k), room))
    with pytest.raises(FileWriteError) as error:
        atomic_torch_save({"weights": torch.zeros(4000)}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert str(error.value) == f"cannot write '{tmp_path / 'last.ckpt'}': no space left on device"
    assert_untouched(tmp_path, "last.ckpt", before)


def test_other_failures_propagate_and_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match="not JSON"):
        with atomic_writer(tmp_path / "x.json") as handle:
            handle.write(b"{")
            raise ValueError("not JSON")
    assert os.listdir(tmp_path) == []


def test_export_into_a_file_path_is_one_cli_line(tmp_path, capsys):
    from selfsup.evaluation import export_encoder, load_encoder

    encoder = export_encoder(load_encoder("random", "resnet18-tiny", {}, in_channels=1), tmp_path / "enc.pt")
    (tmp_path / "taken").write_text("a file")
    code = main(["export", "--checkpoint", str(encoder), "--output", str(tmp_path / "taken" / "enc.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"selfsup: error: cannot write '{tmp_path / 'taken' / 'enc.safetensors'}': "
                                 f"'{tmp_path / 'taken'}' is a file, not a folder"]
