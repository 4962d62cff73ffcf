"""saelab.files: every file saelab writes gets ordinary permissions, and a failed write loses nothing."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from saelab import files
from saelab.sae import SAE, SAEConfig


@pytest.fixture
def umask():
    """Set a umask for one test and put the previous one back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_sae_weights_and_json_get_the_permissions_of_a_normal_file(tmp_path, umask, mask):
    umask(mask)
    (tmp_path / "plain.txt").write_text("a file written the ordinary way")
    expected = mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~mask
    folder = SAE(SAEConfig(4, 8, "topk", k=2)).save(tmp_path / "sae")
    files.write_json_atomic(tmp_path / "report.json", {"a": 1})
    files.write_text_atomic(tmp_path / "notes.txt", "text")
    assert mode(folder / "sae_weights.safetensors") == expected
    assert mode(folder / "cfg.json") == expected
    assert mode(tmp_path / "report.json") == expected
    assert mode(tmp_path / "notes.txt") == expected


def test_a_failed_sae_save_keeps_the_previous_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    folder = SAE(SAEConfig(4, 8, "topk", k=2), seed=0).save(tmp_path / "sae")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    import saelab.sae as sae_module

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sae_module, "save_file", disk_full)
    with pytest.raises(OSError, match="disk full"):
        SAE(SAEConfig(4, 8, "topk", k=3), seed=1).save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_when_the_second_file_fails_the_first_is_not_replaced_either(tmp_path):
    files.write_files_atomic(tmp_path, {"a.txt": lambda t: Path(t).write_text("old a"),
                                        "b.txt": lambda t: Path(t).write_text("old b")})

    def fail(temporary):
        Path(temporary).write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        files.write_files_atomic(tmp_path, {"a.txt": lambda t: Path(t).write_text("new a"), "b.txt": fail})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert (tmp_path / "a.txt").read_text() == "old a" and (tmp_path / "b.txt").read_text() == "old b"
    files.write_files_atomic(tmp_path, {"a.txt": lambda t: Path(t).write_text("new a"),
                                        "b.txt": lambda t: Path(t).write_text("new b")})
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "b.txt").read_text() == "new b"


def test_write_json_atomic_round_trips_and_creates_the_folder(tmp_path):
    path = files.write_json_atomic(tmp_path / "deep" / "x.json", {"n": [1, 2]})
    assert json.loads(path.read_text()) == {"n": [1, 2]}


def test_write_dir_atomic_replaces_a_folder_whole_or_not_at_all(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "cache"

    def fill(content):
        def write(folder):
            torch.save(torch.tensor([content]), Path(folder) / "t.pt")
            (Path(folder) / "stamp").write_text(str(content))
        return write

    files.write_dir_atomic(target, fill(1))
    assert (target / "stamp").read_text() == "1" and mode(target) == 0o755

    def fail(folder):
        fill(2)(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_dir_atomic(target, fail)
    assert (target / "stamp").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temporary folder left
    files.write_dir_atomic(target, fill(3))
    assert (target / "stamp").read_text() == "3" and sorted(p.name for p in target.iterdir()) == ["stamp", "t.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # the previous folder was removed
