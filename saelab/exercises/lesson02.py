"""Checkers for lesson 02 (toy models of superposition): interference, dimensionality, dimensions per feature,
the training step of a batch of toy models, correlated and anticorrelated pairs, the phase of the extra
feature, and the predict-then-run prompts."""

from __future__ import annotations

import torch

from saelab import geometry
from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function


def _weights() -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    W = torch.randn(4, 3, 8, generator=generator)
    W[:, :, -1] *= 0.01  # a nearly dropped feature, where a missing normalisation shows
    return W


def _unit(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True)


def _check_dropped_feature(function, name: str) -> None:
    """A feature the model dropped entirely (W_f = 0) must come out 0, as the lesson says, not NaN."""
    W = _weights()
    W[:, :, 0] = 0.0
    actual = run_learner_function(function, W.clone(), name=name)
    column = actual[:, 0] if isinstance(actual, torch.Tensor) and actual.ndim == 2 else None
    if column is not None and not torch.isfinite(column).all():
        raise ExerciseError(f"{name}(W) is NaN for a dropped feature (W_f = 0): W_f / ||W_f|| is 0/0 there; "
                            "add a small eps to the norm (e.g. 1e-8) so that a dropped feature gives 0")


@checker("interference")
def check_interference(interference) -> None:
    """``interference(W)``, W (inst, d_hidden, feat) -> (inst, feat): sum over j != f of (Ŵ_f · W_j)²."""
    W = _weights()
    expected = geometry.interference(W)
    dots = _unit(W).transpose(1, 2) @ W
    raw = W.transpose(1, 2) @ W
    actual = run_learner_function(interference, W.clone(), name="interference")
    check_close(actual, expected, what="interference(W)", atol=1e-4, hints=[
        (dots.pow(2).sum(-1), "the sum should skip j = f: a feature does not interfere with itself"),
        (raw.pow(2).sum(-1) - torch.diagonal(raw, dim1=1, dim2=2).pow(2),
         "normalise W_f to a unit vector Ŵ_f before the dot products"),
        (dots.sum(-1) - torch.diagonal(dots, dim1=1, dim2=2), "square each dot product before summing"),
        (dots.abs().sum(-1) - torch.diagonal(dots, dim1=1, dim2=2).abs(),
         "square each dot product before summing"),
    ])
    _check_dropped_feature(interference, "interference")


@checker("dimensionality")
def check_dimensionality(dimensionality) -> None:
    """``dimensionality(W)`` -> (inst, feat): D_f = ||W_f||² / sum_j (Ŵ_f · W_j)²."""
    W = _weights()
    expected = geometry.dimensionality(W)
    norms2 = W.norm(dim=1).pow(2)
    dots = _unit(W).transpose(1, 2) @ W
    raw = W.transpose(1, 2) @ W
    actual = run_learner_function(dimensionality, W.clone(), name="dimensionality")
    check_close(actual, expected, what="dimensionality(W)", atol=1e-4, hints=[
        (1 / expected, "your ratio is upside down: ||W_f||² goes in the numerator"),
        (norms2 / raw.pow(2).sum(-1), "normalise W_f to a unit vector Ŵ_f inside the dot products"),
        (norms2 / (dots.pow(2).sum(-1) - torch.diagonal(dots, dim1=1, dim2=2).pow(2)),
         "the denominator's sum includes j = f (the feature's own ||W_f||²)"),
        (norms2 / dots.abs().sum(-1), "square the dot products in the denominator"),
    ])
    _check_dropped_feature(dimensionality, "dimensionality")


@checker("dimensions_per_feature")
def check_dimensions_per_feature(dimensions_per_feature) -> None:
    """``dimensions_per_feature(W)`` -> (inst,): D* = d_hidden / ||W||_F²."""
    W = _weights()
    expected = geometry.dimensions_per_feature(W)
    actual = run_learner_function(dimensions_per_feature, W.clone(), name="dimensions_per_feature")
    check_close(actual, expected, what="dimensions_per_feature(W)", atol=1e-5, hints=[
        (1 / expected, "your ratio is upside down: it is d_hidden divided by ||W||_F²"),
        (W.shape[1] / W.pow(2).sum(dim=(1, 2)).sqrt(),
         "use the squared Frobenius norm ||W||_F², not ||W||_F"),
        (W.shape[2] / W.pow(2).sum(dim=(1, 2)), "the numerator is d_hidden (W.shape[1]), not n_features"),
    ])


PHASE_NORM_THRESHOLD, PHASE_INTERFERENCE_THRESHOLD = 0.5, 0.1


def reference_toy_training_step(model, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    """One optimiser step for every instance at once; returns the per-instance losses (inst,), detached."""
    loss_I = (model.importance * (model(x) - x) ** 2).mean(dim=(0, 2))
    optimizer.zero_grad()
    loss_I.sum().backward()
    optimizer.step()
    return loss_I.detach()


def reference_correlated_pairs(batch_size: int, n_inst: int, n_pairs: int,
                               feature_probability: float) -> torch.Tensor:
    """(batch, inst, 2 * n_pairs): features (0, 1), (2, 3), ... share an on/off coin, not their strengths."""
    coin = torch.rand(batch_size, n_inst, n_pairs) < feature_probability
    return torch.rand(batch_size, n_inst, 2 * n_pairs) * coin.repeat_interleave(2, dim=-1)


def reference_anticorrelated_pairs(batch_size: int, n_inst: int, n_pairs: int,
                                   feature_probability: float) -> torch.Tensor:
    """(batch, inst, 2 * n_pairs): each pair is on with probability 2p, then exactly one of its features."""
    pair_on = torch.rand(batch_size, n_inst, n_pairs) < 2 * feature_probability
    first = torch.rand(batch_size, n_inst, n_pairs) < 0.5
    active = torch.stack([pair_on & first, pair_on & ~first], dim=-1).flatten(-2)
    return torch.rand(batch_size, n_inst, 2 * n_pairs) * active


def reference_classify_phase(norm: float, interference: float) -> str:
    """The extra feature's fate from its norm and interference (as ``geometry.classify_feature``)."""
    if norm < PHASE_NORM_THRESHOLD:
        return "not represented"
    return "dedicated" if interference < PHASE_INTERFERENCE_THRESHOLD else "superposed"


def _toy_setup():
    from saelab.toy import ToyModel

    model = ToyModel(6, 3, n_inst=4, importance=torch.tensor([1.0, 3.0, 0.2, 2.0, 0.5, 1.5]), seed=5)
    with torch.no_grad():
        model.b_final.copy_(0.1 * torch.randn(4, 6, generator=torch.Generator().manual_seed(6)))
    g = torch.Generator().manual_seed(7)
    x = torch.rand(32, 4, 6, generator=g) * (torch.rand(32, 4, 6, generator=g) < 0.4)
    return model, x


def _step_outcome(model, x, lr: float, *, weighted=True, reduce="sum", zero_grad=True, step=True, stale=None):
    """Parameters after one SGD step written with (or without) each ingredient; the loss it reports."""
    import copy

    model = copy.deepcopy(model)
    error = (model(x) - x) ** 2
    loss_I = ((model.importance * error) if weighted else error).mean(dim=(0, 2))
    total = loss_I.sum() if reduce == "sum" else loss_I.mean()
    grads = torch.autograd.grad(total, [model.W, model.b_final])
    if not zero_grad:
        grads = [g + s for g, s in zip(grads, stale)]
    if not step:
        grads = [torch.zeros_like(g) for g in grads]
    return model.W.detach() - lr * grads[0], model.b_final.detach() - lr * grads[1], loss_I.detach()


@checker("toy_training_step")
def check_toy_training_step(toy_training_step) -> None:
    """``toy_training_step(model, optimizer, x)`` -> (inst,) losses, after one step on every instance."""
    model, x = _toy_setup()
    lr = 0.5
    # Gradients left over from an earlier step: a step that forgets zero_grad() adds them in.
    stale = [torch.randn(p.shape, generator=torch.Generator().manual_seed(8 + i)) for i, p in
             enumerate((model.W, model.b_final))]
    W_ref, b_ref, loss_ref = _step_outcome(model, x, lr)
    import copy

    learner_model = copy.deepcopy(model)
    learner_model.W.grad, learner_model.b_final.grad = (s.clone() for s in stale)
    # Plain SGD, so that how the loss is scaled shows in the step (Adam would hide a constant factor).
    optimizer = torch.optim.SGD(learner_model.parameters(), lr=lr)
    losses = run_learner_function(toy_training_step, learner_model, optimizer, x.clone(),
                                  name="toy_training_step")
    W_after = learner_model.W.detach()
    hints = []
    for mistake, hint in [
        ({"step": False}, "the weights did not move: call optimizer.step() after loss.backward()"),
        ({"zero_grad": False}, ("the step used gradients left over from before: call optimizer.zero_grad() "
                                "before backward(), or they add up from step to step")),
        ({"reduce": "mean"}, ("you averaged the instances' losses; sum them before backward(): each instance "
                              "is its own model, and the mean would shrink every instance's gradient n_inst "
                              "times")),
        ({"weighted": False},
         "the importance weights are missing: weight each squared error by model.importance"),
        ({"weighted": False, "reduce": "mean"}, ("weight the squared error by model.importance, and sum (not "
                                                 "average) the instances' losses before backward()")),
    ]:
        hints.append((_step_outcome(model, x, lr, stale=stale, **mistake)[0], hint))
    check_close(W_after, W_ref, what="W after your step", atol=1e-5, hints=hints)
    check_close(learner_model.b_final.detach(), b_ref, what="b_final after your step", atol=1e-5)
    if isinstance(losses, torch.Tensor) and losses.ndim == 0:
        raise ExerciseError("toy_training_step returned one number; return the per-instance losses, shape "
                            "(inst,)")
    if isinstance(losses, torch.Tensor) and losses.requires_grad:
        raise ExerciseError("return the losses detached (loss_I.detach()): kept with their graph, a history "
                            "of them holds every step's graph in memory")
    check_close(losses, loss_ref, what="the losses toy_training_step returned", hints=[
        (loss_ref.sum(-1) if loss_ref.ndim else loss_ref, "return the per-instance losses, shape (inst,)"),
    ])


def _active(batch: torch.Tensor) -> torch.Tensor:
    return (batch != 0).float()


def _check_paired_batch(make_batch, name: str, correlated: bool) -> None:
    """Statistics of a learner's pair generator on a large batch (the common checks, then the pairing)."""
    torch.manual_seed(0)
    p, n_pairs, batch = 0.2, 3, 20000
    actual = run_learner_function(make_batch, batch, 2, n_pairs, p, name=name)
    if not isinstance(actual, torch.Tensor) or actual.shape != (batch, 2, 2 * n_pairs):
        shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        raise ExerciseError(f"{name} should return a tensor of shape (batch, inst, 2 * n_pairs) = "
                            f"({batch}, 2, {2 * n_pairs}), got {shape}")
    on = _active(actual)
    rate = on.mean().item()
    if abs(rate - (1 - p)) < 0.03:
        raise ExerciseError(f"{rate:.0%} of entries are non-zero, but each feature should be on with "
                            f"probability {p}: the comparison is flipped (a feature is on when rand < p)")
    if correlated is False and abs(rate - p / 2) < 0.02:
        raise ExerciseError(f"each feature is on {rate:.1%} of the time, half of feature_probability={p}: "
                            "switch the pair on with probability 2p, then pick one of its two features, so "
                            "each keeps p")
    values = actual[actual != 0]
    if values.numel() and (values.min() < 0 or values.max() > 1 or abs(values.mean().item() - 0.5) > 0.03):
        raise ExerciseError("active features should have strengths uniform in [0, 1]: draw them with "
                            "torch.rand")
    if (actual[:, 0] == actual[:, 1]).all():
        raise ExerciseError("both instances received identical data: draw independent values for every "
                            "instance")
    first, partner, far = on[..., 0], on[..., 1], on[..., n_pairs]
    both = (first * partner).mean().item()
    both_far = (first * far).mean().item()
    if correlated:
        if both_far > 0.8 * p and both < 0.5 * p:
            raise ExerciseError("feature 0 goes on with feature n_pairs, not with feature 1: pairs are "
                                "neighbours (0, 1), (2, 3), ...; repeat each pair's coin with "
                                "repeat_interleave(2, dim=-1), not repeat or cat")
        if abs(both - p * p) < 0.02:
            raise ExerciseError("the two features of a pair switch on independently: draw one coin per pair, "
                                "shape (batch, inst, n_pairs), and use it for both features")
        if ((actual[..., 0] == actual[..., 1]) & (first > 0)).float().mean().item() > 0.5 * p:
            raise ExerciseError("both features of a pair get the same strength: only the on/off coin is "
                                "shared, draw each feature's strength on its own")
    else:
        if both_far == 0 and both > 0:
            raise ExerciseError("feature 0 is never on with feature n_pairs but can be with feature 1: pairs "
                                "are neighbours (0, 1), (2, 3), ...; interleave the two halves "
                                "(torch.stack(..., dim=-1) then flatten), not cat")
        if both > 0:
            raise ExerciseError(f"both features of a pair are on together in {both:.1%} of rows; in an "
                                "anticorrelated pair they never are: one coin for 'is the pair on', a second "
                                "for 'which of the two'")
        if (on[..., 1::2].sum() == 0).item():
            raise ExerciseError("the second feature of every pair is never on: pick which one at random, a "
                                "fair coin")
        if abs(first.mean().item() - 2 * partner.mean().item()) < 0.02:
            raise ExerciseError("the first feature of a pair is on twice as often as the second: pick "
                                "between them with a fair coin (rand < 0.5)")
    per_feature = on.mean(dim=(0, 1))
    if (per_feature - p).abs().max() > 0.015:
        raise ExerciseError(f"features are on {per_feature.numpy().round(3).tolist()} of the time; with "
                            f"feature_probability={p} each should be on about {p:.0%} of the time")
    if correlated and abs(both - p) > 0.015:
        raise ExerciseError(f"both features of a pair are on together in {both:.1%} of rows; correlated "
                            f"pairs always switch together, so that should be about {p:.0%}")


@checker("correlated_pairs")
def check_correlated_pairs(correlated_pairs) -> None:
    """``correlated_pairs(batch_size, n_inst, n_pairs, feature_probability)`` -> (batch, inst, 2 n_pairs)."""
    _check_paired_batch(correlated_pairs, "correlated_pairs", correlated=True)


@checker("anticorrelated_pairs")
def check_anticorrelated_pairs(anticorrelated_pairs) -> None:
    """``anticorrelated_pairs(batch_size, n_inst, n_pairs, feature_probability)``, shaped as above."""
    _check_paired_batch(anticorrelated_pairs, "anticorrelated_pairs", correlated=False)


_PHASE_CASES = [  # (norm, interference) -> phase, chosen so that each typical mistake shows
    (0.05, 0.0), (0.2, 0.6), (0.45, 0.02), (0.9, 0.01), (1.0, 0.05), (0.7, 0.3), (1.0, 0.9), (0.6, 0.15),
]


@checker("classify_phase")
def check_classify_phase(classify_phase) -> None:
    """``classify_phase(norm, interference)`` -> 'not represented' | 'dedicated' | 'superposed'."""
    expected = [reference_classify_phase(n, i) for n, i in _PHASE_CASES]
    actual = [run_learner_function(classify_phase, n, i, name="classify_phase") for n, i in _PHASE_CASES]
    if actual == expected:
        return
    bad = [(case, a, e) for case, a, e in zip(_PHASE_CASES, actual, expected) if a != e]
    (norm, shared), got, want = bad[0]
    unknown = [a for a in actual if a not in ("not represented", "dedicated", "superposed")]
    if unknown:
        raise ExerciseError(f"classify_phase returned {unknown[0]!r}; return one of 'not represented', "
                            "'dedicated', 'superposed' (spelled so)")
    other = {"dedicated": "superposed", "superposed": "dedicated"}
    represented = [(a, e) for a, e in zip(actual, expected) if e != "not represented"]
    if represented and all(a == other[e] for a, e in represented):
        raise ExerciseError("'dedicated' and 'superposed' are swapped: low interference (< 0.1) means the "
                            "feature has its dimension to itself (dedicated); high interference means it "
                            "shares (superposed)")
    if want == "not represented":
        raise ExerciseError(f"norm {norm}, interference {shared} gave {got!r}: a feature with norm below 0.5 "
                            "is not represented, whatever its interference; test the norm first")
    raise ExerciseError(f"norm {norm}, interference {shared} gave {got!r}, expected {want!r}: a represented "
                        "feature (norm >= 0.5) is dedicated when its interference is below 0.1, superposed "
                        "otherwise")


def check_represented_prediction(prediction, represented: int, d_hidden: int) -> bool | None:
    """Lesson 02, section 1: how many of 100 dense features a 20-dimensional model represents."""
    from saelab.exercises.lesson01 import check_prediction

    return check_prediction("dense features represented", prediction, represented,
                            "With every feature on in every input, any overlap costs interference in every "
                            f"input: the model keeps one feature per dimension, {d_hidden} (the most "
                            "important), once it has converged.", tolerance=2)


PAIR_CHOICES = {"a": "the same direction", "b": "orthogonal", "c": "antipodal (opposite directions)"}


def pair_geometry(cosine: float) -> str:
    """The letter of ``PAIR_CHOICES`` that a cosine between two feature directions shows."""
    return "a" if cosine > 0.7 else ("c" if cosine < -0.7 else "b")


def check_pair_prediction(prediction_correlated, prediction_anticorrelated, cos_correlated: float,
                          cos_anticorrelated: float) -> None:
    """Lesson 02, section 4: how correlated and anticorrelated pairs are laid out (prints both verdicts)."""
    from saelab.exercises.lesson01 import check_prediction

    check_prediction("correlated pair", prediction_correlated, pair_geometry(cos_correlated),
                     f"cos = {cos_correlated:+.2f}. Features that fire together would interfere every time "
                     "they fire, so they get directions that do not overlap.", choices=PAIR_CHOICES)
    check_prediction("anticorrelated pair", prediction_anticorrelated, pair_geometry(cos_anticorrelated),
                     f"cos = {cos_anticorrelated:+.2f}. Features that never fire together never interfere, "
                     "so they can share a line; pointing opposite ways, the ReLU reads each without the "
                     "other.",
                     choices=PAIR_CHOICES)


PHASE_CHOICES = {"a": "not represented", "b": "dedicated", "c": "superposed"}


def check_phase_prediction(prediction, phase: str) -> bool | None:
    """Lesson 02, section 5: the extra feature's fate when it is dense and unimportant."""
    from saelab.exercises.lesson01 import check_prediction

    answer = {v: k for k, v in PHASE_CHOICES.items()}[phase]
    return check_prediction("dense, unimportant extra feature", prediction, answer,
                            "Dense features interfere in every input, so sharing the one dimension does not "
                            "pay; the dimension goes to whichever feature matters more, here feature 0.",
                            choices=PHASE_CHOICES)
