"""Lesson 07's clamp-hook checker: the reference passes, and each typical mistake is named."""

import pytest
import torch

from saelab.exercises import lesson07
from saelab.exercises.checking import ExerciseError
from saelab.sae import SAE, SAEConfig

FEATURE, VALUE = 5, 12.0


@pytest.fixture(scope="module")
def sae():
    sae = SAE(SAEConfig(d_in=24, d_sae=64, architecture="topk", k=8), seed=2)
    with torch.no_grad():  # an untied encoder, as after training
        sae.W_enc.copy_(sae.W_dec.T + 0.05 * torch.randn(sae.W_enc.shape, generator=torch.Generator().manual_seed(1)))
    return sae


def test_the_reference_passes_and_a_stub_is_not_attempted(sae):
    assert lesson07.check_clamp_hook(lesson07.reference_clamp_hook, sae, FEATURE, VALUE) is True

    def stub(*args):
        raise NotImplementedError

    assert lesson07.check_clamp_hook(stub, sae, FEATURE, VALUE) is False


def no_error_term(activation, hook, sae, feature, value):
    codes = sae.encode(activation)
    codes[..., feature] = value
    return sae.decode(codes)


def adds_value(activation, hook, sae, feature, value):
    return activation + value * sae.W_dec[feature]


def uses_encoder(activation, hook, sae, feature, value):
    current = sae.encode(activation)[..., feature:feature + 1]
    return activation + (value - current) * sae.W_enc[:, feature]


def flipped(activation, hook, sae, feature, value):
    current = sae.encode(activation)[..., feature:feature + 1]
    return activation - (value - current) * sae.W_dec[feature]


def returns_nothing(activation, hook, sae, feature, value):
    activation += 0


@pytest.mark.parametrize("mistake, hint", [
    (no_error_term, "error term"), (adds_value, "SETS"), (uses_encoder, "decoder row"), (flipped, "sign"),
    (returns_nothing, "returned None"), (lambda a, h, s, f, v: a, "unchanged"),
])
def test_mistakes_are_named(sae, mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson07.check_clamp_hook(mistake, sae, FEATURE, VALUE)


def test_the_reference_is_the_clamped_code_decoded_plus_the_error_term(sae):
    activation = lesson07._test_activation(sae, FEATURE)
    with torch.no_grad():
        out = lesson07.reference_clamp_hook(activation, None, sae, FEATURE, VALUE)
        codes = sae.encode(activation)
        clamped = codes.clone()
        clamped[..., FEATURE] = VALUE
        assert torch.allclose(out, sae.decode(clamped) + activation - sae.decode(codes), atol=1e-4)
        change = out - activation
        direction = sae.W_dec[FEATURE] / sae.W_dec[FEATURE].norm()
        assert torch.allclose(change, (change @ direction)[..., None] * direction, atol=1e-4)


def test_the_reference_takes_one_value_per_position_and_clamping_to_the_current_value_changes_nothing(sae):
    activation = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(3))
    current = sae.encode(activation)[..., FEATURE:FEATURE + 1]
    with torch.no_grad():
        same = lesson07.reference_clamp_hook(activation, None, sae, FEATURE, current)
        assert torch.allclose(same, activation, atol=1e-5)
        per_position = lesson07.reference_clamp_hook(activation, None, sae, FEATURE, torch.full_like(current, VALUE))
        assert torch.allclose(per_position, lesson07.reference_clamp_hook(activation, None, sae, FEATURE, VALUE),
                              atol=1e-5)


def test_the_add_hook_checker_passes_the_reference_and_names_each_mistake():
    assert lesson07.check_add_hook(lesson07.reference_add_hook) is True
    mistakes = [
        (lambda a, h, d, alpha: alpha * d.expand_as(a), "returned only alpha x direction"),
        (lambda a, h, d, alpha: a - alpha * d, "sign is flipped"),
        (lambda a, h, d, alpha: torch.cat([a[:, :-1], a[:, -1:] + alpha * d], dim=1), "last position only"),
        (lambda a, h, d, alpha: a + alpha * d / d.norm(), "normalised the direction"),
        (lambda a, h, d, alpha: a + d, "alpha is missing"),
        (lambda a, h, d, alpha: None, "returned None"),
    ]
    for wrong, hint in mistakes:
        with pytest.raises(ExerciseError, match=hint):
            lesson07.check_add_hook(wrong)


def test_the_push_fraction_checker_passes_the_reference_and_names_each_mistake(sae):
    assert lesson07.check_push_fraction(lesson07.reference_push_fraction, sae) is True
    mistakes = [
        (lambda s, f, v, m: v / m, "decoder row's length is missing"),
        (lambda s, f, v, m: v * s.W_dec[f].norm().item(), "divide by median_norm"),
        (lambda s, f, v, m: v * s.W_enc[:, f].norm().item() / m, "not the encoder column"),
        (lambda s, f, v, m: v * s.W_dec[f].pow(2).sum().item() / m, "square root"),
        (lambda s, f, v, m: "0.5", "should return one number"),
    ]
    for wrong, hint in mistakes:
        with pytest.raises(ExerciseError, match=hint):
            lesson07.check_push_fraction(wrong, sae)
    before = sae.W_dec.clone()
    lesson07.check_push_fraction(lesson07.reference_push_fraction, sae)
    assert torch.equal(sae.W_dec, before)  # the checker puts the decoder row back


def test_the_target_loss_checker_passes_the_reference_and_names_each_mistake():
    assert lesson07.check_target_loss(lesson07.reference_target_loss) is True

    def logprobs_of(logits, tokens, shift=True):
        logprobs = logits.log_softmax(-1)
        if shift:
            return logprobs[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
        return logprobs.gather(-1, tokens[..., None])[..., 0]

    mistakes = {
        "logits at position t predict the token at t \\+ 1":
            lambda lo, to, m: -(logprobs_of(lo, to, shift=False) * m).sum() / m.sum(),
        "sign is flipped": lambda lo, to, m: (logprobs_of(lo, to) * m[:, 1:]).sum() / m[:, 1:].sum(),
        "that is the sum": lambda lo, to, m: -(logprobs_of(lo, to) * m[:, 1:]).sum(),
        "only the target's tokens count": lambda lo, to, m: -logprobs_of(lo, to).mean(),
        "take log_softmax": lambda lo, to, m: -(lo[:, :-1].gather(-1, to[:, 1:, None])[..., 0] * m[:, 1:]).sum()
                                              / m[:, 1:].sum(),
        "should return one number": lambda lo, to, m: -(logprobs_of(lo, to) * m[:, 1:]),
    }
    for hint, mistake in mistakes.items():
        with pytest.raises(ExerciseError, match=hint):
            lesson07.check_target_loss(mistake)

    def stub(*args):
        raise NotImplementedError

    assert lesson07.check_target_loss(stub) is False
