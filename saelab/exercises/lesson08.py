"""Checkers for lesson 08 (feature splitting and absorption): decoder cosines across dictionaries, a latent's
F1 as a detector, the absorbed tokens, and the Matryoshka loss over nested prefixes."""

from __future__ import annotations

import torch

from saelab import absorption
from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function, wrong_answer


def reference_decoder_cosines(W_dec_a: torch.Tensor, W_dec_b: torch.Tensor) -> torch.Tensor:
    """(d_sae_a, d_in), (d_sae_b, d_in) -> (d_sae_a, d_sae_b): cosine of every pair of decoder rows."""
    return absorption.decoder_cosines(W_dec_a, W_dec_b)


def reference_f1_per_latent(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(tokens, d_sae) codes, (tokens,) bools -> (d_sae,) F1 of "the latent fires (> 0)" as a detector."""
    return absorption.f1_per_latent(codes, labels)


def reference_absorbed_tokens(codes: torch.Tensor, W_dec: torch.Tensor, probe_weight: torch.Tensor,
                              counted: torch.Tensor, main_latent: int, threshold: float) -> torch.Tensor:
    """(tokens,) bools: counted tokens where ``main_latent`` is silent and the active latent adding most to
    the probe's logit, ``codes[:, j] * (W_dec[j] @ probe_weight)``, is another latent whose decoder row has
    cosine >= ``threshold`` with ``probe_weight``."""
    contribution = codes * (W_dec @ probe_weight)
    top_value, top_latent = contribution.max(dim=1)
    cosine = (W_dec / W_dec.norm(dim=1, keepdim=True)) @ (probe_weight / probe_weight.norm())
    return (counted & (codes[:, main_latent] <= 0) & (top_value > 0) & (top_latent != main_latent)
            & (cosine[top_latent] >= threshold))


def reference_nested_prefix_loss(x: torch.Tensor, codes: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
                                 prefixes: list[int]) -> torch.Tensor:
    """The Matryoshka loss: for each prefix size m, the squared error (summed over d_in, averaged over rows) of
    the reconstruction from latents 0..m-1 alone (plus b_dec); the mean of those errors over the prefixes."""
    errors = [((codes[:, :m] @ W_dec[:m] + b_dec) - x).pow(2).sum(-1).mean() for m in prefixes]
    return torch.stack(errors).mean()


def _two_dictionaries(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(7, 5, generator=g) * 2.0, torch.randn(11, 5, generator=g) * 0.3 + 0.1


@checker("decoder_cosines")
def check_decoder_cosines(decoder_cosines) -> None:
    """``decoder_cosines(W_dec_a, W_dec_b)`` -> (d_sae_a, d_sae_b) cosines."""
    W_a, W_b = _two_dictionaries()
    expected = reference_decoder_cosines(W_a, W_b)
    actual = run_learner_function(decoder_cosines, W_a.clone(), W_b.clone(), name="decoder_cosines")
    if isinstance(actual, torch.Tensor) and actual.shape == expected.t().shape:
        raise ExerciseError("decoder_cosines should have one row per latent of the first SAE and one column per "
                            f"latent of the second, shape {tuple(expected.shape)}; you returned it transposed")
    check_close(actual, expected, what="decoder_cosines(W_dec_a, W_dec_b)", hints=[
        (W_a @ W_b.t(), ("these are dot products: divide each decoder row by its norm first (cosine = dot "
                        "product of unit vectors); these rows are not unit length")),
        ((W_a / W_a.norm(dim=0, keepdim=True)) @ (W_b / W_b.norm(dim=0, keepdim=True)).t(),
         "normalise each decoder *row* (norm over d_in, dim=1), not each column"),
        ((W_a / W_a.norm(dim=1, keepdim=True)) @ W_b.t(), ("normalise the rows of both dictionaries, not only "
                                                           "the first")),
    ])


@checker("f1_per_latent")
def check_f1_per_latent(f1_per_latent) -> None:
    """``f1_per_latent(codes, labels)`` -> (d_sae,) F1 of each latent as a detector of the labels."""
    g = torch.Generator().manual_seed(1)
    labels = torch.rand(60, generator=g) < 0.3
    codes = torch.rand(60, 6, generator=g) * 3 * (torch.rand(60, 6, generator=g) < 0.4)
    codes[:, 0] = labels * (0.5 + torch.rand(60, generator=g))     # a perfect detector, F1 = 1
    codes[:, 1] = 0.0                                              # a dead latent, F1 = 0 (not NaN)
    expected = reference_f1_per_latent(codes, labels)
    actual = run_learner_function(f1_per_latent, codes.clone(), labels.clone(), name="f1_per_latent")
    if isinstance(actual, torch.Tensor) and torch.isnan(actual).any():
        raise ExerciseError("f1_per_latent gave NaN: a latent that never fires has precision 0/0; count it as "
                            "F1 0 (e.g. clamp the denominators to at least 1)")
    values = codes.float()
    y = labels.float()
    tp = y @ values
    precision = tp / values.sum(0).clamp_min(1e-12)
    recall = tp / y.sum()
    fires = (codes > 0).float()
    tp_count = y @ fires
    recall_over_all = tp_count / len(y)
    precision_count = tp_count / fires.sum(0).clamp_min(1)
    check_close(actual, expected, what="f1_per_latent(codes, labels)", hints=[
        (2 * precision * recall / (precision + recall).clamp_min(1e-12),
         "count firings (codes > 0), don't sum activation values: F1 is about *whether* the latent fires"),
        (2 * precision_count * recall_over_all / (precision_count + recall_over_all).clamp_min(1e-12),
         "recall divides the true positives by the number of *positive* tokens (labels.sum()), not all tokens"),
        ((precision_count + tp_count / y.sum()) / 2, ("F1 is the harmonic mean 2PR/(P+R), not the arithmetic "
                                                     "mean of precision and recall")),
        (precision_count, "that is the precision alone; F1 combines it with recall"),
    ])


def _absorption_case():
    """Seven tokens, five latents; latent 0 is the main latent, the probe reads dimension 0."""
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [-0.5, 0.0, 0.866],
                          [0.3, 0.0, 0.954]])
    probe_weight = torch.tensor([2.0, 0.0, 0.0])
    codes = torch.tensor([
        [1.0, 0.5, 0.0, 0.0, 0.0],  # main fires: not absorbed
        [0.0, 1.0, 0.0, 0.0, 0.0],  # main silent, latent 1 carries the probe direction: absorbed
        [0.0, 0.0, 2.0, 0.0, 0.0],  # main silent, latent 2 is orthogonal to the probe: not absorbed
        [0.0, 0.2, 3.0, 0.0, 0.0],  # absorbed: latent 1 is the top contributor although latent 2 is larger
        [0.0, 1.0, 0.0, 0.0, 0.0],  # not counted (the probe got it wrong, or not a letter token)
        [0.0, 0.1, 0.0, 2.0, 0.0],  # latent 3 points against the probe; latent 1, weak, adds most: absorbed
        [0.0, 0.0, 0.0, 0.0, 1.0],  # latent 4 adds to the logit but its cosine 0.3 is under the threshold
    ])
    counted = torch.tensor([True, True, True, True, False, True, True])
    return codes, W_dec, probe_weight, counted


@checker("absorbed_tokens")
def check_absorbed_tokens(absorbed_tokens) -> None:
    """``absorbed_tokens(codes, W_dec, probe_weight, counted, main_latent, threshold)`` -> (tokens,) bools."""
    codes, W_dec, probe_weight, counted = _absorption_case()
    threshold = 0.5
    expected = reference_absorbed_tokens(codes, W_dec, probe_weight, counted, 0, threshold)
    actual = run_learner_function(absorbed_tokens, codes.clone(), W_dec.clone(), probe_weight.clone(),
                                  counted.clone(), 0, threshold, name="absorbed_tokens")
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        raise ExerciseError(f"absorbed_tokens should return one bool per token, shape {tuple(expected.shape)}; "
                            f"got {shape}")
    actual = actual.bool()
    if torch.equal(actual, expected):
        return
    cosine = (W_dec / W_dec.norm(dim=1, keepdim=True)) @ (probe_weight / probe_weight.norm())
    by_activation = codes.argmax(dim=1)
    silent = codes[:, 0] <= 0
    for mistake, hint in [
        (counted & silent & (cosine[by_activation] >= threshold) & (codes.max(1).values > 0),
         ("pick the latent that adds most to the probe's logit, codes[:, j] * (W_dec[j] @ probe_weight), not the "
         "most active one: a large latent orthogonal to the probe does not carry the letter")),
        (silent & (codes * (W_dec @ probe_weight)).max(1).values.gt(0)
         & (cosine[(codes * (W_dec @ probe_weight)).argmax(1)] >= threshold),
         "count only the `counted` tokens (letter tokens the probe gets right)"),
        (counted & (codes * (W_dec @ probe_weight)).max(1).values.gt(0), ("a token is absorbed only when the main "
         "latent is silent and the top contributor's decoder cosine with the probe reaches the threshold")),
        (counted & silent & (codes * (W_dec @ probe_weight)).max(1).values.gt(0),
         ("the top contributor must be aligned with the probe: its decoder cosine with probe_weight must be at "
         "least `threshold`")),
    ]:
        if torch.equal(actual, mistake):
            raise ExerciseError(f"absorbed_tokens is not right: {hint}")
    if actual[0]:
        raise ExerciseError("absorbed_tokens is not right: where the main latent fires, nothing was absorbed")
    raise wrong_answer("absorbed_tokens", f"tokens {actual.nonzero().squeeze(1).tolist()}",
                       f"tokens {expected.nonzero().squeeze(1).tolist()}")


@checker("nested_prefix_loss")
def check_nested_prefix_loss(nested_prefix_loss) -> None:
    """``nested_prefix_loss(x, codes, W_dec, b_dec, prefixes)`` -> the mean over prefixes of their errors."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 5, generator=g)
    codes = torch.rand(20, 8, generator=g) * (torch.rand(20, 8, generator=g) < 0.5)
    W_dec = torch.randn(8, 5, generator=g)
    b_dec = torch.randn(5, generator=g)
    prefixes = [2, 4, 8]
    expected = reference_nested_prefix_loss(x, codes, W_dec, b_dec, prefixes)
    actual = run_learner_function(nested_prefix_loss, x.clone(), codes.clone(), W_dec.clone(), b_dec.clone(),
                                  list(prefixes), name="nested_prefix_loss")
    if isinstance(actual, torch.Tensor) and actual.ndim != 0:
        raise ExerciseError(f"nested_prefix_loss should return one number (a 0-d tensor), got shape "
                            f"{tuple(actual.shape)}")

    def error(m, bias=True, per_dim=False, last=False):
        start = m[0] if last else 0
        recon = codes[:, start:m[1]] @ W_dec[start:m[1]] + (b_dec if bias else 0)
        sq = (recon - x).pow(2)
        return sq.mean() if per_dim else sq.sum(-1).mean()

    spans = [(0, m) for m in prefixes]
    groups = list(zip([0] + prefixes[:-1], prefixes))
    check_close(actual, expected, what="nested_prefix_loss", rtol=1e-4, hints=[
        (error((0, 8)), ("that is the plain loss of the whole dictionary: average the errors of every prefix "
                        "(the first 2, 4 and 8 latents here)")),
        (torch.stack([error(s) for s in spans]).sum(), "average the prefixes' errors, don't sum them"),
        (torch.stack([error(s, bias=False) for s in spans]).mean(), "each prefix's reconstruction needs b_dec"),
        (torch.stack([error(s, per_dim=True) for s in spans]).mean(), ("sum the squared error over d_in (then "
                                                                       "average over rows), as the SAE loss does")),
        (torch.stack([error(s, last=True) for s in groups]).mean(), ("each prefix uses *all* latents before its "
                                                                    "end (0..m-1), not only its own group")),
    ])


def check_prediction_miss_rate(prediction, small_rate: float, large_rate: float) -> bool | None:
    """Section 3: as the dictionary grows, does the main letter latent miss more letter tokens?"""
    from saelab.exercises.lesson01 import check_prediction

    change = large_rate - small_rate
    answer = "a" if change < -0.02 else "c" if change > 0.02 else "b"
    return check_prediction(
        "miss rate as the dictionary grows", prediction, answer,
        f"The main latent misses {small_rate:.0%} of the letter tokens in the small SAE and {large_rate:.0%} in "
        "the large one. A larger dictionary can afford latents for single frequent words; each such latent "
        "that also carries the letter makes the general letter latent unnecessary on its tokens, and the "
        "sparsity objective then switches the general one off there.",
        choices={"a": "falls", "b": "stays within 2 points", "c": "rises"})
