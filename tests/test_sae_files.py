"""SAELens-format files: bit-exact round trip, SAELens's own files load and compute the same function,
bad files give one-line errors and nothing on disk is lost or half-written."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import saelab.sae as sae_module
from saelab.sae import SAE, SAEConfig

FIXTURES = Path(__file__).parent / "fixtures" / "saelens_tiny"


def random_sae(architecture: str, **kwargs) -> SAE:
    sae = SAE(SAEConfig(8, 16, architecture, **kwargs), seed=4)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        if architecture == "jumprelu":
            sae.threshold.abs_()
    return sae


@pytest.mark.parametrize("architecture, kwargs", [("relu", {"l1_coefficient": 3.0}), ("topk", {"k": 3}),
                                                  ("jumprelu", {"l0_coefficient": 0.01})])
def test_round_trip_is_bit_exact(tmp_path, architecture, kwargs):
    sae = random_sae(architecture, hook_name="blocks.3.hook_resid_post", model_name="tiny", **kwargs)
    sae.save(tmp_path / "sae")
    loaded = SAE.load(tmp_path / "sae")
    assert loaded.cfg == sae.cfg
    assert loaded.hook_name == "blocks.3.hook_resid_post" and loaded.cfg.model_name == "tiny"
    for (name, p), (name2, q) in zip(sae.named_parameters(), loaded.named_parameters()):
        assert name == name2 and torch.equal(p, q), name
    files = sorted(p.name for p in (tmp_path / "sae").iterdir())
    assert files == ["cfg.json", "sae_weights.safetensors"]  # no temp files left behind
    keys = set(load_file(tmp_path / "sae" / "sae_weights.safetensors"))
    assert {"W_enc", "W_dec", "b_enc", "b_dec"} <= keys


@pytest.mark.parametrize("name, architecture", [("standard", "relu"), ("topk", "topk"), ("jumprelu", "jumprelu")])
def test_folder_written_by_saelens_loads_and_computes_the_same(name, architecture):
    sae = SAE.load(FIXTURES / name)
    assert sae.cfg.architecture == architecture and (sae.cfg.d_in, sae.cfg.d_sae) == (8, 16)
    expected = load_file(FIXTURES / name / "expected.safetensors")
    with torch.no_grad():
        f = sae.encode(expected["x"])
        assert torch.allclose(f, expected["feature_acts"], atol=1e-6)
        assert torch.allclose(sae.decode(f), expected["reconstruction"], atol=1e-5)
        assert torch.allclose(sae(expected["x"]).reconstruction, expected["reconstruction"], atol=1e-5)


def test_cfg_json_has_saelens_keys(tmp_path):
    random_sae("topk", k=3).save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 3 and cfg["d_in"] == 8 and cfg["d_sae"] == 16
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "sae"
    random_sae("relu").save(folder)
    return folder


def break_cfg_missing(folder):
    (folder / "cfg.json").unlink()


def break_cfg_corrupt(folder):
    (folder / "cfg.json").write_text('{"d_in": 8, "d_sae": ')


def break_cfg_mismatch(folder):
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = 32
    (folder / "cfg.json").write_text(json.dumps(cfg))


def break_cfg_architecture(folder):
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (folder / "cfg.json").write_text(json.dumps(cfg))


def break_weights_missing(folder):
    (folder / "sae_weights.safetensors").unlink()


def break_weights_corrupt(folder):
    data = (folder / "sae_weights.safetensors").read_bytes()
    (folder / "sae_weights.safetensors").write_bytes(data[: len(data) // 2])


def break_weights_key(folder):
    tensors = load_file(folder / "sae_weights.safetensors")
    del tensors["b_enc"]
    save_file(tensors, folder / "sae_weights.safetensors")


def break_weights_pickle(folder):
    # A pickle offered under the weights name, and one next to it: neither may ever be unpickled.
    payload = pickle.dumps({"W_enc": torch.zeros(8, 16)})
    (folder / "sae_weights.safetensors").write_bytes(payload)


def break_weights_pickle_only(folder):
    (folder / "sae_weights.safetensors").unlink()
    torch.save({"W_enc": torch.zeros(8, 16)}, folder / "sae_weights.pt")


@pytest.mark.parametrize(
    "breaker, message",
    [
        (break_cfg_missing, r"cfg.json: missing"),
        (break_cfg_corrupt, r"cfg.json: not valid JSON"),
        (break_cfg_mismatch, r"W_dec has shape \(16, 8\), but cfg.json implies \(32, 8\)"),
        (break_cfg_architecture, r"architecture 'gated' is not supported"),
        (break_weights_missing, r"sae_weights.safetensors: missing"),
        (break_weights_corrupt, r"not a readable safetensors file"),
        (break_weights_key, r"missing tensors \['b_enc'\]"),
        (break_weights_pickle, r"not a readable safetensors file"),
        (break_weights_pickle_only, r"sae_weights.pt, which saelab never loads"),
    ],
)
def test_bad_files_give_one_line_error_and_stay_untouched(saved, breaker, message, monkeypatch):
    breaker(saved)
    before = snapshot(saved)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never be called"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads must never be called"))
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        SAE.load(saved)
    assert "\n" not in str(info.value)
    assert snapshot(saved) == before


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist or is not a directory"):
        SAE.load(tmp_path / "nowhere")


def test_interrupted_save_leaves_previous_files_intact(saved, monkeypatch):
    before = snapshot(saved)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sae_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        random_sae("topk", k=2).save(saved)
    assert snapshot(saved) == before


def test_crash_between_files_leaves_no_temp_files(saved, monkeypatch):
    real_replace = os.replace
    calls = []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(sae_module.os, "replace", replace_then_crash)
    with pytest.raises(OSError, match="disk full"):
        random_sae("relu").save(saved)
    assert sorted(p.name for p in saved.iterdir()) == ["cfg.json", "sae_weights.safetensors"]


def test_save_onto_a_file_path_is_refused(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        random_sae("relu").save(target)
    assert target.read_text() == "keep me"



def test_hook_and_model_are_written_where_saelens_keeps_them_and_old_files_still_load(tmp_path):
    sae = random_sae("topk", k=3, hook_name="blocks.3.hook_resid_post", model_name="tiny",
                     metadata={"context_size": 64})
    sae.save(tmp_path / "sae")
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["metadata"]["hook_name"] == "blocks.3.hook_resid_post" and raw["metadata"]["model_name"] == "tiny"
    assert raw["metadata"]["context_size"] == 64
    assert "hook_name" not in raw["metadata"]["saelab"] and "model_name" not in raw["metadata"]["saelab"]
    # A file whose provenance sits only in metadata (SAELens's own, or saelab's before hook_name was a field).
    del raw["metadata"]["saelab"]
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(raw))
    loaded = SAE.load(tmp_path / "sae")
    assert loaded.cfg.hook_name == "blocks.3.hook_resid_post" and loaded.cfg.model_name == "tiny"
    assert loaded.cfg.metadata == {"context_size": 64}
