"""Lesson 06's checkers on the tiny model: the reference passes, and each typical mistake gets its own hint."""

import pytest
import torch

from saelab.exercises import lesson06
from saelab.exercises.checking import ExerciseError
from saelab.features import feature_activations
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "What is your physical form?", "In the beginning"]


@pytest.fixture(scope="module")
def sae():
    sae = SAE(SAEConfig(d_in=32, d_sae=48, architecture="topk", k=4, hook_name=HOOK), seed=3)
    with torch.no_grad():
        sae.b_enc += 0.5  # make the feature fire often enough for max/mean/sum to differ
    return sae


def feature_of(sae, tiny_model):
    """A feature that fires on every text, so that max, mean, sum and BOS-included answers all differ."""
    acts = [feature_activations(tiny_model, sae, tiny_model.to_tokens(t))[0, 1:] for t in TEXTS]
    fires_everywhere = torch.stack([(a > 0).sum(0) >= 2 for a in acts]).all(0)
    return int(fires_everywhere.float().argmax())


def per_text(model, sae, texts, feature, reduce, first=1):
    return torch.stack([reduce(feature_activations(model, sae, model.to_tokens(t))[0, first:, feature])
                        for t in texts])


def test_the_reference_passes_and_a_stub_is_not_attempted(tiny_model, sae):
    f = feature_of(sae, tiny_model)
    reference = lambda m, s, texts, feat: lesson06.reference_feature_max_per_text(m, s, texts, feat)
    assert lesson06.check_feature_max_per_text(reference, tiny_model, sae, TEXTS, f) is True

    def stub(*args):
        raise NotImplementedError

    assert lesson06.check_feature_max_per_text(stub, tiny_model, sae, TEXTS, f) is False
    assert lesson06.check_logit_effects(stub, tiny_model, sae, f) is False
    assert lesson06.check_logit_effects(lambda m, s, feat: lesson06.reference_logit_effects(m, s, feat),
                                        tiny_model, sae, f) is True


@pytest.mark.parametrize("mistake, hint", [
    (lambda m, s, texts, f: per_text(m, s, texts, f, torch.max, first=0), "BOS"),
    (lambda m, s, texts, f: per_text(m, s, texts, f, torch.mean), "mean"),
    (lambda m, s, texts, f: per_text(m, s, texts, f, torch.sum), "sum"),
])
def test_feature_max_mistakes_are_named(tiny_model, sae, mistake, hint):
    f = feature_of(sae, tiny_model)
    with pytest.raises(ExerciseError, match=hint):
        lesson06.check_feature_max_per_text(mistake, tiny_model, sae, TEXTS, f)


def test_pre_activations_instead_of_the_encoder_are_named(tiny_model, sae):
    def pre_activations(model, s, texts, feature):
        hook = s.hook_name
        out = []
        for text in texts:
            _, cache = model.run_with_cache(model.to_tokens(text), names_filter=[hook])
            out.append(s.pre_activations(cache[hook][0].float())[1:, feature].max())
        return torch.stack(out)

    # a feature whose pre-activation is positive on some text where TopK silences it
    reference = [lesson06.reference_feature_max_per_text(tiny_model, sae, TEXTS, f) for f in range(48)]
    differs = [f for f in range(48)
               if (pre_activations(tiny_model, sae, TEXTS, f).relu() - reference[f]).abs().max() > 0.05]
    assert differs, "the fixture SAE should have a feature TopK silences"
    f = differs[0]
    with pytest.raises(ExerciseError, match="pre-activations|TopK"):
        lesson06.check_feature_max_per_text(pre_activations, tiny_model, sae, TEXTS, f)


def test_the_old_call_shape_warns_and_checks_the_same(tiny_model, sae):
    f = feature_of(sae, tiny_model)
    with pytest.warns(DeprecationWarning, match="check_feature_max_per_text\\(feature_max_per_text, model, sae, texts"):
        old = lesson06.check_feature_max_per_text(
            lambda m, s, h, texts, feat: lesson06.reference_feature_max_per_text(m, s, texts, feat),
            tiny_model, sae, HOOK, TEXTS, f)
    assert old is True
    with pytest.warns(DeprecationWarning):
        old_reference = lesson06.reference_feature_max_per_text(tiny_model, sae, HOOK, TEXTS, f)
    assert torch.equal(old_reference, lesson06.reference_feature_max_per_text(tiny_model, sae, TEXTS, f))


@pytest.mark.parametrize("mistake, hint", [
    (lambda m, s, f: s.W_dec[f] @ m.W_U, "RMSNorm"),
    (lambda m, s, f: -(s.W_dec[f] * m.ln_final.w) @ m.W_U, "sign"),
    (lambda m, s, f: (s.W_enc[:, f] * m.ln_final.w) @ m.W_U, "decoder row"),
    (lambda m, s, f: s.W_dec[f] * m.ln_final.w, "W_U"),
])
def test_logit_effect_mistakes_are_named(tiny_model, mistake, hint):
    # A fresh SAE's encoder is its decoder transposed, and a fresh RMSNorm scale is all ones: make both differ,
    # as they do after training, so that each mistake gives a different answer.
    untied = SAE(SAEConfig(d_in=32, d_sae=48, architecture="topk", k=4, hook_name=HOOK), seed=4)
    scale = tiny_model.ln_final.w
    original = scale.detach().clone()
    with torch.no_grad():
        untied.W_enc.copy_(torch.randn(untied.W_enc.shape, generator=torch.Generator().manual_seed(5)))
        scale.copy_(original * torch.linspace(0.5, 1.5, original.numel()))
    try:
        with pytest.raises(ExerciseError, match=hint):
            lesson06.check_logit_effects(lambda m, s, f: mistake(m, s, f).detach(), tiny_model, untied, 5)
    finally:
        with torch.no_grad():
            scale.copy_(original)


def detection_score(maxima, is_concept, is_unnamed):
    fires = maxima > 0
    recall = fires[is_concept].float().mean(0)
    unnamed = fires[is_concept & is_unnamed].float().mean(0)
    return torch.min(recall, unnamed) - fires[~is_concept].float().mean(0)


def top_positions(acts, k):
    _values, flat = acts[:, 1:].flatten().topk(k)
    rows, pos = flat // (acts.shape[1] - 1), flat % (acts.shape[1] - 1)
    return torch.stack([rows, pos + 1], -1)


def activation_histogram(acts, n_bins):
    return torch.histc(acts[acts > 0], bins=n_bins, min=0, max=acts.max().item())


def is_concept_feature(unnamed, groups, min_recall, max_false_rate):
    if (unnamed > 0).float().mean() < min_recall:
        return False
    return max(float((v > 0).float().mean()) for v in groups.values()) <= max_false_rate


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson06.check_detection_score, detection_score), (lesson06.check_top_positions, top_positions),
    (lesson06.check_activation_histogram, activation_histogram),
    (lesson06.check_is_concept_feature, is_concept_feature)])
def test_new_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def _fires(m):
    return (m > 0).float()


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, c, u: torch.min(m[c].mean(0), m[c & u].mean(0)) - m[~c].mean(0), "mean activations"),
    (lambda m, c, u: torch.min(_fires(m)[c].mean(0), _fires(m)[u].mean(0)) - _fires(m)[~c].mean(0),
     "is_concept & is_unnamed"),
    (lambda m, c, u: torch.max(_fires(m)[c].mean(0), _fires(m)[c & u].mean(0)) - _fires(m)[~c].mean(0), "smaller"),
    (lambda m, c, u: _fires(m)[c].mean(0) - _fires(m)[~c].mean(0), "recall alone"),
    (lambda m, c, u: torch.min(_fires(m)[c].mean(0), _fires(m)[c & u].mean(0)) - _fires(m).mean(0), "other texts"),
    (lambda m, c, u: torch.min(_fires(m)[c].mean(0), _fires(m)[c & u].mean(0)), "subtract the false rate"),
])
def test_detection_score_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson06.check_detection_score(wrong)


def _flat_top(a, k):
    return a.flatten().topk(k).indices


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, k: a[:, 1:].flatten().topk(k).indices, "flat indices"),
    (lambda a, k: torch.stack([_flat_top(a, k) // a.shape[1], _flat_top(a, k) % a.shape[1]], 1), "position 0"),
    (lambda a, k: torch.stack([_flat_top(a[:, 1:], k) // 8, _flat_top(a[:, 1:], k) % 8], 1), "add 1 back"),
    (lambda a, k: torch.stack([_flat_top(a[:, 1:], k) % 8 + 1, _flat_top(a[:, 1:], k) // 8], 1), "swapped"),
    (lambda a, k: top_positions(a, k).flip(0), "strongest first"),
    (lambda a, k: top_positions(a, k)[:, :1], "shape"),
])
def test_top_positions_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson06.check_top_positions(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, n: torch.histc(a, bins=n, min=0, max=a.max().item()), "zeros are counted"),
    (lambda a, n: torch.histc(a[a > 0], bins=n), "start them at 0"),
    (lambda a, n: activation_histogram(a, n) / (a > 0).sum(), "counts, not fractions"),
])
def test_activation_histogram_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson06.check_activation_histogram(wrong)


def _pooled(unnamed, groups, min_recall, max_false_rate):
    pooled = torch.cat(list(groups.values()))
    return bool((unnamed > 0).float().mean() >= min_recall and (pooled > 0).float().mean() <= max_false_rate)


def _nonnegative(unnamed, groups, min_recall, max_false_rate):
    return bool((unnamed > 0).float().mean() >= min_recall
                and all((v >= 0).float().mean() <= max_false_rate for v in groups.values()))


@pytest.mark.parametrize("wrong, hint", [
    (_pooled, "each group's false rate on its own"),
    (_nonnegative, "values > 0"),
    (lambda u, g, r, f: True, "on a feature for the word bridge"),
    (lambda u, g, r, f: "yes", "True or False"),
])
def test_is_concept_feature_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson06.check_is_concept_feature(wrong)


def test_predictions_never_raise_and_explain(capsys):
    assert lesson06.check_prediction_other_bridges(None, 12, 12) is None
    assert "no prediction written" in capsys.readouterr().out
    assert lesson06.check_prediction_other_bridges(11, 12, 12) is True
    assert lesson06.check_prediction_other_bridges(2, 12, 12) is False
    assert lesson06.check_prediction_unnamed("16", 16, 22) is True
    assert lesson06.check_prediction_unnamed("many", 16, 22) is False
