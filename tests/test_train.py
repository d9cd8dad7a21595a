"""The preference update on a real tiny Llama with peft LoRA: what changes, what must not, and the reference."""

import pytest
import torch
from tiny_adapter import TinyAdapter

from silmm.adapters.base import Diversity
from silmm.config import DPOConfig, LoraConfig, TrainConfig
from silmm.pairs import PreferencePair, reference_outputs
from silmm.sampling import sample_tensors
from silmm.train import PairData, preference_update, seeded

PROMPTS = ["red and blue", "a green", "yellow and white", "purple"]
LORA = LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
MODES = {"discrete": "nucleus", "continuous": "dropdiv"}


def pair_data(adapter: TinyAdapter) -> PairData:
    """Candidate i (seed i) is chosen over candidate i + 4 of the same prompt; refs cached from the model now."""
    seeds = list(range(2 * len(PROMPTS)))
    samples = adapter.sample(PROMPTS * 2, seeds, Diversity(mode=MODES[adapter.kind], dropout=0.5))
    tensors = {k: v for i, s in enumerate(samples) for k, v in sample_tensors(i, s).items()}
    n = len(PROMPTS)
    pairs = [PreferencePair(i, PROMPTS[i], i, i + n, 1.0, -1.0, i, i + n) for i in range(n)]
    return PairData(pairs, tensors, reference_outputs(adapter, pairs, tensors, batch_size=3))


def fresh_lora(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """The LoRA init `preference_update` starts from (same seed -> same init)."""
    twin = TinyAdapter(kind)
    with seeded(seed):
        twin.add_lora(
            r=LORA.r, alpha=LORA.alpha, dropout=LORA.dropout, target_modules=list(LORA.target_modules)
        )
    return {n: p.detach().clone() for n, p in twin.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_every_lora_param_changes_and_no_frozen_one_does(kind):
    adapter = TinyAdapter(kind)
    data = pair_data(adapter)
    frozen_before = {n: (p, p.detach().clone()) for n, p in adapter.lm.named_parameters()}
    cfg = TrainConfig(
        lr=1e-2, epochs=2, batch_size=4, weight_decay=0.0
    )  # 2 optimizer steps: lora_A has grad 0 at step 1
    metrics = preference_update(adapter, data, lora=LORA, dpo=DPOConfig(sft_weight=0.5), train=cfg, seed=7)
    assert metrics["optimizer_steps"] == 2
    init = fresh_lora(kind, 7)
    trained = {n: p for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert set(trained) == set(init) and len(trained) == 2 * 3 * 2  # A and B x 3 targets x 2 layers
    unchanged = [n for n, p in trained.items() if torch.equal(p.detach(), init[n])]
    assert unchanged == []
    for name, (param, before) in frozen_before.items():
        assert not param.requires_grad, name
        assert torch.equal(param.detach(), before), f"frozen parameter {name} changed"


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_reference_stays_fixed_within_the_iteration(kind):
    adapter = TinyAdapter(kind)
    data = pair_data(adapter)
    cfg = TrainConfig(lr=1e-2, epochs=3, batch_size=2, weight_decay=0.0)
    metrics = preference_update(adapter, data, lora=LORA, dpo=DPOConfig(), train=cfg, seed=3)
    with torch.no_grad(), adapter.reference():
        after = reference_outputs(adapter, data.pairs, data.tensors, batch_size=3)
    for key, cached in data.refs.items():
        torch.testing.assert_close(
            after[key], cached, rtol=0, atol=0
        )  # LoRA off == the model before training
    with torch.no_grad():
        policy = reference_outputs(adapter, data.pairs, data.tensors, batch_size=3)
    assert any(not torch.equal(policy[k], data.refs[k]) for k in policy)  # ... while the policy moved
    assert metrics["epochs"][0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at the start
    assert metrics["reward_accuracy"] > 0.5 and metrics["reward_margin"] > 0


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_cached_reference_and_adapter_off_reference_train_the_same_weights(kind):
    results = []
    for reference in ("cached", "adapter_off"):
        adapter = TinyAdapter(kind)
        cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=2, weight_decay=0.0, reference=reference)
        preference_update(adapter, pair_data(adapter), lora=LORA, dpo=DPOConfig(), train=cfg, seed=1)
        results.append(
            {n: p.detach().clone() for n, p in adapter.model.named_parameters() if p.requires_grad}
        )
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-5, atol=1e-7)


def test_grad_accumulation_equals_the_full_batch():
    results = []
    for batch_size, accum in ((4, 1), (2, 2)):
        adapter = TinyAdapter("discrete")
        cfg = TrainConfig(
            lr=1e-2, epochs=1, batch_size=batch_size, grad_accum=accum, weight_decay=0.0, max_grad_norm=0.0
        )
        m = preference_update(adapter, pair_data(adapter), lora=LORA, dpo=DPOConfig(), train=cfg, seed=5)
        assert m["optimizer_steps"] == 1
        results.append(
            {n: p.detach().clone() for n, p in adapter.model.named_parameters() if p.requires_grad}
        )
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=1e-4, atol=1e-6)


def test_dpo_raises_the_chosen_log_likelihood_on_the_tiny_model():
    adapter = TinyAdapter("discrete")
    data = pair_data(adapter)
    cfg = TrainConfig(lr=2e-2, epochs=5, batch_size=4, weight_decay=0.0)
    preference_update(adapter, data, lora=LORA, dpo=DPOConfig(beta=0.5, sft_weight=1.0), train=cfg, seed=0)
    with torch.no_grad():
        after = reference_outputs(adapter, data.pairs, data.tensors, batch_size=4)
    assert (after["ref_chosen_logps"] > data.refs["ref_chosen_logps"]).all()
    assert ((after["ref_chosen_logps"] - after["ref_rejected_logps"]) > (data.refs["ref_chosen_logps"] - data.refs["ref_rejected_logps"])).all()  # fmt: skip
