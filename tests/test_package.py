"""The package as pip ships it: no pickles in its data, a size budget, every subpackage listed, the course's
notebooks inside, and a wheel that installs (non-editable) and loads the shipped SAE from site-packages."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib

from saelab import lessons, pretrained

ROOT = Path(__file__).parents[1]
ASSETS = ROOT / "saelab" / "assets"
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib"}
ASSET_BUDGET_MB = 60


def _is_pickle(path: Path) -> bool:
    """By name, or by content: a bare pickle (protocol 2+ opens with 0x80), a torch zip holding ``data.pkl``, or
    a NumPy file of objects (which only loads with ``allow_pickle``)."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":
        return True
    if head == b"PK\x03\x04" and path.suffix.lower() != ".npz":
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".pkl") for name in archive.namelist())
    if path.suffix.lower() in {".npy", ".npz"}:
        try:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                [loaded[name] for name in loaded.files]
        except ValueError:
            return True
    return False


def test_package_data_holds_no_pickle():
    pickles = [str(p.relative_to(ROOT)) for p in ASSETS.rglob("*") if p.is_file() and _is_pickle(p)]
    assert not pickles, f"pickle-format files in the package data (use safetensors or json): {pickles}"


def test_the_pickle_check_catches_a_pickle_under_any_name(tmp_path):
    import pickle

    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.safetensors")
    (tmp_path / "stats.json").write_bytes(pickle.dumps({"mean": 0.0}))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "numbers.npy", np.arange(3))
    assert [_is_pickle(tmp_path / name) for name in ("weights.safetensors", "stats.json", "objects.npy",
                                                      "numbers.npy")] == [True, True, True, False]


def test_package_data_stays_within_its_size_budget():
    sizes = {p: p.stat().st_size for p in ASSETS.rglob("*") if p.is_file()}
    total_mb = sum(sizes.values()) / 1e6
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total_mb < ASSET_BUDGET_MB, (f"saelab/assets holds {total_mb:.1f} MB (budget {ASSET_BUDGET_MB} MB); "
                                        f"largest: {[str(p.relative_to(ROOT)) for p in largest]}")


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "saelab").rglob("__init__.py")}
    assert found - listed == set(), f"subpackages missing from pyproject's [tool.setuptools] packages: {found - listed}"


def test_copy_lessons_copies_every_learner_notebook_and_solution(tmp_path):
    written = lessons.copy_lessons(tmp_path / "course")
    learner = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in written if p.parent.name == "course") == learner and len(learner) >= 7
    assert sorted(p.name for p in (tmp_path / "course" / "solutions").iterdir()) == learner
    assert (tmp_path / "course" / learner[0]).read_bytes() == (ROOT / "lessons" / learner[0]).read_bytes()


def test_copy_lessons_never_overwrites_a_learners_notebook_unless_forced(tmp_path):
    lessons.copy_lessons(tmp_path)
    edited = next(tmp_path.glob("01_*.ipynb"))
    edited.write_text("my own work")
    n_notebooks = 2 * len(list((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")))  # each lesson and its solution
    with pytest.raises(FileExistsError, match=f"already holds {n_notebooks} of the notebooks.*force=True"):
        lessons.copy_lessons(tmp_path)
    assert edited.read_text() == "my own work"
    lessons.copy_lessons(tmp_path, force=True)
    assert edited.read_text() != "my own work"
    with pytest.raises(NotADirectoryError, match="is a file; give a folder"):
        lessons.copy_lessons(edited)


def test_the_command_line_copies_and_names_the_next_step(tmp_path, capsys):
    assert lessons.main([str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    n_lessons = len(list((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")))
    assert n_lessons >= 8 and f"copied {n_lessons} lessons and {n_lessons} solutions" in out
    assert f"jupyter lab {tmp_path / 'c'}" in out
    assert lessons.main([str(tmp_path / "c")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_loads_the_shipped_sae_from_site_packages(tmp_path):
    # Build from a copy: setuptools reuses the tree's build/lib, so a file since deleted from saelab/ would still
    # ship if the wheel were built in place (and the build would leave build/ behind in the checkout).
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", ".ipynb_checkpoints", "artifacts"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(wheels)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("saelab-*.whl")
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert not [n for n in names if Path(n).suffix in PICKLE_SUFFIXES]
    assert "saelab/course/07_golden_gate_steering.ipynb" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment; a plain path line does not run the .pth files there, so
    # this environment's editable saelab stays invisible and the fresh venv imports its own installed copy.
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = f"""
import json, sys
import saelab
from saelab import pretrained, lessons
sae = pretrained.load_sae()
store = pretrained.load_feature_store()
lessons.main([{str(tmp_path / "course")!r}])
print(json.dumps(dict(saelab=saelab.__file__, sae_dir=str(pretrained.path()), d_sae=sae.cfg.d_sae,
                      store_features=int(store.max_activation.shape[0]))))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path,
                            env=env)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["saelab"].startswith(site) and loaded["sae_dir"].startswith(site), loaded
    assert loaded["d_sae"] == loaded["store_features"] == pretrained.load_sae().cfg.d_sae
    assert len(list((tmp_path / "course").glob("[0-9][0-9]_*.ipynb"))) >= 7
    assert (tmp_path / "course" / "solutions" / "07_golden_gate_steering.ipynb").is_file()
