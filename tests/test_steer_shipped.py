"""Strategy 2 on the real model with the shipped SAE: clamping the Golden Gate features turns the model's answer
about itself toward the bridge; unclamped, it never mentions one."""

import pytest

from saelab import lm, pretrained, reply_checks, steer

QUESTION = "What is your physical form?"
BRIDGE_WORDS = ("bridge", "golden gate", "san francisco")


def mentions_bridge(text: str) -> bool:
    return reply_checks.mentions(text, BRIDGE_WORDS)


@pytest.mark.slow
def test_clamping_the_golden_gate_group_at_its_max_talks_about_the_bridge(real_model):
    sae, store = pretrained.load_sae(), pretrained.load_feature_store()
    group = pretrained.feature_group("golden_gate")
    clamps = {f: store.max_activation[f].item() for f in group}  # 1x each feature's max; 10x collapses (lesson 07)
    # 24 tokens: past ~20, greedy decoding of this 135M model falls into a loop under the clamp ("I'm a bridge.
    # (Swinging my hand across the bridge) I'm a bridge. (Swinging ..."), which the fluency check rightly rejects.
    replies = steer.generate_replies(real_model, QUESTION, sae=sae, clamps=clamps, max_new_tokens=24)
    assert not mentions_bridge(replies.baseline), replies.baseline
    assert mentions_bridge(replies.steered), replies.steered
    # Fluent, not only on topic: a broken cache or an overdriven clamp still says "bridge" ("The bridge was a a a").
    for reply in replies:
        assert reply_checks.fluency_problem(reply) is None, (reply_checks.fluency_problem(reply), reply)
        assert reply_checks.repetition(reply) < 0.2, reply
    assert not lm.active_hook_points(real_model)
    # greedy decoding: the same request gives the same reply
    assert steer.generate_replies(real_model, QUESTION, sae=sae, clamps=clamps, max_new_tokens=24) == replies


@pytest.mark.slow
def test_the_recorded_steering_feature_does_what_its_evidence_says(real_model):
    """features.json's steering record is reproducible: its feature, clamped at its recorded value, writes the
    recorded reply to the demonstration's question, on topic and fluent, and the record says it is no identity
    claim (no single latent of this SAE made the model say it is the bridge; see the record's finding)."""
    sae = pretrained.load_sae()
    record = pretrained.steering("golden_gate")
    feature = pretrained.feature("golden_gate", role="steer")
    evidence = next(r for r in record["evidence"]["stage2"]
                    if r["feature"] == feature and r["push_fraction"] == record["push_fraction"])
    reply = lm.chat(real_model, QUESTION, max_new_tokens=32,
                    fwd_hooks=steer.clamp_hooks(real_model, sae, {feature: record["value"]}))
    assert reply == evidence["replies"][QUESTION]
    assert mentions_bridge(reply) and reply_checks.fluency_problem(reply) is None, reply
    assert reply_checks.claims_identity(reply, "bridge") == record["claims_identity"]
    assert evidence["on_topic"] >= 4 and record["multiple_of_max"] == pytest.approx(
        record["value"] / pretrained.load_feature_store().max_activation[feature].item(), rel=1e-3)
