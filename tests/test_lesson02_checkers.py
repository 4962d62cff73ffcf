"""Lesson 02 checkers for the training step, paired features and phases: right answers pass, unattempted ones
defer, typical mistakes get their named hint; the predict-then-run verdicts compare with the run."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson02


def toy_training_step(model, optimizer, x):
    loss = (model.importance * (model(x) - x) ** 2).mean(dim=(0, 2))
    optimizer.zero_grad()
    loss.sum().backward()
    optimizer.step()
    return loss.detach()


def correlated_pairs(batch, inst, pairs, p):
    on = (torch.rand(batch, inst, pairs) < p).repeat_interleave(2, dim=-1)
    return torch.rand(batch, inst, 2 * pairs) * on


def anticorrelated_pairs(batch, inst, pairs, p):
    on = torch.rand(batch, inst, pairs) < 2 * p
    first = torch.rand(batch, inst, pairs) < 0.5
    return torch.rand(batch, inst, 2 * pairs) * torch.stack([on & first, on & ~first], -1).flatten(-2)


def classify_phase(norm, interference):
    return "not represented" if norm < 0.5 else ("dedicated" if interference < 0.1 else "superposed")


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson02.check_toy_training_step, toy_training_step),
    (lesson02.check_correlated_pairs, correlated_pairs),
    (lesson02.check_anticorrelated_pairs, anticorrelated_pairs),
    (lesson02.check_classify_phase, classify_phase)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def _step(weighted=True, reduce="sum", zero_grad=True, step=True, detach=True, per_instance=True):
    def run(model, optimizer, x):
        error = (model(x) - x) ** 2
        loss = ((model.importance * error) if weighted else error).mean(dim=(0, 2))
        if zero_grad:
            optimizer.zero_grad()
        (loss.sum() if reduce == "sum" else loss.mean()).backward()
        if step:
            optimizer.step()
        out = loss.detach() if detach else loss
        return out if per_instance else out.sum()
    return run


@pytest.mark.parametrize("wrong, hint", [
    (_step(step=False), "call optimizer.step"),
    (_step(zero_grad=False), "zero_grad"),
    (_step(reduce="mean"), "sum them before backward"),
    (_step(weighted=False), "importance weights are missing"),
    (_step(detach=False), "detached"),
    (_step(per_instance=False), "per-instance losses"),
])
def test_training_step_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_toy_training_step(wrong)


def test_the_training_step_trains_instances_as_toy_train_does():
    from saelab import toy

    model = toy.ToyModel(5, 2, n_inst=3, feature_probability=0.1, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = [lesson02.reference_toy_training_step(model, optimizer, model.generate_batch(256, generator))
              for _ in range(150)]
    assert losses[0].shape == (3,) and (torch.stack(losses[-20:]).mean(0) < 0.7 * losses[0]).all()


@pytest.mark.parametrize("wrong, hint", [
    (lambda b, i, n, p: torch.rand(b, i, 2 * n) * (torch.rand(b, i, 2 * n) < p), "switch on independently"),
    (lambda b, i, n, p: torch.rand(b, i, 2 * n) * (torch.rand(b, i, n) < p).repeat(1, 1, 2), "neighbours"),
    (lambda b, i, n, p: (torch.rand(b, i, n) * (torch.rand(b, i, n) < p)).repeat_interleave(2, -1),
     "same strength"),
    (lambda b, i, n, p: torch.rand(b, i, 2 * n) * (torch.rand(b, i, n) > p).repeat_interleave(2, -1),
     "flipped"),
    (lambda b, i, n, p: correlated_pairs(b, i, n, p)[:, 0], "shape"),
    (lambda b, i, n, p: correlated_pairs(b, 1, n, p).expand(b, i, 2 * n), "identical data"),
])
def test_correlated_pair_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_correlated_pairs(wrong)


def _anti(pair_probability=2.0, first_probability=0.5, layout="interleave", exclusive=True):
    def make(b, i, n, p):
        on = torch.rand(b, i, n) < pair_probability * p
        first = torch.rand(b, i, n) < first_probability
        second = ~first if exclusive else torch.rand(b, i, n) < 0.5
        if layout == "interleave":
            active = torch.stack([on & first, on & second], -1).flatten(-2)
        else:
            active = torch.cat([on & first, on & second], -1)
        return torch.rand(b, i, 2 * n) * active
    return make


@pytest.mark.parametrize("wrong, hint", [
    (_anti(exclusive=False), "never are"),
    (_anti(pair_probability=1.0), "switch the pair on with probability 2p"),
    (_anti(first_probability=1.0), "second feature of every pair is never on"),
    (_anti(first_probability=2 / 3), "fair coin"),
    (_anti(layout="cat"), "neighbours"),
])
def test_anticorrelated_pair_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_anticorrelated_pairs(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda n, i: "not represented" if n < 0.5 else ("superposed" if i < 0.1 else "dedicated"), "swapped"),
    (lambda n, i: "dedicated" if i < 0.1 else ("not represented" if n < 0.5 else "superposed"),
     "test the norm first"),
    (lambda n, i: "not represented" if n < 0.5 else ("dedicated" if i < 0.5 else "superposed"), "below 0.1"),
    (lambda n, i: "not represented" if n < 0.5 else ("dedicated" if i < 0.1 else "superposition"), "spelled"),
])
def test_classify_phase_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson02.check_classify_phase(wrong)


def test_the_reference_phases_agree_with_geometry():
    from saelab import geometry

    for norm, shared in lesson02._PHASE_CASES:
        W = torch.zeros(1, 1, 2)
        W[0, 0, 1] = norm
        W[0, 0, 0] = (shared ** 0.5) if norm else 0.0  # (Ŵ_extra · W_0)² = shared when W_0 lies on the line
        assert geometry.classify_feature(W)[0] == lesson02.reference_classify_phase(norm, shared)


def test_predictions_compare_with_the_run(capsys):
    assert lesson02.check_represented_prediction(20, represented=20, d_hidden=20) is True
    assert lesson02.check_represented_prediction(100, represented=20, d_hidden=20) is False
    assert lesson02.check_phase_prediction("a", "not represented") is True
    assert lesson02.check_phase_prediction(None, "not represented") is None
    lesson02.check_pair_prediction("b", None, cos_correlated=0.03, cos_anticorrelated=-0.99)
    out = capsys.readouterr().out
    assert "✔ correlated pair" in out and "no prediction written. The run gives c (antipodal" in out
    assert lesson02.pair_geometry(0.95) == "a"
