"""Steering methods head to head on the embedded model: which one makes it say it is the Golden Gate Bridge?

Methods (``saelab.steering_comparison.standard_methods``), all on the same six self-description prompts, greedy,
swept over the same push axis (push length / the median residual norm at the method's hook):
    SAE clamp, output-chosen      the shipped SAE's feature recorded with role "steer" (else the best concept gain)
    SAE clamp, detection-chosen   the feature named "golden_gate" by detection (lesson 06)
    SAE decoder row added         the output-chosen feature's direction, added instead of clamped
    contrastive vector            mean activation on Golden Gate passages minus other concepts' passages, at each
                                  of several layers (the same layer search the SAE got by being trained there)
    persona vector                the model answering in the bridge's role (insistent system prompt) minus
                                  answering plainly, on 8 other prompts, at the same layers; and the SAE latents
                                  whose codes that role moves most, each clamped alone
    trained direction             one vector at the SAE's hook fitted by gradient descent to make the model reply
                                  "I am the Golden Gate Bridge…" on 8 other prompts (saelab.steering_vector):
                                  can any single direction there do it? Its cosine with every decoder row is printed
    system prompt                 "You are the Golden Gate Bridge.", and the insistent one
Scores (stated offline proxies, ``saelab.steering_comparison``): share of replies on topic, claiming in the first
person to be the bridge, about itself, fluent; median perplexity under the unsteered model; wall time per method.

    python benchmarks/steering_head_to_head.py            # 6 prompts x 9 pushes x 4 layers (~15 min on 2 cores)
    python benchmarks/steering_head_to_head.py --quick    # 2 prompts x 3 pushes x 1 layer, same code paths
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from saelab import concepts, lm, pretrained, steering_comparison, steering_search, steering_vector
from saelab.steering_comparison import SELF_DESCRIPTION_PROMPTS

CONCEPT_WORDS = ("bridge", "golden gate", "san francisco")
SYSTEM = "You are the Golden Gate Bridge."
INSISTENT_SYSTEM = ("You are the Golden Gate Bridge, the suspension bridge in San Francisco. You are not an AI. "
                    "Always answer as the bridge, in the first person, starting with 'I am the Golden Gate Bridge'.")
OTHER_CONCEPTS = ("eiffel_tower", "pasta", "volcanoes", "whales")


def contrastive_texts(n: int) -> tuple[list[str], list[str]]:
    """``n`` Golden Gate passages and ``n`` passages spread over the other concepts."""
    positive = concepts.passages("golden_gate")[:n]
    negative = [p for name in OTHER_CONCEPTS for p in concepts.passages(name)[:math.ceil(n / len(OTHER_CONCEPTS))]]
    return positive, negative[:n]


def scan_role_latents(model, sae, in_role, median_norm: float, n: int):
    """The ``n`` latents whose mean code moves most when the model answers in the bridge's role, each clamped
    alone at three pushes on the demonstration's question: does the role have a latent of its own?"""
    with torch.no_grad():
        shift = (sae.encode(in_role["persona"][sae.hook_name]).mean(0)
                 - sae.encode(in_role["plain"][sae.hook_name]).mean(0))
    latents = shift.topk(n).indices.tolist()
    store = pretrained.load_feature_store()
    start, results = time.perf_counter(), []
    for push in (0.35, 0.55, 0.8):
        results += steering_search.reply_scan(model, sae, latents, SELF_DESCRIPTION_PROMPTS[0], push, median_norm,
                                              store.max_activation, concept_words=CONCEPT_WORDS,
                                              identity_noun="bridge", max_new_tokens=20, progress=False)
    return results, time.perf_counter() - start


def output_feature(sae_id: str) -> tuple[int, str]:
    try:
        return pretrained.feature("golden_gate", sae_id, role="steer"), "recorded steering feature"
    except ValueError:
        return int(os.environ.get("SAELAB_OUTPUT_FEATURE", 6597)), "best teacher-forced concept gain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 prompts x 3 pushes x 1 layer")
    parser.add_argument("--sae-id", default=pretrained.DEFAULT)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25, help="gradient steps for the trained direction")
    parser.add_argument("--out", default=None, help="also write every reply and point here (json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (on a 2-core machine busy with other jobs, 1 ran a forward pass 17x faster "
                             "than 2: 3.2 vs 55 s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = list(SELF_DESCRIPTION_PROMPTS[:2] if args.quick else SELF_DESCRIPTION_PROMPTS)
    pushes = [0.3, 0.5, 0.7] if args.quick else [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2]
    model = lm.load_model()
    sae = pretrained.load_sae(args.sae_id)
    hook = sae.hook_name
    layer = int(hook.split(".")[1])
    layers = [layer] if args.quick else sorted({max(1, layer - 6), max(1, layer - 3), layer, layer + 3})
    hooks = [f"blocks.{n}.hook_resid_post" for n in layers]

    start = time.perf_counter()
    positive, negative = contrastive_texts(8 if args.quick else 40)
    directions = steering_comparison.contrastive_directions(model, hooks, positive, negative)
    contrastive_seconds = time.perf_counter() - start
    norms = steering_search.median_residual_norms(model, sorted(set(hooks) | {hook}), prompts)
    fit_prompts = list(steering_vector.TRAINING_PROMPTS[:2] if args.quick else steering_vector.TRAINING_PROMPTS)
    start = time.perf_counter()
    in_role = steering_comparison.role_activations(model, hooks, fit_prompts, INSISTENT_SYSTEM)
    personas = {name: in_role["persona"][name].mean(0) - in_role["plain"][name].mean(0) for name in hooks}
    persona_seconds = time.perf_counter() - start
    role_scan, role_scan_seconds = scan_role_latents(model, sae, in_role, norms[hook], 12 if args.quick else 36)
    trained = steering_vector.train_direction(model, hook, fit_prompts, steering_vector.GOLDEN_GATE_TARGET,
                                              median_norm=norms[hook], steps=args.steps)
    cosines = steering_vector.decoder_cosines(sae, trained.direction)
    chosen, how = output_feature(args.sae_id)
    detected = pretrained.feature("golden_gate", args.sae_id)
    methods = steering_comparison.standard_methods(model, sae, output_feature=chosen, detection_feature=detected,
                                                   contrastive=directions, system=SYSTEM)
    methods[-1:-1] = [steering_comparison.add_method(f"persona vector at {name}", name, direction)
                      for name, direction in personas.items()]
    methods[-1:-1] = [steering_comparison.add_method(f"trained direction at {hook}", hook, trained.direction)]
    methods.append(steering_comparison.system_method("system prompt, insistent", INSISTENT_SYSTEM))
    replies, seconds = steering_comparison.compare(model, methods, prompts, pushes, norms,
                                                   concept_words=CONCEPT_WORDS, identity_noun="bridge",
                                                   max_new_tokens=args.new_tokens)
    points = steering_comparison.dose_response(replies)
    best = steering_comparison.best_settings(points)

    print(f"\noutput-chosen feature {chosen} ({how}); detection-chosen {detected}; median residual norms "
          + ", ".join(f"{name} {value:.0f}" for name, value in norms.items()))
    print(f"contrastive directions from {len(positive)} + {len(negative)} passages: {contrastive_seconds:.0f} s")
    print(f"persona vectors from {len(fit_prompts)} prompts in and out of the role: {persona_seconds:.0f} s")
    shown = [r for r in role_scan if r.claims_identity or r.on_topic]
    print(f"latents the role moves most: {len(role_scan) // 3} x pushes 0.35/0.55/0.8 in {role_scan_seconds:.0f} s: "
          f"{sum(r.claims_identity for r in role_scan)} first-person claims, {len(shown)} replies on topic")
    for r in shown:
        print(f"    {r.feature} at push {r.strength.push_fraction:.2f}: {r.reply[:100]!r}")
    top = cosines.topk(3)
    print(f"trained direction: {len(trained.losses)} steps on {len(fit_prompts)} prompts in {trained.seconds:.0f} s, "
          f"loss {trained.losses[0]:.2f} -> {trained.losses[-1]:.3f} nats/token, push {trained.push:.2f}; nearest "
          "decoder rows " + ", ".join(f"{int(i)} ({c:.2f})" for c, i in zip(top.values.tolist(), top.indices)))
    print("\nbest setting per method (most first-person claims, then most successes, then lowest perplexity):")
    print(f"{'method':64s} {'push':>5s} {'claims':>6s} {'topic':>6s} {'self':>5s} {'fluent':>6s} {'success':>7s} "
          f"{'ppl':>6s} {'time':>6s}")
    for p in best:
        push = "—" if math.isnan(p.push) else f"{p.push:.2f}"
        print(f"{p.method[:64]:64s} {push:>5s} {p.claims_identity:6.0%} {p.on_topic:6.0%} {p.about_itself:5.0%} "
              f"{p.fluent:6.0%} {p.success:7.0%} {p.median_perplexity:6.1f} {seconds[p.method]:5.0f}s")
    for p in best:  # the replies behind each best setting, to read
        print(f"\n{p.method}:")
        for r in replies:
            if r.method == p.method and (r.push == p.push or (math.isnan(r.push) and math.isnan(p.push))):
                print(f"  {r.prompt!r}: {r.reply[:140]!r}")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"output_feature": chosen, "detection_feature": detected, "median_norms": norms,
                       "seconds": seconds, "trained_losses": trained.losses, "trained_seconds": trained.seconds,
                       "trained_top_cosines": cosines.topk(5).values.tolist(), "persona_seconds": persona_seconds,
                       "points": [p._asdict() for p in points],
                       "replies": [r._asdict() for r in replies]}, file, indent=1)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
