"""Strategy-1 scoring on the tiny random model: padded batches equal one text at a time, and the counts add up."""

import re

import pytest
import torch

from saelab import concepts, detection, features
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "In the beginning",
         "Sparse autoencoders find features as directions in activation space.", "What is your physical form?",
         "The word was with the reader."]


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(d_in=32, d_sae=40, architecture="relu", hook_name=HOOK), seed=1)


def test_padded_batches_give_each_text_what_it_gets_alone(tiny_model, sae):
    stats = detection.text_stats(tiny_model, sae, TEXTS, batch_size=3)
    for i, text in enumerate(TEXTS):
        alone = features.feature_activations(tiny_model, sae, tiny_model.to_tokens(text), hook_name=HOOK)[0, 1:]
        assert torch.allclose(stats.maxima[i], alone.max(0).values, atol=1e-5)
        assert torch.equal(stats.fired_tokens[i], (alone > 0).sum(0).float())
        assert stats.n_tokens[i] == alone.shape[0]


def test_outlier_tokens_are_ignored(tiny_model, sae):
    stats = detection.text_stats(tiny_model, sae, TEXTS[:2], max_norm=1e-6)
    assert stats.maxima.abs().max() == 0 and stats.n_tokens.sum() == 0


def test_names_concept_finds_whole_words_only():
    assert detection.names_concept("the Golden Gate at dawn", "golden_gate")
    assert not detection.names_concept("the long red span over the strait", "golden_gate")
    assert not detection.names_concept("a gateway to the city", "golden_gate")


def test_concept_scores_are_the_fractions_of_passages_and_tokens(tiny_model, sae):
    negatives = TEXTS
    scores = detection.score_concept(tiny_model, sae, "pasta", negatives=negatives, progress=False)
    positives = concepts.passages("pasta")
    stats = detection.text_stats(tiny_model, sae, positives + negatives)
    n = len(positives)
    assert scores.n_concept == n and scores.n_other == len(negatives)
    assert torch.allclose(scores.recall, (stats.maxima[:n] > 0).float().mean(0))
    assert torch.allclose(scores.false_rate, (stats.maxima[n:] > 0).float().mean(0))
    assert scores.n_unnamed >= 1
    assert torch.allclose(scores.coverage, stats.fired_tokens[:n].sum(0) / stats.n_tokens[:n].sum())
    top = scores.top(k=3)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert scores.top(k=3, min_coverage=1.01) == []


def test_heldout_check_counts_both_ways(tiny_model, sae):
    check = detection.check_heldout(tiny_model, sae, 3, "golden_gate")
    held = concepts.heldout("golden_gate")
    assert check.concept_texts == held.concept and len(check.unrelated_maxima) == len(held.unrelated)
    assert check.fires_on_concept == sum(v > 0 for v in check.concept_maxima)
    assert f"fires on {check.fires_on_concept}/10" in str(check)


@pytest.mark.parametrize("bad, message", [({"feature": 40}, "feature"), ({"feature": -1}, "feature")])
def test_bad_input_is_named(tiny_model, sae, bad, message):
    with pytest.raises(ValueError, match=message):
        detection.check_heldout(tiny_model, sae, concept="golden_gate", **bad)
    with pytest.raises(ValueError, match="texts"):
        detection.text_stats(tiny_model, sae, ["fine", "  "])
    with pytest.raises(ValueError, match="concept"):
        detection.score_concept(tiny_model, sae, "bridges", negatives=TEXTS)


def test_the_unnamed_set_uses_no_surface_word_of_the_bridge():
    unnamed = detection.unnamed_passages("golden_gate")
    assert 10 <= len(unnamed) < len(concepts.passages("golden_gate"))
    for text in unnamed:
        assert not re.search(r"bridg|golden|\bgates?\b|san francisco|francisco", text, flags=re.IGNORECASE), text
    named = ["the bridge at dawn", "a footbridge", "two Bridges", "the Golden Gate", "the gates", "San Francisco Bay"]
    assert all(detection.names_concept(text, "golden_gate") for text in named)


def test_hard_negatives_share_the_surface_words_but_not_the_concept():
    groups = detection.hard_negatives("golden_gate")
    assert set(groups) == {"other_bridges", "other_gates", "san_francisco"}
    for group, texts in groups.items():
        assert len(texts) >= 8
        assert all(not re.search(r"golden gate", t, flags=re.IGNORECASE) for t in texts)
        assert sum(detection.names_concept(t, "golden_gate") for t in texts) >= len(texts) // 2, group
    assert all(re.search(r"\bbridges?\b", t, flags=re.IGNORECASE) for t in groups["other_bridges"])
    assert all("San Francisco" in t for t in groups["san_francisco"])
    training = {p for name in concepts.available() for p in concepts.passages(name)}
    assert not training & {t for texts in groups.values() for t in texts}
    with pytest.raises(ValueError, match="no hard negatives"):
        detection.hard_negatives("pasta")


def test_the_verdict_needs_the_unnamed_passages_and_silence_on_every_group():
    silent = {"other_bridges": [0.0] * 4, "san_francisco": [0.0] * 4}
    assert detection.concept_verdict([0.3, 0.2, 0.0], silent)
    assert not detection.concept_verdict([0.3, 0.0, 0.0], silent)
    assert not detection.concept_verdict([0.3, 0.2, 0.1], {**silent, "other_bridges": [0.5, 0.4, 0.0, 0.0]})
    with pytest.raises(ValueError, match="unnamed"):
        detection.concept_verdict([], silent)


BRIDGE_TEXT = ["The bridge over the river is old.", "A long bridge crossed the bay.", "We walked the bridge at dawn.",
               "The orange span over the strait.", "Ships pass beneath the red towers."]


@pytest.fixture(scope="module")
def bridge_token_model():
    """A tiny random Llama whose tokenizer has a " bridge" token, and an SAE on its embeddings (blocks.0 input):
    latent 0 reads exactly that token's embedding, so it fires on " bridge" and on nothing else."""
    from tokenizers import ByteLevelBPETokenizer
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    groups = detection.hard_negatives("golden_gate")
    texts = BRIDGE_TEXT * 20 + [t for values in groups.values() for t in values] + concepts.passages("golden_gate")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=1200, min_frequency=2, show_progress=False,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                        add_bos_token=True)
    tokenizer.init_kwargs["name_or_path"] = "tiny-llama"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    config._attn_implementation = "eager"
    model = TransformerBridge.boot_transformers("tiny-llama", hf_model=LlamaForCausalLM(config).eval(),
                                                tokenizer=tokenizer, device="cpu").eval()
    bridge_id = model.to_single_token(" bridge")
    hook = "blocks.0.hook_resid_pre"
    sae = SAE(SAEConfig(d_in=32, d_sae=8, architecture="relu", hook_name=hook), seed=0)
    embedding = model.W_E[bridge_id].detach()
    unit = embedding / embedding.norm()
    with torch.no_grad():
        sae.b_dec.zero_()
        sae.W_enc.zero_()
        sae.W_enc[:, 0] = unit
        sae.b_enc.fill_(-1.0)
        sae.b_enc[0] = -0.9 * float(embedding.norm())  # the token's own embedding projects to its full norm
    return model, sae, bridge_id


def test_a_latent_for_the_bridge_token_is_not_a_concept_feature(bridge_token_model):
    model, sae, bridge_id = bridge_token_model
    # it is what it claims to be: it fires on every " bridge" token and on no other token
    tokens = model.to_tokens(BRIDGE_TEXT)
    acts = features.feature_activations(model, sae, tokens, hook_name="blocks.0.hook_resid_pre")[..., 0]
    assert torch.equal(acts > 0, tokens == bridge_id)
    # on the named slice it looks like a bridge detector ...
    named = [p for p in concepts.passages("golden_gate") if " bridge " in p][:8]
    assert (detection.text_stats(model, sae, named).maxima[:, 0] > 0).all()
    # ... but it stays silent on the passages without a surface word and fires on other bridges
    check, = detection.check_hard_negatives(model, sae, [0], "golden_gate")
    assert check.recall_unnamed == 0
    assert check.false_rates["other_bridges"] >= 0.5
    assert not check.is_concept_feature()
    assert "not a concept feature" in str(check)
    with pytest.raises(ValueError, match="surface word"):
        detection.check_hard_negatives(model, sae, [0], "golden_gate", unnamed=["the bridge"])


def test_renaming_features_keeps_a_recorded_steering_choice(tmp_path, monkeypatch):
    import json

    from saelab import detection, lm
    from saelab.sae import SAE, SAEConfig

    folder = tmp_path / "sae"
    SAE(SAEConfig(d_in=8, d_sae=16, hook_name="blocks.0.hook_resid_post"), seed=0).save(folder)
    steer_entry = {"feature": 7, "push_fraction": 0.5, "multiple_of_max": 2.0, "value": 1.0}
    (folder / "features.json").write_text(json.dumps({"fox": {"feature": 3, "steer": steer_entry},
                                                      "gone": {"feature": 1}}))
    found = {"fox": {"feature": 4, "slice": {"score": 0.9}, "heldout": {"fires_on_concept": 9,
                                                                        "silent_on_unrelated": 10}}}
    monkeypatch.setattr(lm, "load_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(detection, "name_concept_features", lambda *args, **kwargs: json.loads(json.dumps(found)))
    detection.main([str(folder)])
    written = json.loads((folder / "features.json").read_text())
    assert written == {"fox": {**found["fox"], "steer": steer_entry}}  # detection's findings renewed, steer kept
