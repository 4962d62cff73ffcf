"""Checkers for lesson 01 (superposition in 2D): the forward pass, the loss, sparse inputs, the angles between
neighbouring directions, the read-out of one feature, and the predict-then-run prompts."""

from __future__ import annotations

import math

import torch

from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function, wrong_answer


def _weights(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(3, 2, 5, generator=generator)
    b = torch.randn(3, 5, generator=generator) * 0.3
    x = torch.rand(16, 3, 5, generator=generator) * (torch.rand(16, 3, 5, generator=generator) < 0.5)
    return W, b, x


@checker("forward")
def check_forward(forward) -> None:
    """``forward(W, b, x)`` with W (inst, d_hidden, feat), b (inst, feat), x (batch, inst, feat) -> x'."""
    W, b, x = _weights()
    hidden = torch.einsum("ihf,bif->bih", W, x)
    linear = torch.einsum("ihf,bih->bif", W, hidden) + b
    expected = torch.relu(linear)
    actual = run_learner_function(forward, W.clone(), b.clone(), x.clone(), name="forward")
    check_close(actual, expected, what="forward(W, b, x)", hints=[
        (linear, "this is Wᵀ W x + b without the final ReLU — did you forget the ReLU?"),
        (torch.relu(linear - b), "the bias b is missing: add it before the ReLU"),
        (torch.relu(linear - b) + b, "add the bias before the ReLU, not after it"),
        (torch.relu(torch.einsum("ihf,bih->bif", W, torch.relu(hidden)) + b),
         "the hidden layer h = W x has no ReLU in this model (that is the 'relu_hidden' variant)"),
        (torch.relu(torch.einsum("ihf,bih->bif", W, hidden)),
         "the bias b is missing: add it before the ReLU"),
    ])


@checker("importance_weighted_loss")
def check_loss(importance_weighted_loss) -> None:
    """``importance_weighted_loss(x, x_hat, importance)`` -> one loss per instance, shape (inst,)."""
    _, _, x = _weights(1)
    x_hat = x + 0.1 * torch.randn_like(x)
    importance = 0.9 ** torch.arange(5.0).expand(3, 5)
    error = (x - x_hat) ** 2
    expected = (importance * error).mean(dim=(0, 2))
    actual = run_learner_function(importance_weighted_loss, x, x_hat, importance.clone(),
                                  name="importance_weighted_loss")
    if isinstance(actual, torch.Tensor) and actual.ndim == 0:
        raise ExerciseError("importance_weighted_loss returned one number; it should return one loss per "
                            "instance, shape (inst,): average over batch and features only")
    check_close(actual, expected, what="importance_weighted_loss", hints=[
        (error.mean(dim=(0, 2)),
         "the importance weights are missing: multiply each squared error by importance"),
        ((importance * error).sum(dim=(0, 2)), "use the mean over batch and features, not the sum"),
        ((importance * error).sum(dim=2).mean(0), ("average over features too (the reference takes the mean, "
                                                   "so losses stay comparable across feature counts)")),
        ((importance * (x - x_hat).abs()).mean(dim=(0, 2)),
         "square the error instead of taking its absolute value"),
    ])


@checker("sparse_batch")
def check_sparse_batch(sparse_batch) -> None:
    """``sparse_batch(batch_size, n_inst, n_features, feature_probability)``: uniform magnitudes, each on with p."""
    torch.manual_seed(0)
    p = 0.1
    actual = run_learner_function(sparse_batch, 20000, 2, 5, p, name="sparse_batch")
    if not isinstance(actual, torch.Tensor) or actual.shape != (20000, 2, 5):
        shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        raise ExerciseError("sparse_batch should return a tensor of shape (batch, inst, feat) = (20000, 2, "
                            f"5), got {shape}")
    active = (actual != 0).float().mean().item()
    if abs(active - (1 - p)) < 0.02:
        raise ExerciseError(f"{active:.0%} of entries are non-zero, but features should be active with "
                            f"probability {p}: the comparison is flipped (keep a value when rand < p)")
    if abs(active - p) > 0.01:
        raise ExerciseError(f"{active:.1%} of entries are non-zero; with feature_probability={p} about "
                            f"{p:.0%} should be")
    values = actual[actual != 0]
    if values.min() < 0 or values.max() > 1:
        raise ExerciseError("active features should have magnitudes uniform in [0, 1]; yours leave that "
                            "range")
    if abs(values.mean().item() - 0.5) > 0.02:
        raise ExerciseError(f"active magnitudes average {values.mean().item():.2f}, uniform in [0, 1] "
                            "averages 0.5: draw them with torch.rand")
    if (actual[:, 0] == actual[:, 1]).all():
        raise ExerciseError("both instances received identical data: draw independent values for every "
                            "instance")


def reference_neighbour_angles(W: torch.Tensor) -> torch.Tensor:
    """W (2, feat), one instance -> (feat,): the angle in degrees from each direction to the next one round
    the circle, counter-clockwise from the direction with the smallest angle; the gaps add up to 360."""
    angles = torch.atan2(W[1], W[0]).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])) * 180 / math.pi


def reference_one_feature_readout(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W (d_hidden, feat), b (feat,) -> (feat, feat): row f is the output x' when feature f alone is on at
    strength 1, entry [f, g] = ReLU(W_f · W_g + b_g)."""
    return torch.relu(W.t() @ W + b)


def _rotations(gaps: torch.Tensor) -> list[torch.Tensor]:
    """Every way of listing the same gaps round the circle: any starting direction, either way round."""
    return [torch.roll(order, shift) for order in (gaps, gaps.flip(0)) for shift in range(len(gaps))]


def _same_circle(actual: torch.Tensor, gaps: torch.Tensor, atol: float = 1e-3) -> bool:
    return actual.shape == gaps.shape and any(torch.allclose(actual, r, atol=atol) for r in _rotations(gaps))


@checker("neighbour_angles")
def check_neighbour_angles(neighbour_angles) -> None:
    """``neighbour_angles(W)``, W (2, feat) -> (feat,) gaps in degrees between neighbouring directions."""
    # Five directions whose order round the circle is not their index order, with different lengths.
    degrees = torch.tensor([10.0, 160.0, 80.0, -60.0, -150.0])
    radians = degrees * math.pi / 180
    lengths = torch.tensor([1.0, 0.8, 1.2, 0.9, 1.1])
    W = torch.stack([radians.cos(), radians.sin()]) * lengths
    expected = reference_neighbour_angles(W)
    actual = run_learner_function(neighbour_angles, W.clone(), name="neighbour_angles")
    if not isinstance(actual, torch.Tensor):
        raise ExerciseError(f"neighbour_angles should return a torch.Tensor, got {type(actual).__name__}")
    actual = actual.detach().float()
    n = W.shape[1]
    if actual.shape == (n - 1,):
        raise ExerciseError(f"neighbour_angles returned {n - 1} gaps for {n} directions: the gap from the "
                            "last direction back round to the first is missing (append the first angle + "
                            "360° before taking differences)")
    if actual.shape != (n,):
        raise ExerciseError(f"neighbour_angles should return one gap per direction, shape ({n},), "
                            f"got {tuple(actual.shape)}")
    if _same_circle(actual, expected):
        return
    if _same_circle(actual * 180 / math.pi, expected):
        raise ExerciseError("these are radians: convert to degrees (× 180 / π)")
    unit = W / W.norm(dim=0)
    by_index = torch.rad2deg(torch.acos((unit * torch.roll(unit, -1, dims=1)).sum(0).clamp(-1, 1)))
    if any(torch.allclose(actual, gaps, atol=1e-2) for gaps in (by_index, torch.deg2rad(by_index))):
        raise ExerciseError("you measured the angle between feature f and feature f + 1, but neighbours are "
                            "next to each other *round the circle*, not by index: sort the directions' "
                            "angles first")
    if (actual < 0).any():
        raise ExerciseError("some gaps are negative: sort the angles (smallest to largest) before taking "
                            "differences")
    atan_angles = torch.atan(W[1] / W[0]).sort().values
    atan_gaps = torch.rad2deg(torch.diff(torch.cat([atan_angles, atan_angles[:1] + 2 * math.pi])))
    if _same_circle(actual, atan_gaps) or _same_circle(actual * 180 / math.pi, atan_gaps):
        raise ExerciseError("use torch.atan2(y, x) for a direction's angle: atan(y / x) cannot tell a "
                            "direction from its opposite, so directions in the left half-plane land on the "
                            "right")
    raise wrong_answer("neighbour_angles", actual.numpy().round(1).tolist(),
                       f"the gaps {expected.numpy().round(1).tolist()}", " (in some order round the circle)")


@checker("one_feature_readout")
def check_one_feature_readout(one_feature_readout) -> None:
    """``one_feature_readout(W, b)``, W (d_hidden, feat), b (feat,) -> (feat, feat) = ReLU(Wᵀ W + b)."""
    generator = torch.Generator().manual_seed(4)
    W = torch.randn(2, 5, generator=generator)
    b = torch.tensor([-0.4, 0.3, -0.1, 0.6, -0.8])
    overlaps = W.t() @ W
    expected = reference_one_feature_readout(W, b)
    actual = run_learner_function(one_feature_readout, W.clone(), b.clone(), name="one_feature_readout")
    if isinstance(actual, torch.Tensor) and actual.shape == (2, 2):
        raise ExerciseError("that is W Wᵀ, (d_hidden, d_hidden); the read-out needs every pair of features: "
                            "Wᵀ W, (feat, feat)")
    check_close(actual, expected, what="one_feature_readout(W, b)", hints=[
        (overlaps + b, "this is before the ReLU: apply it, the model's output is ReLU(Wᵀ h + b)"),
        (torch.relu(overlaps), "the bias b is missing: add it before the ReLU"),
        (torch.relu(overlaps) + b, "add the bias before the ReLU, not after it"),
        (torch.relu(overlaps + b[:, None]), ("each output g has its own bias b_g: add b along the columns (b "
                                             "as a row, b[None, :]), not along the rows")),
    ])


def check_prediction(name: str, prediction, answer, explanation: str, *, tolerance: float = 0.0,
                     choices: dict[str, str] | None = None) -> bool | None:
    """A "predict, then run" verdict: compare the learner's guess with what the run gave, print, never raise.

    ``prediction`` is None (not written), a number (within ``tolerance`` of ``answer`` counts as right)
    or, with ``choices`` (letter -> text), one letter. Returns True / False, or None when no prediction was
    written. Lessons 01-03 share it.
    """
    def shown(value):
        return f"{value} ({choices[value]})" if choices and value in choices else f"{value}"

    if prediction is None or (isinstance(prediction, str) and not prediction.strip()):
        print(f"… {name}: no prediction written. The run gives {shown(answer)}. {explanation}")
        return None
    if choices is not None:
        letter = str(prediction).strip().lower().rstrip(").")
        if letter not in choices:
            print(f"… {name}: answer with one of {', '.join(choices)} (you wrote {prediction!r}). "
                  f"The run gives {shown(answer)}. {explanation}")
            return False
        right = letter == answer
        prediction = letter
    else:
        try:
            right = abs(float(prediction) - float(answer)) <= tolerance
        except (TypeError, ValueError):
            print(f"… {name}: write a number (you wrote {prediction!r}). The run gives {answer}. "
                  f"{explanation}")
            return False
    mark = "✔" if right else "✘"
    print(f"{mark} {name}: you predicted {shown(prediction)}, the run gives {shown(answer)}. {explanation}")
    return right


def check_dense_prediction(prediction, kept: int) -> bool | None:
    """Lesson 01, section 2: how many of 5 dense features survive in 2 dimensions."""
    return check_prediction("dense features kept", prediction, kept,
                            "Dense features are all on together, so any two sharing a direction would "
                            "interfere in every input: the model gives the two most important a dimension "
                            "each and drops the rest.")


def check_angle_prediction(prediction, angle: float) -> bool | None:
    """Lesson 01, section 3: the angle between neighbouring directions of the pentagon."""
    return check_prediction("angle between neighbours", prediction, round(angle),
                            "Five directions spread evenly round a circle are 360° / 5 = 72° apart: the "
                            "arrangement that keeps the worst overlap between any two as small as it can be.",
                            tolerance=5)


NEIGHBOUR_CHOICES = {"a": "zero", "b": "a small positive value", "c": "a negative value"}


def check_neighbour_prediction(prediction, neighbour_value: float) -> bool | None:
    """Lesson 01, section 5: what a pentagon neighbour reads, before the ReLU, with one feature on."""
    answer = "a" if abs(neighbour_value) < 0.05 else ("b" if neighbour_value > 0 else "c")
    return check_prediction("a neighbour's read-out", prediction, answer,
                            f"The neighbour reads W_j · W_f = cos 72° ‖W‖² ≈ {neighbour_value:+.2f} here: "
                            "positive, because 72° is less than 90°. Only directions more than 90° away read "
                            "negative values.",
                            choices=NEIGHBOUR_CHOICES)
