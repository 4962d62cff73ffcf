"""Names that said too little were renamed; the old names still work for one release and warn."""

import pytest
import torch

from saelab import steer, toy
from saelab.sae import SAE, SAEConfig

HOOK = "blocks.2.hook_resid_post"


def test_toy_train_warns_and_trains_exactly_as_train_toy_model():
    old_model, new_model = toy.ToyModel(5, 2, seed=3), toy.ToyModel(5, 2, seed=3)
    with pytest.warns(DeprecationWarning, match="saelab.toy.train_toy_model"):
        old = toy.train(old_model, steps=20, batch_size=16, seed=1, progress=False)
    new = toy.train_toy_model(new_model, steps=20, batch_size=16, seed=1, progress=False)
    assert torch.equal(old, new) and torch.equal(old_model.W, new_model.W)
    assert toy.train.__name__ == "train" and "train_toy_model" in toy.train.__doc__


def test_steer_generate_warns_and_answers_as_generate_replies(tiny_model):
    sae = SAE(SAEConfig(d_in=32, d_sae=24, architecture="topk", k=4, metadata={"hook_name": HOOK}), seed=1)
    options = {"sae": sae, "clamps": {7: 50.0}, "max_new_tokens": 4}
    with pytest.warns(DeprecationWarning, match="saelab.steer.generate_replies"):
        old = steer.generate(tiny_model, "What is your physical form?", **options)
    new = steer.generate_replies(tiny_model, "What is your physical form?", **options)
    assert old == new and steer.generate_replies.__name__ == "generate_replies"
