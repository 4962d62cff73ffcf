"""train_sae: it recovers known features, is deterministic, never copies the activations, and rejects bad input."""

import pytest
import torch

from saelab.metrics import evaluate, match_features
from saelab.sae import SAE, SAEConfig
from saelab.synthetic import SparseFeatureData
from saelab.training import geometric_median, lr_factor, train_sae

# A small seeded version of the 512-in-64 acceptance setting: fewer rows active per dimension, so that a
# sparse code can reach FVU <= 0.05 at all (see the lesson: the floor is about L0 / d for random directions).
SMALL = dict(n_features=96, d=32, feature_probability=0.005, seed=0)


@pytest.fixture(scope="module")
def small_data():
    data = SparseFeatureData(**SMALL)
    return data, data.sample(40_000, seed=1), data.sample(10_000, seed=2)


@pytest.mark.slow
@pytest.mark.parametrize("architecture, kwargs, epochs", [("topk", {"k": 2}, 6), ("relu", {"l1_coefficient": 0.1}, 25)])
def test_recovers_known_features(small_data, architecture, kwargs, epochs):
    data, train, test = small_data
    sae = SAE(SAEConfig(32, 192, architecture, **kwargs), seed=0)
    history = train_sae(sae, train, epochs=epochs, batch_size=512, lr=1e-2, progress=False, seed=0)
    ev = evaluate(sae, test)
    match = match_features(sae, data.directions)
    assert match.mmcs >= 0.95, (match.mmcs, ev.fvu)
    assert ev.fvu <= 0.05, (match.mmcs, ev.fvu)
    assert history.fvu[-1] < history.fvu[0]


def test_deterministic_with_a_seed():
    x = SparseFeatureData(40, 8, 0.05, seed=1).sample(4000)
    weights = []
    for _ in range(2):
        sae = SAE(SAEConfig(8, 32, "topk", k=2), seed=5)
        train_sae(sae, x, epochs=2, batch_size=256, progress=False, seed=9)
        weights.append([p.detach().clone() for p in sae.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    sae = SAE(SAEConfig(8, 32, "topk", k=2), seed=5)
    train_sae(sae, x, epochs=2, batch_size=256, progress=False, seed=10)
    assert not torch.equal(sae.W_enc, weights[0][1])


class Watched(torch.Tensor):
    """Records the largest tensor any torch function derived from the activations produced."""

    largest = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if isinstance(out, torch.Tensor):
            Watched.largest = max(Watched.largest, out.numel() if out.ndim else 0)
        return out


def test_activations_are_never_copied_whole():
    rows, d_in, batch = 40_000, 16, 512
    acts = torch.randn(rows, d_in).as_subclass(Watched)
    before = acts.clone().as_subclass(torch.Tensor)
    Watched.largest = 0
    train_sae(SAE(SAEConfig(d_in, 64, "relu")), acts, steps=20, batch_size=batch, progress=False)
    # Only batches (and a 4096-row sample for the scale and b_dec) are ever materialised from it.
    assert 0 < Watched.largest <= 4096 * d_in < rows * d_in
    assert torch.equal(acts.as_subclass(torch.Tensor), before)  # and it is left as it was


def test_normalisation_is_folded_back_so_scale_does_not_matter():
    x = SparseFeatureData(40, 8, 0.05, seed=1).sample(4000)
    results = []
    for factor in (1.0, 100.0):
        sae = SAE(SAEConfig(8, 32, "topk", k=2), seed=0)
        history = train_sae(sae, x * factor, steps=10, batch_size=256, progress=False)
        results.append((sae, history))
    (a, ha), (b, hb) = results
    assert ha.scale_factor == pytest.approx(100 * hb.scale_factor, rel=1e-4)
    with torch.no_grad():
        assert torch.allclose(a.encode(x), b.encode(x * 100), rtol=1e-3, atol=1e-4)
        assert torch.allclose(a(x).reconstruction * 100, b(x * 100).reconstruction, rtol=1e-3, atol=1e-2)


def test_iterable_of_batches_and_history():
    data = SparseFeatureData(40, 8, 0.05, seed=1)
    batches = (data.sample(256, seed=s) for s in range(30))
    sae = SAE(SAEConfig(8, 32, "topk", k=2))
    history = train_sae(sae, batches, steps=30, log_every=5, lr=1e-2, progress=False)
    assert history.steps == 30 and history.rows == 30 * 256
    assert history.step == [0, 5, 10, 15, 20, 25, 29]
    assert len(history.l0) == len(history.fvu) == len(history.lr) == 7
    assert history.lr[-1] < history.lr[2]  # decayed at the end
    assert history.fvu[-1] < history.fvu[0]
    assert history.rows_per_second > 0


def test_dead_relu_latents_are_resampled():
    x = SparseFeatureData(40, 8, 0.05, seed=1).sample(8000)
    sae = SAE(SAEConfig(8, 32, "relu"))
    with torch.no_grad():
        sae.b_enc[:16] = -100.0  # half the latents can never fire
    history = train_sae(sae, x, steps=40, batch_size=256, dead_after_rows=1024, resample_at=(0.5,), progress=False)
    assert history.resampled and history.resampled[0][0] == 20 and history.resampled[0][1] >= 16
    assert evaluate(sae, x).dead_fraction < 0.5


def test_topk_aux_loss_kicks_in_for_dead_latents():
    x = SparseFeatureData(40, 8, 0.05, seed=1).sample(8000)
    sae = SAE(SAEConfig(8, 32, "topk", k=2))
    with torch.no_grad():
        sae.b_enc[:16] = -100.0
    history = train_sae(sae, x, steps=30, batch_size=256, dead_after_rows=512, log_every=1, progress=False)
    assert history.aux_loss[0] == 0 and max(history.aux_loss) > 0
    assert history.dead_fraction[-1] > 0


def test_lr_schedule_warms_up_holds_and_decays():
    factors = [lr_factor(s, 100, 10, 0.2) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert factors[50] == 1.0 and factors[80] == 1.0 and factors[90] == pytest.approx(0.5)
    assert factors[99] == pytest.approx(0.05)


def test_geometric_median_resists_outliers():
    points = torch.cat([torch.randn(200, 3) * 0.1, torch.full((20, 3), 1000.0)])
    median = geometric_median(points)
    assert median.norm() < 1.0 < points.mean(0).norm()


def test_nan_in_a_batch_names_the_batch():
    x = torch.randn(2000, 8)
    batches = [x[:500], x[500:1000].clone(), x[1000:1500]]
    batches[1][7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"activations batch 1 contains NaN or inf in 1 row\(s\)") as info:
        train_sae(SAE(SAEConfig(8, 16, "relu")), batches, progress=False)
    assert "\n" not in str(info.value)
    x[1234, 0] = float("inf")
    with pytest.raises(ValueError, match="contains NaN or inf"):
        train_sae(SAE(SAEConfig(8, 16, "relu")), x, epochs=3, batch_size=100, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(activations=torch.randn(100, 9)), r"activations have shape \(100, 9\), expected \(rows, d_in=8\)"),
        (dict(lr=-1.0), "lr must be a finite number > 0"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(steps=2.5), "steps must be a positive integer"),
        (dict(b_dec_init="median"), "b_dec_init must be"),
        (dict(decay_fraction=1.5), r"decay_fraction must be a number in \[0, 1\]"),
        (dict(activations=iter([torch.randn(10, 8)])), "steps is required when activations is an iterator"),
        (dict(activations=torch.zeros(0, 8)), "activations is empty"),
        (dict(activations=torch.ones(10, 8, dtype=torch.long)), "activations must be floating point"),
    ],
)
def test_bad_arguments_give_one_line_errors(kwargs, message):
    args = dict(activations=torch.randn(100, 8), progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        train_sae(SAE(SAEConfig(8, 16, "relu")), args.pop("activations"), **args)
    assert "\n" not in str(info.value)


def test_threads_are_restored():
    before = torch.get_num_threads()
    train_sae(SAE(SAEConfig(8, 16, "relu")), torch.randn(512, 8), steps=2, batch_size=256, progress=False,
              num_threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_jumprelu_learns_thresholds_and_features(small_data):
    data, train, test = small_data
    cfg = SAEConfig(32, 192, "jumprelu", l0_coefficient=0.01, jumprelu_init_threshold=0.1, jumprelu_bandwidth=0.05)
    sae = SAE(cfg, seed=0)
    train_sae(sae, train, epochs=4, batch_size=512, lr=1e-2, progress=False)
    ev, match = evaluate(sae, test), match_features(sae, data.directions)
    assert match.mmcs > 0.85 and ev.fvu < 0.1 and ev.l0 < 4, (match.mmcs, ev.fvu, ev.l0)
    assert (sae.threshold - 0.1).abs().max() > 0.01  # the straight-through estimator moved the thresholds


def test_the_matryoshka_loss_is_the_mean_error_of_the_nested_prefixes():
    sae = SAE(SAEConfig(8, 32, "topk", k=4, matryoshka_groups=3), seed=0)
    x = torch.randn(64, 8)
    out = sae(x)
    codes = sae.encode(x)
    errors = []
    for prefix in (8, 16, 32):  # d_sae/4, d_sae/2, d_sae
        kept = codes.clone()
        kept[:, prefix:] = 0
        errors.append((sae.decode(kept) - x).pow(2).sum(-1).mean())
    assert out.loss.item() == pytest.approx(torch.stack(errors).mean().item(), rel=1e-5)
    assert out.mse.item() == pytest.approx(errors[-1].item(), rel=1e-5)  # the reported MSE is the full one


def test_matryoshka_training_makes_the_first_latents_reconstruct_on_their_own():
    x = SparseFeatureData(48, 16, 0.04, seed=3).sample(12_000)
    first_half_fvu = {}
    for groups in (1, 2):
        sae = SAE(SAEConfig(16, 64, "topk", k=4, matryoshka_groups=groups), seed=0)
        train_sae(sae, x, epochs=4, batch_size=256, lr=5e-3, progress=False, seed=0)
        with torch.no_grad():
            codes = sae.encode(x)
            codes[:, 32:] = 0
            residual = sae.decode(codes) - x
            first_half_fvu[groups] = float(residual.pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert first_half_fvu[2] < 0.8 * first_half_fvu[1], first_half_fvu


@pytest.mark.parametrize("kwargs, message", [
    (dict(architecture="topk", k=2, matryoshka_groups=0), "matryoshka_groups must be an integer >= 1"),
    (dict(architecture="topk", k=2, matryoshka_groups=7), "divisible by 2"),
    (dict(architecture="relu", matryoshka_groups=2), "needs a topk SAE"),
])
def test_bad_matryoshka_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SAEConfig(8, 32, **kwargs)


def test_an_sae_trained_on_harvested_activations_records_their_hook_and_model(tiny_model, tiny_texts, tmp_path):
    from saelab.corpus import tokenize_corpus
    from saelab.harvest import collect_activations
    from saelab.shards import ShardBatches

    hook = "blocks.1.hook_resid_post"
    tokens = tokenize_corpus(tiny_model, tiny_texts, seq_len=16)[:8]
    store = collect_activations(tiny_model, hook, tokens, out_dir=tmp_path, rows_per_shard=4, progress=False)
    sae = SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4), seed=0)
    train_sae(sae, ShardBatches(store, 32, seed=0), steps=2, progress=False)
    assert sae.hook_name == hook and sae.cfg.model_name == tiny_model.cfg.model_name
    # An SAE that already names its hook keeps it: training records, it does not overrule.
    named = SAE(SAEConfig(d_in=32, d_sae=64, architecture="topk", k=4, hook_name="mine"), seed=0)
    train_sae(named, ShardBatches(store, 32, seed=0), steps=1, progress=False)
    assert named.hook_name == "mine"
