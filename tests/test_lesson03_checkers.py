"""Lesson 03 checkers: right answers pass, unattempted ones defer, typical mistakes get their named hint."""

import pytest
import torch

from saelab.exercises import ExerciseError, lesson03


def encode_decode(x, W_enc, b_enc, W_dec, b_dec):
    f = ((x - b_dec) @ W_enc + b_enc).relu()
    return f, f @ W_dec + b_dec


def sae_loss(x, f, recon, W_dec, l1_coefficient):
    return (recon - x).pow(2).sum(-1).mean() + l1_coefficient * (f * W_dec.norm(dim=1)).sum(-1).mean()


def l0_and_fvu(x, recon, f):
    return (f > 0).float().sum(-1).mean(), (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def topk_activation(pre, k):
    values, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, values.relu())


def not_attempted(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check, solution", [
    (lesson03.check_encode_decode, encode_decode), (lesson03.check_sae_loss, sae_loss),
    (lesson03.check_l0_and_fvu, l0_and_fvu), (lesson03.check_topk_activation, topk_activation)])
def test_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def _decoded(f, W_dec, b_dec):
    return f, f @ W_dec + b_dec


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, We, be, Wd, bd: ((x - bd) @ We + be, (x - bd) @ We @ Wd + bd), "apply the ReLU"),
    (lambda x, We, be, Wd, bd: encode_decode(x, We, be, Wd, torch.zeros_like(bd)), "subtract b_dec"),
    (lambda x, We, be, Wd, bd: _decoded(((x - bd) @ We + be).relu(), Wd, 0.0), "decoder bias"),
    (lambda x, We, be, Wd, bd: _decoded(((x - bd) @ We).relu(), Wd, bd), "b_enc is missing"),
    (lambda x, We, be, Wd, bd: ((x - bd) @ We + be).relu(), "should return a pair"),
])
def test_encode_decode_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_encode_decode(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1).mean() + c * f.sum(-1).mean(), "decoder row's norm"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).mean() + c * (f * Wd.norm(dim=1)).sum(-1).mean(),
     "sum the squared error"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1).mean(), "sparsity penalty is missing"),
    (lambda x, f, r, Wd, c: sae_loss(x, f, r, Wd, 1.0), "multiply the sparsity term"),
    (lambda x, f, r, Wd, c: (r - x).pow(2).sum(-1), "should return one number"),
])
def test_sae_loss_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_sae_loss(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, r, f: ((f > 0).float().sum(), l0_and_fvu(x, r, f)[1]), "not the total over the batch"),
    (lambda x, r, f: (f.sum(-1).mean(), l0_and_fvu(x, r, f)[1]), "count the active latents"),
    (lambda x, r, f: (l0_and_fvu(x, r, f)[0], (r - x).pow(2).sum() / x.pow(2).sum()),
     "subtract the mean of x"),
    (lambda x, r, f: (l0_and_fvu(x, r, f)[0], 1 - l0_and_fvu(x, r, f)[1]), "variance \\*explained\\*"),
])
def test_l0_fvu_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_l0_and_fvu(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda pre, k: torch.zeros_like(pre).scatter(-1, pre.topk(k, -1)[1], pre.topk(k, -1)[0]),
     "apply a ReLU"),
    (lambda pre, k: torch.zeros_like(pre).scatter(-1, pre.topk(k, -1, largest=False)[1],
                                                  pre.topk(k, -1, largest=False)[0].relu()), "k smallest"),
    (lambda pre, k: pre.relu(), "only the k largest"),
    (lambda pre, k: pre.topk(k, -1), "not the \\(values, indices\\) pair"),
])
def test_topk_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_topk_activation(wrong)


def test_a_crash_in_the_learners_code_is_reported_not_raised_raw():
    with pytest.raises(ExerciseError, match="topk_activation raised RuntimeError"):
        lesson03.check_topk_activation(lambda pre, k: pre.topk(100, dim=-1))


# ----------------------------------------------------------------- training, dead latents, resampling, MMCS


def training_step(sae, optimizer, x):
    out = sae(x)
    optimizer.zero_grad()
    out.loss.backward()
    if sae.cfg.normalize_decoder:
        sae.remove_parallel_decoder_grad_()
    optimizer.step()
    if sae.cfg.normalize_decoder:
        sae.normalize_decoder_()
    return out.loss.item()


def train_loop(sae, acts, steps, batch_size, lr, step):
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    losses, order, position = [], torch.randperm(len(acts)), 0
    for _ in range(steps):
        if position + batch_size > len(acts):
            order, position = torch.randperm(len(acts)), 0
        losses.append(step(sae, optimizer, acts[order[position:position + batch_size]]))
        position += batch_size
    return losses


def mmcs(W_dec, true):
    unit = torch.nn.functional.normalize
    return (unit(true, dim=1) @ unit(W_dec, dim=1).t()).max(1)[0].mean()


def oracle_readout(acts, W, support):
    return (acts @ (W / W.norm(dim=0).pow(2)) * support) @ W.t()


@pytest.mark.parametrize("check, solution", [
    (lesson03.check_training_step, training_step), (lesson03.check_train_loop, train_loop),
    (lesson03.check_dead_latents, lambda f: (f <= 0).all(0)),
    (lesson03.check_resample_dead, lesson03.reference_resample_dead),
    (lesson03.check_mmcs, mmcs), (lesson03.check_mmcs, lambda W, t: float(mmcs(W, t))),
    (lesson03.check_oracle_readout, oracle_readout)])
def test_new_right_answers_pass_and_unattempted_defer(check, solution, capsys):
    assert check(solution) is True
    assert "correct" in capsys.readouterr().out
    assert check(not_attempted) is False
    assert "not attempted" in capsys.readouterr().out


def _step(zero_grad=True, remove_parallel=True, step=True, renormalise="after", as_tensor=False):
    def run(sae, optimizer, x):
        out = sae(x)
        if zero_grad:
            optimizer.zero_grad()
        out.loss.backward()
        if remove_parallel:
            sae.remove_parallel_decoder_grad_()
        if renormalise == "before":
            sae.normalize_decoder_()
        if step:
            optimizer.step()
        if renormalise == "after":
            sae.normalize_decoder_()
        return out.loss if as_tensor else out.loss.item()
    return run


@pytest.mark.parametrize("wrong, hint", [
    (_step(step=False), "did not move"),
    (_step(zero_grad=False), "zero_grad"),
    (_step(renormalise="before"), "\\*after\\* optimizer.step"),
    (_step(renormalise=None), "unit norm"),
    (_step(remove_parallel=False), "remove_parallel_decoder_grad_"),
    (_step(as_tensor=True), "not the tensor"),
])
def test_training_step_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_training_step(wrong)


def _loop(new_optimizer_each_step=False, shuffle=True, same_batch=False, steps_offset=0, optimizer="adam",
          pass_lr=True, returns=True):
    def run(sae, acts, steps, batch_size, lr, step):
        def make():
            kwargs = {"lr": lr} if pass_lr else {}
            return (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(sae.parameters(), **kwargs)

        opt, losses = make(), []
        order = torch.randperm(len(acts)) if shuffle else torch.arange(len(acts))
        per_epoch = len(acts) // batch_size
        for i in range(steps + steps_offset):
            if new_optimizer_each_step:
                opt = make()
            j = 0 if same_batch else i % per_epoch
            losses.append(step(sae, opt, acts[order[j * batch_size:(j + 1) * batch_size]]))
        return losses if returns else None
    return run


@pytest.mark.parametrize("wrong, hint", [
    (_loop(new_optimizer_each_step=True), "a new optimiser every step"),
    (_loop(shuffle=False), "shuffle the rows"),
    (_loop(same_batch=True), "same batch"),
    (_loop(steps_offset=-1), "training_step 24 times"),
    (_loop(optimizer="sgd"), "torch.optim.Adam"),
    (_loop(pass_lr=False), "pass lr"),
    (_loop(returns=False), "return the list"),
])
def test_train_loop_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_train_loop(wrong)


def test_the_reference_loop_and_step_train_an_sae():
    from saelab.sae import SAE, SAEConfig

    acts = lesson03._loop_data()
    sae = SAE(SAEConfig(6, 16, "topk", k=3), seed=0)
    losses = lesson03.reference_train_loop(sae, acts, 150, 50, 1e-2, lesson03.reference_training_step)
    assert len(losses) == 150 and all(isinstance(v, float) for v in losses)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(16), atol=1e-5)


@pytest.mark.parametrize("wrong, hint", [
    (lambda f: (f > 0).any(0), "marked the live latents"),
    (lambda f: ~(f > 0).all(0), "on \\*any\\* row"),
    (lambda f: ~(f >= 0).any(0), "f >= 0 holds"),
    (lambda f: f.mean(0) < 0.01, "fired once is alive"),
    (lambda f: ~(f > 0).any(1), "one value per row"),
])
def test_dead_latent_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_dead_latents(wrong)


def _resample(pick="worst", normalise=True, centre=True, scale="live", reset_bias=True, only_dead=True,
              error="sq"):
    def run(W_enc, b_enc, W_dec, b_dec, dead, x, recon):
        W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
        targets = dead if only_dead else torch.ones_like(dead)
        idx = targets.nonzero().squeeze(1)
        err = (x - recon).pow(2).sum(-1) if error == "sq" else (x - recon).sum(-1).abs()
        chosen = err.topk(len(idx), largest=pick == "worst").indices
        direction = x[chosen] - (b_dec if centre else 0)
        if normalise:
            direction = direction / direction.norm(dim=1, keepdim=True)
        norm = {"live": W_enc[:, ~dead].norm(dim=0).mean(), "all": W_enc.norm(dim=0).mean(), "none": 1.0,
                "unscaled": 1 / 0.2}[scale]
        W_dec[idx] = direction
        W_enc[:, idx] = direction.t() * 0.2 * norm
        if reset_bias:
            b_enc[idx] = 0.0
        return W_enc, b_enc, W_dec
    return run


@pytest.mark.parametrize("wrong, hint", [
    (_resample(pick="best"), "reconstructs \\*best\\*"),
    (_resample(normalise=False), "unit length"),
    (_resample(centre=False), "x - b_dec"),
    (_resample(error="plain"), "squared error summed over d_in"),
    (_resample(only_dead=False), "live latents changed"),
    (_resample(reset_bias=False), "encoder bias to 0"),
    (_resample(scale="unscaled"), "at full length"),
    (_resample(scale="none"), "not to 0.2 alone"),
    (_resample(scale="all"), "\\*live\\* encoder columns only"),
    (lambda *args: lesson03.reference_resample_dead(*args)[:2], "three tensors"),
])
def test_resample_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_resample_dead(wrong)


def test_resampling_picks_the_worst_inputs_and_leaves_live_latents_alone():
    W_enc, b_enc, W_dec, b_dec, dead, x, recon = lesson03._resample_case()
    new_enc, new_benc, new_dec = lesson03.reference_resample_dead(W_enc, b_enc, W_dec, b_dec, dead, x, recon)
    worst = (x - recon).pow(2).sum(-1).argmax()
    first_dead = int(dead.nonzero()[0])
    assert torch.allclose(new_dec[first_dead], torch.nn.functional.normalize(x[worst] - b_dec, dim=0))
    assert torch.equal(new_dec[~dead], W_dec[~dead]) and torch.equal(new_enc[:, ~dead], W_enc[:, ~dead])
    assert (new_benc[dead] == 0).all()


def _unit(v):
    return torch.nn.functional.normalize(v, dim=1)


@pytest.mark.parametrize("wrong, hint", [
    (lambda W, t: (t @ W.t()).max(1)[0].mean(), "normalise both"),
    (lambda W, t: (_unit(t) @ W.t()).max(1)[0].mean(), "decoder rows too"),
    (lambda W, t: (t @ _unit(W).t()).max(1)[0].mean(), "true directions too"),
    (lambda W, t: (_unit(t) @ _unit(W).t()).max(0)[0].mean(), "each latent's best feature"),
    (lambda W, t: (_unit(t) @ _unit(W).t()).abs().max(1)[0].mean(), "signed cosine"),
    (lambda W, t: (_unit(t) @ _unit(W).t()).mean(), "\\*best\\* cosine"),
    (lambda W, t: (_unit(t) @ _unit(W).t()).max(1)[0], "one number"),
])
def test_mmcs_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_mmcs(wrong)


def test_the_reference_mmcs_agrees_with_match_features():
    from saelab.metrics import match_features

    g = torch.Generator().manual_seed(0)
    W_dec, true = torch.randn(30, 8, generator=g), torch.randn(10, 8, generator=g)
    expected = match_features(W_dec, true).mmcs
    assert float(lesson03.reference_mmcs(W_dec, true)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, W, s: (a @ W * s) @ W.t(), "divide each read strength"),
    (lambda a, W, s: (a @ (W / W.norm(dim=0)) * s) @ W.t(), "squared norm"),
    (lambda a, W, s: (a @ (W / W.norm(dim=0).pow(2))) @ W.t(), "read only the active features"),
    (lambda a, W, s: a @ (W / W.norm(dim=0).pow(2)) * s, "these are the feature strengths"),
])
def test_oracle_readout_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        lesson03.check_oracle_readout(wrong)


def test_predictions_compare_with_the_run(capsys):
    assert lesson03.check_recovered_prediction(95, recovered=100, n_true=100) is True
    assert lesson03.check_recovered_prediction(20, recovered=100, n_true=100) is False
    assert lesson03.check_oracle_prediction("b", oracle_fvu=0.1, true_l0=2.0, d=20) is True
    assert lesson03.check_oracle_prediction("a", oracle_fvu=0.1, true_l0=2.0, d=20) is False
    assert lesson03.check_dead_prediction("b", dead_fraction=0.12) is True
    assert lesson03.check_dead_prediction(None, dead_fraction=0.0) is None
    assert "no prediction written. The run gives a (none)" in capsys.readouterr().out
