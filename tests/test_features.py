"""Feature analysis on the tiny random model: the store's summaries equal brute force, and bad input is named."""

import pytest
import torch

from saelab import feature_store, features
from saelab.corpus import tokenize_corpus
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    return SAE(SAEConfig(d_in=32, d_sae=48, architecture="relu", hook_name=HOOK), seed=0)


@pytest.fixture(scope="module")
def tokens(tiny_model, tiny_texts):
    return tokenize_corpus(tiny_model, tiny_texts, seq_len=16)


@pytest.fixture(scope="module")
def store(tiny_model, sae, tokens):
    return features.build_feature_store(tiny_model, sae, tokens, n_top=5, rows_per_chunk=3, progress=False)


def all_activations(model, sae, tokens):
    return features.feature_activations(model, sae, tokens, hook_name=HOOK)[:, 1:].reshape(-1, sae.cfg.d_sae)


def test_store_keeps_each_features_true_top_activations_and_where_they_are(tiny_model, sae, tokens, store):
    acts = all_activations(tiny_model, sae, tokens)
    flat = torch.arange(tokens.numel()).view(tokens.shape)[:, 1:].reshape(-1)
    values = acts.T.topk(5, dim=1).values
    fired = values > 0
    assert torch.allclose(store.top_values[fired], values[fired], atol=1e-5)
    # the stored positions hold those values (the corpus repeats itself, so ties may pick other positions)
    row_of = torch.full((tokens.numel(),), -1, dtype=torch.long)
    row_of[flat] = torch.arange(len(flat))
    feature_ids = torch.arange(sae.cfg.d_sae)[:, None].expand(-1, 5)
    at_stored = acts[row_of[store.top_index.clamp(min=0)], feature_ids]
    assert torch.allclose(at_stored[fired], store.top_values[fired], atol=1e-5)
    assert (store.top_index[~fired] == -1).all()
    assert torch.allclose(store.max_activation, values[:, 0].clamp(min=0), atol=1e-5)


def test_store_density_histogram_and_means_match_the_activations(tiny_model, sae, tokens, store):
    acts = all_activations(tiny_model, sae, tokens)
    active = acts > 0
    assert store.n_tokens == acts.shape[0]
    assert torch.allclose(store.density, active.float().mean(0))
    assert torch.equal(store.histogram.sum(1), active.sum(0))
    mean = (acts * active).sum(0) / active.sum(0).clamp(min=1)
    assert torch.allclose(store.mean_when_active, mean, atol=1e-5)


def test_outlier_tokens_are_left_out_when_asked(tiny_model, sae, tokens):
    norms = features.collect_activations(tiny_model, HOOK, tokens, progress=False).norm(dim=-1)
    cut = norms.median().item()
    store = features.build_feature_store(tiny_model, sae, tokens, hook_name=HOOK, n_top=3, max_norm=cut, progress=False)
    assert store.n_tokens == int((norms <= cut).sum())


def test_store_round_trips_through_a_file_and_refuses_foreign_files(store, tmp_path):
    path = store.save(tmp_path / "store.safetensors")
    loaded = features.FeatureStore.load(path)
    assert store.context_activations is not None
    for name in ("tokens", "top_values", "top_index", "density", "histogram", "bin_edges", "context_activations"):
        assert torch.equal(getattr(loaded, name), getattr(store, name))
    assert loaded.metadata == store.metadata and loaded.n_tokens == store.n_tokens
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="garbage.safetensors"):
        features.FeatureStore.load(garbage)
    with pytest.raises(FileNotFoundError):
        features.FeatureStore.load(tmp_path / "missing.safetensors")


def test_an_interrupted_save_keeps_the_previous_store(store, tmp_path, monkeypatch):
    path = store.save(tmp_path / "store.safetensors")
    before = path.read_bytes()
    monkeypatch.setattr(feature_store, "save_file", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["store.safetensors"]


def test_top_contexts_centre_on_the_stored_peak(tiny_model, sae, store):
    feature = int(store.max_activation.argmax())
    contexts = features.top_contexts(tiny_model, sae, store, feature, n=3, before=4, after=2)
    assert len(contexts) == 3
    for context in contexts:
        assert context.activations[context.peak] == pytest.approx(context.value, abs=1e-4)
        assert max(context.activations) == pytest.approx(context.value, abs=1e-4) or len(context.tokens) <= 7
        assert len(context.tokens) == len(context.activations) <= 7
    assert contexts[0].value >= contexts[1].value >= contexts[2].value


def expected_contexts(model, acts, store, feature, n, before, after):
    """Brute force: ``acts``, every feature's activations on whole stored rows, cut to each example's window."""
    seq_len = store.tokens.shape[1]
    out = []
    for flat in store.top_index[feature, :n].tolist():
        if flat < 0:
            break
        row, pos = divmod(flat, seq_len)
        first, last = max(1, pos - before), min(seq_len, pos + after + 1)
        out.append((model.to_str_tokens(store.tokens[row, first:last]), acts[row, first:last, feature], pos - first))
    return out


def assert_contexts_match(contexts, expected):
    assert len(contexts) == len(expected)
    for context, (words, acts, peak) in zip(contexts, expected):
        assert context.tokens == words and context.peak == peak
        assert torch.allclose(torch.tensor(context.activations), acts, atol=1e-4)


def test_top_contexts_from_the_stored_windows_and_from_the_model_equal_brute_force(
        tiny_model, sae, tokens, monkeypatch):
    # max_norm at the median norm: half the tokens are outliers, left out of the top lists but shown in windows
    cut = features.collect_activations(tiny_model, HOOK, tokens, progress=False).norm(dim=-1).median().item()
    windowed = features.build_feature_store(tiny_model, sae, tokens, n_top=4, rows_per_chunk=5, max_norm=cut,
                                            context_window=(4, 2), progress=False)
    plain = features.build_feature_store(tiny_model, sae, tokens, n_top=4, max_norm=cut, context_window=None,
                                         progress=False)
    assert plain.context_activations is None and windowed.context_activations.shape == (48, 4, 7)
    assert torch.equal(plain.top_index, windowed.top_index)
    firing = (windowed.top_index[:, 0] >= 0).nonzero().flatten().tolist()[::3]
    assert len(firing) > 5
    acts = features.feature_activations(tiny_model, sae, tokens, hook_name=HOOK)
    expected = {(f, b, a): expected_contexts(tiny_model, acts, windowed, f, 4, b, a)
                for f in firing for b, a in ((4, 2), (2, 0), (6, 3))}
    live = {f: features.top_contexts(tiny_model, sae, windowed, f, n=4, before=6, after=3) for f in firing}
    live_plain = {f: features.top_contexts(tiny_model, sae, plain, f, n=4, before=4, after=2) for f in firing}

    def no_model_run(*args, **kwargs):
        raise AssertionError("the stored windows should answer without running the model")

    monkeypatch.setattr(features, "collect_activations", no_model_run)
    for f in firing:
        assert_contexts_match(features.top_contexts(tiny_model, sae, windowed, f, n=4, before=4, after=2),
                              expected[f, 4, 2])
        assert_contexts_match(features.top_contexts(tiny_model, sae, windowed, f, n=4, before=2, after=0),
                              expected[f, 2, 0])
        assert_contexts_match(live[f], expected[f, 6, 3])
        assert_contexts_match(live_plain[f], expected[f, 4, 2])


def test_logit_effects_follow_the_decoder_direction_through_the_unembedding(tiny_model):
    sae = SAE(SAEConfig(d_in=32, d_sae=8, architecture="relu"), seed=0)
    target = 123
    with torch.no_grad():
        sae.W_dec[3] = tiny_model.W_U[:, target] / tiny_model.ln_final.w  # points straight at one token
    up, down = features.logit_effects(tiny_model, sae, 3, k=5)
    assert up[0][0] == tiny_model.tokenizer.decode([target])
    assert [v for _, v in up] == sorted((v for _, v in up), reverse=True)
    assert all(v_down <= v_up for (_, v_down), (_, v_up) in zip(down, up))


def test_features_on_text_lists_each_tokens_strongest_features(tiny_model, sae):
    rows = features.features_on_text(tiny_model, sae, "The quick brown fox", hook_name=HOOK, k=3)
    tokens = tiny_model.to_tokens("The quick brown fox")
    assert [word for word, _ in rows] == tiny_model.to_str_tokens(tokens[0, 1:])
    acts = features.feature_activations(tiny_model, sae, tokens, hook_name=HOOK)[0, 1:]
    for (word, top), row in zip(rows, acts):
        assert [f for f, _ in top] == row.topk(3).indices[: len(top)].tolist()


def test_search_ranks_features_by_activation_relative_to_their_corpus_maximum(tiny_model, sae, store):
    found = features.search_features(tiny_model, sae, store, "brown fox", k=4)
    assert found and [v for _, v in found] == sorted((v for _, v in found), reverse=True)
    acts = features.feature_activations(tiny_model, sae, tiny_model.to_tokens("brown fox"), hook_name=HOOK)[0, 1:]
    f, v = found[0]
    assert v == pytest.approx(acts[:, f].max().item() / store.max_activation[f].item(), rel=1e-4)


def test_bad_inputs_are_refused_with_one_line_errors(tiny_model, sae, store, tokens):
    cases = [
        (lambda: features.logit_effects(tiny_model, sae, 48), "feature must be an integer in 0..47"),
        (lambda: features.top_contexts(tiny_model, sae, store, -1), "feature must be an integer in 0..47"),
        (lambda: features.features_on_text(tiny_model, sae, "   ", hook_name=HOOK), "text must be a non-empty string"),
        (lambda: features.build_feature_store(tiny_model, SAE(SAEConfig(d_in=16, d_sae=8), seed=0), tokens,
                                              hook_name=HOOK),
         "d_in=16 but the model's d_model is 32"),
        (lambda: features.feature_activations(tiny_model, sae, tokens, hook_name="blocks.1.hook_resid_post"),
         "trained on 'blocks.2.hook_resid_post', not on hook_name='blocks.1.hook_resid_post'"),
        (lambda: features.search_features(tiny_model, sae, store, "\n \t"), "text must be a non-empty string"),
        (lambda: features.search_features(tiny_model, sae, store, ""), "got ''"),
        (lambda: features.features_on_text(tiny_model, sae, "brown fox " * 60, hook_name=HOOK),
         "more than the model's context n_ctx=64"),
        (lambda: features.top_contexts(tiny_model, sae, store, 3, before=-1), "before must be an integer >= 0"),
        (lambda: features.top_contexts(tiny_model, sae, store, 3, n=-2), "n must be an integer >= 0"),
        (lambda: features.build_feature_store(tiny_model, sae, tokens, hook_name=HOOK, context_window=(3,)),
         "context_window must be (before, after) or None"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("feature", [-1, 48, 3.0, 2.5, "3", True, None])
def test_a_feature_id_outside_the_sae_is_named_with_the_allowed_range(sae, feature):
    with pytest.raises(ValueError) as error:
        sae.check_feature(feature)
    assert str(error.value) == f"feature must be an integer in 0..47, got {feature!r}"


def test_numpy_and_torch_integers_are_feature_ids(sae):
    import numpy as np

    assert sae.check_feature(np.int64(7)) == 7 and sae.check_feature(torch.tensor(7)) == 7
    assert type(sae.check_feature(torch.tensor(7))) is int


def test_the_old_check_feature_warns_and_still_checks(sae):
    with pytest.warns(DeprecationWarning, match=r"sae.check_feature\(feature\)"):
        assert features.check_feature(sae, 7) == 7
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="0..47"):
        features.check_feature(48, 48)


def test_the_old_call_shapes_warn_and_give_the_same_result(tiny_model, sae, tokens):
    new = features.feature_activations(tiny_model, sae, tokens)
    with pytest.warns(DeprecationWarning, match=r"features.feature_activations\(model, sae, tokens\)"):
        old = features.feature_activations(tiny_model, sae, HOOK, tokens)
    assert torch.equal(old, new)
    with pytest.warns(DeprecationWarning, match="features_on_text"):
        old_rows = features.features_on_text(tiny_model, sae, HOOK, "The quick brown fox", k=3)
    assert old_rows == features.features_on_text(tiny_model, sae, "The quick brown fox", k=3)
    with pytest.raises(TypeError, match="options are keywords"):
        features.features_on_text(tiny_model, sae, "The quick brown fox", 3)
    with pytest.raises(TypeError, match="hook_name at most once"), pytest.warns(DeprecationWarning):
        features.feature_activations(tiny_model, sae, HOOK, tokens, hook_name=HOOK)


def test_the_hook_comes_from_the_sae_and_an_sae_without_one_names_the_fix(tiny_model, sae, tokens):
    assert torch.equal(features.feature_activations(tiny_model, sae, tokens),
                       features.feature_activations(tiny_model, sae, tokens, hook_name=HOOK))
    anonymous = SAE(SAEConfig(d_in=32, d_sae=48), seed=0)
    with pytest.raises(ValueError, match=r"pass hook_name=\.\.\. to the call, or set sae.cfg.hook_name") as error:
        features.feature_activations(tiny_model, anonymous, tokens)
    assert "\n" not in str(error.value)
    assert features.feature_activations(tiny_model, anonymous, tokens, hook_name=HOOK).shape[-1] == 48


def test_a_store_of_another_sae_or_an_sae_of_another_hook_or_model_is_refused(tiny_model, sae, store, tokens):
    narrower = SAE(SAEConfig(d_in=32, d_sae=24, hook_name=HOOK), seed=0)
    other_hook = SAE(SAEConfig(d_in=32, d_sae=48, hook_name="blocks.1.hook_resid_post"), seed=0)
    deeper = SAE(SAEConfig(d_in=32, d_sae=48, hook_name="blocks.15.hook_resid_post"), seed=0)
    wider = SAE(SAEConfig(d_in=576, d_sae=48, hook_name=HOOK), seed=0)
    cases = [
        (lambda: features.top_contexts(tiny_model, narrower, store, 3),
         "the feature store was built for an SAE with d_sae=48, but this SAE has d_sae=24"),
        (lambda: features.search_features(tiny_model, narrower, store, "fox"), "d_sae=48, but this SAE has d_sae=24"),
        (lambda: features.top_contexts(tiny_model, other_hook, store, 3),
         "the SAE was trained on 'blocks.1.hook_resid_post', not on hook_name='blocks.2.hook_resid_post'"),
        (lambda: features.search_features(tiny_model, wider, store, "fox"),
         "the SAE reads d_in=576 but the model's d_model is 32"),
        (lambda: features.logit_effects(tiny_model, wider, 0), "d_in=576 but the model's d_model is 32"),
        (lambda: features.features_on_text(tiny_model, deeper, "fox", hook_name="blocks.15.hook_resid_post"),
         "layer 15 is beyond the model's 4 layers (0..3)"),
        (lambda: features.build_feature_store(tiny_model, deeper, tokens, hook_name=HOOK),
         "the SAE was trained on 'blocks.15.hook_resid_post', not on hook_name='blocks.2.hook_resid_post'"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(TypeError, match="store must be a FeatureStore"):
        features.top_contexts(tiny_model, sae, {"tokens": tokens}, 3)
