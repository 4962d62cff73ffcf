"""Model-written concept slices: the prompts, the sampling (seeded) and the cleaning of replies."""

import pytest

from saelab import concept_generation as gen
from saelab import concepts


def test_every_concept_has_prompts_and_the_golden_gate_gets_the_most():
    assert set(gen.SUBJECTS) == set(concepts.available())
    counts = {name: len(gen.prompts(name)) for name in gen.SUBJECTS}
    assert counts["golden_gate"] == max(counts.values()) > 2 * counts["whales"]
    assert all(gen.SUBJECTS[name] in prompt for name in gen.SUBJECTS for prompt in gen.prompts(name))
    with pytest.raises(ValueError, match="name must be one of .*golden_gate"):
        gen.prompts("brooklyn_bridge")


def test_a_reply_becomes_one_paragraph_without_its_cut_off_sentence():
    assert gen._clean("The bridge glows.\n\nFog rolls in. The towers") == "The bridge glows. Fog rolls in."
    assert gen._clean("  no full stop at all ") == "no full stop at all"


def test_sampling_is_seeded_batched_and_leaves_the_tokenizer_as_it_was(tiny_hf):
    hf_model, tokenizer = tiny_hf
    side = tokenizer.padding_side
    prompts = ["Write about the fox.", "Write a long paragraph about the quick brown dog.", "Hi."]
    args = dict(max_new_tokens=12, batch_size=2, min_words=0, progress=False)
    first = gen.generate_passages(hf_model, tokenizer, prompts, seed=3, **args)
    assert first == gen.generate_passages(hf_model, tokenizer, prompts, seed=3, **args)
    assert first != gen.generate_passages(hf_model, tokenizer, prompts, seed=4, **args)
    assert len(first) == 3 and tokenizer.padding_side == side
    assert gen.generate_passages(hf_model, tokenizer, prompts, seed=3, **{**args, "min_words": 10_000}) == []
    with pytest.raises(ValueError, match="chat_prompts"):
        gen.generate_passages(hf_model, tokenizer, [], **args)


def test_a_slice_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(concepts, "CONCEPT_DIR", tmp_path)
    path = gen.write_slice("whales", ["One passage.", "Another passage."])
    assert path == tmp_path / "whales.generated.txt"
    assert path.read_text() == "One passage.\n\nAnother passage.\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whales.generated.txt"]  # no temporary left


def test_an_unknown_concept_is_refused_before_the_model_loads(monkeypatch):
    monkeypatch.setattr(gen.lm, "load_default_hf", lambda: pytest.fail("the model loaded for a bad name"))
    with pytest.raises(ValueError, match="name must be one of"):
        gen.main(["golden_gate", "brooklyn_bridge"])
