"""Checkers for lesson 06 (interpreting features): a feature's maximum on each text, and its logit effects."""

from __future__ import annotations

from typing import Sequence

import torch

from saelab.exercises.checking import ExerciseError, check_close, checker, run_learner_function
from saelab.features import feature_activations


def reference_feature_max_per_text(model, sae, hook_name: str, texts: Sequence[str], feature: int) -> torch.Tensor:
    """For each text, the feature's largest activation over its tokens, BOS excluded: shape (n_texts,)."""
    return torch.stack([feature_activations(model, sae, hook_name, model.to_tokens(text))[0, 1:, feature].max()
                        for text in texts])


@checker("feature_max_per_text")
def check_feature_max_per_text(feature_max_per_text, model, sae, hook_name: str, texts: Sequence[str],
                               feature: int) -> None:
    """``feature_max_per_text(model, sae, hook_name, texts, feature)`` -> (n_texts,) maxima, BOS excluded."""
    actual = run_learner_function(feature_max_per_text, model, sae, hook_name, list(texts), feature,
                                  name="feature_max_per_text")
    expected = reference_feature_max_per_text(model, sae, hook_name, texts, feature)
    per_text = [feature_activations(model, sae, hook_name, model.to_tokens(text))[0] for text in texts]
    pre = []
    for text in texts:
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=[hook_name])
        pre.append(sae.pre_activations(cache[hook_name][0].float())[1:, feature])
    check_close(actual, expected, what="feature_max_per_text(...)", rtol=1e-3, atol=1e-3, hints=[
        (torch.stack([acts[:, feature].max() for acts in per_text]),
         "position 0 (BOS) is included: its huge activation is the attention sink, not the text; slice [1:]"),
        (torch.stack([acts[1:, feature].mean() for acts in per_text]),
         "this is the mean over tokens; a detector asks whether the feature fires anywhere: take the max"),
        (torch.stack([acts[1:, feature].sum() for acts in per_text]),
         "this is the sum over tokens; take the max, so long texts don't score higher just for being long"),
        (torch.stack([p.max() for p in pre]),
         "these are pre-activations: sae.encode applies the TopK (and ReLU), which silences all but k latents"),
        (torch.stack([p.relu().max() for p in pre]),
         "ReLU alone is not the SAE's encoder: this TopK SAE keeps only the k largest latents, use sae.encode"),
    ])


def reference_logit_effects(model, sae, feature: int) -> torch.Tensor:
    """The feature's decoder direction, through the final norm's scale, onto every vocabulary logit: (d_vocab,)."""
    return (sae.W_dec[feature].float() * model.ln_final.w.float()) @ model.W_U.float()


@checker("logit_effects")
def check_logit_effects(logit_effects, model, sae, feature: int) -> None:
    """``logit_effects(model, sae, feature)`` -> (d_vocab,) direct effect of the feature on each next-token logit."""
    with torch.no_grad():
        actual = run_learner_function(logit_effects, model, sae, feature, name="logit_effects")
        expected = reference_logit_effects(model, sae, feature)
        W_dec, W_U, scale = sae.W_dec[feature].float(), model.W_U.float(), model.ln_final.w.float()
        hints = [
            (W_dec @ W_U, "the final RMSNorm multiplies each dimension by its learned scale (model.ln_final.w) "
                          "before the unembedding: scale the decoder row first"),
            (-expected, "the sign is flipped: a positive effect means the feature raises that token's logit"),
            ((sae.W_enc[:, feature].float() * scale) @ W_U,
             "this uses the encoder column (what the feature reads); its effect on the output is what it writes: "
             "the decoder row sae.W_dec[feature]"),
        ]
    if isinstance(actual, torch.Tensor) and actual.shape == (sae.cfg.d_in,):
        raise ExerciseError("this has d_model entries: multiply by the unembedding model.W_U (d_model, d_vocab) "
                            "to get one number per vocabulary token")
    check_close(actual, expected, what="logit_effects(model, sae, feature)", rtol=1e-3, atol=1e-3, hints=hints)
