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
    sae = SAE(SAEConfig(d_in=32, d_sae=48, architecture="topk", k=4, metadata={"hook_name": HOOK}), seed=3)
    with torch.no_grad():
        sae.b_enc += 0.5  # make the feature fire often enough for max/mean/sum to differ
    return sae


def feature_of(sae, tiny_model):
    """A feature that fires on every text, so that max, mean, sum and BOS-included answers all differ."""
    acts = [feature_activations(tiny_model, sae, HOOK, tiny_model.to_tokens(t))[0, 1:] for t in TEXTS]
    fires_everywhere = torch.stack([(a > 0).sum(0) >= 2 for a in acts]).all(0)
    return int(fires_everywhere.float().argmax())


def per_text(model, sae, texts, feature, reduce, first=1):
    return torch.stack([reduce(feature_activations(model, sae, HOOK, model.to_tokens(t))[0, first:, feature])
                        for t in texts])


def test_the_reference_passes_and_a_stub_is_not_attempted(tiny_model, sae):
    f = feature_of(sae, tiny_model)
    reference = lambda m, s, h, texts, feat: lesson06.reference_feature_max_per_text(m, s, h, texts, feat)
    assert lesson06.check_feature_max_per_text(reference, tiny_model, sae, HOOK, TEXTS, f) is True

    def stub(*args):
        raise NotImplementedError

    assert lesson06.check_feature_max_per_text(stub, tiny_model, sae, HOOK, TEXTS, f) is False
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
        lesson06.check_feature_max_per_text(lambda m, s, h, texts, feat: mistake(m, s, texts, feat),
                                            tiny_model, sae, HOOK, TEXTS, f)


def test_pre_activations_instead_of_the_encoder_are_named(tiny_model, sae):
    def pre_activations(model, s, hook, texts, feature):
        out = []
        for text in texts:
            _, cache = model.run_with_cache(model.to_tokens(text), names_filter=[hook])
            out.append(s.pre_activations(cache[hook][0].float())[1:, feature].max())
        return torch.stack(out)

    # a feature whose pre-activation is positive on some text where TopK silences it
    reference = [lesson06.reference_feature_max_per_text(tiny_model, sae, HOOK, TEXTS, f) for f in range(48)]
    differs = [f for f in range(48)
               if (pre_activations(tiny_model, sae, HOOK, TEXTS, f).relu() - reference[f]).abs().max() > 0.05]
    assert differs, "the fixture SAE should have a feature TopK silences"
    f = differs[0]
    with pytest.raises(ExerciseError, match="pre-activations|TopK"):
        lesson06.check_feature_max_per_text(pre_activations, tiny_model, sae, HOOK, TEXTS, f)


@pytest.mark.parametrize("mistake, hint", [
    (lambda m, s, f: s.W_dec[f] @ m.W_U, "RMSNorm"),
    (lambda m, s, f: -(s.W_dec[f] * m.ln_final.w) @ m.W_U, "sign"),
    (lambda m, s, f: (s.W_enc[:, f] * m.ln_final.w) @ m.W_U, "decoder row"),
    (lambda m, s, f: s.W_dec[f] * m.ln_final.w, "W_U"),
])
def test_logit_effect_mistakes_are_named(tiny_model, mistake, hint):
    # A fresh SAE's encoder is its decoder transposed, and a fresh RMSNorm scale is all ones: make both differ,
    # as they do after training, so that each mistake gives a different answer.
    untied = SAE(SAEConfig(d_in=32, d_sae=48, architecture="topk", k=4, metadata={"hook_name": HOOK}), seed=4)
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
