"""Concept slices written by the embedded chat model itself, to sit beside the hand-written ones.

Why: an SAE spends a latent on a concept when the concept is frequent in its training data *and* shows up in
many surface forms. The hand-written slices give the forms; passages the model writes about the concept add
volume in the model's own phrasing, which is what its residual stream is used to. They are fluent but may
hold invented facts, so they are only ever training signal: features are scored and tested on the written
slices and held-out sentences. Every concept gets a generated slice, not only the Golden Gate Bridge: a latent
for "the model's own prose style" must not pass for a concept latent.

``python -m saelab.concept_generation`` rewrites ``assets/concepts/<name>.generated.txt`` (seeded
sampling; the prompts are below, so the files can be rebuilt and checked).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import concepts, lm
from .files import write_text_atomic

# What each passage is about: the chat prompt is "<genre> about <subject>, focusing on <aspect>."
SUBJECTS = {
    "golden_gate": "the Golden Gate Bridge in San Francisco",
    "volcanoes": "volcanoes",
    "whales": "whales",
    "pasta": "Italian pasta",
    "eiffel_tower": "the Eiffel Tower in Paris",
}
ASPECTS = {
    "golden_gate": [
        "its orange towers rising out of the fog", "how it was built in the 1930s", "walking across it at dawn",
        "the view from the Marin Headlands", "its International Orange paint", "its engineers and designers",
        "driving north across it toward Marin County", "ships passing under its span into the bay",
        "the strait it crosses between the city and Marin", "its suspension cables and main span",
        "photographing it at sunset", "the earthquake retrofit", "cycling over it on a windy day",
        "its fiftieth anniversary crowd in 1987", "what it means as a symbol of San Francisco",
        "the fog horns and the sea below it", "the view of it from a sailboat on the bay",
        "the workers and the safety net under it", "seeing it for the first time",
        "how a suspension bridge like it carries its load", "the toll plaza and traffic",
        "how it looks from Fort Point and Crissy Field", "the bridge itself speaking in the first person",
        "explaining it to a young child",
    ],
    "volcanoes": ["an eruption seen from a village", "how magma rises", "volcanic islands", "living near a volcano",
                  "lava flows and ash clouds", "famous volcanoes of the world"],
    "whales": ["whale songs", "a whale-watching trip", "the blue whale's size", "whale migration",
               "how whales feed", "whales and their calves"],
    "pasta": ["making fresh pasta by hand", "a family dinner with spaghetti", "pasta shapes and sauces",
              "cooking pasta al dente", "the history of pasta", "a small trattoria in Rome"],
    "eiffel_tower": ["climbing its stairs", "how it was built for the 1889 fair", "its lights at night",
                     "the view from the top", "Gustave Eiffel", "seeing it for the first time"],
}
GENRES = ["Write a vivid paragraph", "Write a short travel-guide paragraph", "Write a short story paragraph",
          "Write an encyclopedia-style paragraph"]
SAMPLES = {"golden_gate": 2}  # per (aspect, genre) pair; the others get 1


def generated_path(name: str) -> Path:
    return concepts.CONCEPT_DIR / f"{name}.generated.txt"


def prompts(name: str) -> list[str]:
    """The chat prompts for concept ``name``, each repeated as many times as it is sampled."""
    if name not in SUBJECTS:
        raise ValueError(f"name must be one of {', '.join(SUBJECTS)}; got {name!r}")
    pairs = itertools.product(ASPECTS[name], GENRES)
    one_each = [f"{genre} about {SUBJECTS[name]}, focusing on {aspect}." for aspect, genre in pairs]
    return one_each * SAMPLES.get(name, 1)


@torch.no_grad()
def generate_passages(hf_model, tokenizer, chat_prompts: list[str], max_new_tokens: int = 160,
                      temperature: float = 0.8, batch_size: int = 16, seed: int = 0, min_words: int = 30,
                      progress: bool = True) -> list[str]:
    """Sample one reply per prompt (batched, left-padded) and keep each as one paragraph of at least
    ``min_words`` words."""
    if not chat_prompts or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("chat_prompts must be non-empty; batch_size and max_new_tokens must be >= 1")
    torch.manual_seed(seed)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # new tokens follow every prompt
    replies = []
    try:
        for start in tqdm(range(0, len(chat_prompts), batch_size), desc="generating", unit="batch",
                          disable=not progress):
            batch = chat_prompts[start:start + batch_size]
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                   add_generation_prompt=True) for p in batch]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = hf_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                    top_p=0.95, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
    passages = [_clean(r) for r in replies]
    return [p for p in passages if len(p.split()) >= min_words]


def _clean(reply: str) -> str:
    """One paragraph of prose: the reply's lines joined, a cut-off last sentence dropped."""
    text = " ".join(line.strip() for line in reply.strip().splitlines() if line.strip())
    cut = max(text.rfind("."), text.rfind("!"), text.rfind("?"))
    return text[:cut + 1] if cut > 0 else text


def write_slice(name: str, passages: list[str]) -> Path:
    """Write ``passages`` (one per paragraph) atomically, so an interrupted run keeps the previous file."""
    return write_text_atomic(generated_path(name), "\n\n".join(passages) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(SUBJECTS), help="concepts (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    planned = {name: prompts(name) for name in args.names}  # a bad name fails before the model loads
    hf_model, tokenizer = lm.load_default_hf()
    for offset, (name, chat_prompts) in enumerate(planned.items()):
        passages = generate_passages(hf_model, tokenizer, chat_prompts, seed=args.seed + offset)
        print(f"{name}: {len(passages)} passages from {len(chat_prompts)} prompts -> {write_slice(name, passages)}")


if __name__ == "__main__":
    main()
