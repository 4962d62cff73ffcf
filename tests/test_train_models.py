"""``python -m saelab.train --model FOLDER`` on other architectures: tiny random GPT-2 and Llama models saved as
local Hugging Face folders, through to a feature store, the dashboard and a clamped generation with its SAE."""

import json

import pytest
import torch

from saelab import features, lm, steer, train
from saelab.feature_store import FeatureStore
from saelab.sae import SAE
from saelab.widgets import feature_dashboard

HOOK = "blocks.1.hook_resid_post"


def _train(folder, out, work):
    train.main(["--model", str(folder), "--layer", "1", "--sources", "python_topics", "--max-tokens", "3000",
                "--seq-len", "32", "--d-sae", "128", "--k", "4", "--epochs", "2", "--batch-size", "256",
                "--feature-store-rows", "16", "--rows-per-shard", "16", "--out", str(out), "--work-dir", str(work)])


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_a_local_model_folder_gets_an_sae_a_feature_store_a_dashboard_and_steering(tiny_model_folders, tmp_path, architecture):
    folder, out = tiny_model_folders[architecture], tmp_path / "sae"
    _train(folder, out, tmp_path / "work")
    sae = SAE.load(out)
    assert sae.cfg.model_name == str(folder) and sae.cfg.hook_name == HOOK
    written = json.loads((out / "cfg.json").read_text())["metadata"]  # where SAELens reads them
    assert written["hook_name"] == HOOK and written["model_name"] == str(folder)
    assert sae.cfg.d_in == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["model"] == str(folder) and 0 < metrics["fvu"] < 1

    model = lm.load_model(sae.cfg.model_name)  # the SAE names the model it reads
    assert model.cfg.d_model == sae.cfg.d_in
    store = FeatureStore.load(out / "feature_store.safetensors")
    assert store.hook_name == HOOK and store.metadata["sae"]["model_name"] == str(folder)
    feature = int(store.max_activation.argmax())
    assert float(store.max_activation[feature]) > 0
    contexts = features.top_contexts(model, sae, store, feature, n=3)
    assert contexts[0].value == pytest.approx(float(store.max_activation[feature]), rel=1e-4)
    assert f"feature {feature}</b>" in feature_dashboard(model, sae, store, feature=feature).stats.value

    tokens = model.to_tokens("The quick brown fox")
    baseline = lm.generate(model, tokens, 6, stop_at_eos=False)
    value = 50.0 * float(store.max_activation[feature])
    read = []
    probe = (HOOK, lambda act, hook: read.append(sae.encode(act.float())[0, -1, feature]) or act)
    with steer.clamp(model, sae, {feature: value}):  # the hook point comes from the SAE's metadata
        steered = lm.generate(model, tokens, 6, stop_at_eos=False, fwd_hooks=[probe])
    assert not torch.equal(steered, baseline)
    assert float(read[0]) > 10 * float(store.max_activation[feature])  # the clamp acted at the SAE's hook
    assert lm.active_hook_points(model) == []
