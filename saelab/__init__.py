"""saelab: features as directions in activation space, found with sparse autoencoders.

The library behind the saelab course. Modules, in the order data flows through them:

    toy         toy models of superposition: model, data, train_toy_model
    geometry    norms, interference, dimensionality, phase diagrams
    explorer    precomputed and live answers for the superposition explorer
    synthetic   activations with known features, to check an SAE against the truth
    sae         the sparse autoencoder (relu | topk | jumprelu) and its SAELens-format files
    training    train_sae: schedules, input scaling, resampling / AuxK, progress
    distributed data-parallel training: ranks, shares of the data, gradient all-reduce
    shards      training batches streamed from an on-disk harvest, a few shards at a time
    metrics     L0, FVU, dead / dense latents, MMCS against known features
    threads     torch's thread count, set for a while and always put back
    lm          the embedded chat model, offline, in TransformerLens; chat and generation
    corpus      offline text and its packing into token rows
    concepts    written concept slices (the Golden Gate Bridge, ...) and held-out test sentences
    concept_generation  concept slices the model writes itself (extra training signal)
    harvest     activations at a hook point, in memory or in a resumable on-disk store; a neuron's top contexts
    splice      the SAE spliced into the model; CE loss recovered
    reconstruction  one text token by token: each SAE's reconstruction and per-token FVU
    train       python -m saelab.train: corpus -> harvest -> SAE -> metrics -> files
    pretrained  the SAE that ships with the package, its feature store, metrics and named features
    feature_store  one pass of an SAE over a corpus, summarised per feature, saved
    features    top examples, logit effects, features on a text, search
    detection   strategy 1: does a feature fire on its concept and stay silent elsewhere?
    streaming   generation one token at a time, with the key/value cache
    steer       strategy 2: clamp or add features while the model generates
    steering_search  choosing a steering feature by its effect; clamp strengths in both units
    files       every file written atomically, with ordinary permissions
    deprecated  old names and call shapes kept for one release, with a warning naming the new one
    plots       plotly figures for lessons and widgets
    widgets     interactive explorers (thin wiring over the modules above)
    exercises   checkers for the lessons' exercises, and the learner/solution notebook pair
"""

import os

# On a busy 2-core machine OpenMP threads that spin while waiting slow decoding several-fold.
# This must be set before torch starts its thread pool, so it happens at import, unless the user chose.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when ``SAELAB_FAST=1``: lessons shrink their heavy steps (tests and CI run this way)."""
    return os.environ.get("SAELAB_FAST", "0").strip().lower() in {"1", "true", "yes"}
